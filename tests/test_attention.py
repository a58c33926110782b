"""The engine's blockwise attention (engine.self_attention) against the plain formula (model.self_attention).

The engine cuts each pair's attention into blocks: several whole heads, one whole head, or a block of one
head's query rows (engine.attention_blocks). Here the block sizes are shrunk (SCORES_ELEMENTS, HEAD_SCORES)
so that small widths and short pairs cross every kind of boundary: lengths at, one below and one above a
block of rows, a tail block of one row, and the switches between the three kinds of block. Sharp random
weights put many softmax weights below the engine's floor (engine.WEIGHT_FLOOR).

- float64: within 1e-13 of the plain formula's scale; float32: off the float64 truth by no more than twice
  the plain formula's float32 error, or 16 ulps of the scale (their Q, K, V products round differently);
- the first-token-only pass of the last layer (first_only) held to the formula the same way;
- exactly the same bits (atol=0), as the design promises: a pair's attention alone or in a batch, and on one
  thread or with its blocks spread over 2 or 3 (engine.intra_op).
"""

from __future__ import annotations

import numpy as np
import pytest

from xlmr_np import engine, model, workers
from xlmr_np.config import XLMRobertaConfig
from xlmr_np.testing import TINY

PREFIX = "roberta.encoder.layer.0."
SCORES_ELEMENTS, HEAD_SCORES = 100, 400  # several heads up to 100 scores, one head up to 400, then rows
# n: the blocks it gets with those sizes (heads per block, query rows), chosen to hit every boundary
LENGTHS = {
    1: (3, 1),  # one token
    5: (3, 5),  # several heads per block (heads // tasks caps it at 3)
    10: (1, 10),  # exactly SCORES_ELEMENTS: still several heads allowed, 100 // 100 = 1
    11: (1, 11),  # one whole head
    20: (1, 20),  # exactly HEAD_SCORES: the last whole head
    21: (1, 19),  # rows: a block of 19 and a tail of 2
    40: (1, 10),  # 4 blocks of 10, no tail
    44: (1, 9),  # 4 of 9 and a tail of 8 (one short of a block)
    57: (1, 7),  # 8 of 7 and a tail of 1
    101: (1, 3),  # 33 of 3 and a tail of 2
}


def config(hidden, heads):
    return XLMRobertaConfig.from_dict(
        dict(TINY, model_type="xlm-roberta", hidden_size=hidden, num_attention_heads=heads, num_hidden_layers=1)
    )


# head size 8 (1/sqrt 8 multiplies the scores) and 16 (1/4, a power of two, multiplies Q instead)
CONFIGS = {"D24-H3": config(24, 3), "D48-H3": config(48, 3)}


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(engine, "SCORES_ELEMENTS", SCORES_ELEMENTS)
    monkeypatch.setattr(engine, "HEAD_SCORES", HEAD_SCORES)


def params(cfg, dtype, seed=0, std=0.7):
    """Random Q, K, V weights: at std 0.7 rows of scores spread over hundreds (weights below the floor, in both
    dtypes); at 0.35, over tens (a few below the float32 floor), where float32 rounding is amplified less."""
    rng = np.random.default_rng(seed)
    D = cfg.hidden_size
    out = {}
    for name in ("query", "key", "value"):
        out[PREFIX + f"attention.self.{name}.weight"] = (rng.standard_normal((D, D)) * std).astype(dtype)
        out[PREFIX + f"attention.self.{name}.bias"] = (rng.standard_normal(D) * 0.3).astype(dtype)
    return out


def inputs(n, cfg, dtype, seed=1):
    return np.random.default_rng(seed + n).standard_normal((n, cfg.hidden_size)).astype(dtype)  # [n, D]


def plain(x, p, cfg):
    """model.self_attention on one pair [n, D] -> [n, D]."""
    return model.self_attention(x[None], np.ones((1, len(x)), bool), p, PREFIX, cfg)[0]


def blockwise(x, p, cfg, first_only=False, pool=None):
    """engine.self_attention on one pair [n, D] -> [n, D] ([1, D] with first_only), on an intra-op pool."""
    token = engine.intra_op.set(pool)
    try:
        return engine.self_attention(x.copy(), np.array([0, len(x)]), p, PREFIX, cfg, first_only)
    finally:
        engine.intra_op.reset(token)


