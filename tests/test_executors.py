"""`xlmr-np eval --executor local|dask|ray|slurm` on the real backends, started on this machine.

Each backend runs the same small evaluation (the four tasks in the C-MTEB layout, tests/test_eval.py's
synthetic rows, the tiny random model) as two shards, while the test kills the worker process that is
scoring shard 0 half-way. The run must retry that shard, resume it from its score cache, and print and
write exactly what one process does.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import env_for, hub_path, make_rows, write_parquet
from processes import xlmr_np_command

from xlmr_np.cmteb import TASKS
from xlmr_np.cmteb import backends as be
from xlmr_np.cmteb import executors as ex
from xlmr_np.errors import InputError
from xlmr_np.testing import require

pytestmark = pytest.mark.integration

BIG = "CMedQAv2-reranking"  # the task long enough to kill a worker in the middle of it
BATCH = "4"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """Three small tasks and a bigger one, in an offline hub cache that subprocesses are pointed at."""
    pq = require("pyarrow.parquet", "reading C-MTEB parquet files")
    hub = tmp_path_factory.mktemp("hub")
    for seed, task in enumerate(TASKS.values()):
        rows = make_rows(20 + seed, 150, max_docs=12) if task.name == BIG else make_rows(20 + seed, 14)
        write_parquet(pq, hub_path(hub, task), rows)
    return hub


def eval_command(model_dir, cache: Path, out: Path, *extra: str) -> list[str]:
    return [
        xlmr_np_command(),
        "eval",
        "--model",
        str(model_dir),
        "--task",
        "all",
        "--batch-size",
        BATCH,
        "--score-cache",
        str(cache),
        "--out",
        str(out),
        *extra,
    ]


@pytest.fixture(scope="module")
def one_process(hub, tiny_dir, tmp_path_factory):
    """What `xlmr-np eval` prints and writes in one process: (stdout, results.json text)."""
    where = tmp_path_factory.mktemp("one")
    done = subprocess.run(
        eval_command(tiny_dir, where / "cache", where / "out"),
        env=env_for(hub),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, (where / "out" / "results.json").read_text()


# ----------------------------------------------------------------------------------------------------
# Killing one worker of a running backend


def descendants(pid: int) -> set[int]:
    """The processes below pid (children, grandchildren...), from /proc."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def holder(lock: Path, among: set[int]) -> int | None:
    """The process (of `among`) that has the lock file open: the worker writing that cache file."""
    for pid in among:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                if os.readlink(fd) == str(lock):
                    return pid
        except OSError:
            continue
    return None


def records(path: Path) -> int:
    return ex.records_in(path)


