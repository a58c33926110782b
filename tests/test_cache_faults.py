"""The evaluation's score cache and output under faults of the file system: a directory or file in the
way, immutable files and directories, a full disk. Each ends in one clear error, loses no score recorded
before it, and a rerun once the fault is gone gives the results of an uninterrupted run.

Real faults where the machine allows them (`chattr +i`, a small tmpfs: both need root), simulated ones
(os.write raising ENOSPC after a partial write, os.open raising EPERM) everywhere.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import subprocess
import types
import uuid
from pathlib import Path

import pytest
from helpers import evaluate, hub_path, make_rows, write_parquet

from xlmr_np.cli import main
from xlmr_np.cmteb import TASKS, results, score_cache
from xlmr_np.cmteb.score_cache import RECORD, _read_header
from xlmr_np.errors import CacheError, OutputError

TASK = TASKS["CMedQAv1-reranking"]


@pytest.fixture
def dataset(pq, hub):
    write_parquet(pq, hub_path(hub, TASK), make_rows(7, 30))


@pytest.fixture
def reference(dataset, tiny_dir, tmp_path):
    """The results of an uninterrupted run, in a cache of their own."""
    return evaluate(tiny_dir, tmp_path, "reference", cache_dir=tmp_path / "reference-cache")["results"]


def scores_file(cache: Path) -> Path:
    (path,) = cache.rglob("scores-all.bin")
    return path


def records_after_header(path: Path) -> float:
    data = path.read_bytes()
    return (len(data) - _read_header(data, path)[1]) / RECORD.size


def test_score_file_path_is_a_directory(reference, tiny_dir, tmp_path):
    evaluate(tiny_dir, tmp_path, max_queries=5)
    path = scores_file(tmp_path / "cache")
    path.unlink()
    path.mkdir()
    with pytest.raises(CacheError, match=r"a directory is where a score file should be.*\(.*scores-all.bin\)"):
        evaluate(tiny_dir, tmp_path)
    path.rmdir()
    assert evaluate(tiny_dir, tmp_path)["results"] == reference


def test_cache_dir_is_a_file(dataset, tiny_dir, tmp_path):
    (tmp_path / "cache").write_text("not a directory")
    with pytest.raises(CacheError, match="cannot use the score cache: Not a directory"):
        evaluate(tiny_dir, tmp_path)


def test_cache_dir_holds_a_file_where_the_task_directory_goes(dataset, tiny_dir, tmp_path):
    evaluate(tiny_dir, tmp_path, max_queries=5)
    task_dir = scores_file(tmp_path / "cache").parent
    shutil.rmtree(task_dir)
    task_dir.write_text("in the way")
    with pytest.raises(CacheError, match="a file is where the cache directory should be"):
        evaluate(tiny_dir, tmp_path)


def test_permission_denied_on_the_score_file_is_a_cache_error(reference, tiny_dir, tmp_path, monkeypatch):
    """What an immutable file (chattr +i) gives a writer: EPERM on open for writing."""
    evaluate(tiny_dir, tmp_path, max_queries=5)
    real_open = score_cache.os.open

    def refuse(path, flags, *args):
        if flags & score_cache.os.O_RDWR:
            raise PermissionError(errno.EPERM, "Operation not permitted", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(score_cache.os, "open", refuse)
    with pytest.raises(CacheError, match=r"Operation not permitted \(an immutable file or directory\?"):
        evaluate(tiny_dir, tmp_path)
    monkeypatch.setattr(score_cache.os, "open", real_open)
    assert evaluate(tiny_dir, tmp_path)["results"] == reference


def chattr(flag: str, path: Path) -> bool:
    done = subprocess.run(["chattr", flag, str(path)], capture_output=True)
    return done.returncode == 0


@pytest.mark.integration  # chattr / mount in a subprocess
@pytest.mark.parametrize("target", ["file", "directory"])
def test_immutable_score_file_or_directory(reference, tiny_dir, tmp_path, target):
    evaluate(tiny_dir, tmp_path, max_queries=5)
    path = scores_file(tmp_path / "cache")
    if target == "directory":  # a new writer (a shard) must create its file in an immutable directory
        path = path.parent
    if shutil.which("chattr") is None or not chattr("+i", path):
        pytest.skip("chattr +i needs root and a file system with attributes")
    try:
        with pytest.raises(CacheError, match=r"Operation not permitted \(an immutable file or directory\?"):
            evaluate(tiny_dir, tmp_path, shard=(0, 2) if target == "directory" else None)
    finally:
        chattr("-i", path)
    assert evaluate(tiny_dir, tmp_path)["results"] == reference


def test_disk_full_during_a_write_keeps_every_whole_batch(reference, tiny_dir, tmp_path, monkeypatch):
    """The fourth write() stores half its bytes and the fifth fails with ENOSPC, as a filling disk does."""
    real_write = score_cache.os.write
    calls = []

    def filling(fd, data):
        calls.append(len(data))
        if len(calls) == 4:
            return real_write(fd, bytes(data[: len(data) // 2]))
        if len(calls) >= 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(score_cache.os, "write", filling)
    with pytest.raises(
        CacheError,
        match=r"cannot record scores: No space left on device; the [\d,]+ scores "
        r"recorded before are kept",
    ):
        evaluate(tiny_dir, tmp_path)
    path = scores_file(tmp_path / "cache")
    assert records_after_header(path) == sum(calls[:3]) / RECORD.size  # rolled back to the last whole batch
    monkeypatch.setattr(score_cache.os, "write", real_write)
    assert evaluate(tiny_dir, tmp_path)["results"] == reference


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str):
    path.mkdir()
    if (
        shutil.which("mount") is None
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", f"xlmr-np-{uuid.uuid4().hex[:8]}", str(path)],
            capture_output=True,
        ).returncode
        != 0
    ):
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@pytest.mark.integration  # chattr / mount in a subprocess
def test_real_full_disk(reference, tiny_dir, tmp_path):
    """A 4 KiB tmpfs holds the header and about 150 of the run's records; then ENOSPC."""
    with small_tmpfs(tmp_path / "full", "4k") as full:
        with pytest.raises(CacheError, match="No space left on device"):
            evaluate(tiny_dir, tmp_path, cache_dir=full)
        kept = records_after_header(scores_file(full))
        assert kept == int(kept) and kept > 0
        shutil.copytree(full, tmp_path / "moved", symlinks=True)
    assert evaluate(tiny_dir, tmp_path, cache_dir=tmp_path / "moved")["results"] == reference


