"""Fan an evaluation's shards out on a backend, watch them, retry the lost ones, and merge the results.

This is the driver; the backends and what a shard runs on its worker are in xlmr_np.cmteb.backends.

`xlmr-np eval --shard I/N` scores one interleaved share of every task's batches and `xlmr-np merge`
combines the shares into exactly the results of one run (xlmr_np.cmteb.shards). This module runs all N
shares for you on an existing backend:

- local: a pool of processes on this machine (no extra dependency);
- dask: a dask.distributed scheduler (`address` tcp://host:8786), or a LocalCluster when none is given;
- ray: a Ray cluster (`address` ray://host:10001 or "auto"), or a local Ray instance;
- slurm: a Slurm job array through submitit, or submitit's LocalExecutor (`slurm.local`) to try it here.

The driver (this process) first plans the run: it reads every task's dataset, hashes the model and
reads the score cache, so that a missing file fails here, at once, rather than in N jobs, and so that
it knows how many pairs each shard still has to score. Each shard then runs run_eval(shard=(i, n)) on a
worker (backends.run_shard) and sends its shard files back; the driver writes them under out_dir/shards
and merges them into out_dir/results.json.

Where a worker finds its inputs: the model argument and the cache directory are passed as given, so a
model *directory* must exist at the same path on every worker (shared storage), while a hub repo id is
resolved on each worker through its own hub cache ($HF_HUB_CACHE: shared storage, or a download per
worker). A worker that cannot find them fails its shard with the same error a single run gives
(ConfigError "not a directory", HubError, DatasetError naming the dataset file it lacks), which stops the
whole run and names the shard and the host.

A shard whose worker dies (killed, out of memory, node lost, job cancelled) is submitted again, up to
`retries` times. Its score cache file holds every batch it finished, so the new attempt resumes where
the dead one stopped, provided the cache directory is the same storage for both (shared storage, or the
same machine). Errors of the evaluation itself (a missing file, a corrupted cache) are not retried.

Progress (shards done, pairs scored, pairs/s, time left) is printed every few seconds. Pairs are counted
live from the shards' score cache files when the driver can read the cache directory, else as each
shard finishes.
"""

from __future__ import annotations

import math
import os
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ..device import DEFAULT_DEVICE
from ..errors import InputError
from ..hub import resolve_model_dir
from .backends import Backend, ExecutorError, ShardSpec, SlurmOptions, local_cores, make_backend
from .plan import shard_batches
from .results import write_json
from .runner import (
    ModelToEvaluate,
    _duration,
    cache_root,
    default_cache_dir,
    scoring_settings,
    task_cache_dir,
    task_plan,
)
from .score_cache import RECORD, read_score_file
from .scorer import model_fingerprint
from .shards import merge_shards
from .tasks import resolve_tasks

__all__ = ["ExecutorError", "SlurmOptions", "fan_out", "run_on_backend", "survey"]


# ----------------------------------------------------------------------------------------------------
# The driver's survey: every task's plan and what the cache already holds


@dataclass
class TaskSurvey:
    name: str
    cache_dir: Path  # this task's score cache directory
    uncached: np.ndarray  # [n_batches] pairs of each batch not in the cache yet


@dataclass
class Survey:
    fingerprint: str
    tasks: list[TaskSurvey]

    def todo(self, n: int) -> list[int]:
        """Pairs each of n shards has to score: shard i takes batches i, i+n, ... of every task."""
        return [
            sum(int(t.uncached[shard_batches(len(t.uncached), (i, n))].sum()) for t in self.tasks) for i in range(n)
        ]


def survey(
    model: str,
    task_name: str,
    cache_dir: Path,
    batch_size: int,
    max_queries: int | None,
    seed: int,
    max_length: int,
    truncation: str,
    revision: str | None = None,
    data_dir: str | Path | None = None,
    device: str = DEFAULT_DEVICE,
) -> Survey:
    """Plan every task as the shards will, and count the pairs the score cache lacks, batch by batch."""
    settings = scoring_settings(max_length, truncation, device)
    fingerprint = model_fingerprint(resolve_model_dir(model, revision=revision))
    root = cache_root(cache_dir, fingerprint, settings)
    tasks = []
    for task in resolve_tasks(task_name):
        plan, _ = task_plan(task, batch_size, max_queries, seed, data_dir)
        directory = task_cache_dir(root, task)
        header = {
            "model_fingerprint": fingerprint,
            "settings": settings,
            "task": task.name,
            "dataset": task.repo,
            "revision": task.revision,
        }
        cached: set[bytes] = set()
        for path in sorted(directory.glob("scores-*.bin")):
            cached.update(read_score_file(path, header)[0])
        missing = np.array([key not in cached for key in plan.keys], dtype=np.int64)  # [pairs]
        uncached = np.add.reduceat(missing, np.arange(0, len(missing), batch_size)) if len(missing) else missing
        tasks.append(TaskSurvey(task.name, directory, uncached))
    return Survey(fingerprint, tasks)


