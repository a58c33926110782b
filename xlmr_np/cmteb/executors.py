"""Fan an evaluation's shards out on an engine, watch them, retry the lost ones, and merge the results.

`xlmr-np eval --shard I/N` scores one interleaved share of every task's batches and `xlmr-np merge`
combines the shares into exactly the results of one run (xlmr_np.cmteb.shards). This module runs all N
shares for you on an existing engine:

- local: a pool of processes on this machine (no extra dependency);
- dask: a dask.distributed scheduler (`address` tcp://host:8786), or a LocalCluster when none is given;
- ray: a Ray cluster (`address` ray://host:10001 or "auto"), or a local Ray instance;
- slurm: a Slurm job array through submitit, or submitit's LocalExecutor (`slurm.local`) to try it here.

The driver (this process) first plans the run: it reads every task's dataset, hashes the model and
reads the score cache, so that a missing file fails here, at once, rather than in N jobs, and so that
it knows how many pairs each shard still has to score. Each shard then runs run_eval(shard=(i, n)) on a
worker (run_shard below) and sends its shard files back; the driver writes them under out_dir/shards
and merges them into out_dir/results.json.

Where a worker finds its inputs: the model argument and the cache directory are passed as given, so a
model *directory* must exist at the same path on every worker (shared storage), while a hub repo id is
resolved on each worker through its own hub cache ($HF_HUB_CACHE: shared storage, or a download per
worker). A worker that cannot find them fails its shard with the same error a single run gives
(ConfigError "not a directory", HubError, DatasetError "cannot get ... from the hub"), which stops the
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

import io
import math
import os
import shutil
import socket
import struct
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ..errors import InputError, XlmrNpError
from ..hub import resolve_model_dir
from .plan import shard_batches
from .results import write_json
from .runner import (
    _duration,
    cache_root,
    default_cache_dir,
    run_eval,
    scoring_settings,
    task_cache_dir,
    task_plan,
)
from .score_cache import RECORD, read_score_file
from .scorer import model_fingerprint
from .shards import merge_shards
from .tasks import resolve_tasks

EXECUTORS = ("local", "dask", "ray", "slurm")


class ExecutorError(XlmrNpError, RuntimeError):
    """The engine cannot be used (not installed, not reachable), or a shard failed for good."""


# The pip extra that brings each engine, for the error a missing one gives.
EXTRAS = {"dask": ("distributed", "dask"), "ray": ("ray", "ray"), "slurm": ("submitit", "slurm")}


# ----------------------------------------------------------------------------------------------------
# What a worker runs


@dataclass(frozen=True)
class ShardSpec:
    """Everything a worker needs to score shard i of n; plain values, so every engine can ship it."""

    model: str  # a model directory (the same path on every worker) or a hub repo id
    task: str  # a task name or "all"
    n: int  # the number of shards
    cache_dir: str
    batch_size: int
    max_queries: int | None
    seed: int
    max_length: int
    truncation: str
    cores: int  # BLAS threads of the shard


def run_shard(spec: ShardSpec, i: int) -> dict:
    """Score shard i of spec.n in this process; the shard files' text, or the evaluation's error.

    Errors of the evaluation (XlmrNpError) come back as a value, not an exception: an exception means
    the engine lost the worker, and is retried; an error is not.
    """
    started = time.monotonic()
    where = {"shard": i, "host": socket.gethostname(), "pid": os.getpid()}
    try:
        _limit_threads(spec.cores)
        with tempfile.TemporaryDirectory(prefix="xlmr-np-shard-") as out:  # sent back, not left on the worker
            done = run_eval(spec.model, spec.task, out_dir=out, cache_dir=spec.cache_dir,
                            batch_size=spec.batch_size, shard=(i, spec.n), max_queries=spec.max_queries,
                            seed=spec.seed, max_length=spec.max_length, truncation=spec.truncation,
                            stream=io.StringIO())
            files = {path.name: path.read_text(encoding="utf-8") for path in done["files"]}
    except XlmrNpError as e:
        return dict(where, error=f"{type(e).__name__}: {e}")
    return dict(where, files=files, scored=done["scored"], seconds=time.monotonic() - started)


def _limit_threads(cores: int) -> None:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        raise XlmrNpError("running shards on an engine needs threadpoolctl: pip install 'xlmr-np[eval]'") from None
    threadpool_limits(cores)


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
        return [sum(int(t.uncached[shard_batches(len(t.uncached), (i, n))].sum()) for t in self.tasks)
                for i in range(n)]


def survey(model: str, task_name: str, cache_dir: Path, batch_size: int, max_queries: int | None, seed: int,
           max_length: int, truncation: str) -> Survey:
    """Plan every task as the shards will, and count the pairs the score cache lacks, batch by batch."""
    settings = scoring_settings(max_length, truncation)
    fingerprint = model_fingerprint(resolve_model_dir(model))
    root = cache_root(cache_dir, fingerprint, settings)
    tasks = []
    for task in resolve_tasks(task_name):
        plan, _ = task_plan(task, batch_size, max_queries, seed)
        directory = task_cache_dir(root, task)
        header = {"model_fingerprint": fingerprint, "settings": settings, "task": task.name,
                  "dataset": task.repo, "revision": task.revision}
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

    def __init__(self, total: int, shards: int, stream: TextIO, interval: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
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
        return (f"shards {finished}/{self.shards} done, {running} running{retries}; "
                f"{done:,}/{self.total:,} pairs ({100 * done / max(self.total, 1):.1f}%), {rate:.1f} pairs/s, "
                f"{_duration(elapsed)} elapsed, ETA {_duration(eta)}")


# ----------------------------------------------------------------------------------------------------
# Engines: submit shards, wait for some to finish, fetch a result (raising if the worker was lost)


def _require(executor: str, module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        extra = EXTRAS[executor][1]
        raise ExecutorError(f"--executor {executor} needs {module}: pip install 'xlmr-np[{extra}]'") from None


def local_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Engine:
    """The interface the driver uses. `slots`: shards the engine runs at once, when it knows (the
    default number of shards); `max_in_flight`: shards to hand it at once (None: all, it queues them)."""

    name = ""
    slots: int | None = None
    max_in_flight: int | None = None

    def start(self) -> None: ...

    def submit(self, spec: ShardSpec, shards: Sequence[int]) -> list[Any]:
        raise NotImplementedError

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        """The handles (a subset of `handles`) whose shard has finished or failed, after at most timeout s."""
        raise NotImplementedError

    def result(self, handle: Any) -> dict:
        """The shard's run_shard() value; raises if the engine lost it (the worker died)."""
        raise NotImplementedError

    def cancel(self, handles: list[Any]) -> None: ...

    def close(self) -> None: ...


