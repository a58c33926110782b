"""Shard files: one machine's part of an evaluation, and merging all parts into the results of one run.

`shard=(i, n)` scores batches i, i+n, i+2n, ... of each task's plan and writes a self-contained shard
file; merge_shards() checks that the n shards of one plan are all there, complete and of one run, then
computes the metrics as one run would have.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import ShardError
from .plan import Plan, plan_digest, shard_batches
from .results import task_result, write_json
from .tasks import TASKS

SHARD_FORMAT = "xlmr-np eval shard"
SHARD_VERSION = 1

# Fields every shard of one merge must share, and those the shards of one task must share as well.
_SAME_RUN = ("model_fingerprint", "settings", "batch_size")
_SAME_TASK = ("dataset", "revision", "sample", "plan_digest")

Shard = tuple[Path, dict]  # a shard file and its payload


def checksum(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


def write_shard(
    out_dir: Path,
    plan: Plan,
    scores: Mapping[bytes, float],
    batches: range,
    sample: dict | None,
    shard: tuple[int, int],
    common: dict,
) -> Path:
    """A self-contained shard file: the plan's structure and keys, and the scores of this shard's batches."""
    task = plan.task
    mine = {j for b in batches for j in plan.batch(b)}
    payload = dict(
        common,
        format=SHARD_FORMAT,
        version=SHARD_VERSION,
        task=task.name,
        dataset=task.repo,
        revision=task.revision,
        sample=sample,
        shard=list(shard),
        plan_digest=plan.digest,
        keys=[k.hex() for k in plan.keys],
        structure=plan.structure,
        scores=[scores[k] if j in mine else None for j, k in enumerate(plan.keys)],
    )
    path = out_dir / f"{task.name}.shard-{shard[0]}-of-{shard[1]}.json"
    write_json(path, {"payload": payload, "sha256": checksum(payload)})
    return path


def read_shard(path: str | Path) -> dict:
    """A shard file's payload, after checking that it is one and that its checksum holds."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # unreadable, not UTF-8, not JSON, an integer too long to convert
        raise ShardError(f"{path}: not a readable shard file ({e})") from None
    except RecursionError:
        raise ShardError(f"{path}: not a shard file (nested too deeply)") from None
    payload = data.get("payload") if isinstance(data, dict) else None
    if not isinstance(payload, dict) or payload.get("format") != SHARD_FORMAT:
        raise ShardError(f"{path}: not an xlmr-np eval shard file")
    if payload.get("version") != SHARD_VERSION:
        raise ShardError(f"{path}: shard format version {payload.get('version')}, expected {SHARD_VERSION}")
    if data.get("sha256") != checksum(payload):
        raise ShardError(f"{path}: checksum mismatch: the file is corrupted or was edited; rerun that shard")
    return payload


def _check_same(shards: list[Shard], fields: tuple[str, ...], what: str) -> None:
    (first_path, first), *rest = shards
    for path, payload in rest:
        for field in fields:
            if payload.get(field) != first.get(field):
                raise ShardError(
                    f"{what}: {first_path} and {path} differ in {field} ({first.get(field)!r} vs "
                    f"{payload.get(field)!r}); the shards of one evaluation must share the model, "
                    f"settings, batch size, dataset revision and query sample"
                )


def _merge_task(name: str, shards: list[Shard]) -> dict:
    if name not in TASKS:
        raise ShardError(f"{shards[0][0]}: unknown task {name!r}")
    _check_same(shards, _SAME_TASK + ("keys", "structure"), name)
    counts = {p["shard"][1] for _, p in shards}
    if len(counts) != 1:
        raise ShardError(f"{name}: the shards split the task in different numbers of parts: {sorted(counts)}")
    (n,) = counts
    seen: dict[int, Path] = {}
    for path, payload in shards:
        i = payload["shard"][0]
        if i in seen:
            raise ShardError(f"{name}: shard {i}/{n} given twice ({seen[i]} and {path})")
        seen[i] = path
    missing = sorted(set(range(n)) - set(seen))
    if missing:
        raise ShardError(
            f"{name}: shard(s) {missing} of {n} missing (have {sorted(seen)}); all shards 0..{n - 1} are needed"
        )
    first = shards[0][1]
    keys = [bytes.fromhex(k) for k in first["keys"]]
    batch_size = first["batch_size"]
    if plan_digest(name, first["revision"], batch_size, keys, first["structure"]) != first["plan_digest"]:
        raise ShardError(f"{name}: the shards' plan does not match its digest; the shard files are inconsistent")
    scores = np.full(len(keys), np.nan)
    n_batches = math.ceil(len(keys) / batch_size)
    for path, payload in shards:
        i, n = payload["shard"]
        mine = [
            j
            for b in shard_batches(n_batches, (i, n))
            for j in range(b * batch_size, min((b + 1) * batch_size, len(keys)))
        ]
        given = [j for j, s in enumerate(payload["scores"]) if s is not None]
        if given != mine:
            raise ShardError(
                f"{path}: shard {i}/{n} holds scores for {len(given):,} pairs but its "
                f"batches have {len(mine):,}; the shard is incomplete or mislabelled, rerun it"
            )
        scores[mine] = [payload["scores"][j] for j in mine]
    return task_result(TASKS[name], first["structure"], scores, first["sample"], first.get("known_model"))


def merge_shards(paths: Sequence[str | Path], out_dir: str | Path) -> dict:
    """Combine shard files into the results of one run (refusing missing, incomplete or mismatched
    shards), and write out_dir/results.json."""
    if not paths:
        raise ShardError("no shard files given")
    shards = [(Path(p), read_shard(p)) for p in paths]
    _check_same(shards, _SAME_RUN, "merge")
    by_task: dict[str, list[Shard]] = {}
    for path, payload in shards:
        by_task.setdefault(payload["task"], []).append((path, payload))
    order = sorted(by_task, key=lambda name: list(TASKS).index(name) if name in TASKS else len(TASKS))
    first = shards[0][1]
    results = {
        "model": first["model"],
        **{k: first[k] for k in _SAME_RUN},
        "known_model": first.get("known_model"),
        "tasks": [_merge_task(name, by_task[name]) for name in order],
    }
    write_json(Path(out_dir) / "results.json", results)
    return results
