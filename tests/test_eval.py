"""`xlmr-np eval` / `merge` on small parquet files in the C-MTEB datasets' layout, with a tiny random model.

The parquet files are written into a local hub cache at each task's pinned revision and file path, so
the real huggingface-hub download code runs and finds them without a network.
"""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import env_for, evaluate, hub_path, make_rows, write_model, write_parquet
from processes import xlmr_np_command

from xlmr_np.cmteb import TASKS, format_table, merge_shards, scorer
from xlmr_np.cmteb.plan import make_plan
from xlmr_np.cmteb.protocol import apply_protocol, read_rows
from xlmr_np.cmteb.runner import Progress
from xlmr_np.cmteb.score_cache import RECORD, ScoreCache, _read_header, read_score_file
from xlmr_np.cmteb.shards import checksum
from xlmr_np.cmteb.tasks import dataset_file, resolve_tasks
from xlmr_np.errors import CacheError, CheckpointError, ConfigError, DatasetError, InputError, ShardError
from xlmr_np.testing import require

# ----------------------------------------------------------------------------------------------------
# Data and protocol


def test_protocol_drops_rows_without_positives_or_negatives(pq, tmp_path):
    rows = make_rows(0, 40)
    queries = apply_protocol(read_rows(write_parquet(pq, tmp_path / "t.parquet", rows)))
    kept = [i for i in range(40) if rows["positive"][i] and rows["negative"][i]]
    assert len(kept) < 40 - 5  # the fixture has rows of both kinds to drop
    assert [q.row for q in queries] == kept
    plan = make_plan(TASKS["T2Reranking"], queries, batch_size=4)
    for q, (row, n_pos, positions) in zip(queries, plan.structure):
        # pairs [query, document]: all positives first, then all negatives
        assert [plan.pairs[j] for j in positions] == [(q.text, d) for d in q.positives + q.negatives]
        assert (row, n_pos) == (q.row, len(q.positives))
    assert len(plan.pairs) < sum(len(p) for _, _, p in plan.structure)  # the repeated document is scored once


def test_layout_errors_are_explained(pq, tmp_path, monkeypatch):
    bad = write_parquet(pq, tmp_path / "bad.parquet", {"query": ["q"], "positive": [["p"]], "negative": [["n"]]})
    import pyarrow as pa

    pq.write_table(pa.table({"query": ["q"], "positives": [["p"]]}), bad)
    with pytest.raises(DatasetError, match=r"missing column\(s\) \['positive', 'negative'\]"):
        read_rows(bad)
    pq.write_table(pa.table({"query": ["q"], "positive": ["p"], "negative": [["n"]]}), bad)
    with pytest.raises(DatasetError, match="row 0 is not"):
        read_rows(bad)
    (tmp_path / "text.parquet").write_text("not parquet")
    with pytest.raises(DatasetError, match="not a readable parquet file"):
        read_rows(tmp_path / "text.parquet")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(DatasetError, match=r"pip install 'xlmr-np\[eval\]'"):
        read_rows(bad)


def test_download_uses_the_pinned_revision(pq, hub):
    task = TASKS["MMarcoReranking"]
    expected = write_parquet(pq, hub_path(hub, task), make_rows(1, 3))
    assert dataset_file(task) == expected
    with pytest.raises(DatasetError, match="C-MTEB/T2Reranking@76631901a183"):
        dataset_file(TASKS["T2Reranking"])  # not in the cache, and offline
    with pytest.raises(InputError, match="unknown task"):
        resolve_tasks("T3Reranking")


def test_without_the_data_eval_fails_at_once_and_says_what_to_do(hub, monkeypatch):
    import huggingface_hub

    task = TASKS["CMedQAv2-reranking"]
    online = []
    real = huggingface_hub.hf_hub_download
    monkeypatch.setattr(
        huggingface_hub,
        "hf_hub_download",
        lambda *a, **k: online.append(k) if not k["local_files_only"] else real(*a, **k),
    )
    for proxy in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    started = time.monotonic()
    with pytest.raises(DatasetError) as offline:
        dataset_file(task)  # HF_HUB_OFFLINE (the hub fixture)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(DatasetError) as unreachable:
        dataset_file(task)
    assert time.monotonic() - started < 2 and online == []  # no download tried, no retries
    assert "and HF_HUB_OFFLINE is set." in str(offline.value)
    assert "and the hub (127.0.0.1) cannot be reached (" in str(unreachable.value)
    for message in (str(offline.value), str(unreachable.value)):
        assert message.startswith(f"{task.repo}@{task.revision[:12]}/{task.filename} is not in the hub cache {hub}")
        assert f"--revision {task.revision} --local-dir DIR/C-MTEB/CMedQAv2-reranking)" in message
        assert f"pass --data-dir DIR (it reads DIR/C-MTEB/CMedQAv2-reranking/{task.filename})" in message
        assert message.endswith("xlmr-np synthetic-data DIR --task CMedQAv2-reranking")


