"""Running an evaluation: plan each task, score what the cache lacks, then report or write a shard.

At CPU speed the four tasks (about 400,000 pairs) take hours, so scoring is organised for that:

- a *plan* (xlmr_np.cmteb.plan) fixes each task's work: its distinct pairs in dataset order, cut into
  batches of `batch_size`, so that every pair is computed in the same batch however the run is split;
- scores go to a ScoreCache (xlmr_np.cmteb.score_cache) after every batch, so a killed run loses only
  the batches in flight, and a finished run re-scores from the cache without loading the model;
- `shard=(i, n)` scores one interleaved share of the batches and writes a shard file for
  xlmr_np.cmteb.shards.merge_shards.

The model is resolved once, in this process; it is loaded only if some score is missing, and then
once: here (workers=1) or in each worker process, never both.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from ..config import XLMRobertaConfig
from ..device import DEFAULT_DEVICE, check_device
from ..errors import InputError
from ..family import identify, resolve_max_length
from ..hub import resolve_model_dir
from .plan import Plan, make_plan, shard_batches
from .protocol import apply_protocol, read_rows, sample_queries
from .results import check_output_dir, task_result, write_json
from .score_cache import ScoreCache
from .scorer import Pairs, Scorer, model_fingerprint
from .shards import write_shard
from .tasks import Task, dataset_file, resolve_tasks


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/xlmr-np/scores, else ~/.cache/xlmr-np/scores."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "xlmr-np" / "scores"


@dataclass
class TaskRun:
    task: Task
    plan: Plan
    cache: ScoreCache
    batches: range  # the batches this run is responsible for
    todo: dict[int, Pairs]  # those of them with a pair not cached yet
    sample: dict | None


def scoring_settings(max_length: int, truncation: str, device: str = DEFAULT_DEVICE) -> dict:
    """What, besides the model's files, decides a score: part of the score cache's key. A GPU's float32
    scores differ from the CPU's in their last bits, so they are cached apart (and shards of both are not
    merged); "device" is left out for the CPU, so the CPU's cache keys stay as they were."""
    settings = {"max_length": max_length, "truncation": truncation, "dtype": "float32"}
    return settings if device == DEFAULT_DEVICE else dict(settings, device=check_device(device))


@dataclass(frozen=True)
class ModelToEvaluate:
    """A model argument resolved once: its directory, the scoring settings in force (the length limit
    resolved: None means the model's own) and the known model it is, for the published figures."""

    directory: Path
    fingerprint: str  # model_fingerprint: the score cache's key, with the settings
    settings: dict
    known_model: str | None  # a known model's repo id (xlmr_np.family), or None

    @classmethod
    def resolve(
        cls,
        model: str | Path,
        max_length: int | None,
        truncation: str,
        revision: str | None = None,
        device: str = DEFAULT_DEVICE,
    ) -> ModelToEvaluate:
        directory = resolve_model_dir(model, revision=revision)  # a directory, or a hub repo id (its cache)
        fingerprint = model_fingerprint(directory)  # first: it names every missing file at once
        config = XLMRobertaConfig.from_file(directory / "config.json")
        settings = scoring_settings(resolve_max_length(directory, config, max_length), truncation, device)
        known = identify(config, str(model)) or identify(config, directory)
        return cls(directory, fingerprint, settings, known.repo_id if known is not None else None)


def cache_root(cache_dir: str | Path | None, fingerprint: str, settings: dict) -> Path:
    """The score cache directory of one model and scoring settings (one subdirectory per task in it)."""
    model_key = hashlib.sha256((fingerprint + json.dumps(settings, sort_keys=True)).encode()).hexdigest()[:16]
    return Path(cache_dir if cache_dir is not None else default_cache_dir()) / model_key


def task_cache_dir(root: Path, task: Task) -> Path:
    return root / f"{task.name}-{task.revision[:12]}"


def task_plan(
    task: Task, batch_size: int, max_queries: int | None, seed: int, data_dir: str | Path | None = None
) -> tuple[Plan, dict | None]:
    """The task's plan (all its kept queries, or a sample of them) and the sample's description."""
    queries = apply_protocol(read_rows(dataset_file(task, data_dir)))
    sample = None
    if max_queries is not None:
        sample = {"max_queries": max_queries, "seed": seed, "of_queries": len(queries)}
        queries = sample_queries(queries, max_queries, seed)
    return make_plan(task, queries, batch_size), sample


