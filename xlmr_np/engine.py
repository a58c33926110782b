"""The fast forward pass that Reranker scores with: the same model as xlmr_np.model, arranged for speed.

xlmr_np.model is the reference to read; this file computes the same function (tests/test_engine.py ties
the two on every layer's output: float64 within 1e-12 of the reference's scale) with the speed machinery
the reference leaves out:

- packing: the real tokens of all pairs are stacked into one [N, D] matrix, so padding costs nothing in
  the dense layers, and attention runs per pair over that pair's own tokens;
- GEMM_ROWS row blocks, so that every pair's numbers are bit for bit independent of its batch;
- cache blocking of the elementwise passes (GELU, layer norm), feed-forward in FFN_ROWS chunks, and
  work done in place in buffers the pass already owns.

On another array namespace (xlmr_np.arrays: CuPy on a GPU) the same formulas run whole, without the
numpy-only machinery, and attention pads each group of pairs to its longest (padded_attention): one
batched product per group instead of a few per pair. Every function takes its namespace from its inputs
(`xp = ops_of(x)`); `xp.standard` is False on numpy, where the code is numpy's as it always was.

It records nothing but, on request, the hidden states at layer boundaries. The work is split in two:
`pack` (checks and flattens a padded batch) and `run` (the layers on a packed batch). A pair only ever
reads its own rows, and every row's numbers are independent of the others (GEMM_ROWS), so any split of a
batch's pairs into groups run separately, for example by one worker thread per core, gives the same
logits bit for bit.

Symbols: B pairs, T padded tokens per pair, N real tokens in the batch (sum of lengths), D hidden size,
H attention heads, Dh head size, F feed-forward size, L labels.
"""

from __future__ import annotations

import contextvars
import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import numerics
from .arrays import NUMPY, ops_of, params_ops
from .config import XLMRobertaConfig
from .model import check_batch, position_ids

# ----------------------------------------------------------------------------------------------------
# Primitives


# BLAS picks its kernel, and with it the order of summation, by the matrix sizes: one row alone (gemv)
# or a few rows (OpenBLAS's small-matrix kernels, up to 37 rows for the tiny test models' shapes) round
# differently than many, and OpenBLAS's Haswell/Zen kernel computes rows in tiles of 12 with the remainder
# rows summed in another order. Running every product on a multiple of GEMM_ROWS rows (the tail
# zero-padded to a block of its own) makes each pair's numbers, bit for bit, independent of how many other
# pairs share its batch. The bulk goes to BLAS as one call, not one call per block: each call costs a
# thread synchronisation, and the rows' sums do not depend on how many blocks share a call. 48 is a
# multiple of 12 above every small-matrix case seen; `python tools/blas_bits.py` shows, for the machine's
# BLAS, which call sizes, row blocks and column splits keep the bits (OPENBLAS_CORETYPE names another
# OpenBLAS kernel), and tests/test_engine.py and tests/test_workers.py check it end to end. One limit: on
# the Haswell/Zen kernel a row's bits also depend on its place within its tile of 12, so there a pair's
# logits can change in the last bits with the rows before it in the batch (docs/performance.md).
GEMM_ROWS = 48


def matmul_wt(x, weight):
    """x W^T for a torch [out, in] weight, on multiples of GEMM_ROWS rows (see above).

    A few rows (under SMALL_ROWS) go to BLAS as one zero-padded call: a second, tail call would read the
    whole weight matrix again for a few rows of work. Many rows go as the bulk plus a padded tail block,
    without copying the bulk. On another namespace: one product (row blocks are a matter of the CPU's BLAS).
    """
    if not isinstance(x, np.ndarray):
        return x @ weight.T  # [N, in] -> [N, out]
    n = x.shape[0]
    bulk = n - n % GEMM_ROWS
    if bulk == n:
        return product(x, weight)  # [N, in] -> [N, out]
    if n < SMALL_ROWS:
        padded = np.zeros((bulk + GEMM_ROWS, x.shape[1]), dtype=x.dtype)  # [N rounded up, in]
        padded[:n] = x
        return product(padded, weight)[:n]  # [N rounded up, out] -> [N, out]
    y = np.empty((n, weight.shape[0]), dtype=x.dtype)  # [N, in] -> [N, out]
    product(x[:bulk], weight, out=y[:bulk])
    padded = np.zeros((GEMM_ROWS, x.shape[1]), dtype=x.dtype)  # [GEMM_ROWS, in]
    padded[: n - bulk] = x[bulk:]
    y[bulk:] = product(padded, weight)[: n - bulk]  # [GEMM_ROWS, out] -> [R, out]
    return y


SMALL_ROWS = 8 * GEMM_ROWS


