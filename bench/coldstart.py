"""Cold start: load time, time to first score and peak RSS of one implementation in a fresh process.

The child process is this module: python -m bench.coldstart ENGINE MODEL_DIR PAIRS.npz BATCH
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .errors import BenchmarkError
from .peers import load_implementation
from .workloads import Workload, batches

CHECKOUT = Path(__file__).resolve().parent.parent  # the child runs `python -m bench.coldstart` from here


def cold_start(name: str, model_dir: Path, workload: Workload, batch_size: int) -> dict:
    """Load, first score and peak RSS of one implementation in a fresh process (see `_cold_start_child`).

    time_to_first_score_s is wall time from spawning the process to the first logit of one pair, so it
    includes interpreter start, imports and loading, as a user would wait for it.
    """
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        pairs = Path(tmp) / "pairs.npz"
        np.savez(pairs, *workload.sequences)
        cmd = [sys.executable, "-m", "bench.coldstart", name, str(model_dir), str(pairs), str(batch_size)]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=CHECKOUT)
        first_line = proc.stdout.readline()
        first = time.perf_counter() - start
        rest, err = proc.communicate()
    if proc.returncode != 0 or not first_line:
        raise BenchmarkError(f"cold start of {name} failed (exit {proc.returncode}): {err.strip()[-2000:]}")
    report = json.loads(rest.strip().splitlines()[-1])
    report.update(json.loads(first_line), implementation=name, time_to_first_score_s=first)
    return report


def _cold_start_child(name: str, model_dir: str, pairs_file: str, batch_size: int) -> None:
    """Child process: load, print the first score's timings, rerank the whole workload, print peak RSS."""
    t0 = time.perf_counter()
    run = load_implementation(name, Path(model_dir))
    loaded = time.perf_counter()
    with np.load(pairs_file) as f:
        workload = Workload("cold", [f[k] for k in f.files], "")
    first_ids = workload.sequences[0][None, :]
    run(first_ids, np.ones_like(first_ids))
    print(json.dumps({"load_s": loaded - t0, "first_forward_s": time.perf_counter() - loaded}), flush=True)
    t = time.perf_counter()
    for ids, mask in batches(workload, batch_size):
        run(ids, mask)
    table = getattr(run, "params", {}).get("roberta.embeddings.word_embeddings.weight")
    print(
        json.dumps(
            {
                "rerank_s": time.perf_counter() - t,
                "peak_rss_mb": _peak_rss_mb(),
                "weights_file_rss_mb": _mapped_rss_mb(Path(model_dir) / "model.safetensors"),
                "embedding_resident_mb": None if table is None else _resident_mb(table.raw.array),
                "embedding_mb": None if table is None else table.raw.array.nbytes / 2**20,
            }
        ),
        flush=True,
    )


def _peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM (Linux), which starts afresh at exec; ru_maxrss would carry the
    parent's peak over a fork + exec, so it is only the fallback."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _resident_mb(array: np.ndarray) -> float | None:
    """MB of `array`'s pages present in this process's page table (Linux /proc/self/pagemap, bit 63).

    Unlike mincore, which reports the page cache (warm for every implementation here), this counts only the
    pages this process has actually touched, i.e. what read-ahead and row lookups paged in.
    """
    page = os.sysconf("SC_PAGE_SIZE")
    start = array.__array_interface__["data"][0] // page
    stop = (array.__array_interface__["data"][0] + array.nbytes + page - 1) // page
    try:
        with open("/proc/self/pagemap", "rb") as f:
            f.seek(start * 8)
            entries = np.frombuffer(f.read((stop - start) * 8), dtype="<u8")
    except OSError:
        return None
    return int(((entries >> np.uint64(63)) & np.uint64(1)).sum()) * page / 2**20


def _mapped_rss_mb(path: Path) -> float | None:
    """Resident MB of this process's mappings of `path` (Linux /proc/self/smaps), or None if not mapped."""
    try:
        lines = Path("/proc/self/smaps").read_text().splitlines()
    except OSError:
        return None
    total, inside, found = 0, False, False
    for line in lines:
        parts = line.split()
        if parts and "-" in parts[0] and len(parts) >= 5 and not parts[0].endswith(":"):
            inside = line.rstrip().endswith(str(path))
            found |= inside
        elif inside and parts and parts[0] == "Rss:":
            total += int(parts[1])
    return total / 1024 if found else None


if __name__ == "__main__":
    _cold_start_child(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
