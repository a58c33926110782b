"""Random datasets in the C-MTEB reranking layout, to try `xlmr-np eval` where the real ones cannot be
downloaded: each task's parquet file (columns query, positive, negative) at the path `--data-dir` reads,
DIR/<dataset repo>/<file in the repo>, with one positive and `docs - 1` negatives per query.

The texts are random Han characters at each task's average query and document length in characters (mteb's
descriptive statistics, mteb/descriptive_stats/Reranking/<task>.json), so a run costs what the task's pairs
cost per pair; its MAP and MRR@10 mean nothing.

    >>> write_synthetic("eval-data", "CMedQAv2-reranking", queries=6, docs=8)   # doctest: +SKIP
    [PosixPath('eval-data/C-MTEB/CMedQAv2-reranking/data/test-00000-of-00001-18c9589af3bb5d3a.parquet')]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DatasetError, InputError
from .tasks import Task, local_dataset_file, resolve_tasks

# task: (average query characters, average document characters)
AVERAGE_CHARS = {
    "T2Reranking": (10.948, 840.83),
    "MMarcoReranking": (11.44, 123.77),
    "CMedQAv1-reranking": (55.717, 106.64),
    "CMedQAv2-reranking": (48.848, 100.61),
}
HAN = (0x4E00, 0x9FA6)  # CJK Unified Ideographs, the block the tasks' Chinese text is written in


def synthetic_rows(task: Task, queries: int, docs: int, seed: int) -> dict:
    """Columns query / positive / negative: `queries` rows of one positive and docs - 1 negatives."""
    if queries < 1 or docs < 2:
        raise InputError(
            f"need at least 1 query and 2 documents per query (a positive and a negative), got {queries}, {docs}"
        )
    rng = np.random.default_rng([seed, *task.name.encode()])
    query_chars, doc_chars = (round(n) for n in AVERAGE_CHARS[task.name])

    def text(n: int) -> str:
        return "".join(map(chr, rng.integers(*HAN, size=n)))

    rows: dict[str, list] = {"query": [], "positive": [], "negative": []}
    for _ in range(queries):
        rows["query"].append(text(query_chars))
        rows["positive"].append([text(doc_chars)])
        rows["negative"].append([text(doc_chars) for _ in range(docs - 1)])
    return rows


def write_synthetic(
    data_dir: str | Path, task_name: str, queries: int = 20, docs: int = 10, seed: int = 0
) -> list[Path]:
    """Write random datasets of one task (or "all") under data_dir, where `--data-dir data_dir` reads them."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DatasetError("writing parquet files needs pyarrow: pip install 'xlmr-np[eval]'") from None
    schema = pa.schema(
        [("query", pa.string()), ("positive", pa.list_(pa.string())), ("negative", pa.list_(pa.string()))]
    )
    written = []
    for task in resolve_tasks(task_name):
        path = local_dataset_file(Path(data_dir), task)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(synthetic_rows(task, queries, docs, seed), schema=schema), path)
        written.append(path)
    return written
