"""The plan: which distinct pairs a task scores, and in which batch each one is computed.

The same plan is scored by an uninterrupted run, a resumed run or a set of shards, so every pair is
computed in the same batch and all of them give the same bits.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from .protocol import Query
from .score_cache import pair_key
from .tasks import Task

# Per query: [row, number of positives, indices into the plan's pairs of its documents]; lists, not
# tuples, so that it survives a round trip through a shard file's JSON unchanged.
Structure = list[list]


@dataclass
class Plan:
    """The distinct pairs of a list of queries, in first-seen order, cut into fixed batches."""

    task: Task
    pairs: list[tuple[str, str]]
    keys: list[bytes]  # pair_key of each pair
    structure: Structure
    batch_size: int
    digest: str

    @property
    def n_batches(self) -> int:
        return math.ceil(len(self.pairs) / self.batch_size)

    def batch(self, b: int) -> range:
        return range(b * self.batch_size, min((b + 1) * self.batch_size, len(self.pairs)))


def plan_digest(task_name: str, revision: str, batch_size: int, keys: Sequence[bytes], structure: Structure) -> str:
    """sha256 over everything that decides which scores a plan needs and how they are batched."""
    h = hashlib.sha256(json.dumps([task_name, revision, batch_size, structure]).encode("utf-8"))
    h.update(b"".join(keys))
    return h.hexdigest()


def make_plan(task: Task, queries: list[Query], batch_size: int) -> Plan:
    """Number the distinct (query, document) pairs and batch them; repeated pairs are scored once."""
    index: dict[bytes, int] = {}
    pairs: list[tuple[str, str]] = []
    keys: list[bytes] = []
    structure: Structure = []
    for q in queries:
        positions = []
        for document in q.documents:
            key = pair_key(q.text, document)
            if key not in index:
                index[key] = len(keys)
                keys.append(key)
                pairs.append((q.text, document))
            positions.append(index[key])
        structure.append([q.row, len(q.positives), positions])
    digest = plan_digest(task.name, task.revision, batch_size, keys, structure)
    return Plan(task, pairs, keys, structure, batch_size, digest)


def shard_batches(n_batches: int, shard: tuple[int, int] | None) -> range:
    """Batches i, i+n, i+2n, ... for shard (i, n): interleaved, so shards get similar work.

    >>> list(shard_batches(7, (1, 3)))
    [1, 4]
    """
    if shard is None:
        return range(n_batches)
    i, n = shard
    return range(i, n_batches, n)
