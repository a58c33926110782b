"""The backends that run an evaluation's shards, and what each shard runs on its worker.

Each backend offers the same four calls to the driver (xlmr_np.cmteb.executors): submit shards, wait for
some to finish, fetch a result (raising if the worker was lost), cancel. The libraries are imported when
a backend starts, so the core install needs none of them.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..device import DEFAULT_DEVICE
from ..errors import InputError, XlmrNpError
from .runner import run_eval

EXECUTORS = ("local", "dask", "ray", "slurm")


class ExecutorError(XlmrNpError, RuntimeError):
    """The backend cannot be used (not installed, not reachable), or a shard failed for good."""


# The pip extra that brings each backend, for the error a missing one gives.
EXTRAS = {"dask": ("distributed", "dask"), "ray": ("ray", "ray"), "slurm": ("submitit", "slurm")}


# ----------------------------------------------------------------------------------------------------
# What a worker runs


@dataclass(frozen=True)
class ShardSpec:
    """Everything a worker needs to score shard i of n; plain values, so every backend can ship it."""

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
    revision: str | None = None  # of a hub repo id: branch, tag or commit (None: main)
    data_dir: str | None = None  # the datasets' files, instead of the hub (the same path on every worker)
    device: str = DEFAULT_DEVICE  # where the shard computes its scores (xlmr_np.device)


def run_shard(spec: ShardSpec, i: int) -> dict:
    """Score shard i of spec.n in this process; the shard files' text, or the evaluation's error.

    Errors of the evaluation (XlmrNpError) come back as a value, not an exception: an exception means
    the backend lost the worker, and is retried; an error is not.
    """
    started = time.monotonic()
    where = {"shard": i, "host": socket.gethostname(), "pid": os.getpid()}
    try:
        _limit_threads(spec.cores)
        with tempfile.TemporaryDirectory(prefix="xlmr-np-shard-") as out:  # sent back, not left on the worker
            done = run_eval(
                spec.model,
                spec.task,
                out_dir=out,
                cache_dir=spec.cache_dir,
                batch_size=spec.batch_size,
                shard=(i, spec.n),
                max_queries=spec.max_queries,
                seed=spec.seed,
                max_length=spec.max_length,
                truncation=spec.truncation,
                revision=spec.revision,
                data_dir=spec.data_dir,
                stream=io.StringIO(),
                device=spec.device,
            )
            files = {path.name: path.read_text(encoding="utf-8") for path in done["files"]}
    except XlmrNpError as e:
        return dict(where, error=f"{type(e).__name__}: {e}")
    return dict(where, files=files, scored=done["scored"], seconds=time.monotonic() - started)


def _limit_threads(cores: int) -> None:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        raise XlmrNpError("running shards on a backend needs threadpoolctl: pip install 'xlmr-np[eval]'") from None
    threadpool_limits(cores)


# ----------------------------------------------------------------------------------------------------
# Backends: submit shards, wait for some to finish, fetch a result (raising if the worker was lost)


def _require(executor: str, module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        extra = EXTRAS[executor][1]
        raise ExecutorError(f"--executor {executor} needs {module}: pip install 'xlmr-np[{extra}]'") from None


def local_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Backend:
    """The interface the driver uses. `slots`: shards the backend runs at once, when it knows (the
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
        """The shard's run_shard() value; raises if the backend lost it (the worker died)."""
        raise NotImplementedError

    def cancel(self, handles: list[Any]) -> None: ...

    def close(self) -> None: ...


class LocalBackend(Backend):
    """Processes on this machine (concurrent.futures, spawn). A dead worker breaks the whole pool: every
    shard running in it is retried, in a new pool, and resumes from its cache."""

    name = "local"

    def __init__(self, workers: int) -> None:
        self.slots = workers
        self._pool: ProcessPoolExecutor | None = None

    def _live_pool(self) -> ProcessPoolExecutor:
        import multiprocessing

        if self._pool is None or getattr(self._pool, "_broken", False):
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = ProcessPoolExecutor(self.slots, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def submit(self, spec: ShardSpec, shards: Sequence[int]) -> list[Any]:
        pool = self._live_pool()
        return [pool.submit(run_shard, spec, i) for i in shards]

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        return list(wait_futures(handles, timeout=timeout, return_when=FIRST_COMPLETED).done)

    def result(self, handle: Any) -> dict:
        return handle.result()

    def cancel(self, handles: list[Any]) -> None:
        for handle in handles:
            handle.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


class DaskBackend(Backend):
    """dask.distributed: a scheduler at `address`, or a LocalCluster of `workers` processes of one thread.

    On the LocalCluster a dead worker fails its shard at once (allowed-failures 0) and the driver retries
    it; a scheduler of your own reschedules it first as its distributed.scheduler.allowed-failures says
    (default 3), and the driver retries after that.
    """

    name = "dask"

    def __init__(self, address: str | None, workers: int) -> None:
        self.address = address
        self.workers = workers
        self.client: Any = None
        self.cluster: Any = None

    def start(self) -> None:
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
                self.cluster = distributed.LocalCluster(
                    n_workers=self.workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                )
            self.client = distributed.Client(self.cluster)
            self.slots = self.workers

    def submit(self, spec: ShardSpec, shards: Sequence[int]) -> list[Any]:
        tag = uuid.uuid4().hex[:8]
        return [
            self.client.submit(run_shard, spec, i, key=f"xlmr-np-shard-{i}-of-{spec.n}-{tag}", pure=False)
            for i in shards
        ]

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        import asyncio

        from distributed import wait

        try:
            wait(handles, timeout=timeout, return_when="FIRST_COMPLETED")
        except (TimeoutError, asyncio.TimeoutError):  # one class from Python 3.11 on
            pass
        return [h for h in handles if h.done()]

    def result(self, handle: Any) -> dict:
        return handle.result()

    def cancel(self, handles: list[Any]) -> None:
        if self.client is not None and handles:
            self.client.cancel(handles)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


class RayBackend(Backend):
    """Ray: a cluster at `address` (ray://host:10001, or "auto" on a node of it), or a local instance
    with `workers` CPUs. Ray's own task retries are off (max_retries=0): the driver retries, and says so."""

    name = "ray"

    def __init__(self, address: str | None, workers: int, cores: int) -> None:
        self.address = address
        self.workers = workers
        self.cores = cores
        self._remote: Any = None
        self._started = False

    def start(self) -> None:
        if not self.address:
            # A local instance talks over loopback only: on Linux Ray would otherwise bind its processes to the
            # machine's outward address. Read when ray is imported, and inherited by the processes it starts.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            # Ray's memory monitor kills workers when the machine's memory runs low, whoever uses it: on a
            # machine shared with other programs it killed shards of a few hundred MB again and again. A shard
            # needs one model's memory, known in advance; the kernel's OOM killer stays the last resort.
            os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
        ray = _require("ray", "ray")
        options: dict = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
        if self.address:
            options["address"] = self.address
        else:  # "local": a new instance, even where `ray start` left the address of another one behind
            options.update(address="local", num_cpus=self.workers * self.cores, object_store_memory=512 << 20)
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

    def submit(self, spec: ShardSpec, shards: Sequence[int]) -> list[Any]:
        return [self._remote.remote(spec, i) for i in shards]

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        import ray

        ready, rest = ray.wait(handles, num_returns=1, timeout=timeout)
        if ready and rest:
            ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
        return ready

    def result(self, handle: Any) -> dict:
        import ray

        return ray.get(handle)

    def cancel(self, handles: list[Any]) -> None:
        import ray

        for handle in handles:
            ray.cancel(handle, force=True)

    def close(self) -> None:
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


class SlurmBackend(Backend):
    """Slurm through submitit: the shards go as one job array (retries as single jobs). With
    options.local, submitit's LocalExecutor runs each job as a process here, `workers` at a time."""

    name = "slurm"

    def __init__(self, options: SlurmOptions, folder: Path, workers: int, cores: int) -> None:
        self.options = options
        self.folder = Path(options.folder) if options.folder else folder
        self.workers = workers
        self.cores = cores
        self.executor: Any = None

    def start(self) -> None:
        submitit = _require("slurm", "submitit")
        if not self.options.local and shutil.which("sbatch") is None:
            raise ExecutorError(
                "--executor slurm needs Slurm's sbatch on PATH; run it on a Slurm login node, "
                "or add --slurm-local to run the jobs on this machine through submitit"
            )
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

    def submit(self, spec: ShardSpec, shards: Sequence[int]) -> list[Any]:
        shards = list(shards)
        if len(shards) == 1:
            return [self.executor.submit(run_shard, spec, shards[0])]
        return self.executor.map_array(run_shard, [spec] * len(shards), shards)

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        deadline = time.monotonic() + timeout
        while True:
            done = [h for h in handles if h.done()]
            if done or time.monotonic() >= deadline:
                return done
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def result(self, handle: Any) -> dict:
        return handle.result()

    def cancel(self, handles: list[Any]) -> None:
        for handle in handles:
            handle.cancel(check=False)


def make_backend(
    executor: str, *, address: str | None, workers: int, cores: int, slurm: SlurmOptions, folder: Path
) -> Backend:
    if executor == "local":
        if address:
            raise InputError("--scheduler is for --executor dask or ray; local runs on this machine")
        return LocalBackend(workers)
    if executor == "dask":
        return DaskBackend(address, workers)
    if executor == "ray":
        return RayBackend(address, workers, cores)
    if executor == "slurm":
        if address:
            raise InputError("--scheduler is for --executor dask or ray; Slurm is reached through sbatch")
        return SlurmBackend(slurm, folder, workers, cores)
    raise InputError(f"unknown executor {executor!r}; expected one of {', '.join(EXECUTORS)}")
