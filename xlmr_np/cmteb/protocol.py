"""The evaluation protocol behind the published figures (mteb 1.1 RerankingEvaluator, C-MTEB's
ChineseRerankingEvaluator): which rows of a task's file are queries, and which pairs each one scores.

1. read the task's parquet file: one row per query, with columns `query` (str), `positive` and
   `negative` (lists of str);
2. drop the rows that have no positive or no negative (mteb's RerankingEvaluator.__init__);
3. score the pairs [query, document], positives first, then negatives (Query.documents);
4. AP and RR@10 per query (xlmr_np.cmteb.metrics); MAP and MRR@10 are their means, in percent
   (xlmr_np.cmteb.results).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetError


@dataclass
class Query:
    """One dataset row: a query with its positive and negative documents."""

    row: int  # row index in the parquet file
    text: str
    positives: list[str]
    negatives: list[str]

    @property
    def documents(self) -> list[str]:
        return self.positives + self.negatives


def read_rows(path: str | Path) -> list[Query]:
    """Every row of a C-MTEB reranking parquet file, checked against the expected column layout."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DatasetError("reading the datasets needs pyarrow: pip install 'xlmr-np[eval]'") from None
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError subclasses for unreadable files
        raise DatasetError(f"{path}: not a readable parquet file ({e})") from e
    missing = [c for c in ("query", "positive", "negative") if c not in table.column_names]
    if missing:
        raise DatasetError(
            f"{path}: missing column(s) {missing}; expected query (str), positive and negative "
            f"(lists of str), found {table.column_names}"
        )
    columns = [table.column(c).to_pylist() for c in ("query", "positive", "negative")]
    rows = []
    for i, (query, positives, negatives) in enumerate(zip(*columns)):
        if not isinstance(query, str) or not _is_texts(positives) or not _is_texts(negatives):
            raise DatasetError(
                f"{path}: row {i} is not (str, list of str, list of str): "
                f"{type(query).__name__}, {type(positives).__name__}, {type(negatives).__name__}"
            )
        rows.append(Query(i, query, positives, negatives))
    return rows


def _is_texts(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def apply_protocol(rows: list[Query]) -> list[Query]:
    """Keep the rows with at least one positive and one negative, in order (mteb drops the others)."""
    return [q for q in rows if q.positives and q.negatives]


def sample_queries(queries: list[Query], max_queries: int, seed: int) -> list[Query]:
    """A uniform sample of max_queries queries (all of them if there are fewer), kept in dataset order."""
    if max_queries >= len(queries):
        return list(queries)
    chosen = np.random.default_rng(seed).choice(len(queries), size=max_queries, replace=False)
    return [queries[i] for i in sorted(chosen.tolist())]
