"""Each op of xlmr_np.engine timed alone, on one thread (BLAS included), beside what it is measured against.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m bench.ops_speed [--repeats 15] [--long]

Prints one table: op, shape, median ms over --repeats runs (thread CPU time, so that other processes on a
busy machine count less), throughput, and a comparison where the op has one:

- GELU, layer norm, the softmax: their time in copies of their array (one np.copyto of the same array, a
  read and a write of every value: the floor for a pass that reads its input and writes its output once);
- the softmax of attention: the engine's (softmax_weights: weights below 2^-60 of the row's largest exactly
  0, the division left to the context) against the plain formula (max, subtract, exp, divide), on soft
  scores (std 1) and sharp ones (std 30, where the plain formula's exp gives subnormal floats): the cost of
  the subnormal guard;
- one head's attention (both products and the softmax) in the engine's blocks against the plain formula on
  the head's whole [n, n] scores, at 512, 2,048 and (--long) 8,192 tokens;
- GELU on two threads at once, each on its own array, against one thread (engine.BLOCK_ELEMENTS: the
  threads wait on each other's GIL at every numpy pass);
- numpy's sgemm on the feed-forward's shape (the reference point for GFLOP/s).

Shapes: bge-reranker-base's (D 768, 12 heads, F 3072), 16 pairs x 256 tokens (N = 4096) for the dense ops.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from xlmr_np import engine

N, D, H, F, DH = 4096, 768, 12, 3072, 64


def cpu_ms(fn: Callable[[], object], repeats: int, prepare: Callable[[], object] | None = None) -> float:
    """Median thread CPU time of fn() in ms, after one warm-up; prepare() runs untimed before each call."""
    times = []
    for i in range(repeats + 1):
        if prepare is not None:
            prepare()
        t = time.thread_time()
        fn()
        if i:
            times.append(time.thread_time() - t)
    return 1e3 * statistics.median(times)


def wall_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of fn() in ms (for work spread over threads), after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def plain_softmax(s):
    """The plain formula in place: max, subtract, exp, divide."""
    s -= s.max(axis=-1, keepdims=True)
    np.exp(s, out=s)
    s /= s.sum(axis=-1, keepdims=True)


def plain_head(q, k, v):
    """One head's attention as the plain formula computes it: its whole [n, n] scores at once."""
    s = q @ k.T  # [n, n]
    plain_softmax(s)
    return s @ v  # [n, Dh]


def softmax_rows(scores, kind: str, repeats: int, copies) -> list[tuple[str, str, float, str]]:
    """The engine's softmax and the plain formula on the same scores [H, n, n], each on a fresh copy."""
    work = np.empty_like(scores)
    floor = np.full(scores.shape[-1], engine.weight_floor(scores.dtype)[0], dtype=scores.dtype)
    guarded = cpu_ms(lambda: engine.softmax_weights(work, floor), repeats, lambda: np.copyto(work, scores))
    plain = cpu_ms(lambda: plain_softmax(work), repeats, lambda: np.copyto(work, scores))
    shape = "[" + ", ".join(map(str, scores.shape)) + "]"
    return [
        (f"softmax, {kind} scores: engine", shape, guarded, f"{guarded / plain:.2f}x the plain formula"),
        (f"softmax, {kind} scores: plain formula", shape, plain, copies(scores.shape, plain)),
    ]


def attention_row(qkv, repeats: int) -> tuple[str, str, float, str]:
    """engine.attention on one pair of n tokens, all heads, against the plain formula on one head."""
    q, k, v = qkv
    n = len(q)
    work, offsets = np.empty_like(q), np.array([0, n])
    blocks = cpu_ms(lambda: engine.attention(work, k, v, offsets, H), repeats, lambda: np.copyto(work, q))
    plain = cpu_ms(lambda: plain_head(q[:, :DH], k[:, :DH], v[:, :DH]), max(1, repeats // 5))
    return (
        "attention (engine.attention), all heads",
        f"{H} heads x [{n}, {n}]",
        blocks,
        f"{1e6 * blocks / (H * n * n):.2f} ns/score; plain formula (one head): {1e6 * plain / (n * n):.2f}",
    )


def rows(repeats: int, long: bool) -> list[tuple[str, str, float, str]]:
    """(op, shape, median ms, comparison) for every op."""
    rng = np.random.default_rng(0)
    out = []

    def copies(shape, ms):
        a, b = np.ones(shape, dtype=np.float32), np.empty(shape, dtype=np.float32)
        return f"{ms / cpu_ms(lambda: np.copyto(b, a), repeats):.1f} copies of the array"

    x = rng.standard_normal((N, F), dtype=np.float32)
    y = np.empty_like(x)
    ms = cpu_ms(lambda: engine.gelu(x, out=y), repeats)
    out.append(("GELU", f"[{N}, {F}]", ms, f"{x.size / ms / 1e3:.0f} M values/s, {copies(x.shape, ms)}"))
    xs, ys = [rng.standard_normal((N, F), dtype=np.float32) for _ in range(2)], [np.empty_like(x) for _ in range(2)]
    with ThreadPoolExecutor(2) as pool:
        two = wall_ms(lambda: list(pool.map(lambda k: engine.gelu(xs[k], out=ys[k]), range(2))), repeats)
    one = wall_ms(lambda: engine.gelu(xs[0], out=ys[0]), repeats)
    out.append(("GELU, two threads at once", f"2 x [{N}, {F}]", two, f"{2 * one / two:.2f}x one thread's work/s"))
    h, r = rng.standard_normal((N, D), dtype=np.float32), rng.standard_normal((N, D), dtype=np.float32)
    w, b, o = np.ones(D, dtype=np.float32), np.zeros(D, dtype=np.float32), np.empty((N, D), dtype=np.float32)
    ms = cpu_ms(lambda: engine.layer_norm(h, w, b, 1e-5, out=o, add=(b, r)), repeats)
    out.append(("layer norm with bias and residual", f"[{N}, {D}]", ms, copies(h.shape, ms)))
    for std, kind in ((1.0, "soft"), (30.0, "sharp")):
        out += softmax_rows((rng.standard_normal((H, 512, 512)) * std).astype(np.float32), kind, repeats, copies)
    for n in (512, 2048) + ((8192,) if long else ()):
        out.append(attention_row([rng.standard_normal((n, D), dtype=np.float32) * 0.3 for _ in range(3)], repeats))
    a, wt = rng.standard_normal((N, D), dtype=np.float32), rng.standard_normal((F, D), dtype=np.float32)
    ms = cpu_ms(lambda: engine.matmul_wt(a, wt), repeats)
    out.append(
        (
            "sgemm, feed-forward up (matmul_wt)",
            f"[{N}, {D}] x [{D}, {F}]",
            ms,
            f"{2 * N * D * F / ms / 1e6:.0f} GFLOP/s",
        )
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ops_speed", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per op (median)")
    parser.add_argument("--long", action="store_true", help="also one head's attention at 8,192 tokens (slow)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        table = rows(args.repeats, args.long)
    print("| op | shape | median ms | |\n|---|---|---|---|")
    for op, shape, ms, note in table:
        print(f"| {op} | {shape} | {ms:.2f} | {note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
