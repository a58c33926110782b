"""Reranking metrics, computed exactly as the published C-MTEB scores were.

The published bge-reranker-base figures come from C-MTEB's ChineseRerankingEvaluator (FlagEmbedding
C_MTEB/C_MTEB/tasks/Reranking.py, `compute_metrics_batched_from_crossencoder`), built on mteb 1.1's
RerankingEvaluator (mteb/evaluation/evaluators/RerankingEvaluator.py). Per query it has the scores of
the query's documents and which of them are relevant, and computes:

- AP with `sklearn.metrics.average_precision_score(is_relevant, scores)`: precision is taken once per
  *distinct* score, so tied documents share one threshold (a tie between a relevant and an irrelevant
  document costs precision for both, whatever order they were listed in);
- RR@10 from `np.argsort(-scores)`: 1 / rank of the first relevant document among the top 10, else 0.

Both are then averaged over the queries (MAP, MRR@10) and reported as percentages.

    >>> average_precision([True, False, True], [0.9, 0.8, 0.1])    # precisions 1/1 and 2/3
    0.8333333333333333
    >>> average_precision([True, False], [0.5, 0.5])               # one shared threshold: 1/2
    0.5
    >>> mrr_at_k([False, False, True], [3.0, 2.0, 1.0])
    0.3333333333333333
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def _check_query(is_relevant, scores) -> tuple[np.ndarray, np.ndarray]:
    """One query's relevance labels as bool and scores as float64, with the problems named."""
    relevant = np.asarray(is_relevant)
    if relevant.ndim != 1 or relevant.size == 0:
        raise ValueError(f"is_relevant must be a non-empty 1-d sequence, got shape {relevant.shape}")
    if relevant.dtype != np.bool_:
        if not np.isin(relevant, (0, 1)).all():
            raise ValueError(f"is_relevant must hold booleans or 0/1, got values {np.unique(relevant)[:5]}")
        relevant = relevant.astype(bool)
    # float64 as C-MTEB had them (np.array of the Python floats compute_score returned).
    values = np.asarray(scores, dtype=np.float64)
    if values.shape != relevant.shape:
        raise ValueError(f"scores has shape {values.shape} but is_relevant has shape {relevant.shape}")
    if not np.isfinite(values).all():
        raise ValueError("scores must be finite")
    return relevant, values


def average_precision(is_relevant, scores) -> float:
    """Average precision of one query, equal to sklearn's average_precision_score.

    AP = sum over distinct score thresholds t (highest first) of (R_t - R_{t-1}) * P_t, where P_t and R_t
    are the precision and recall of "every document scoring >= t". Documents with equal scores enter
    together. The terms are summed in sklearn's order so that the result matches it to the last bit.
    """
    relevant, values = _check_query(is_relevant, scores)
    if not relevant.any():
        raise ValueError("average precision needs at least one relevant document")
    order = np.argsort(-values, kind="stable")  # [n] best first
    ranked = values[order]
    # Index of the last document of each group of equal scores: one threshold per group.
    last = np.append(np.flatnonzero(np.diff(ranked) != 0), ranked.size - 1)  # [m]
    hits = np.cumsum(relevant[order], dtype=np.float64)[last]  # [m] relevant documents at or above t
    precision = hits / (last + 1.0)
    recall = hits / hits[-1]
    terms = np.diff(recall, prepend=0.0) * precision  # [m]
    # sklearn sums the negated terms from the lowest threshold up (its curve runs from recall 1 to 0);
    # pairwise summation of the same sequence gives the same bits.
    return float(max(0.0, np.sum(np.ascontiguousarray(terms[::-1]))))


def mrr_at_k(is_relevant, scores, k: int = 10) -> float:
    """Reciprocal rank of the first relevant document within the top k, else 0 (one query).

    Ranks come from np.argsort(-scores) with numpy's default sort, the call C-MTEB made, so that tied
    scores are ordered as they were there.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    relevant, values = _check_query(is_relevant, scores)
    top = relevant[np.argsort(-values)[:k]]  # [min(k, n)] relevance in ranked order
    hits = np.flatnonzero(top)
    return 1.0 / (int(hits[0]) + 1) if hits.size else 0.0


def per_query_metrics(queries: Iterable[tuple], k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(AP per query, RR@k per query) for an iterable of (is_relevant, scores) pairs."""
    ap, rr = [], []
    for is_relevant, scores in queries:
        ap.append(average_precision(is_relevant, scores))
        rr.append(mrr_at_k(is_relevant, scores, k))
    return np.array(ap, dtype=np.float64), np.array(rr, dtype=np.float64)


def mean_average_precision(queries: Iterable[tuple]) -> float:
    """MAP: the mean of the per-query AP, as mteb's np.mean(all_ap_scores)."""
    ap, _ = per_query_metrics(queries)
    if ap.size == 0:
        raise ValueError("no queries to average")
    return float(np.mean(ap))


def mean_reciprocal_rank(queries: Iterable[tuple], k: int = 10) -> float:
    """MRR@k: the mean of the per-query RR@k, as mteb's np.mean(all_mrr_scores)."""
    _, rr = per_query_metrics(queries, k)
    if rr.size == 0:
        raise ValueError("no queries to average")
    return float(np.mean(rr))


def bootstrap_interval(
    values, seed: int | Sequence[int], resamples: int = 2000, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean of per-query values.

    Queries are resampled with replacement `resamples` times; the interval is the central `level` share
    of the resampled means. It describes how far a mean over this many sampled queries may sit from the
    mean over all queries.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError("bootstrap_interval needs a non-empty 1-d array of per-query values")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, values.size, size=(resamples, values.size))  # [resamples, n]
    means = values[draws].mean(axis=1)  # [resamples]
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)