def test_out_naming_a_file_fails_before_any_scoring(dataset, tiny_dir, tmp_path, capsys):
    (tmp_path / "results").write_text("a file")
    argv = [
        "eval",
        "--model",
        str(tiny_dir),
        "--task",
        TASK.name,
        "--score-cache",
        str(tmp_path / "cache"),
        "--out",
        str(tmp_path / "results"),
    ]
    assert main(argv) == 1
    assert capsys.readouterr().err == (
        f"xlmr-np eval: error: the output directory is a file; --out must name a "
        f"directory (made if missing) ({tmp_path / 'results'})\n"
    )
    assert not (tmp_path / "cache").exists()


def test_results_write_failing_says_the_scores_are_cached(dataset, tiny_dir, tmp_path, monkeypatch):
    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(results, "os", types.SimpleNamespace(getpid=os.getpid, replace=full))  # this module's only
    with pytest.raises(
        OutputError,
        match="cannot write results.json: No space left on device; the scores are cached, rerun the same command",
    ):
        evaluate(tiny_dir, tmp_path, stream=io.StringIO())
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == []  # no temporary file left behind


def test_merge_reports_like_every_subcommand(tmp_path, capsys):
    bad = tmp_path / "x.shard-0-of-2.json"
    bad.write_bytes(b"\xff\xfe")
    assert main(["merge", str(bad), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("xlmr-np merge: error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_merge_of_a_deeply_nested_json_file(tmp_path, capsys):
    """Found by the CLI fuzzer: json.loads raised RecursionError, a traceback."""
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000)
    assert main(["merge", str(deep), "--out", str(tmp_path / "o")]) == 1
    assert capsys.readouterr().err == f"xlmr-np merge: error: {deep}: not a shard file (nested too deeply)\n"
