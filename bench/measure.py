"""Timing: one pass over prepared batches, the best batch size per implementation, interleaved repeats."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .workloads import Workload, batches, useful_flops


def time_pass(run, prepared) -> float:
    """Seconds to score every batch once."""
    t = time.perf_counter()
    for ids, mask in prepared:
        run(ids, mask)
    return time.perf_counter() - t


def best_batch_size(
    run, workload: Workload, candidates: Sequence[int], pairs: int = 32, repeats: int = 3
) -> dict[int, float]:
    """docs/s at each candidate batch size on the first `pairs` pairs of the workload: after a warm-up, the
    median of `repeats` passes, the candidates interleaved within each repeat (one timed pass each flipped
    between 16 and 32 from run to run)."""
    sample = Workload(workload.name, workload.sequences[:pairs], workload.about)
    prepared = {size: batches(sample, size) for size in candidates}
    for size in candidates:
        run(*prepared[size][-1])  # warm-up at this shape
    seconds: dict[int, list[float]] = {size: [] for size in candidates}
    for _ in range(repeats):
        for size in candidates:
            seconds[size].append(time_pass(run, prepared[size]))
    return {size: len(sample.sequences) / statistics.median(t) for size, t in seconds.items()}


def logits_in_order(run, workload: Workload, batch_size: int) -> np.ndarray:
    """One implementation's logits [pairs] for a workload, in the workload's order (batches() sorts by length)."""
    order = np.argsort(-workload.lengths, kind="stable")
    out = np.concatenate([np.asarray(run(ids, mask), dtype=np.float64) for ids, mask in batches(workload, batch_size)])
    logits = np.empty_like(out)
    logits[order] = out
    return logits


def agreement(logits: np.ndarray, reference: np.ndarray) -> dict:
    """max and mean |logit - reference| and the Spearman rank correlation of the two, over one workload."""
    diff = np.abs(logits - reference)
    ranks = [np.argsort(np.argsort(x)).astype(np.float64) for x in (logits, reference)]
    spearman = float(np.corrcoef(*ranks)[0, 1]) if len(reference) > 1 else 1.0
    return {"max_abs": float(diff.max()), "mean_abs": float(diff.mean()), "spearman": spearman}


@dataclass
class Result:
    workload: str
    implementation: str
    batch_size: int
    pairs: int
    tokens: int
    seconds: list[float] = field(default_factory=list)
    flops: float = 0.0

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def docs_per_s(self) -> float:
        return self.pairs / self.median_s

    @property
    def gflops(self) -> float:
        return self.flops / self.median_s / 1e9


def measure(
    runners: dict,
    workloads: list[Workload],
    batch_sizes: dict[str, int],
    config,
    repeats: int,
    pause_s: float = 0.2,
    log=print,
    peak=None,
) -> tuple[list[Result], list[float]]:
    """Interleave: for each repeat, each workload, each implementation, one timed pass; first a warm-up batch of
    each workload's longest shape per implementation (allocations, thread pools, lazy initialisation).

    A workload with its own batch_size (the single-pair latency) is run at it by every implementation. peak: a
    function measuring the sgemm peak (GFLOP/s), called at the start of every repeat, so that "% of peak"
    compares with the machine as it was during the same repeats; returns the results and those peaks.
    pause_s between implementations lets the previous one's spinning worker threads (OpenMP, OpenBLAS) go idle.
    Progress (workload, implementation, repeat, estimated time left) goes to `log`.
    """

    def size(w, e):
        return w.batch_size or batch_sizes[e]

    prepared = {(w.name, e): batches(w, size(w, e)) for w in workloads for e in runners}
    results = {
        (w.name, e): Result(
            w.name, e, size(w, e), len(w.sequences), int(w.lengths.sum()), flops=useful_flops(w.lengths, config)
        )
        for w in workloads
        for e in runners
    }
    for w in workloads:
        for e, run in runners.items():
            log(f"warm-up: {w.name}, {e}")
            time_pass(run, prepared[w.name, e][:1])
            time.sleep(pause_s)
    peaks: list[float] = []
    started, passes, done = time.perf_counter(), repeats * len(workloads) * len(runners), 0
    for r in range(repeats):
        if peak is not None:
            peaks.append(peak())
            log(f"repeat {r + 1}/{repeats}: numpy sgemm peak {peaks[-1]:.0f} GFLOP/s")
        for w in workloads:
            for e, run in runners.items():
                elapsed = time.perf_counter() - started
                left = f", about {_minutes(elapsed / done * (passes - done))} left" if done else ""
                log(f"repeat {r + 1}/{repeats}: {w.name}, {e}{left}")
                results[w.name, e].seconds.append(time_pass(run, prepared[w.name, e]))
                done += 1
                time.sleep(pause_s)
            log(
                f"repeat {r + 1}/{repeats} {w.name}: "
                + ", ".join(f"{e} {results[w.name, e].pairs / results[w.name, e].seconds[-1]:.2f}" for e in runners)
                + " docs/s"
            )
    return list(results.values()), peaks


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"