def kill_shard_zero_midway(process: subprocess.Popen, cache: Path, at_least: int, timeout: float = 90) -> int:
    """Wait until shard 0 has scored `at_least` pairs of the big task, SIGKILL the worker holding its
    cache file, and return how many records that file had just before."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            pytest.fail(
                f"the run ended (exit {process.returncode}) before a worker could be killed:\n"
                f"{process.stderr.read()[-3000:]}"
            )
        assert time.monotonic() < deadline, "shard 0 never started scoring the big task"
        files = list(cache.glob(f"*/{BIG}-*/scores-shard-0-of-2.bin"))
        if files and records(files[0]) >= at_least:
            pid = holder(files[0].with_suffix(".lock"), descendants(process.pid))
            if pid is not None:
                seen = records(files[0])
                os.kill(pid, signal.SIGKILL)
                return seen
        time.sleep(0.005)


ENGINES = {
    "local": [],
    "dask": [],
    "ray": [],
    "slurm": ["--slurm-local"],
}


@pytest.mark.parametrize("executor", list(ENGINES))
def test_backend_survives_a_killed_worker_and_equals_one_process(executor, hub, tiny_dir, tmp_path, one_process):
    if executor != "local":
        require(be.EXTRAS[executor][0], f"--executor {executor}")  # a failure in CI, where the extras are installed
    cache, out = tmp_path / "cache", tmp_path / "out"
    command = eval_command(
        tiny_dir, cache, out, "--executor", executor, "--local-workers", "2", "--shards", "2", *ENGINES[executor]
    )
    started = time.monotonic()
    process = subprocess.Popen(
        command, env=env_for(hub), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        seen = kill_shard_zero_midway(process, cache, at_least=30)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # its own session: only what this test started
            process.wait()
    seconds = time.monotonic() - started
    assert process.returncode == 0, stderr
    expected_stdout, expected_json = one_process
    assert stdout == expected_stdout, stderr[-3000:]
    assert (out / "results.json").read_text() == expected_json  # bit for bit: every score, every figure
    assert sorted(p.name for p in (out / "shards").iterdir()) == sorted(
        f"{t}.shard-{i}-of-2.json" for t in TASKS for i in range(2)
    )

    # shard 0 was lost, submitted again, and the new attempt resumed from the records the dead one left
    assert re.search(r"shard 0/2: attempt 1 lost \(\w+", stderr), stderr
    done = re.search(r"shard 0/2 done on .* attempt 2\): ([\d,]+) pairs scored", stderr)
    assert done, stderr
    shard_zero = sum(records(p) for p in cache.glob("*/*/scores-shard-0-of-2.bin"))  # every pair it scored, once
    resumed = int(done.group(1).replace(",", ""))
    assert resumed <= shard_zero - seen, (
        f"attempt 2 scored {resumed} of shard 0's {shard_zero} pairs, although {seen} were cached before the kill"
    )
    progress = re.findall(r"shards (\d)/2 done, \d running(?:, \d retried)?; ([\d,]+)/([\d,]+) pairs", stderr)
    assert progress[-1][0] == "2" and progress[-1][1] == progress[-1][2], stderr[-3000:]
    print(f"{executor}: {seconds:.1f} s for the run with a kill")


# ----------------------------------------------------------------------------------------------------
# The driver, the progress line and the errors, without a backend


def test_progress_line_counts_shards_pairs_and_time_left():
    now = [50.0]
    stream = io.StringIO()
    progress = ex.ClusterProgress(total=4000, shards=8, stream=stream, interval=5.0, clock=lambda: now[0])
    now[0] = 70.0
    assert progress.due()
    progress.show(done=1000, finished=2, running=6, retried=1)
    now[0] = 72.0
    assert not progress.due()
    assert progress.line(4000, 8, 0, 0, 90.0).endswith(
        "4,000/4,000 pairs (100.0%), 100.0 pairs/s, 0:00:40 elapsed, ETA 0:00:00"
    )
    assert stream.getvalue() == (
        "shards 2/8 done, 6 running, 1 retried; 1,000/4,000 pairs (25.0%), 50.0 pairs/s, 0:00:20 elapsed, ETA 0:01:00\n"
    )


class ScriptedBackend(be.Backend):
    """A backend whose shards finish at once, the last submitted first, with the given outcomes in order:
    the driver's rules without the cost of a real backend."""

    name = "scripted"

    def __init__(self, outcomes):
        self.outcomes = list(outcomes)
        self.submitted: list[int] = []
        self.cancelled: list = []

    def submit(self, spec, shards):
        self.submitted += list(shards)
        return [(i, len(self.submitted) + k) for k, i in enumerate(shards)]

    def wait(self, handles, timeout):
        return handles[-1:]

    def result(self, handle):
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return dict(outcome, shard=handle[0], host="h", pid=1)

    def cancel(self, handles):
        self.cancelled += handles


def spec(n=2):
    return be.ShardSpec("m", "all", n, "/c", 4, None, 0, 512, "longest_first", 1)


def no_work(n=2):
    return ex.Survey("f", [ex.TaskSurvey("t", Path("/nonexistent"), __import__("numpy").zeros(n, dtype=int))])