class LocalEngine(Engine):
    """Processes on this machine (concurrent.futures, spawn). A dead worker breaks the whole pool: every
    shard running in it is retried, in a new pool, and resumes from its cache."""

    name = "local"

    def __init__(self, workers: int):
        self.slots = workers
        self._pool: ProcessPoolExecutor | None = None

    def _live_pool(self) -> ProcessPoolExecutor:
        import multiprocessing

        if self._pool is None or getattr(self._pool, "_broken", False):
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = ProcessPoolExecutor(self.slots, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def submit(self, spec, shards):
        pool = self._live_pool()
        return [pool.submit(run_shard, spec, i) for i in shards]

    def wait(self, handles, timeout):
        return list(wait_futures(handles, timeout=timeout, return_when=FIRST_COMPLETED).done)

    def result(self, handle):
        return handle.result()

    def cancel(self, handles):
        for handle in handles:
            handle.cancel()

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


class DaskEngine(Engine):
    """dask.distributed: a scheduler at `address`, or a LocalCluster of `workers` processes of one thread.

    On the LocalCluster a dead worker fails its shard at once (allowed-failures 0) and the driver retries
    it; a scheduler of your own reschedules it first as its distributed.scheduler.allowed-failures says
    (default 3), and the driver retries after that.
    """

    name = "dask"

    def __init__(self, address: str | None, workers: int):
        self.address = address
        self.workers = workers
        self.client: Any = None
        self.cluster: Any = None

    def start(self):
        import logging

        dask = _require("dask", "dask")
        distributed = _require("dask", "distributed")
        if self.address:
            try:
                self.client = distributed.Client(self.address, timeout=30)
            except OSError as e:
                raise ExecutorError(f"cannot reach the Dask scheduler at {self.address} ({e})") from e
            self.slots = sum(self.client.nthreads().values()) or None
        else:
            with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
                self.cluster = distributed.LocalCluster(n_workers=self.workers, threads_per_worker=1,
                                                        processes=True, dashboard_address=None,
                                                        silence_logs=logging.ERROR)
            self.client = distributed.Client(self.cluster)
            self.slots = self.workers

    def submit(self, spec, shards):
        tag = uuid.uuid4().hex[:8]
        return [self.client.submit(run_shard, spec, i, key=f"xlmr-np-shard-{i}-of-{spec.n}-{tag}", pure=False)
                for i in shards]

    def wait(self, handles, timeout):
        import asyncio

        from distributed import wait

        try:
            wait(handles, timeout=timeout, return_when="FIRST_COMPLETED")
        except (TimeoutError, asyncio.TimeoutError):  # one class from Python 3.11 on
            pass
        return [h for h in handles if h.done()]

    def result(self, handle):
        return handle.result()

    def cancel(self, handles):
        if self.client is not None and handles:
            self.client.cancel(handles)

    def close(self):
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


class RayEngine(Engine):
    """Ray: a cluster at `address` (ray://host:10001, or "auto" on a node of it), or a local instance
    with `workers` CPUs. Ray's own task retries are off (max_retries=0): the driver retries, and says so."""

    name = "ray"

    def __init__(self, address: str | None, workers: int, cores: int):
        self.address = address
        self.workers = workers
        self.cores = cores
        self._remote: Any = None
        self._started = False

    def start(self):
        ray = _require("ray", "ray")
        options: dict = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
        if self.address:
            options["address"] = self.address
        else:
            options.update(num_cpus=self.workers * self.cores, object_store_memory=512 << 20)
        # Ray's driver prints its workers' deaths to sys.stdout, where the results table goes: send them to
        # standard error, with the progress, until close()
        self._stdout, sys.stdout = sys.stdout, sys.stderr
        try:
            ray.init(**options)
        except (ConnectionError, RuntimeError) as e:
            sys.stdout = self._stdout
            raise ExecutorError(f"cannot start or reach Ray ({self.address or 'local'}): {e}") from e
        self._started = True
        cpus = int(ray.cluster_resources().get("CPU", 0))
        self.slots = max(1, cpus // self.cores) if cpus else None
        self._remote = ray.remote(run_shard).options(num_cpus=self.cores, max_retries=0)

    def submit(self, spec, shards):
        return [self._remote.remote(spec, i) for i in shards]

    def wait(self, handles, timeout):
        import ray

        ready, rest = ray.wait(handles, num_returns=1, timeout=timeout)
        if ready and rest:
            ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
        return ready

    def result(self, handle):
        import ray

        return ray.get(handle)

    def cancel(self, handles):
        import ray

        for handle in handles:
            ray.cancel(handle, force=True)

    def close(self):
        if self._started:
            import ray

            ray.shutdown()
            sys.stdout = self._stdout


@dataclass
class SlurmOptions:
    """The Slurm side of `--executor slurm` (submitit parameters)."""

    folder: str | None = None  # submitit's job folder (logs, pickles): on storage the nodes share
    partition: str | None = None
    time_min: int = 24 * 60  # each job's time limit
    mem: str | None = None  # e.g. "4G" per job
    params: dict = field(default_factory=dict)  # any other sbatch option: {"account": "x", "qos": "y"}
    local: bool = False  # submitit's LocalExecutor: the same jobs as processes on this machine


class SlurmEngine(Engine):
    """Slurm through submitit: the shards go as one job array (retries as single jobs). With
    options.local, submitit's LocalExecutor runs each job as a process here, `workers` at a time."""

    name = "slurm"

    def __init__(self, options: SlurmOptions, folder: Path, workers: int, cores: int):
        self.options = options
        self.folder = Path(options.folder) if options.folder else folder
        self.workers = workers
        self.cores = cores
        self.executor: Any = None

    def start(self):
        submitit = _require("slurm", "submitit")
        if not self.options.local and shutil.which("sbatch") is None:
            raise ExecutorError("--executor slurm needs Slurm's sbatch on PATH; run it on a Slurm login node, "
                                "or add --slurm-local to run the jobs on this machine through submitit")
        self.executor = submitit.AutoExecutor(folder=self.folder, cluster="local" if self.options.local else "slurm")
        parameters: dict = dict(name="xlmr-np-eval", timeout_min=self.options.time_min, cpus_per_task=self.cores)
        if self.options.partition:
            parameters["slurm_partition"] = self.options.partition
        if self.options.mem:
            parameters["slurm_mem"] = self.options.mem
        if self.options.params:
            parameters["slurm_additional_parameters"] = dict(self.options.params)
        self.executor.update_parameters(**parameters)
        if self.options.local:
            self.slots = self.max_in_flight = self.workers  # LocalExecutor starts every job it is given

    def submit(self, spec, shards):
        shards = list(shards)
        if len(shards) == 1:
            return [self.executor.submit(run_shard, spec, shards[0])]
        return self.executor.map_array(run_shard, [spec] * len(shards), shards)

    def wait(self, handles, timeout):
        deadline = time.monotonic() + timeout
        while True:
            done = [h for h in handles if h.done()]
            if done or time.monotonic() >= deadline:
                return done
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def result(self, handle):
        return handle.result()

    def cancel(self, handles):
        for handle in handles:
            handle.cancel(check=False)


def make_engine(executor: str, *, address: str | None, workers: int, cores: int, slurm: SlurmOptions,
                folder: Path) -> Engine:
    if executor == "local":
        if address:
            raise InputError("--scheduler is for --executor dask or ray; local runs on this machine")
        return LocalEngine(workers)
    if executor == "dask":
        return DaskEngine(address, workers)
    if executor == "ray":
        return RayEngine(address, workers, cores)
    if executor == "slurm":
        if address:
            raise InputError("--scheduler is for --executor dask or ray; Slurm is reached through sbatch")
        return SlurmEngine(slurm, folder, workers, cores)
    raise InputError(f"unknown executor {executor!r}; expected one of {', '.join(EXECUTORS)}")


# ----------------------------------------------------------------------------------------------------
# The driver


@dataclass
class Attempt:
    shard: int
    number: int  # 1 for the first attempt
    handle: Any


def fan_out(engine: Engine, spec: ShardSpec, survey: Survey, retries: int, log: TextIO,
            interval: float = 5.0) -> dict[int, dict]:
    """Run every shard of spec on the engine; their run_shard() values by shard, once all have succeeded.

    A shard whose worker was lost is submitted again (up to `retries` times); a shard whose evaluation
    failed stops the run (ExecutorError naming the shard and host), cancelling the others.
    """
    n = spec.n
    todo = survey.todo(n)
    start_records = [written(survey, i, n) for i in range(n)]
    progress = ClusterProgress(sum(todo), n, log, interval)
    waiting = list(range(n))
    limit = engine.max_in_flight or n
    running: list[Attempt] = []
    results: dict[int, dict] = {}
    attempts = dict.fromkeys(range(n), 0)
    retried = 0

    def launch(shards: list[int]) -> None:
        for i in shards:
            attempts[i] += 1
        for i, handle in zip(shards, engine.submit(spec, shards)):
            running.append(Attempt(i, attempts[i], handle))

    def scored() -> int:
        return sum(todo[i] if i in results else min(todo[i], max(0, written(survey, i, n) - start_records[i]))
                   for i in range(n))

    try:
        launch(waiting[:limit])
        del waiting[:limit]
        while running:
            finished = engine.wait([a.handle for a in running], timeout=min(interval, 1.0))
            for attempt in [a for a in running if a.handle in finished]:
                running.remove(attempt)
                i = attempt.shard
                try:
                    value = engine.result(attempt.handle)
                except Exception as e:  # the engine lost the shard: its worker died, its job was killed
                    reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                    if attempts[i] > retries:
                        raise ExecutorError(f"shard {i}/{n} failed {attempts[i]} times; the last: {reason}") from e
                    retried += 1
                    print(f"shard {i}/{n}: attempt {attempts[i]} lost ({reason}); retrying, it resumes from "
                          f"its score cache", file=log, flush=True)
                    launch([i])
                    continue
                if "error" in value:
                    raise ExecutorError(f"shard {i}/{n} on {value['host']} (pid {value['pid']}): {value['error']}")
                results[i] = value
                print(f"shard {i}/{n} done on {value['host']} (pid {value['pid']}, attempt {attempts[i]}): "
                      f"{value['scored']:,} pairs scored in {_duration(value['seconds'])}", file=log, flush=True)
                if waiting:
                    launch([waiting.pop(0)])
            if progress.due() or not running:
                progress.show(scored(), len(results), len(running), retried)
    finally:
        if running:
            engine.cancel([a.handle for a in running])
    return results


def run_on_engine(model: str | Path, task_name: str, *, executor: str, out_dir: str | Path,
                  shards: int | None = None, cache_dir: str | Path | None = None, batch_size: int = 32,
                  max_queries: int | None = None, seed: int = 0, max_length: int = 512,
                  truncation: str = "longest_first", address: str | None = None, workers: int | None = None,
                  cores_per_shard: int = 1, retries: int = 2, slurm: SlurmOptions | None = None,
                  stream: TextIO | None = None, interval: float = 5.0) -> dict:
    """run_eval's results, computed as `shards` shards on an engine (see the module docstring).

    workers: shards run at once on this machine when the engine is local (a LocalCluster, a local Ray,
    the local pool, submitit's LocalExecutor); default: the cores over cores_per_shard. shards: default
    the number of shards the engine runs at once. Writes out_dir/shards/*.json and out_dir/results.json.
    """
    log = stream if stream is not None else sys.stderr
    out = Path(out_dir)
    cache = Path(cache_dir if cache_dir is not None else default_cache_dir()).absolute()
    # workers may start in another directory: give them absolute paths
    shipped = str(Path(model).absolute()) if Path(model).is_dir() else str(model)
    workers = workers or max(1, local_cores() // cores_per_shard)
    engine = make_engine(executor, address=address, workers=workers, cores=cores_per_shard,
                         slurm=slurm or SlurmOptions(), folder=out / "jobs")
    plan = survey(str(model), task_name, cache, batch_size, max_queries, seed, max_length, truncation)
    try:
        engine.start()
        n = shards or engine.slots
        if not n:
            raise InputError(f"--executor {executor} cannot tell how many shards to run at once: give --shards N")
        spec = ShardSpec(shipped, task_name, n, str(cache), batch_size, max_queries, seed, max_length,
                         truncation, cores_per_shard)
        print(f"{executor}: {n} shards, {sum(plan.todo(n)):,} pairs to score", file=log, flush=True)
        values = fan_out(engine, spec, plan, retries, log, interval)
    finally:
        engine.close()
    paths = []
    for i in range(n):
        for name, text in values[i]["files"].items():
            path = out / "shards" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            paths.append(path)
    results = merge_shards(paths, out)
    if results["model_fingerprint"] != plan.fingerprint:
        raise ExecutorError(f"the workers scored another model than {model} here (fingerprint "
                            f"{results['model_fingerprint'][:12]} vs {plan.fingerprint[:12]}): give every worker "
                            f"the same model files")
    results["model"] = str(resolve_model_dir(model))  # as one run here names it (workers got an absolute path)
    write_json(out / "results.json", results)
    return {"results": results, "files": [out / "results.json"], "shards": [values[i] for i in range(n)]}