_HEADER = struct.Struct("<8sII")  # a score cache file's magic, version and header length (xlmr_np.cmteb.score_cache)


def records_in(path: Path) -> int:
    """Whole records in a score cache file now (0 if it does not exist yet), from its size alone."""
    try:
        with open(path, "rb") as f:
            prefix = f.read(_HEADER.size)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        return 0
    if len(prefix) < _HEADER.size:
        return 0
    start = _HEADER.size + _HEADER.unpack(prefix)[2] + 4  # the header's crc32 follows it
    return max(0, size - start) // RECORD.size


def written(survey: Survey, i: int, n: int) -> int:
    """Records the shard's own cache files hold now, over every task."""
    return sum(records_in(t.cache_dir / f"scores-shard-{i}-of-{n}.bin") for t in survey.tasks)


# ----------------------------------------------------------------------------------------------------
# Progress


class ClusterProgress:
    """One line every `interval` seconds: shards done and running, pairs scored, pairs/s, time left."""

    def __init__(
        self,
        total: int,
        shards: int,
        stream: TextIO,
        interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total = total
        self.shards = shards
        self.stream = stream
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self.shown = -math.inf

    def due(self) -> bool:
        return self.clock() - self.shown >= self.interval

    def show(self, done: int, finished: int, running: int, retried: int) -> None:
        now = self.clock()
        self.shown = now
        print(self.line(done, finished, running, retried, now), file=self.stream, flush=True)

    def line(self, done: int, finished: int, running: int, retried: int, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = done / elapsed
        eta = 0.0 if done >= self.total else (self.total - done) / rate if rate > 0 else math.inf
        retries = f", {retried} retried" if retried else ""
        return (
            f"shards {finished}/{self.shards} done, {running} running{retries}; "
            f"{done:,}/{self.total:,} pairs ({100 * done / max(self.total, 1):.1f}%), {rate:.1f} pairs/s, "
            f"{_duration(elapsed)} elapsed, ETA {_duration(eta)}"
        )


# ----------------------------------------------------------------------------------------------------
# The driver


@dataclass
class Attempt:
    shard: int
    number: int  # 1 for the first attempt
    handle: Any


def fan_out(
    backend: Backend,
    spec: ShardSpec,
    survey: Survey,
    retries: int,
    log: TextIO,
    interval: float = 5.0,
    keep: Callable[[int, dict], dict] = lambda i, value: value,
) -> dict[int, dict]:
    """Run every shard of spec on the backend; keep(i, value) of each shard's run_shard() value, by shard,
    once all have succeeded (keep writes a shard's files as it arrives, so they are not all held at once).

    A shard whose worker was lost is submitted again (up to `retries` times); a shard whose evaluation
    failed stops the run (ExecutorError naming the shard and host), cancelling the others.
    """
    n = spec.n
    todo = survey.todo(n)
    start_records = [written(survey, i, n) for i in range(n)]
    progress = ClusterProgress(sum(todo), n, log, interval)
    waiting = list(range(n))
    limit = backend.max_in_flight or n
    running: list[Attempt] = []
    results: dict[int, dict] = {}
    attempts = dict.fromkeys(range(n), 0)
    retried = 0

    def launch(shards: list[int]) -> None:
        for i in shards:
            attempts[i] += 1
        for i, handle in zip(shards, backend.submit(spec, shards)):
            running.append(Attempt(i, attempts[i], handle))

    def scored() -> int:
        return sum(
            todo[i] if i in results else min(todo[i], max(0, written(survey, i, n) - start_records[i]))
            for i in range(n)
        )

    try:
        launch(waiting[:limit])
        del waiting[:limit]
        while running:
            finished = backend.wait([a.handle for a in running], timeout=min(interval, 1.0))
            for attempt in [a for a in running if a.handle in finished]:
                running.remove(attempt)
                i = attempt.shard
                try:
                    value = backend.result(attempt.handle)
                except Exception as e:  # the backend lost the shard: its worker died, its job was killed
                    reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                    if attempts[i] > retries:
                        raise ExecutorError(f"shard {i}/{n} failed {attempts[i]} times; the last: {reason}") from e
                    retried += 1
                    print(
                        f"shard {i}/{n}: attempt {attempts[i]} lost ({reason}); retrying, it resumes from "
                        f"its score cache",
                        file=log,
                        flush=True,
                    )
                    launch([i])
                    continue
                if "error" in value:
                    raise ExecutorError(f"shard {i}/{n} on {value['host']} (pid {value['pid']}): {value['error']}")
                results[i] = keep(i, value)
                print(
                    f"shard {i}/{n} done on {value['host']} (pid {value['pid']}, attempt {attempts[i]}): "
                    f"{value['scored']:,} pairs scored in {_duration(value['seconds'])}",
                    file=log,
                    flush=True,
                )
                if waiting:
                    launch([waiting.pop(0)])
            if progress.due() or not running:
                progress.show(scored(), len(results), len(running), retried)
    finally:
        if running:
            backend.cancel([a.handle for a in running])
    return results


def _write_files(directory: Path) -> Callable[[int, dict], dict]:
    """keep() for fan_out: write a shard's files into directory, keep their paths instead of their text."""

    def keep(i: int, value: dict) -> dict:
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in value["files"].items():
            (directory / name).write_text(text, encoding="utf-8")
        return dict(value, files=[directory / name for name in value["files"]])

    return keep


def run_on_backend(
    model: str | Path,
    task_name: str,
    *,
    executor: str,
    out_dir: str | Path,
    shards: int | None = None,
    cache_dir: str | Path | None = None,
    batch_size: int = 32,
    max_queries: int | None = None,
    seed: int = 0,
    max_length: int | None = None,
    truncation: str = "longest_first",
    address: str | None = None,
    workers: int | None = None,
    cores_per_shard: int = 1,
    retries: int = 2,
    slurm: SlurmOptions | None = None,
    revision: str | None = None,
    data_dir: str | Path | None = None,
    stream: TextIO | None = None,
    interval: float = 5.0,
    device: str = DEFAULT_DEVICE,
) -> dict:
    """run_eval's results, computed as `shards` shards on a backend (see the module docstring).

    workers: shards run at once on this machine when the backend is local (a LocalCluster, a local Ray,
    the local pool, submitit's LocalExecutor); default: the cores over cores_per_shard. shards: default
    the number of shards the backend runs at once. Writes out_dir/shards/*.json and out_dir/results.json.
    """
    log = stream if stream is not None else sys.stderr
    out = Path(out_dir)
    cache = Path(cache_dir if cache_dir is not None else default_cache_dir()).absolute()
    # workers may start in another directory: give them absolute paths
    shipped = str(Path(model).absolute()) if Path(model).is_dir() else str(model)
    workers = workers or max(1, local_cores() // cores_per_shard)
    backend = make_backend(
        executor,
        address=address,
        workers=workers,
        cores=cores_per_shard,
        slurm=slurm or SlurmOptions(),
        folder=out / "jobs",
    )
    # one length for every shard
    max_length = ModelToEvaluate.resolve(model, max_length, truncation, revision).settings["max_length"]
    data = str(Path(data_dir).absolute()) if data_dir is not None else None
    plan = survey(
        str(model), task_name, cache, batch_size, max_queries, seed, max_length, truncation, revision, data, device
    )
    try:
        backend.start()
        n = shards or backend.slots
        if not n:
            raise InputError(f"--executor {executor} cannot tell how many shards to run at once: give --shards N")
        spec = ShardSpec(
            shipped,
            task_name,
            n,
            str(cache),
            batch_size,
            max_queries,
            seed,
            max_length,
            truncation,
            cores_per_shard,
            revision,
            data,
            device,
        )
        print(f"{executor}: {n} shards, {sum(plan.todo(n)):,} pairs to score", file=log, flush=True)
        values = fan_out(backend, spec, plan, retries, log, interval, keep=_write_files(out / "shards"))
    finally:
        backend.close()
    results = merge_shards([path for i in range(n) for path in values[i]["files"]], out)
    if results["model_fingerprint"] != plan.fingerprint:
        raise ExecutorError(
            f"the workers scored another model than {model} here (fingerprint "
            f"{results['model_fingerprint'][:12]} vs {plan.fingerprint[:12]}): give every worker "
            f"the same model files"
        )
    # as one run here names it (the workers got an absolute path)
    results["model"] = str(resolve_model_dir(model, revision=revision))
    write_json(out / "results.json", results)
    return {"results": results, "files": [out / "results.json"], "shards": [values[i] for i in range(n)]}
