"""Where xlmr_np's forward pass spends its time, by op, on one batch of the full-size model.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m bench.profile_forward ~/.cache/xlmr-np/full-random 16 256

(the model directory `python -m bench` builds on its first run).

Prints wall time per op family (cProfile cumulative time of the model's functions: the GEMMs, attention,
GELU, layer norm, embeddings) against the whole forward pass, and the GEMMs' achieved GFLOP/s.

On one core, BLAS included: that is how the engine runs inside each of xlmr_np.workers' threads (one per
core, each with its own pairs), and cProfile sees only the calling thread. The sgemm peak printed beside it
is one core's.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

from xlmr_np import engine
from xlmr_np.config import XLMRobertaConfig
from xlmr_np.weights import load_params

from .machine import sgemm_peak
from .workloads import batches, uniform

OPS = {
    "dense GEMMs (matmul_wt)": "matmul_wt",
    "attention without Q, K, V": "attention",
    "  of which softmax": "softmax",
    "GELU with its bias (gelu)": "gelu",
    "layer norm (layer_norm)": "layer_norm",
    "embeddings": "embeddings",
}


def main(model_dir: str, pairs: int, length: int) -> None:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        profile(model_dir, pairs, length)


def profile(model_dir: str, pairs: int, length: int) -> None:
    config = XLMRobertaConfig.from_file(Path(model_dir) / "config.json")
    params = load_params(model_dir, config)
    ((ids, mask),) = batches(uniform(length, pairs, config.vocab_size), pairs)
    engine.forward(params, config, ids, mask)  # warm-up
    t = time.perf_counter()
    engine.forward(params, config, ids, mask)
    wall = time.perf_counter() - t
    profiler = cProfile.Profile()
    profiler.runcall(engine.forward, params, config, ids, mask)
    stats = pstats.Stats(profiler).stats  # {(file, line, name): (cc, nc, tottime, cumtime, callers)}
    total = max(v[3] for k, v in stats.items() if k[2] == "forward")
    print(f"{pairs} pairs x {length} tokens: forward {wall:.3f} s unprofiled, {total:.3f} s profiled")
    dense_flops = (
        2
        * pairs
        * length
        * config.num_hidden_layers
        * (4 * config.hidden_size**2 + 2 * config.hidden_size * config.intermediate_size)
    )
    for label, name in OPS.items():
        seconds = cumulative(stats, name)
        if name == "attention":  # self_attention minus its Q, K, V projections (the head's two are tiny)
            seconds = cumulative(stats, "self_attention") - cumulative(stats, "linear")
        extra = f", {dense_flops / seconds / 1e9:.0f} GFLOP/s" if name == "matmul_wt" else ""
        print(f"  {label:30s} {seconds:7.3f} s  {100 * seconds / total:5.1f}%{extra}")
    print(
        f"  numpy sgemm peak on one core now: {sgemm_peak():.0f} GFLOP/s; load average "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )


def cumulative(stats, name: str) -> float:
    """Cumulative seconds of every xlmr_np.engine function called `name`."""
    return sum(v[3] for k, v in stats.items() if k[2] == name and k[0].endswith("engine.py"))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