# Intra-op threads, for a job too small to split by pairs (one pair, a few short ones: see xlmr_np.workers):
# an object with `threads` and `map(tasks)` (run the callables on that many threads, return when all are
# done), set for the calling thread only; None runs everything on it. The dense products are then split by
# whole COLUMN_BLOCKs of output features and attention by its blocks (attention_blocks), each computed
# alone anyway; but whether a column block of x W^T is the same bits computed alone as within the whole
# product depends on the BLAS kernel: yes on OpenBLAS's SkylakeX, Sandybridge and Nehalem kernels, no on
# its Haswell/Zen kernel (tools/blas_bits.py). So the split is checked once per weight shape on the
# machine's own BLAS (column_split_is_exact) and, where it changes a bit, the product runs whole on the
# calling thread.
intra_op: contextvars.ContextVar[Any] = contextvars.ContextVar("xlmr_np_engine_intra_op", default=None)
COLUMN_BLOCK = 128


def spans(size, parts, step=1):
    """[(start, stop)] cutting range(size) into at most `parts` spans of whole steps, as even as they come.

    >>> spans(768, 3, 128)   # [(0, 256), (256, 512), (512, 768)]; spans(12, 5) -> 2, 2, 3, 2, 3 heads
    """
    blocks = -(-size // step)
    edges = [min(size, step * (blocks * k // parts)) for k in range(parts + 1)]
    return [(a, b) for a, b in zip(edges, edges[1:]) if b > a]


@functools.cache
def column_split_is_exact(inputs: int, outputs: int, parts: int, dtype: str) -> bool:
    """Whether x W^T cut into spans(outputs, parts, COLUMN_BLOCK) column blocks, each its own BLAS call, gives
    the same bits as one call, on this BLAS, at one and at several GEMM_ROWS blocks of rows (seeded data).

    Called with BLAS on one thread, as the engine runs (xlmr_np.workers); cached per shape.
    """
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((outputs, inputs)).astype(dtype)  # [out, in]
    for rows in (GEMM_ROWS, 8 * GEMM_ROWS):
        x = rng.standard_normal((rows, inputs)).astype(dtype)  # [R, in]
        whole = np.matmul(x, weight.T)  # [R, out]
        for a, b in spans(outputs, parts, COLUMN_BLOCK):
            if not np.array_equal(np.matmul(x, weight[a:b].T), whole[:, a:b]):
                return False
    return True


def product(x, weight, out=None):
    """x W^T in one BLAS call, or split by column blocks among the intra-op threads when there are any
    (and the split gives the same bits on this BLAS: column_split_is_exact)."""
    out = np.empty((x.shape[0], weight.shape[0]), dtype=x.dtype) if out is None else out  # [R, out]
    pool = intra_op.get()
    if (
        pool is None
        or weight.shape[0] < 2 * COLUMN_BLOCK
        or not column_split_is_exact(weight.shape[1], weight.shape[0], pool.threads, x.dtype.str)
    ):
        return np.matmul(x, weight.T, out=out)
    pool.map(
        [
            lambda a=a, b=b: np.matmul(x, weight[a:b].T, out=out[:, a:b])
            for a, b in spans(weight.shape[0], pool.threads, COLUMN_BLOCK)
        ]
    )
    return out


def linear(x, weight, bias):
    """torch.nn.Linear: weights are stored [out, in], so y = x W^T + b."""
    y = matmul_wt(x, weight)  # [N, in] -> [N, out]
    return ops_of(y).add(y, bias, out=y)


# Elementwise work (GELU, layer norm) walks its rows in blocks of about BLOCK_ELEMENTS values (512 KB in
# float32), so that the several passes an op makes over a block (and the block's temporaries) stay near the
# core, in L2 or at worst L3. (Attention goes by blocks of heads or query rows instead: see SCORES_ELEMENTS.)
# Smaller blocks would fit L2 better on one thread but lose more with two: every numpy pass releases the GIL
# and takes it back, and with one worker thread per core (xlmr_np.workers) each taking back is a wait on the
# other thread, so fewer, longer passes scale better. GELU on [1008, 3072] on two threads at once, measured
# on a 2-core Xeon: the pair of threads did 0.87x the work per second of one thread at 32K-value blocks,
# 1.38x at 128K, at the same one-thread time (bench/test_ops_speed.py has the two-thread case); the whole
# forward of 16 x 256 tokens on two workers ran 10% faster at 128K than at 32K. Within one call an op runs on
# the calling thread: handing a block's 1-3 us passes to another thread costs more than they take.
# Blocking never changes a value: every op here is elementwise or reduces along one row.
BLOCK_ELEMENTS = 131072


def block_rows(row_size):
    """Rows of row_size values in one cache-sized block."""
    return max(1, BLOCK_ELEMENTS // max(1, row_size))


def blockwise(kernel, n, row_size, out):
    """kernel(start, stop) over row blocks of an [n, row_size] array, about BLOCK_ELEMENTS values each,
    each writing its rows of out; returns out. out None (another namespace, no writes in place): one block,
    the whole array, whose result kernel returns."""
    if out is None:
        return kernel(0, n)
    rows = block_rows(row_size)
    for start in range(0, n, rows):
        kernel(start, min(start + rows, n))
    return out


def output_buffer(xp, x, out):
    """Where a blockwise op writes: out, or a new array like x; None on another namespace (see blockwise)."""
    if xp.standard:
        return None
    return np.empty_like(x) if out is None else out


def layer_norm(x, weight, bias, eps, out=None, add=()):
    """torch.nn.LayerNorm over the last axis, with the biased variance torch uses.

    out: where to write (may be x itself: the norm is then done in place). add: arrays added to x first,
    in order, within the same cache-sized block (a dense layer's bias [D], then the residual [N, D]).
    """
    xp = ops_of(x)
    out = output_buffer(xp, x, out)
    eps = xp.scalar(eps, x.dtype)

    def kernel(start, stop):  # rows start:stop, [R, D] -> [R, D]
        xb, ob = x[start:stop, ...], None if out is None else out[start:stop]
        for a in add:
            xb = xp.add(xb, a if a.ndim == 1 else a[start:stop, ...], out=ob)
        mean = xp.mean(xb, axis=-1, keepdims=True)  # [R, D] -> [R, 1]
        c = xp.subtract(xb, mean, out=ob)  # centered
        var = xp.mean(c * c, axis=-1, keepdims=True)  # [R, D] -> [R, 1]
        c = xp.divide(c, xp.sqrt(var + eps), out=c)
        c = xp.multiply(c, weight, out=c)
        return xp.add(c, bias, out=c)

    return blockwise(kernel, x.shape[0], x.shape[1], out)


def gelu(x, bias=None, out=None):
    """The exact GELU x Phi(x) (numerics.gelu_float32 / gelu_float64), with a dense layer's bias [F].

    The bias is added first in the same cache-sized block, so the [N, F] matrix is walked once. out: where
    to write (may be x: GELU in place). Runs blockwise on the calling thread.
    """
    xp = ops_of(x)
    out = output_buffer(xp, x, out)
    row_size = x.shape[1]
    block = min(x.shape[0], block_rows(row_size)) * row_size  # values in the largest block
    if out is not None and x.dtype == np.float32:  # the kernel's 0 and cap operands, filled once for every block
        zeros, cap = np.zeros(block, dtype=x.dtype), np.full(block, numerics.TAIL_CAP, dtype=x.dtype)

    def kernel(start, stop):  # rows start:stop, [R, F] -> [R, F]
        xb, ob = x[start:stop, ...], None if out is None else out[start:stop]
        if bias is not None:
            xb = xp.add(xb, bias, out=ob)
        if x.dtype == xp.float64:
            return numerics.gelu_float64(xb, out=ob)
        if ob is None:
            return numerics.gelu_float32(xb)
        return numerics.gelu_float32(xb, ob, zeros[: xb.size].reshape(xb.shape), cap[: xb.size].reshape(xb.shape))

    return blockwise(kernel, x.shape[0], row_size, out)


# Softmax without subnormal floats. When a row's scores spread by more than about 87, exp(score - max) falls
# below float32's smallest normal number (1.2e-38) and subnormal floats are slow on many CPUs: on an Intel
# Xeon, OpenBLAS's sgemm took 120x longer on subnormal weights ([16, 512, 512] @ [16, 512, 64]: 305 against
# 2.5 ms) and np.exp 7x longer producing them; trained models attend that sharply. So every weight below
# 2^-WEIGHT_FLOOR of its row's largest is exactly 0: a sum of 8,192 such weights is 2^-47 of the largest in
# float32 (2^-107 in float64), where the dtype resolves 2^-24 (2^-53), so nothing a sum of them could show is
# lost, and the products with V see no subnormal float. Two passes do it, cheap ones (see softmax_weights).
WEIGHT_FLOOR = {np.dtype(np.float32): 60, np.dtype(np.float64): 120}


@functools.cache
def weight_floor(dtype) -> tuple[Any, Any]:
    """(shift, zero): shifted scores are held at shift = -WEIGHT_FLOOR ln 2 or above, and zero = exp(shift)
    as np.exp itself computes it (so that subtracting it leaves the held weights exactly 0)."""
    dtype = np.dtype(dtype)
    shift = dtype.type(-WEIGHT_FLOOR[dtype] * math.log(2))
    return shift, np.exp(np.full(64, shift, dtype=dtype))[0]


def softmax_weights(x, floor, scale=None, zero=None):
    """Softmax's numerators (in place on numpy), exactly 0 below 2^-WEIGHT_FLOOR of the row's largest, and
    their row sums: x [..., n] -> (weights [..., n], sums [..., 1]); softmax is weights / sums.

    exp(max(x - row max, shift)) - exp(shift): a weight at the floor becomes exactly 0, and every other one
    loses exp(shift), less than half an ulp of any weight above 2^-35 of the largest (2^-66 in float64), whose
    bits therefore do not change. floor: a row of n values filled with shift, broadcast over x's rows (numpy's
    maximum against a scalar runs 4x slower than against an array; a row of them stays in L1). scale
    multiplies x first (attention's 1/sqrt(Dh), as transformers' eager attention scales the scores). The
    caller divides: attention divides its context [..., Dh] rather than the weights [..., n], which saves a
    pass over the scores. floor, zero: floor_row's (zero None: numpy's, weight_floor).
    """
    xp = ops_of(x)
    zero = weight_floor(x.dtype)[1] if zero is None else zero
    if scale is not None:
        x = xp.multiply(x, scale, out=x)
    x = xp.subtract(x, xp.max(x, axis=-1, keepdims=True), out=x)
    x = xp.maximum(x, floor, out=x)
    x = xp.exp(x, out=x)
    x = xp.subtract(x, zero, out=x)
    return x, xp.sum(x, axis=-1, keepdims=True)


def floor_row(xp, n, dtype):
    """(floor, zero) for softmax_weights in namespace xp: a row of n values filled with the shift, and
    exp(shift) as xp's own exp computes it (a [1] array on another namespace)."""
    if not xp.standard:
        shift, zero = weight_floor(dtype)
        return np.full(n, shift, dtype=dtype), zero
    shift = -WEIGHT_FLOOR[xp.numpy_dtype(dtype)] * math.log(2)  # rounded to dtype by full, as numpy rounds it
    row = xp.full((max(n, 64),), shift, dtype)  # 64 values: exp's vectorised loop, as the scores get it
    return row[:n], xp.exp(row)[:1]


def attend(q, keys, values, floor, zero=None, scale=None, key_bias=None, scores=None, out=None):
    """softmax(q keys [x scale]) values for one block of attention, with softmax_weights' floor:
    q [..., m, Dh], keys [..., Dh, n], values [..., n, Dh] -> context [..., m, Dh].

    key_bias [..., 1, n]: 0 for a real key, -inf for padding (padded_attention), whose weights then come
    out exactly 0. scores, out: numpy buffers for the scores [..., m, n] and the context.
    """
    xp = ops_of(q)
    s = xp.matmul(q, keys, out=scores)  # [..., m, n]
    if key_bias is not None:
        s = xp.add(s, key_bias, out=s)
    s, sums = softmax_weights(s, floor, scale, zero)  # [..., m, n], [..., m, 1]
    context = xp.matmul(s, values, out=out)  # [..., m, Dh]
    return xp.divide(context, sums, out=context)


# ----------------------------------------------------------------------------------------------------
# The model's blocks on a packed batch (see xlmr_np.model for the plain version of each)


def embeddings(ids, positions, params, config):
    """XLMRobertaEmbeddings on packed tokens: ids, positions [N] -> [N, D]."""
    p, xp = "roberta.embeddings.", params_ops(params)
    x = xp.take_rows(params[p + "word_embeddings.weight"], ids)  # [N] -> [N, D]  (numpy: rows read on demand)
    x = xp.add(x, params[p + "token_type_embeddings.weight"][0, ...], out=x)  # [D]: every token is type 0
    x = xp.add(x, xp.take_rows(params[p + "position_embeddings.weight"], positions), out=x)  # torch's order
    return layer_norm(x, params[p + "LayerNorm.weight"], params[p + "LayerNorm.bias"], config.layer_norm_eps, out=x)


# Attention goes a block at a time, each block's two products and softmax back to back, so that its scores
# are still in cache for the softmax's passes and the product with V, and one buffer per task serves every
# block. A block is a few whole heads of a short pair (about SCORES_ELEMENTS scores: 512 KB in float32), one
# whole head up to HEAD_SCORES scores (4 MB: 1,024 tokens), or, beyond, HEAD_SCORES // n query rows of one
# head (128 rows at 8,192 tokens), against a contiguous copy of that head's keys and values, which BLAS
# repacks for every block (larger blocks would repack them less often but leave the cache). The plain
# formula walks each head's whole [n, n] scores instead, 268 MB at 8,192 tokens, several times through
# memory: one head's attention at 8,192 tokens took 5.7 ns per score that way and 4.9 ns in blocks (AMD
# EPYC, one thread, loaded). The blocks of a pair are cut the same way in any batch and on any number of
# threads (only the heads per block of a short pair follow the threads, and each head's products are
# separate BLAS calls anyway), and each block is computed alone, so a pair's bits depend on neither.
SCORES_ELEMENTS = 131072
HEAD_SCORES = 1 << 20


def attention_blocks(m, n, heads, tasks=1):
    """(heads per block, query rows per block) for a pair of n keys and m query rows (n, or 1 for first_only).

    Several whole heads while they fit in SCORES_ELEMENTS (but no more than leaves a block for each of
    `tasks` threads), else one head and as many rows as fit in HEAD_SCORES. The rows depend on m and n alone:
    BLAS may round a row differently in a product of another row count.

    >>> attention_blocks(128, 128, 12)   # (8, 128): 8 heads of 128 x 128 scores per block
    >>> attention_blocks(8192, 8192, 16)   # (1, 128): 128 query rows of one head
    """
    if m * n <= SCORES_ELEMENTS:
        return max(1, min(SCORES_ELEMENTS // (m * n), heads // tasks)), m
    return 1, min(m, HEAD_SCORES // n)


def power_of_two(value) -> bool:
    """Whether scaling by value is exact (a power of two): 0.125 yes, 0.35355 no."""
    return value > 0 and math.frexp(value)[0] == 0.5


def self_attention(x, offsets, params, prefix, config, first_only=False):
    """XLMRobertaSelfAttention, each pair over its own tokens: [N, D] -> [N, D] (first_only: [B, D]).

    offsets: [B + 1] start of each pair's tokens in the packed x (pair b is x[offsets[b]:offsets[b+1]]).
    first_only: the context of each pair's first token only (the <s> row the head reads, see run); keys and
    values are still every token's. The scale 1/sqrt(Dh) multiplies the scores, as transformers' eager
    attention does; when it is a power of two (Dh = 64: 1/8) it multiplies Q instead, which gives the same
    bits (scaling by 2^k is exact in every product and partial sum) in one pass over [N, D] instead of one
    over every pair's [H, n, n].
    """
    p, xp = prefix + "attention.self.", ops_of(x)
    queries = xp.take_rows(x, offsets[:-1]) if first_only else x  # [B, D] or [N, D]
    q = linear(queries, params[p + "query.weight"], params[p + "query.bias"])  # [N or B, D] -> [N or B, D]
    k = linear(x, params[p + "key.weight"], params[p + "key.bias"])  # [N, D] -> [N, D]
    v = linear(x, params[p + "value.weight"], params[p + "value.bias"])  # [N, D] -> [N, D]
    scale = xp.scalar(config.head_size**-0.5, x.dtype)
    if power_of_two(float(scale)):
        q = xp.multiply(q, scale, out=q)
        scale = None
    return attention(q, k, v, offsets, config.num_attention_heads, scale, first_only)  # [N or B, D]


def attention(q, k, v, offsets, heads, scale=None, first_only=False):
    """softmax(Q K^T [x scale]) V per head, each pair over its own keys: q [N or B, D], k, v [N, D] -> [N or B, D].

    q holds every pair's query rows (first_only: each pair's first row alone, [B, D]) and is overwritten by
    the context. Per pair, attention goes to BLAS a block at a time (attention_blocks): a few heads as stacked
    products over strided views of the packed Q, K, V, or, for a long pair, a block of one head's query rows
    against a contiguous copy of that head's keys and values. Another namespace: padded_attention.
    """
    if ops_of(q).standard:
        return padded_attention(q, k, v, offsets, heads, scale, first_only)
    H, Dh = heads, q.shape[1] // heads
    lengths = np.diff(offsets)  # [B]
    q_offsets = np.arange(len(lengths) + 1) if first_only else offsets  # where each pair's query rows start
    context = q  # a pair's context overwrites its own rows of q, which its scores no longer need
    pool = intra_op.get()
    tasks = 1 if pool is None else pool.threads
    longest = int(lengths.max())
    room = max(SCORES_ELEMENTS, min(longest**2, HEAD_SCORES))  # the largest block's scores
    buffers = [Scratch(room, Dh, longest, q.dtype) for _ in range(tasks)]  # one per task, reused for every block
    floor, zero = floor_row(NUMPY, longest, q.dtype)  # [n], read by every task
    for b, n in enumerate(lengths):
        rows, q_rows = slice(offsets[b], offsets[b + 1]), slice(q_offsets[b], q_offsets[b + 1])
        m = q_rows.stop - q_rows.start  # query rows: n, or 1 when first_only
        qh = q[q_rows].reshape(m, H, Dh).transpose(1, 0, 2)  # [m, D] -> [H, m, Dh]
        kt = k[rows].reshape(n, H, Dh).transpose(1, 2, 0)  # [n, D] -> [H, Dh, n]
        vh = v[rows].reshape(n, H, Dh).transpose(1, 0, 2)  # [n, D] -> [H, n, Dh]
        ch = context[q_rows].reshape(m, H, Dh).transpose(1, 0, 2)  # [H, m, Dh]: a view of q's rows
        step, block = attention_blocks(m, n, H, tasks)
        units = [(a, min(a + step, H), r, min(r + block, m)) for a in range(0, H, step) for r in range(0, m, block)]

        def blocks(units, scratch, n=n, qh=qh, kt=kt, vh=vh, ch=ch, copy=block < m):  # the blocks, in order
            head = None
            for a, c, r0, r1 in units:
                keys, values = kt[a:c], vh[a:c]  # [h, Dh, n], [h, n, Dh]
                if copy:  # one head; its query blocks all read it, so BLAS reads a contiguous copy
                    if head != a:
                        np.copyto(scratch.keys[:, :n], kt[a])
                        np.copyto(scratch.values[:n], vh[a])
                        head = a
                    keys, values = scratch.keys[None, :, :n], scratch.values[None, :n]  # [1, Dh, n], [1, n, Dh]
                s = scratch.scores[: (c - a) * (r1 - r0) * n].reshape(c - a, r1 - r0, n)  # [h, rows, n]
                attend(qh[a:c, r0:r1], keys, values, floor[:n], zero, scale, scores=s, out=ch[a:c, r0:r1])

        if pool is None or len(units) == 1:
            blocks(units, buffers[0])
        else:  # q's rows of a block are read by that block alone, before it overwrites them
            pool.map(
                [
                    lambda part=units[i:j], scratch=scratch: blocks(part, scratch)
                    for (i, j), scratch in zip(spans(len(units), tasks), buffers)
                ]
            )
    return context  # [N or B, D]


class Scratch:
    """One task's buffers for self_attention: a block's scores, and a head's keys [Dh, n] and values [n, Dh]
    (allocated when first used: only long pairs copy them)."""

    def __init__(self, room, head_size, longest, dtype):
        self.scores = np.empty(room, dtype=dtype)  # a block's [h, rows, n], flat
        self.shape, self.dtype = (head_size, longest), dtype
        self._keys: np.ndarray | None = None
        self._values: np.ndarray | None = None

    @property
    def keys(self) -> np.ndarray:
        if self._keys is None:
            self._keys = np.empty(self.shape, dtype=self.dtype)  # [Dh, n]
        return self._keys

    @property
    def values(self) -> np.ndarray:
        if self._values is None:
            self._values = np.empty(self.shape[::-1], dtype=self.dtype)  # [n, Dh]
        return self._values


# Another namespace (a GPU) pads instead: a group of pairs gathered into [G, H, T, Dh] with T the group's
# longest, padding keys masked, one batched product for the whole group rather than a few per pair and
# block, which on a GPU would cost a kernel launch each. Sorted batches (Reranker sorts longest first) waste
# little on padding. A group's scores [G, H, rows, T] stay within DEVICE_SCORES values (256 MB in float32),
# a pair longer than that alone with its query rows in blocks.
DEVICE_SCORES = 1 << 26


def padded_groups(lengths, heads, first_only=False) -> list[tuple[int, int, int]]:
    """[(first pair, stop pair, query rows per block)]: consecutive pairs, padded to their group's longest, as
    many as keep a block's scores [G, H, rows, T] within DEVICE_SCORES.

    >>> padded_groups([512] * 32, 12)   # [(0, 21, 512), (21, 32, 512)]: 21 x 12 x 512 x 512 fit
    """
    groups, start = [], 0
    while start < len(lengths):
        stop, longest = start + 1, int(lengths[start])
        while stop < len(lengths):
            t = max(longest, int(lengths[stop]))
            if (stop + 1 - start) * heads * (1 if first_only else t) * t > DEVICE_SCORES:
                break
            stop, longest = stop + 1, t
        m = 1 if first_only else longest
        groups.append((start, stop, max(1, min(m, DEVICE_SCORES // ((stop - start) * heads * longest)))))
        start = stop
    return groups


def padded_attention(q, k, v, offsets, heads, scale=None, first_only=False):
    """attention on another namespace: each group of pairs (padded_groups) padded to its longest pair, with
    padding keys masked, so that a group's heads go through attend as one batched block.

    q [N or B, D] (first_only: each pair's first row), k, v [N, D] -> [N or B, D]. Padding query rows repeat
    the pair's last token (finite numbers, dropped after) and padding keys get a -inf bias: weight 0.
    """
    xp = ops_of(k)
    H, D = heads, k.shape[1]
    lengths = np.diff(offsets)  # [B]
    floor, zero = floor_row(xp, int(lengths.max()), k.dtype)
    parts = []
    for a, b, rows in padded_groups(lengths, H, first_only):
        n = lengths[a:b, None]  # [G, 1]
        G, T = b - a, int(n.max())
        t = np.arange(T)  # [T]
        index = offsets[a:b, None] + np.minimum(t, n - 1)  # [G, T]: packed rows, padding -> the pair's last

        def heads_of(x, index):  # [G, m] rows of packed x [., D] -> [G, H, m, Dh]
            gathered = xp.reshape(xp.take_rows(x, index), index.shape + (H, D // H))  # [G, m, H, Dh]
            return xp.permute_dims(gathered, (0, 2, 1, 3))

        keys = xp.permute_dims(heads_of(k, index), (0, 1, 3, 2))  # [G, H, Dh, T]
        values = heads_of(v, index)  # [G, H, T, Dh]
        bias = xp.asarray(np.where(t < n, 0.0, -np.inf).reshape(G, 1, 1, T), dtype=k.dtype)  # [G, 1, 1, T]
        queries = heads_of(q, np.arange(a, b)[:, None] if first_only else index)  # [G, H, m, Dh]
        m = queries.shape[2]
        blocks = [  # [G, H, rows, Dh] each
            attend(queries[:, :, r : min(r + rows, m), :], keys, values, floor[:T], zero, scale, bias)
            for r in range(0, m, rows)
        ]
        context = blocks[0] if len(blocks) == 1 else xp.concat(blocks, axis=2)  # [G, H, m, Dh]
        context = xp.reshape(xp.permute_dims(context, (0, 2, 1, 3)), (G * m, D))  # [G * m, D]
        if not first_only:  # the real tokens' rows, in packed order
            context = xp.take_rows(context, (np.arange(G)[:, None] * T + t)[t < n])  # [N_group, D]
        parts.append(context)
    return parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)  # [N or B, D]


def attention_output(context, residual, params, prefix, config):
    """XLMRobertaSelfOutput: LayerNorm(residual + dense(context)), in place in the product's buffer."""
    p = prefix + "attention.output."
    h = matmul_wt(context, params[p + "dense.weight"])  # [N, D] -> [N, D]
    # bias and residual are added before the norm (post-LN), in that order as torch rounds
    return layer_norm(
        h,
        params[p + "LayerNorm.weight"],
        params[p + "LayerNorm.bias"],
        config.layer_norm_eps,
        out=h,
        add=(params[p + "dense.bias"], residual),
    )


def intermediate(x, params, prefix):
    """XLMRobertaIntermediate: dense up to F, then the exact GELU (bias and GELU in one pass, in place)."""
    p = prefix + "intermediate.dense."
    h = matmul_wt(x, params[p + "weight"])  # [N, D] -> [N, F]
    return gelu(h, bias=params[p + "bias"], out=h)  # [N, F]


def output(h, residual, params, prefix, config):
    """XLMRobertaOutput: LayerNorm(residual + dense(h)), dense back down to D."""
    p = prefix + "output."
    y = matmul_wt(h, params[p + "dense.weight"])  # [N, F] -> [N, D]
    return layer_norm(
        y,
        params[p + "LayerNorm.weight"],
        params[p + "LayerNorm.bias"],
        config.layer_norm_eps,
        out=y,
        add=(params[p + "dense.bias"], residual),
    )


# The [N, F] intermediate is 4x the size of everything else in a layer (100 MB for 16 pairs x 512 tokens), so
# the feed-forward block runs FFN_ROWS rows at a time: the intermediate is sized to the chunk, and is still
# in cache when the second product reads it. A multiple of GEMM_ROWS, so every row is computed exactly as
# it would be in one call (see GEMM_ROWS).
FFN_ROWS = 21 * GEMM_ROWS  # 1008 rows


def feed_forward(a, params, prefix, config):
    """XLMRobertaIntermediate then XLMRobertaOutput, FFN_ROWS rows at a time (on numpy): [N, D] -> [N, D]."""
    if ops_of(a).standard:
        return output(intermediate(a, params, prefix), a, params, prefix, config)  # [N, D] -> [N, F] -> [N, D]
    y = np.empty_like(a)  # [N, D]
    for start in range(0, a.shape[0], FFN_ROWS):
        rows = slice(start, start + FFN_ROWS)
        y[rows] = output(intermediate(a[rows], params, prefix), a[rows], params, prefix, config)  # [R, D]
    return y  # [N, D]


def encoder_layer(x, offsets, params, i, config, first_only=False):
    """XLMRobertaLayer i: attention block then feed-forward block, each post-LN: [N, D] -> [N, D].

    first_only: each pair's first-token (<s>) output alone, [N, D] -> [B, D] (see run).
    """
    prefix = f"roberta.encoder.layer.{i}."
    context = self_attention(x, offsets, params, prefix, config, first_only)  # [N or B, D]
    residual = ops_of(x).take_rows(x, offsets[:-1]) if first_only else x  # [B, D] or [N, D]
    a = attention_output(context, residual, params, prefix, config)  # [N or B, D]
    return feed_forward(a, params, prefix, config)  # [N or B, D] -> [N or B, F] -> [N or B, D]


HEAD = ("classifier.dense.weight", "classifier.dense.bias", "classifier.out_proj.weight", "classifier.out_proj.bias")


def classification_head(first_tokens, params):
    """XLMRobertaClassificationHead: the <s> states [B, D] -> dense -> tanh -> out_proj -> [B, L].

    Computed in float64 and rounded once at the end: out_proj sums D products into a logit of size ~10,
    and in float32 the rounding of that sum alone moves a full-size logit by up to 1e-5, a third of all
    the float32 error it carries (docs/numerics.md). In float64 it costs next to nothing: B rows.
    """
    xp = ops_of(first_tokens)
    w = {key: xp.astype(params[key], xp.float64) for key in HEAD}
    h = linear(xp.astype(first_tokens, xp.float64), w["classifier.dense.weight"], w["classifier.dense.bias"])  # [B, D]
    logits = linear(xp.tanh(h), w["classifier.out_proj.weight"], w["classifier.out_proj.bias"])  # [B, L]
    return xp.astype(logits, first_tokens.dtype)


# ----------------------------------------------------------------------------------------------------
# Packing and the whole pass


@dataclass
class Packed:
    """A padded batch's real tokens stacked pair after pair."""

    ids: np.ndarray  # [N] token ids
    positions: np.ndarray  # [N] position ids (XLM-R: from pad_token_id + 1)
    offsets: np.ndarray  # [B + 1] where each pair starts in the stack; pair b is rows offsets[b]:offsets[b+1]
    mask: np.ndarray  # [B, T] bool: where each packed token sits in the padded batch


def pack(config: XLMRobertaConfig, input_ids, attention_mask) -> Packed:
    """Check a padded batch (as xlmr_np.model.forward does) and stack its real tokens."""
    input_ids, mask = check_batch(input_ids, attention_mask, config)
    offsets = np.concatenate([[0], np.cumsum(mask.sum(axis=1))])  # [B + 1]
    return Packed(
        ids=input_ids[mask], positions=position_ids(input_ids, config.pad_token_id)[mask], offsets=offsets, mask=mask
    )


def unpack(packed: Packed, x):
    """Packed token states [N, D] -> [B, T, D], zeros at padding."""
    xp = ops_of(x)
    if not xp.standard:
        out = np.zeros(packed.mask.shape + x.shape[1:], dtype=x.dtype)  # [B, T, D]
        out[packed.mask] = x
        return out
    index = np.full(packed.mask.shape, x.shape[0])  # [B, T]: padding reads row N, a row of zeros
    index[packed.mask] = np.arange(x.shape[0])
    return xp.take_rows(xp.concat([x, xp.zeros((1, x.shape[1]), x.dtype)], axis=0), index)  # [B, T, D]


def run(params, config: XLMRobertaConfig, packed: Packed, hidden_states: list | None = None) -> np.ndarray:
    """The model on a packed batch -> logits [B, L]. hidden_states: see forward.

    The head reads only each pair's first token (<s>) of the last layer, so that layer computes keys and
    values for every token and everything else for the B first tokens alone: about 7% of a full-size
    model's work is skipped. Each first-token row is computed as it would be within the whole layer's
    products (GEMM_ROWS), but its attention scores are a [1, n] product per head instead of row 0 of an
    [n, n] one, so the logits may differ from the full layer's in the last bits (tests/test_engine.py holds
    both to the reference). With hidden_states the full last layer is computed too, for the states only:
    the logits are the same bits either way.
    """
    x = embeddings(packed.ids, packed.positions, params, config)  # [N] -> [N, D]
    if hidden_states is not None:
        hidden_states.append(unpack(packed, x))
    layers = config.num_hidden_layers
    for i in range(layers - 1):
        x = encoder_layer(x, packed.offsets, params, i, config)  # [N, D] -> [N, D]
        if hidden_states is not None:
            hidden_states.append(unpack(packed, x))
    if layers == 0:
        return classification_head(ops_of(x).take_rows(x, packed.offsets[:-1]), params)  # [N, D] -> [B, D] -> [B, L]
    first = encoder_layer(x, packed.offsets, params, layers - 1, config, first_only=True)  # [N, D] -> [B, D]
    if hidden_states is not None:
        hidden_states.append(unpack(packed, encoder_layer(x, packed.offsets, params, layers - 1, config)))
    return classification_head(first, params)  # [B, D] -> [B, L]


def forward(
    params, config: XLMRobertaConfig, input_ids, attention_mask, hidden_states: list | None = None
) -> np.ndarray:
    """XLMRobertaForSequenceClassification.forward, fast: token ids [B, T] and mask [B, T] -> logits [B, L].

    hidden_states: a list to append the embeddings' output and each layer's output to, as [B, T, D] with
    zeros at padding (transformers' output_hidden_states, the same layer boundaries).
    """
    return run(params, config, pack(config, input_ids, attention_mask), hidden_states)
