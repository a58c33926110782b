"""Reproduce bge-reranker-base's C-MTEB reranking scores (MAP and MRR@10) with the numpy model.

One responsibility per module, in the order a run uses them:

- tasks: the four tasks, their pinned dataset revisions and the published figures;
- protocol: rows of a task's parquet file -> the queries mteb keeps -> an optional sample;
- plan: the distinct pairs of those queries, cut into fixed batches;
- score_cache: an append-only file of pair scores, so a long run resumes where it stopped;
- scorer: the model's fingerprint, and scoring batches in this process or in workers;
- metrics: AP and RR@10 exactly as C-MTEB computed them, and the bootstrap interval;
- results: per-task MAP and MRR@10 beside the published figures, the table and results.json;
- shards: one machine's share of a run, and merging the shares;
- runner: run_eval, which ties them together (`xlmr-np eval` is a thin layer over it).

    >>> from xlmr_np.cmteb import run_eval, format_table                       # doctest: +SKIP
    >>> done = run_eval("BAAI/bge-reranker-base", "CMedQAv2-reranking", out_dir="eval-results")
    >>> print(format_table(done["results"]))
"""

from .protocol import Query, apply_protocol, read_rows
from .results import format_table
from .runner import default_cache_dir, run_eval
from .shards import merge_shards
from .tasks import TASKS, Task, resolve_tasks

__all__ = [
    "TASKS",
    "Query",
    "Task",
    "apply_protocol",
    "default_cache_dir",
    "format_table",
    "merge_shards",
    "read_rows",
    "resolve_tasks",
    "run_eval",
]