def test_driver_retries_lost_shards_then_gives_up():
    ok = {"files": {}, "scored": 0, "seconds": 1.0}
    backend = ScriptedBackend([ok, ConnectionError("worker lost"), ok])
    log = io.StringIO()
    assert sorted(ex.fan_out(backend, spec(), no_work(), retries=1, log=log)) == [0, 1]
    assert backend.submitted == [0, 1, 0]
    assert "shard 0/2: attempt 1 lost (ConnectionError: worker lost); retrying" in log.getvalue()
    assert "shard 0/2 done on h (pid 1, attempt 2)" in log.getvalue()

    backend = ScriptedBackend([ConnectionError("worker lost"), ConnectionError("node gone")])
    with pytest.raises(be.ExecutorError, match=r"shard 1/2 failed 2 times; the last: ConnectionError: node gone"):
        ex.fan_out(backend, spec(), no_work(), retries=1, log=io.StringIO())
    assert [h[0] for h in backend.cancelled] == [0]  # the shard still running is cancelled

    backend = ScriptedBackend([{"error": "DatasetError: cannot get C-MTEB/T2Reranking"}])
    with pytest.raises(be.ExecutorError, match=r"shard 1/2 on h \(pid 1\): DatasetError: cannot get"):
        ex.fan_out(backend, spec(), no_work(), retries=3, log=io.StringIO())
    assert backend.submitted == [0, 1]  # an evaluation error is not retried


def test_worker_reports_missing_inputs_as_errors(tmp_path):
    value = be.run_shard(
        be.ShardSpec(str(tmp_path / "nowhere"), "all", 2, str(tmp_path / "c"), 4, None, 0, 512, "longest_first", 1), 1
    )
    assert value["shard"] == 1 and value["pid"] == os.getpid()
    assert value["error"].startswith("ConfigError: ") and "nowhere: not a directory" in value["error"]


def test_backend_errors_are_explained(hub, tiny_dir, tmp_path, monkeypatch):
    for executor, module in be.EXTRAS.items():
        monkeypatch.setitem(sys.modules, module[0], None)
        with pytest.raises(
            be.ExecutorError,
            match=rf"--executor {executor} needs {module[0]}: "
            rf"pip install 'xlmr-np\[{module[1]}\]'",
        ):
            be._require(executor, module[0])
    monkeypatch.undo()
    if __import__("shutil").which("sbatch") is None:
        require("submitit", "--executor slurm")
        backend = be.make_backend("slurm", address=None, workers=1, cores=1, slurm=be.SlurmOptions(), folder=tmp_path)
        with pytest.raises(be.ExecutorError, match="needs Slurm's sbatch on PATH; .* add --slurm-local"):
            backend.start()
    with pytest.raises(InputError, match="--scheduler is for --executor dask or ray"):
        be.make_backend("local", address="tcp://x:8786", workers=1, cores=1, slurm=be.SlurmOptions(), folder=tmp_path)

    model = tiny_dir
    for extra, message in (
        (["--shard", "0/2"], "--shard runs one shard; --executor runs all of them"),
        (["--processes", "2"], "--processes splits one process; with --executor give --local-workers"),
    ):
        done = subprocess.run(
            eval_command(model, tmp_path / "c", tmp_path / "o", "--executor", "local", *extra),
            env=env_for(hub),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1 and f"xlmr-np eval: error: {message}" in done.stderr, done.stderr
    # the driver reads the datasets before it starts a backend: a missing one fails here, at once
    empty = tmp_path / "empty-hub"
    empty.mkdir()
    done = subprocess.run(
        eval_command(model, tmp_path / "c", tmp_path / "o", "--executor", "dask"),
        env=env_for(empty),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "xlmr-np eval: error: C-MTEB/T2Reranking@76631901a183/data/" in done.stderr, (
        done.stderr
    )
    assert "shards" not in done.stderr  # no backend was started