@pytest.mark.integration
def test_a_reachable_hub_is_asked_for_what_the_cache_lacks(hub, monkeypatch, tmp_path):
    import socket

    import huggingface_hub

    asked = []
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    real = huggingface_hub.hf_hub_download

    def download(*args, **kwargs):
        asked.append(kwargs["local_files_only"])
        return real(*args, **kwargs) if kwargs["local_files_only"] else str(tmp_path / "downloaded.parquet")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    with socket.create_server(("127.0.0.1", 0)) as listening:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{listening.getsockname()[1]}")
        assert dataset_file(TASKS["T2Reranking"]) == tmp_path / "downloaded.parquet"
    assert asked == [True, False]  # the cache, then one download


def test_data_dir_holds_the_files_the_hub_would_give(pq, hub, tiny_dir, tmp_path, capsys):
    from xlmr_np.cli import main
    from xlmr_np.cmteb.synthetic import AVERAGE_CHARS, synthetic_rows

    task = TASKS["CMedQAv1-reranking"]
    assert main(["synthetic-data", str(tmp_path / "data"), "--task", task.name, "--queries", "7", "--docs", "5"]) == 0
    (path,) = [Path(line.removeprefix("wrote ")) for line in capsys.readouterr().out.splitlines()[:-1]]
    assert path == tmp_path / "data" / "C-MTEB" / "CMedQAv1-reranking" / task.filename
    rows = synthetic_rows(task, 7, 5, seed=0)
    assert [(q.text, q.positives, q.negatives) for q in read_rows(path)] == list(zip(*rows.values()))
    assert [len(rows["positive"][0]), len(rows["negative"][0])] == [1, 4]
    assert (len(rows["query"][0]), len(rows["negative"][0][0])) == tuple(round(n) for n in AVERAGE_CHARS[task.name])
    assert all("\u4e00" <= ch <= "\u9fa5" for ch in rows["query"][0] + rows["positive"][0][0])
    assert synthetic_rows(task, 7, 5, seed=1) != rows
    from_dir = evaluate(tiny_dir, tmp_path, "dir", data_dir=tmp_path / "data")["results"]["tasks"]
    write_parquet(pq, hub_path(hub, task), rows)
    assert evaluate(tiny_dir, tmp_path, "hub", cache_dir=tmp_path / "c2")["results"]["tasks"] == from_dir
    with pytest.raises(DatasetError, match=r"CMedQAv2-reranking/data/test-\S+\.parquet: no such file\. Get it"):
        evaluate(tiny_dir, tmp_path, "missing", task_name="CMedQAv2-reranking", data_dir=tmp_path / "data")


# ----------------------------------------------------------------------------------------------------
# End to end


def reference_result(tiny_dir, rows):
    """The metrics computed the way C-MTEB did: Reranker.compute_score per query, sklearn, mteb's MRR loop."""
    sklearn_metrics = require("sklearn.metrics", "metrics against sklearn")
    reranker = scorer.load_reranker(tiny_dir, {"max_length": 512, "truncation": "longest_first", "dtype": "float32"})
    ap, rr = [], []
    for query, positives, negatives in zip(rows["query"], rows["positive"], rows["negative"]):
        if not positives or not negatives:
            continue
        scores = np.array(reranker.compute_score([[query, d] for d in positives + negatives]), ndmin=1)
        relevant = [True] * len(positives) + [False] * len(negatives)
        ap.append(sklearn_metrics.average_precision_score(relevant, scores))
        ranking = np.argsort(-scores)
        rr.append(next((1 / (r + 1) for r, i in enumerate(ranking[:10]) if relevant[i]), 0))
    return 100 * np.mean(ap), 100 * np.mean(rr), len(ap)


