"""What one shard of `xlmr-np eval --executor ...` costs besides scoring, and what merging N shards costs.

Every shard, however small, hashes the model, reads and plans every task, loads the model and writes a
shard file per task holding the whole plan; the driver then reads N shard files per task. Those fixed
costs decide where adding shards stops paying. Run it on full-size datasets (any data in the C-MTEB
layout; tools/eval_throughput.py --write-hub writes task-shaped ones) and a full-size model:

    HF_HUB_CACHE=/tmp/hub HF_HUB_OFFLINE=1 python tools/shard_overhead.py --model /tmp/full-random --shards 16

The shard files written for the merge carry zero scores: only their size matters here.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from xlmr_np.cmteb.executors import survey
from xlmr_np.cmteb.plan import shard_batches
from xlmr_np.cmteb.runner import scoring_settings, task_plan
from xlmr_np.cmteb.scorer import load_reranker, model_fingerprint
from xlmr_np.cmteb.shards import merge_shards, write_shard
from xlmr_np.cmteb.tasks import TASKS


def timed(f, *args, **kwargs):
    start = time.perf_counter()
    value = f(*args, **kwargs)
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model directory")
    parser.add_argument("--shards", type=int, default=16, help="shard files per task to merge (default 16)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    model = Path(args.model)
    print(f"load average {os.getloadavg()[0]:.2f} at start")
    fingerprint, seconds = timed(model_fingerprint, model)
    print(f"hash the model: {seconds:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        _, seconds = timed(
            survey, str(model), "all", Path(tmp) / "cache", args.batch_size, None, 0, 512, "longest_first"
        )
        print(f"hash the model, read and plan the four tasks (a shard's start, the driver's survey): {seconds:.1f} s")
        _, seconds = timed(load_reranker, model, scoring_settings(512, "longest_first"))
        print(f"load the model: {seconds:.1f} s")
        common = {
            "model": str(model),
            "model_fingerprint": fingerprint,
            "settings": scoring_settings(512, "longest_first"),
            "batch_size": args.batch_size,
        }
        for task in TASKS.values():
            plan, sample = task_plan(task, args.batch_size, None, 0)
            scores = dict.fromkeys(plan.keys, 0.0)
            paths = []
            start = time.perf_counter()
            for i in range(args.shards):
                batches = shard_batches(plan.n_batches, (i, args.shards))
                paths.append(write_shard(Path(tmp) / "shards", plan, scores, batches, sample, (i, args.shards), common))
            write = (time.perf_counter() - start) / args.shards
            _, merge = timed(merge_shards, paths, Path(tmp) / "merged")
            print(
                f"{task.name}: {len(plan.pairs):,} pairs; a shard file of {paths[0].stat().st_size / 1e6:.1f} MB "
                f"written in {write:.2f} s; {args.shards} merged in {merge:.1f} s ({merge / args.shards:.2f} s each)"
            )
            for path in paths:
                path.unlink()
    print(
        f"peak resident memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB; "
        f"load average {os.getloadavg()[0]:.2f} at the end"
    )


if __name__ == "__main__":
    main()