def test_the_lengths_cross_every_kind_of_block_boundary():
    got = {n: engine.attention_blocks(n, n, 3) for n in LENGTHS}
    assert got == LENGTHS, got
    assert engine.attention_blocks(1, 20, 3) == (3, 1) and engine.attention_blocks(1, 101, 3) == (1, 1)  # first_only


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("n", list(LENGTHS))
def test_blockwise_attention_equals_the_plain_formula(name, n):
    cfg = CONFIGS[name]
    truth = plain(inputs(n, cfg, np.float64), params(cfg, np.float64), cfg)  # [n, D]
    scale = float(np.abs(truth).max())
    fast64 = blockwise(inputs(n, cfg, np.float64), params(cfg, np.float64), cfg)
    diff = float(np.abs(fast64 - truth).max())
    assert diff <= 1e-13 * scale, f"float64 n={n}: max |blockwise - plain| {diff:.3e}, scale {scale:.3g}"
    x32, p32 = inputs(n, cfg, np.float32), params(cfg, np.float32, std=0.35)
    truth = plain(inputs(n, cfg, np.float64), params(cfg, np.float64, std=0.35), cfg)
    scale = float(np.abs(truth).max())
    fast32, plain32 = blockwise(x32, p32, cfg), plain(x32, p32, cfg)
    assert fast32.dtype == np.float32
    err_fast, err_plain = (float(np.abs(a.astype(np.float64) - truth).max()) for a in (fast32, plain32))
    limit = max(2 * err_plain, 16 * scale * 2.0**-24)  # the projections alone round differently by ~4 ulps
    print(f"float32 n={n}: off the float64 truth by {err_fast:.3e} (blockwise), {err_plain:.3e} (plain)")
    assert err_fast <= limit, f"float32 n={n}: blockwise {err_fast:.3e} off the truth, plain {err_plain:.3e}"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_first_token_alone_equals_the_plain_formula(dtype):
    cfg = CONFIGS["D48-H3"]
    for n in (1, 44, 101):
        x, p = inputs(n, cfg, dtype), params(cfg, dtype)
        first = blockwise(x, p, cfg, first_only=True)  # [1, D]
        truth = plain(inputs(n, cfg, np.float64), params(cfg, np.float64), cfg)[:1]
        tol = 1e-13 if dtype == np.float64 else 1e-5
        diff = float(np.abs(first - truth).max())
        assert first.shape == (1, cfg.hidden_size) and diff <= tol * float(np.abs(truth).max()), f"n={n}: {diff:.3e}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_pair_gets_the_same_bits_alone_in_a_batch_and_on_any_number_of_threads(dtype):
    cfg = CONFIGS["D24-H3"]
    p = params(cfg, dtype)
    lengths = [57, 5, 101, 20, 1, 44]
    xs = [inputs(n, cfg, dtype) for n in lengths]
    alone = [blockwise(x, p, cfg) for x in xs]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    batch = engine.self_attention(np.concatenate(xs), offsets, p, PREFIX, cfg)  # [N, D]
    for b, n in enumerate(lengths):
        assert np.array_equal(batch[offsets[b] : offsets[b + 1]], alone[b]), f"pair of {n} in a batch"
    pytest.importorskip("threadpoolctl")  # xlmr_np.workers needs it for more than one thread
    for threads in (2, 3):
        pool = workers.Workers(threads)
        for x, expected in zip(xs, alone):
            assert np.array_equal(blockwise(x, p, cfg, pool=pool), expected), f"{len(x)} tokens, {threads} threads"
            first = blockwise(x, p, cfg, first_only=True, pool=pool)
            assert np.array_equal(first, blockwise(x, p, cfg, first_only=True)), f"first only, {threads} threads"
        pool.close()


def test_the_softmax_floor_is_reached():
    """The weights really are sharp: the plain formula's float32 probabilities have subnormal values here."""
    from xlmr_np.numerics import count_subnormal
    from xlmr_np.tracing import Trace

    cfg = CONFIGS["D24-H3"]
    trace = Trace(["encoder.layer.0.attention.self.probs"])
    x = inputs(101, cfg, np.float32)
    model.self_attention(x[None], np.ones((1, 101), bool), params(cfg, np.float32), PREFIX, cfg, trace)
    probs = trace["encoder.layer.0.attention.self.probs"]
    assert count_subnormal(probs) > 0 and np.count_nonzero(probs < 2.0**-60) > 1000