@pytest.mark.integration
def test_cli_end_to_end(pq, hub, tiny_dir, tmp_path):
    task = TASKS["CMedQAv1-reranking"]
    rows = make_rows(2, 30)
    write_parquet(pq, hub_path(hub, task), rows)
    command = [
        xlmr_np_command(),
        "eval",
        "--model",
        str(tiny_dir),
        "--task",
        task.name,
        "--batch-size",
        "5",
        "--score-cache",
        str(tmp_path / "cache"),
        "--out",
        str(tmp_path / "out"),
    ]
    done = subprocess.run(command, env=env_for(hub), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    (result,) = results["tasks"]
    expected_map, expected_mrr, queries = reference_result(tiny_dir, rows)
    assert result["queries"] == queries == len(result["per_query"])
    assert result["pairs"] == sum(len(p) + len(n) for p, n in zip(rows["positive"], rows["negative"]) if p and n)
    assert result["map"] == pytest.approx(expected_map, abs=1e-9)
    assert result["mrr@10"] == pytest.approx(expected_mrr, abs=1e-9)
    # a random model is no known model: no published figures to compare with, and the table says so
    assert result["published"] is None and result["difference"] == {} and results["known_model"] is None
    table = done.stdout.splitlines()
    assert table[1].split()[5:] == ["-", "-", "-", "-"]
    assert table[-1].startswith("published: none for this model")
    assert table[0].split()[:5] == ["task", "queries", "pairs", "MAP", "MRR@10"]
    assert table[1].split()[:5] == [
        task.name,
        str(queries),
        f"{result['pairs']:,}",
        f"{result['map']:.4f}",
        f"{result['mrr@10']:.4f}",
    ]
    assert "pairs/s" in done.stderr and "ETA" in done.stderr


def test_revision_picks_the_hub_snapshot_of_the_model(pq, hub, tiny_dir, tmp_path):
    from xlmr_np.errors import HubError
    from xlmr_np.testing import add_snapshot

    write_parquet(pq, hub_path(hub, TASKS["CMedQAv1-reranking"]), make_rows(5, 6))
    snapshot = add_snapshot(hub, "org/tiny-reranker", tiny_dir, "1" * 40, refs=("v1",))  # a tag, no main
    with pytest.raises(HubError, match=r"org/tiny-reranker \(revision main\)"):
        evaluate("org/tiny-reranker", tmp_path, "main")
    done = evaluate("org/tiny-reranker", tmp_path, "v1", revision="v1")
    assert done["results"]["model"] == str(snapshot)
    assert done["results"]["tasks"] == evaluate(tiny_dir, tmp_path, "dir")["results"]["tasks"]


def test_finished_run_rescores_from_the_cache_without_the_model(pq, hub, tiny_dir, tmp_path, monkeypatch):
    write_parquet(pq, hub_path(hub, TASKS["CMedQAv1-reranking"]), make_rows(3, 20))
    first = evaluate(tiny_dir, tmp_path, "first")["results"]

    def no_model(*args):
        raise AssertionError("the model was loaded although every score is cached")

    monkeypatch.setattr(scorer, "load_reranker", no_model)
    progress = io.StringIO()
    assert evaluate(tiny_dir, tmp_path, "second", stream=progress)["results"] == first
    assert progress.getvalue() == "every score is in the cache: nothing to compute\n"


@pytest.mark.integration
def test_interrupted_run_resumes_to_the_uninterrupted_result(pq, hub, tiny_dir, tmp_path):
    task = TASKS["CMedQAv2-reranking"]
    write_parquet(pq, hub_path(hub, task), make_rows(4, 150, max_docs=20))
    cache = tmp_path / "cache"
    command = [
        xlmr_np_command(),
        "eval",
        "--model",
        str(tiny_dir),
        "--task",
        task.name,
        "--batch-size",
        "2",
        "--score-cache",
        str(cache),
        "--out",
        str(tmp_path / "resumed"),
    ]
    process = subprocess.Popen(command, env=env_for(hub), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        # the header takes a few hundred bytes: wait for at least 100 records
        while not [p for p in cache.rglob("scores-all.bin") if p.stat().st_size > 1000 + 100 * RECORD.size]:
            assert process.poll() is None and time.monotonic() < deadline, "the run ended before it was killed"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (tmp_path / "resumed" / "results.json").exists()
    (scores_file,) = cache.rglob("scores-all.bin")
    cached = len(read_score_file(scores_file, _read_header(scores_file.read_bytes(), scores_file)[0])[0])
    assert cached >= 100
    with open(scores_file, "ab") as f:
        f.write(b"\x01" * (RECORD.size // 2))  # a record cut short, as a kill during write() leaves it

    reference = evaluate(
        tiny_dir, tmp_path, "uninterrupted", task_name=task.name, batch_size=2, cache_dir=tmp_path / "fresh-cache"
    )["results"]
    done = subprocess.run(command, env=env_for(hub), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (fresh,) = (tmp_path / "fresh-cache").rglob("scores-all.bin")
    all_pairs = len(read_score_file(fresh, _read_header(fresh.read_bytes(), fresh)[0])[0])
    rescored = int(re.findall(r"/([\d,]+) pairs", done.stderr)[-1].replace(",", ""))
    # it picked up where the killed run stopped, redoing at most a batch whose write the kill cut
    assert all_pairs - cached <= rescored < all_pairs - cached + 2
    resumed = json.loads((tmp_path / "resumed" / "results.json").read_text())
    assert resumed == json.loads(json.dumps(reference))


# ----------------------------------------------------------------------------------------------------
# Shards


@pytest.fixture
def all_tasks(pq, hub):
    for seed, task in enumerate(TASKS.values()):
        write_parquet(pq, hub_path(hub, task), make_rows(10 + seed, 14))
    return hub


def shard_files(tiny_dir, tmp_path, n, **kwargs):
    files = []
    for i in range(n):
        done = evaluate(tiny_dir, tmp_path, f"shard{i}", shard=(i, n), cache_dir=tmp_path / f"cache{i}", **kwargs)
        files += done["files"]
    return files


def test_merged_shards_equal_one_run(all_tasks, tiny_dir, tmp_path):
    one = evaluate(tiny_dir, tmp_path, "one", task_name="all", cache_dir=tmp_path / "one-cache")["results"]
    files = shard_files(tiny_dir, tmp_path, 3, task_name="all")
    assert [p.name for p in files[:2]] == ["T2Reranking.shard-0-of-3.json", "MMarcoReranking.shard-0-of-3.json"]
    merged = merge_shards(files[::-1], tmp_path / "merged")  # any order
    assert merged == one
    assert json.loads((tmp_path / "merged" / "results.json").read_text()) == json.loads(json.dumps(one))
    assert [t["task"] for t in merged["tasks"]] == list(TASKS)
    # shards run on one machine share their scores with an unsharded run there
    for i in range(3):
        for directory in (tmp_path / f"cache{i}").glob("*/*"):
            for f in directory.glob("scores-*.bin"):
                target = tmp_path / "shared" / directory.relative_to(tmp_path / f"cache{i}") / f.name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(f.read_bytes())
    evaluate_without_model = evaluate(tiny_dir, tmp_path, "from-shards", task_name="all", cache_dir=tmp_path / "shared")
    assert evaluate_without_model["results"] == one


def rewrite(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data["payload"])
    data["sha256"] = checksum(data["payload"])
    path.write_text(json.dumps(data))


@pytest.mark.integration
def test_merge_refuses_incomplete_or_mismatched_shards(all_tasks, tiny_dir, tmp_path):
    files = shard_files(tiny_dir, tmp_path, 2, task_name="CMedQAv1-reranking")
    with pytest.raises(ShardError, match=r"shard\(s\) \[1\] of 2 missing"):
        merge_shards(files[:1], tmp_path / "m")
    with pytest.raises(ShardError, match="given twice"):
        merge_shards([files[0], files[0], files[1]], tmp_path / "m")
    other = shard_files(tiny_dir, tmp_path / "b", 2, task_name="CMedQAv1-reranking", batch_size=3)
    with pytest.raises(ShardError, match="differ in batch_size"):
        merge_shards([files[0], other[1]], tmp_path / "m")
    sampled = shard_files(tiny_dir, tmp_path / "s", 2, task_name="CMedQAv1-reranking", max_queries=5)
    with pytest.raises(ShardError, match="differ in sample"):
        merge_shards([files[0], sampled[1]], tmp_path / "m")
    three = shard_files(tiny_dir, tmp_path / "t", 3, task_name="CMedQAv1-reranking")
    with pytest.raises(ShardError, match="different numbers of parts"):
        merge_shards([files[0], files[1], three[2]], tmp_path / "m")

    incomplete = tmp_path / "incomplete.json"
    incomplete.write_text(files[1].read_text())
    rewrite(incomplete, lambda p: p["scores"].__setitem__(p["scores"].index(next(s for s in p["scores"] if s)), None))
    with pytest.raises(ShardError, match="incomplete"):
        merge_shards([files[0], incomplete], tmp_path / "m")
    edited = tmp_path / "edited.json"
    data = json.loads(files[1].read_text())
    data["payload"]["scores"] = [None if s is None else s + 1 for s in data["payload"]["scores"]]
    edited.write_text(json.dumps(data))
    with pytest.raises(ShardError, match="checksum mismatch"):
        merge_shards([files[0], edited], tmp_path / "m")
    cut = tmp_path / "cut.json"
    cut.write_text(files[1].read_text()[:-100])
    with pytest.raises(ShardError, match="not a readable shard file"):
        merge_shards([files[0], cut], tmp_path / "m")
    cut.write_text(json.dumps({"results": []}))
    with pytest.raises(ShardError, match="not an xlmr-np eval shard file"):
        merge_shards([files[0], cut], tmp_path / "m")

    done = subprocess.run(
        [xlmr_np_command(), "merge", str(files[0]), "--out", str(tmp_path / "m")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "xlmr-np merge: error:" in done.stderr and "missing" in done.stderr
    done = subprocess.run(
        [xlmr_np_command(), "merge", *map(str, files), "--out", str(tmp_path / "m")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1].startswith("CMedQAv1-reranking")


# ----------------------------------------------------------------------------------------------------
# The score cache


@pytest.mark.integration
def test_corrupted_or_foreign_cache_is_detected(pq, hub, tiny_dir, tmp_path):
    write_parquet(pq, hub_path(hub, TASKS["CMedQAv1-reranking"]), make_rows(5, 10))
    good = evaluate(tiny_dir, tmp_path)["results"]
    (scores,) = (tmp_path / "cache").rglob("scores-all.bin")
    original = scores.read_bytes()

    def damaged(data: bytes, message: str) -> None:
        scores.write_bytes(data)
        with pytest.raises(CacheError, match=message):
            evaluate(tiny_dir, tmp_path)
        scores.write_bytes(original)

    flipped = bytearray(original)
    flipped[-RECORD.size + 17] ^= 0x40  # one bit of the last record's score
    damaged(bytes(flipped), r"record \d+ \(byte \d+\) fails its checksum; the file is corrupted")
    header = bytearray(original)
    header[30] ^= 0x01
    damaged(bytes(header), "header's checksum does not match")
    damaged(b"PK\x03\x04" + original[4:], "not an xlmr-np score cache")
    damaged(original[:20], "header is cut short")

    # a cache of another task copied into this one's directory
    write_parquet(pq, hub_path(hub, TASKS["CMedQAv2-reranking"]), make_rows(6, 5))
    evaluate(tiny_dir, tmp_path, task_name="CMedQAv2-reranking")
    (foreign,) = [p for p in (tmp_path / "cache").rglob("scores-all.bin") if p != scores]
    (scores.parent / "scores-copied.bin").write_bytes(foreign.read_bytes())
    message = r"scores of another run \(task='CMedQAv2-reranking', .*this run needs task='CMedQAv1-reranking'"
    with pytest.raises(CacheError, match=message):
        evaluate(tiny_dir, tmp_path)
    done = subprocess.run(
        [
            xlmr_np_command(),
            "eval",
            "--model",
            str(tiny_dir),
            "--task",
            "CMedQAv1-reranking",
            "--batch-size",
            "4",
            "--score-cache",
            str(tmp_path / "cache"),
            "--out",
            str(tmp_path / "o"),
        ],
        env=env_for(hub),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "xlmr-np eval: error:" in done.stderr and "scores-copied.bin" in done.stderr
    (scores.parent / "scores-copied.bin").unlink()
    assert evaluate(tiny_dir, tmp_path)["results"] == good


def test_one_writer_per_cache_file(tmp_path):
    header = {"model_fingerprint": "m", "settings": {}, "task": "t", "dataset": "d", "revision": "r"}
    with ScoreCache(tmp_path, header, "all") as cache:
        cache.append([b"k" * 16, b"j" * 16], [1.5, -2.25])
        with pytest.raises(CacheError, match="another xlmr-np run is writing this cache"):
            ScoreCache(tmp_path, header, "all")
        with ScoreCache(tmp_path, header, "shard-0-of-2") as other:  # another writer reads the same scores
            assert other.scores == {b"k" * 16: 1.5, b"j" * 16: -2.25}
    with ScoreCache(tmp_path, header, "all") as reopened:
        assert len(reopened) == 2 and b"k" * 16 in reopened


# ----------------------------------------------------------------------------------------------------
# Sampling, workers, progress, errors


def test_sample_with_bootstrap_interval(pq, hub, tiny_dir, tmp_path):
    write_parquet(pq, hub_path(hub, TASKS["CMedQAv1-reranking"]), make_rows(7, 40))
    (result,) = evaluate(tiny_dir, tmp_path, "a", max_queries=12, seed=3)["results"]["tasks"]
    sample = result["sample"]
    assert result["queries"] == 12 and sample["of_queries"] > 12 and sample["seed"] == 3
    assert sample["map_ci95"][0] <= result["map"] <= sample["map_ci95"][1]
    assert sample["mrr@10_ci95"][0] <= result["mrr@10"] <= sample["mrr@10_ci95"][1]
    assert evaluate(tiny_dir, tmp_path, "b", max_queries=12, seed=3)["results"]["tasks"][0] == result
    other = evaluate(tiny_dir, tmp_path, "c", max_queries=12, seed=4)["results"]["tasks"][0]
    assert [q["row"] for q in other["per_query"]] != [q["row"] for q in result["per_query"]]
    table = format_table({"tasks": [result]})
    assert "MAP 95% CI" in table and f"[{sample['map_ci95'][0]:.2f}, {sample['map_ci95'][1]:.2f}]" in table
    assert "12 of" in table and "(seed 3)" in table


@pytest.mark.integration
def test_workers_give_the_single_process_result(pq, hub, tiny_dir, tmp_path):
    write_parquet(pq, hub_path(hub, TASKS["CMedQAv1-reranking"]), make_rows(8, 15))
    single = evaluate(tiny_dir, tmp_path, "single", cache_dir=tmp_path / "c1")["results"]
    assert evaluate(tiny_dir, tmp_path, "pool", workers=2, cache_dir=tmp_path / "c2")["results"] == single


def test_progress_reports_rate_and_time_left():
    now = [100.0]
    stream = io.StringIO()
    progress = Progress(1000, stream=stream, interval=5.0, clock=lambda: now[0])
    now[0] = 110.0
    progress.advance(250, "T2Reranking")
    now[0] = 111.0
    progress.advance(10, "T2Reranking")  # within the interval: not printed
    now[0] = 120.0
    progress.advance(240, "MMarcoReranking")
    assert stream.getvalue().splitlines() == [
        "T2Reranking: 250/1,000 pairs (25.0%), 25.0 pairs/s, 0:00:10 elapsed, ETA 0:00:30",
        "MMarcoReranking: 500/1,000 pairs (50.0%), 25.0 pairs/s, 0:00:20 elapsed, ETA 0:00:20",
    ]


@pytest.mark.integration
def test_model_errors(pq, hub, tiny_dir, tmp_path):
    write_parquet(pq, hub_path(hub, TASKS["CMedQAv1-reranking"]), make_rows(9, 5))
    with pytest.raises(ConfigError, match="nowhere: not a directory"):
        evaluate(tmp_path / "nowhere", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="empty: not a model directory"):
        evaluate(tmp_path / "empty", tmp_path)
    two_labels = tmp_path / "two-labels"
    write_model(two_labels, seed=1, num_labels=2)  # a real two-label classifier, weights and config
    with pytest.raises(ConfigError, match="one relevance logit; this model has 2 labels"):
        evaluate(two_labels, tmp_path)
    with pytest.raises(ConfigError, match="one relevance logit; this model has 2 labels"):
        evaluate(two_labels, tmp_path, workers=2)  # raised while a worker loads it, reported here
    broken = tmp_path / "broken"  # config.json says two labels, the weights hold one
    broken.mkdir()
    for f in tiny_dir.iterdir():
        (broken / f.name).symlink_to(f)
    config = json.loads((tiny_dir / "config.json").read_text())
    config.update(id2label={"0": "no", "1": "yes"}, label2id={"no": 0, "yes": 1})
    (broken / "config.json").unlink()
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"'classifier.out_proj.weight' has shape \[1, 32\]; config.json implies"):
        evaluate(broken, tmp_path, workers=2)  # not a pool that respawns its failing workers forever
    with pytest.raises(InputError, match="0 <= i < n"):
        evaluate(tiny_dir, tmp_path, shard=(2, 2))
    done = subprocess.run(
        [xlmr_np_command(), "eval", "--model", str(tiny_dir), "--task", "T2Reranking", "--shard", "4/4"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "expected I/N with 0 <= I < N" in done.stderr
