"""Timing: one pass over prepared batches, the best batch size per engine, interleaved repeats."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from .workloads import Workload, batches, useful_flops


def time_pass(run, prepared) -> float:
    """Seconds to score every batch once."""
    t = time.perf_counter()
    for ids, mask in prepared:
        run(ids, mask)
    return time.perf_counter() - t


def best_batch_size(run, workload: Workload, candidates: Sequence[int], pairs: int = 32) -> dict[int, float]:
    """docs/s at each candidate batch size on the first `pairs` pairs of the workload (after a warm-up)."""
    sample = Workload(workload.name, workload.sequences[:pairs], workload.about)
    rates = {}
    for size in candidates:
        prepared = batches(sample, size)
        run(*prepared[-1])  # warm-up at this shape
        rates[size] = pairs / time_pass(run, prepared)
    return rates


@dataclass
class Result:
    workload: str
    engine: str
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


def measure(runners: dict, workloads: list[Workload], batch_sizes: dict[str, int], config,
            repeats: int, pause_s: float = 0.2, log=print) -> list[Result]:
    """Interleave: for each repeat, each workload, each engine, one timed pass; first a warm-up batch of
    each workload's longest shape per engine (allocations, thread pools, lazy initialisation).

    pause_s between engines lets the previous engine's spinning worker threads (OpenMP, OpenBLAS) go idle.
    """
    prepared = {(w.name, e): batches(w, batch_sizes[e]) for w in workloads for e in runners}
    results = {(w.name, e): Result(w.name, e, batch_sizes[e], len(w.sequences), int(w.lengths.sum()),
                                   flops=useful_flops(w.lengths, config)) for w in workloads for e in runners}
    for w in workloads:
        for e, run in runners.items():
            time_pass(run, prepared[w.name, e][:1])
            time.sleep(pause_s)
    for r in range(repeats):
        for w in workloads:
            for e, run in runners.items():
                results[w.name, e].seconds.append(time_pass(run, prepared[w.name, e]))
                time.sleep(pause_s)
            log(f"repeat {r + 1}/{repeats} {w.name}: " + ", ".join(
                f"{e} {results[w.name, e].pairs / results[w.name, e].seconds[-1]:.2f}" for e in runners) + " docs/s")
    return list(results.values())