def _prepare(
    task: Task,
    root: Path,
    header: dict,
    writer: str,
    batch_size: int,
    shard: tuple[int, int] | None,
    max_queries: int | None,
    seed: int,
    data_dir: str | Path | None,
) -> TaskRun:
    plan, sample = task_plan(task, batch_size, max_queries, seed, data_dir)
    header = dict(header, task=task.name, dataset=task.repo, revision=task.revision)
    cache = ScoreCache(task_cache_dir(root, task), header, writer)
    batches = shard_batches(plan.n_batches, shard)
    todo = {
        b: [plan.pairs[j] for j in plan.batch(b)]
        for b in batches
        if any(plan.keys[j] not in cache for j in plan.batch(b))
    }
    return TaskRun(task, plan, cache, batches, todo, sample)


def run_eval(
    model_dir: str | Path,
    task_name: str,
    *,
    out_dir: str | Path,
    cache_dir: str | Path | None = None,
    batch_size: int = 32,
    workers: int = 1,
    shard: tuple[int, int] | None = None,
    max_queries: int | None = None,
    seed: int = 0,
    max_length: int | None = None,
    truncation: str = "longest_first",
    revision: str | None = None,
    data_dir: str | Path | None = None,
    stream: TextIO | None = None,
    device: str = DEFAULT_DEVICE,
) -> dict:
    """Evaluate a model (directory or hub repo id) on one task or "all"; returns the results (None for a
    shard), the files written and the number of pairs scored (those the cache lacked).

    Without shard: writes out_dir/results.json (the table and the per-query figures). With shard=(i, n):
    writes out_dir/<task>.shard-<i>-of-<n>.json per task, for merge_shards(). revision: the hub branch,
    tag or commit of a hub repo id (default: main). data_dir: a directory holding the datasets' files
    (xlmr_np.cmteb.tasks.local_dataset_file) instead of the hub. device: where the scores are computed
    (xlmr_np.device), in this process or each worker process.
    """
    if shard is not None and not (0 <= shard[0] < shard[1]):
        raise InputError(f"shard must be (i, n) with 0 <= i < n, got {shard}")
    out = Path(out_dir)
    check_output_dir(out)  # before hours of scoring, not after
    model = ModelToEvaluate.resolve(model_dir, max_length, truncation, revision, device)
    directory, fingerprint, settings = model.directory, model.fingerprint, model.settings
    root = cache_root(cache_dir, fingerprint, settings)
    writer = "all" if shard is None else f"shard-{shard[0]}-of-{shard[1]}"
    header = {"model_fingerprint": fingerprint, "settings": settings}
    log = stream if stream is not None else sys.stderr
    runs: list[TaskRun] = []
    try:
        for task in resolve_tasks(task_name):
            runs.append(_prepare(task, root, header, writer, batch_size, shard, max_queries, seed, data_dir))
        total = sum(len(p) for run in runs for p in run.todo.values())
        scorer = Scorer(directory, settings, workers)
        try:
            if total:
                scorer.start()
            else:
                print("every score is in the cache: nothing to compute", file=log)
            progress = Progress(total, log)
            for run in runs:
                for b, scores in scorer.map(run.todo):
                    run.cache.append([run.plan.keys[j] for j in run.plan.batch(b)], scores)
                    progress.advance(len(scores), run.task.name)
        finally:
            scorer.close()
        common = {
            "model": str(directory),
            "model_fingerprint": fingerprint,
            "settings": settings,
            "batch_size": batch_size,
            "known_model": model.known_model,
        }
        if shard is not None:
            files = [
                write_shard(out, run.plan, run.cache.scores, run.batches, run.sample, shard, common) for run in runs
            ]
            return {"results": None, "files": files, "scored": total}
        results = dict(
            common,
            tasks=[
                task_result(
                    run.task,
                    run.plan.structure,
                    np.array([run.cache.scores[k] for k in run.plan.keys]),
                    run.sample,
                    model.known_model,
                )
                for run in runs
            ],
        )
        write_json(out / "results.json", results)
        return {"results": results, "files": [out / "results.json"], "scored": total}
    finally:
        for run in runs:
            run.cache.close()


class Progress:
    """Pairs scored, pairs/s and time remaining, printed at most every `interval` seconds."""

    def __init__(self, total: int, stream: TextIO | None = None, interval: float = 2.0, clock=time.monotonic):
        self.total = total
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self.shown = -math.inf

    def advance(self, pairs: int, label: str) -> None:
        self.done += pairs
        now = self.clock()
        if now - self.shown >= self.interval or self.done >= self.total:
            self.shown = now
            print(self.line(label, now), file=self.stream, flush=True)

    def line(self, label: str, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else math.inf
        return (
            f"{label}: {self.done:,}/{self.total:,} pairs ({100 * self.done / max(self.total, 1):.1f}%), "
            f"{rate:.1f} pairs/s, {_duration(elapsed)} elapsed, ETA {_duration(eta)}"
        )


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
