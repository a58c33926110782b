"""Metric parity: xlmr_np.cmteb.metrics against sklearn's average_precision_score and mteb's MRR@10.

The MRR oracle re-derives the computation behind the published figures, from the sources:
- C-MTEB (FlagEmbedding C_MTEB/C_MTEB/tasks/Reranking.py, ChineseRerankingEvaluator.
  compute_metrics_batched_from_crossencoder): `pred_scores = np.array(scores)`,
  `pred_scores_argsort = np.argsort(-pred_scores)`, then mteb's `mrr_at_k_score(is_relevant,
  pred_scores_argsort, 10)`;
- mteb 1.1 (mteb/evaluation/evaluators/RerankingEvaluator.py), `mrr_at_k_score`: walk the first k
  indices of the ranking and return 1 / (rank + 1) at the first relevant one, else 0.
mteb itself is not installed (it pulls torch, datasets and more); the oracle below is that loop.
"""

from __future__ import annotations

import numpy as np
import pytest

from xlmr_np.cmteb.metrics import (
    average_precision,
    bootstrap_interval,
    mean_average_precision,
    mean_reciprocal_rank,
    mrr_at_k,
    per_query_metrics,
)
from xlmr_np.testing import require


@pytest.fixture(scope="module")
def sklearn_metrics():
    return require("sklearn.metrics", "metrics against sklearn")  # in the test extra; a failure, not a skip, in CI


def mteb_mrr_at_k(is_relevant, scores, k=10):
    """mteb's mrr_at_k_score over C-MTEB's np.argsort(-scores) ranking."""
    ranking = np.argsort(-np.array(scores))
    for rank, index in enumerate(ranking[:k]):
        if is_relevant[index]:
            return 1 / (rank + 1)
    return 0


def random_queries(seed: int, count: int):
    """(is_relevant, scores) per query: ties (small integer scores), float32 logits, all-relevant,
    single-relevant and single-document queries, like the four C-MTEB tasks and their edge cases."""
    rng = np.random.default_rng(seed)
    queries = []
    for i in range(count):
        n = int(rng.choice([1, 2, 3, 10, 100, 335, 1000]))
        kind = i % 5
        if kind == 0:  # heavy ties
            scores = rng.integers(0, 4, n).astype(np.float64)
        elif kind == 1:  # float32 logits, as the model returns them
            scores = rng.standard_normal(n).astype(np.float32).astype(np.float64) * 5
        elif kind == 2:  # everything tied
            scores = np.full(n, 0.25)
        else:
            scores = np.round(rng.standard_normal(n), 1)  # some ties
        if kind == 3:  # exactly one relevant document
            relevant = np.zeros(n, dtype=bool)
            relevant[rng.integers(n)] = True
        elif kind == 4 and i % 2:  # all relevant
            relevant = np.ones(n, dtype=bool)
        else:
            relevant = rng.random(n) < rng.random()
            relevant[rng.integers(n)] = True
        queries.append((relevant, scores))
    return queries


@pytest.mark.parametrize("seed", [0, 1])
def test_average_precision_matches_sklearn_bit_for_bit(seed, sklearn_metrics):
    for relevant, scores in random_queries(seed, 400):
        expected = sklearn_metrics.average_precision_score(relevant, scores)
        assert average_precision(relevant, scores) == expected, (relevant.tolist(), scores.tolist())
        # lists of 0/1 and float32 arrays are accepted as well
        assert average_precision(
            relevant.astype(int).tolist(), scores.astype(np.float32)
        ) == sklearn_metrics.average_precision_score(relevant, scores.astype(np.float32))


@pytest.mark.parametrize("seed", [0, 1])
def test_mrr_matches_mteb(seed):
    for relevant, scores in random_queries(seed, 400):
        for k in (1, 3, 10):
            assert mrr_at_k(relevant, scores, k) == mteb_mrr_at_k(relevant.tolist(), scores.tolist(), k)


def test_mrr_without_ties_is_the_rank_of_the_best_relevant_document():
    """An oracle that does not sort: rank = 1 + number of documents scored above the best relevant one."""
    rng = np.random.default_rng(7)
    for _ in range(300):
        n = int(rng.integers(1, 60))
        scores = rng.permutation(n).astype(np.float64)  # distinct
        relevant = rng.random(n) < 0.2
        relevant[rng.integers(n)] = True
        rank = 1 + int((scores > scores[relevant].max()).sum())
        assert mrr_at_k(relevant, scores, 10) == (1 / rank if rank <= 10 else 0.0)


def test_worked_examples():
    # precision 1/1 at the first relevant document, 2/3 at the second
    assert average_precision([1, 0, 1], [0.9, 0.8, 0.1]) == pytest.approx((1 + 2 / 3) / 2, abs=1e-15)
    # a relevant and an irrelevant document tied: one threshold, precision 1/2, whatever the order
    assert average_precision([True, False], [0.5, 0.5]) == 0.5
    assert average_precision([False, True], [0.5, 0.5]) == 0.5
    assert average_precision([True, True, True], [3.0, 1.0, 2.0]) == 1.0
    assert mrr_at_k([False] * 10 + [True], list(range(11, 0, -1)), k=10) == 0.0
    assert mrr_at_k([False] * 9 + [True], list(range(10, 0, -1)), k=10) == 0.1


def test_dataset_means_match_sklearn_and_mteb(sklearn_metrics):
    queries = random_queries(3, 200)
    ap, rr = per_query_metrics(queries)
    assert ap.shape == rr.shape == (200,)
    assert mean_average_precision(queries) == np.mean(
        [sklearn_metrics.average_precision_score(r, s) for r, s in queries]
    )
    assert mean_reciprocal_rank(queries) == np.mean([mteb_mrr_at_k(r, s) for r, s in queries])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: average_precision([0, 0], [1.0, 2.0]), "at least one relevant"),
        (lambda: average_precision([1, 0], [1.0]), "shape"),
        (lambda: average_precision([], []), "non-empty"),
        (lambda: average_precision([1, 2], [1.0, 2.0]), "booleans or 0/1"),
        (lambda: average_precision([1, 0], [1.0, float("nan")]), "finite"),
        (lambda: mrr_at_k([1, 0], [1.0, 0.0], k=0), "positive int"),
        (lambda: mean_average_precision([]), "no queries"),
        (lambda: mean_reciprocal_rank([]), "no queries"),
        (lambda: bootstrap_interval([], seed=0), "non-empty"),
    ],
)
def test_bad_input_is_explained(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_bootstrap_interval():
    values = np.random.default_rng(0).random(400)
    low, high = bootstrap_interval(values, seed=5)
    assert low < values.mean() < high
    assert (low, high) == bootstrap_interval(values, seed=5)  # reproducible from the seed
    # the standard error of a mean of 400 uniform values is 0.0144: a 95% interval spans about 4 of them
    assert 0.04 < high - low < 0.075
    assert bootstrap_interval(np.full(10, 0.3), seed=1) == pytest.approx((0.3, 0.3))
