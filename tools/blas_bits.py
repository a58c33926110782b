"""Which row blocks and column splits of x W^T give the same bits as one BLAS call, on this machine's BLAS.

    python tools/blas_bits.py
    OPENBLAS_CORETYPE=Haswell python tools/blas_bits.py     # another of OpenBLAS's x86 kernels

The engine runs every dense product on whole blocks of engine.GEMM_ROWS rows, aligned to a multiple of it,
so that a pair's numbers do not depend on its batch; and for a small job it splits products by column
blocks among threads, where that gives the same bits (engine.column_split_is_exact). This prints, for the
model's three weight shapes with BLAS on one thread (as the engine runs):

- which call sizes M (2..600 rows) compute their rows exactly as the same rows of one 2304-row call;
- for aligned row blocks of several sizes: whether each block computed alone is the same bits;
- for column blocks of several widths: whether the split product is the same bits.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

SHAPES = ((768, 768), (768, 3072), (3072, 768))  # (in, out): attention, feed-forward up, feed-forward down
ROWS = 2304
BLOCKS = (8, 12, 16, 24, 48, 96, 128)
WIDTHS = (64, 128, 256, 384)


def main() -> None:
    kernels = [f"{i['internal_api']} {i.get('version')} {i.get('architecture')}" for i in threadpool_info()]
    print("BLAS:", "; ".join(k for k in kernels if "blas" in k.lower() or "mkl" in k.lower()) or "unknown")
    rng = np.random.default_rng(1)
    with threadpool_limits(1, user_api="blas"):
        for inputs, outputs in SHAPES:
            x = rng.standard_normal((ROWS, inputs), dtype=np.float32)  # [ROWS, in]
            weight = rng.standard_normal((outputs, inputs), dtype=np.float32)  # [out, in]
            whole = x @ weight.T  # [ROWS, out]
            same = [m for m in range(2, 601) if np.array_equal(x[:m] @ weight.T, whole[:m])]
            print(f"\n{inputs} -> {outputs}: call sizes 2..600 rows giving the same rows: {summary(same)}")
            for block in BLOCKS:
                aligned = all(
                    np.array_equal(x[s : s + block] @ weight.T, whole[s : s + block])
                    for s in range(0, ROWS - block + 1, block)
                )
                split = [
                    str(width)
                    for width in WIDTHS
                    if all(
                        np.array_equal(split_product(x[s : s + block], weight, width), whole[s : s + block])
                        for s in range(0, 8 * block, block)
                    )
                ]
                print(
                    f"  blocks of {block:3d} rows: each alone the same bits: {'yes' if aligned else 'no '}; "
                    f"column splits giving the same bits: {', '.join(split) or 'none'}"
                )


def split_product(x, weight, width):
    """x W^T computed as one BLAS call per block of `width` output columns."""
    return np.concatenate([x @ weight[a : a + width].T for a in range(0, weight.shape[0], width)], axis=1)


def summary(values: list[int]) -> str:
    if len(values) == 599:
        return "all"
    if not values:
        return "none"
    steps = set(np.diff(values).tolist())
    if len(steps) == 1:
        return f"{values[0]}, {values[1]}, ... (every {steps.pop()}th), {len(values)} of 599"
    return f"{len(values)} of 599: {values[:12]} ..."


if __name__ == "__main__":
    main()
