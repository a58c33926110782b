"""Tier 1: each primitive against its reference (math.erf; torch's ops), in numerics, the reference forward
(xlmr_np.model) and the engine (xlmr_np.engine)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xlmr_np import engine, model, numerics
from xlmr_np.testing import assert_close


@pytest.mark.parametrize("dtype, tol", [(np.float32, 2e-7), (np.float64, 1e-14)])
def test_erf_matches_math_erf_on_a_dense_grid(dtype, tol):
    x = np.concatenate([np.linspace(-8, 8, 400_001), [0.0, -0.0, 1e-30, -1e-30, 3.92, -3.92, 5.9, 6.0, 40.0]])
    x = x.astype(dtype)
    ref = np.array([math.erf(float(v)) for v in x])
    got = numerics.erf(x)
    assert got.dtype == dtype
    err = np.abs(got.astype(np.float64) - ref)
    worst = x[err.argmax()]
    assert err.max() <= tol, (
        f"erf {np.dtype(dtype).name}: max abs error {err.max():.3e} at x={worst}, mean {err.mean():.3e}"
    )


def test_erf_is_odd_and_bounded():
    x = np.linspace(0, 10, 10_001, dtype=np.float32)
    assert np.array_equal(numerics.erf(-x), -numerics.erf(x))
    assert np.all(np.abs(numerics.erf(x)) <= 1.0)


def _exact_gelu(x):
    """x Phi(x) in float64 via erfc, accurate to float64 rounding for either sign (no 1 + erf cancellation)."""
    x = np.ravel(x).astype(np.float64)
    tail = np.array([0.5 * math.erfc(abs(v) / math.sqrt(2)) for v in x])  # Q(|x|)
    return np.where(x < 0, x * tail, x - x * tail)


def _gelu_inputs(dtype):
    rng = np.random.default_rng(0)
    return np.concatenate(
        [
            rng.normal(scale=3.0, size=16_000),
            np.linspace(-25, 25, 200_001),
            np.linspace(-1e-3, 1e-3, 2_001),
            [0.0, -0.0, -20.0, 20.0, -5.0, 5.0, 1e-8, -1e-8, 1e-30, -1e-30, 1e6, -1e6, 3e38, -3e38],
        ]
    ).astype(dtype)


GELUS = {"numerics": numerics.gelu, "engine": lambda x: engine.gelu(x.reshape(1, -1)).ravel(), "model": model.gelu}


@pytest.mark.parametrize("gelu", list(GELUS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_is_exact_to_the_rounding_of_its_dtype(dtype, gelu):
    """numerics.gelu, the engine's blockwise GELU built on it, and the reference's formula
    x/2 (1 + erf(x / sqrt 2)) in x's dtype (in float32, 1 + erf cancels for negative x, which costs up
    to 0.25 * 2^-23 |x|: inside the same bound)."""
    x = _gelu_inputs(dtype)
    got = GELUS[gelu](x)
    assert got.dtype == dtype
    exact = _exact_gelu(x)
    err = np.abs(got.astype(np.float64) - exact)
    if dtype == np.float32:
        # 1 ulp of the exact value plus 2^-23 |x|: the tail term a Q(a) is formed to a few ulps, which is
        # up to ~4 ulps of the result near 0 and ~13 ulps (of a tiny result) for x in -5..-1. For scale:
        # torch's float32 GELU is off by 1.07e-6 = 3e-7 |x| at x = -3.47.
        limit = np.spacing(np.abs(exact).astype(dtype)).astype(np.float64) + 2.0**-23 * np.abs(x)
    else:
        # float64: erf's abs error (2.8e-15 at most, near x / sqrt 2 = 5.9), times |x|/2, dominates
        # (1 + erf cancels for negative x).
        limit = 4 * np.spacing(np.abs(exact)) + 3e-15 * np.abs(x) / 2
    worst = np.argmax(err / limit)
    assert np.all(err <= limit), (
        f"gelu {np.dtype(dtype).name}: max abs error {err.max():.3e} (mean {err.mean():.3e}); worst against "
        f"its limit at x={x[worst]}: error {err[worst]:.3e}, limit {limit[worst]:.3e}"
    )


@pytest.mark.parametrize("gelu", ["numerics", "engine"])
def test_float32_gelu_never_gives_a_subnormal_float(gelu):
    """Every float32 from -15 to -11 (where x Phi(x) itself turns subnormal, from -13.1 to -14.2): the output
    is normal or 0; beyond the cap it is the tail's value at the cap, -12 Q(12)."""
    lo, hi = np.array([-11.0, -15.0], dtype=np.float32).view(np.int32)
    x = np.arange(lo, hi + 1).astype(np.int32).view(np.float32)  # 4.2 million values
    got = GELUS[gelu](x)
    assert numerics.count_subnormal(got) == 0, x[(got != 0) & (np.abs(got) < np.finfo(np.float32).tiny)][:5]
    assert np.all(got[x <= -numerics.TAIL_CAP] == got[-1]) and -2.2e-32 < got[-1] < -2.0e-32, got[-1]


def test_gelu_with_bias_in_place_equals_gelu_of_the_sum():
    rng = np.random.default_rng(3)
    x = rng.normal(scale=3.0, size=(300, 97)).astype(np.float32)
    bias = rng.normal(size=97).astype(np.float32)
    expected = engine.gelu(x + bias)
    engine.gelu(x, bias=bias, out=x)
    assert np.array_equal(x, expected)


@pytest.mark.parity
@pytest.mark.parametrize("gelu", [model.gelu, engine.gelu], ids=["model", "engine"])
@pytest.mark.parametrize("dtype, atol, rtol", [(np.float32, 1.2e-6, 0), (np.float64, 2e-14, 2e-15)])
def test_gelu_matches_torch_exact_gelu(torch, dtype, atol, rtol, gelu):
    """torch's own float32 GELU evaluates erf with a 1.5e-7 approximation: it is 1.07e-6 off the exact
    value at x = -3.47 (measured), which sets the float32 tolerance here."""
    x = np.random.default_rng(0).normal(scale=3.0, size=(64, 257)).astype(dtype)
    ref = torch.nn.functional.gelu(torch.from_numpy(x), approximate="none").numpy()
    assert_close(f"gelu {np.dtype(dtype).name} vs torch", gelu(x), ref, atol=atol, rtol=rtol)


@pytest.mark.parity
@pytest.mark.parametrize("layer_norm", [model.layer_norm, engine.layer_norm], ids=["model", "engine"])
@pytest.mark.parametrize("dtype, atol", [(np.float32, 2e-6), (np.float64, 1e-13)])
def test_layer_norm_matches_torch(torch, dtype, atol, layer_norm):
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(33, 37)) * 5 + 3).astype(dtype)
    w = rng.normal(size=37).astype(dtype)
    b = rng.normal(size=37).astype(dtype)
    ref = torch.nn.functional.layer_norm(
        torch.from_numpy(x), (37,), torch.from_numpy(w), torch.from_numpy(b), eps=1e-5
    ).numpy()
    assert_close(f"layer_norm {np.dtype(dtype).name}", layer_norm(x, w, b, 1e-5), ref, atol=atol)


def engine_softmax(x):
    """The engine's softmax: its weights (in place, on a copy) over their row sums."""
    x = np.array(x)
    weights, sums = engine.softmax_weights(x, np.full(x.shape[-1], engine.weight_floor(x.dtype)[0], dtype=x.dtype))
    return weights / sums


@pytest.mark.parity
@pytest.mark.parametrize("dtype, tol", [(np.float32, (3e-8, 3e-7)), (np.float64, (1e-17, 1e-15))])
def test_softmax_over_real_tokens_equals_masked_softmax(torch, dtype, tol):
    """transformers masks padding by adding finfo.min to the scores; the engine leaves padding out.

    Both must give the same probabilities over the real tokens and zero weight to padding.
    """
    rng = np.random.default_rng(2)
    lengths = [5, 1, 9, 3]
    T = max(lengths)
    scores = (rng.normal(size=(len(lengths), 4, T, T)) * 4).astype(dtype)  # [B, H, T, T]
    keep = np.arange(T)[None, :] < np.array(lengths)[:, None]  # [B, T]
    additive = np.where(keep, 0, np.finfo(dtype).min).astype(dtype)[:, None, None, :]  # [B, 1, 1, T]
    ref = torch.softmax(torch.from_numpy(scores + additive), dim=-1).numpy()
    for b, n in enumerate(lengths):
        got = engine_softmax(scores[b, :, :n, :n])
        assert_close(f"softmax pair {b}", got, ref[b, :, :n, :n], atol=tol[0], rtol=tol[1])
        assert np.all(ref[b, :, :n, n:] == 0)  # the reference gives padding exactly zero weight too


@pytest.mark.parametrize("softmax", [model.softmax, engine_softmax], ids=["model", "engine"])
def test_softmax_survives_huge_scores(softmax):
    x = np.array([[1e30, 0.0, -1e30]], dtype=np.float32)
    assert np.array_equal(softmax(x), [[1.0, 0.0, 0.0]])


@pytest.mark.parametrize("dtype, floor", [(np.float32, 60), (np.float64, 120)])
def test_engine_softmax_weights_are_exactly_zero_below_the_floor_and_never_subnormal(dtype, floor):
    """Sharp rows (scores spread over 120, float64: 800): the plain exp(x - max) has subnormal values, the
    engine's weights none; they are exactly 0 below 2^-floor of the row's largest, the plain values' very bits
    above 2^-35 (float64: 2^-66), and in between off by the subtracted 2^-floor and the rounding of that
    subtraction (at most 2^-floor + 2^-(floor - 1) in all)."""
    rng = np.random.default_rng(4)
    spread = 120 if dtype == np.float32 else 800
    x = (30 - rng.uniform(0, spread, size=(6, 3000))).astype(dtype)  # [rows, n]: weights of every size
    plain = np.exp(x - x.max(axis=-1, keepdims=True))
    assert numerics.count_subnormal(plain) > 100, "the test needs scores sharp enough to underflow"
    weights = x.copy()
    _, sums = engine.softmax_weights(weights, np.full(x.shape[-1], engine.weight_floor(dtype)[0], dtype=dtype))
    assert weights.dtype == sums.dtype == dtype and sums.shape == (6, 1)
    assert numerics.count_subnormal(weights) == 0 and weights.min() == 0
    below = plain < 2.0**-floor * 0.999  # (the shift is rounded to the dtype: leave its last bits out)
    assert np.all(weights[below] == 0), f"{np.count_nonzero(weights[below])} weights below 2^-{floor} are not 0"
    same = plain >= 2.0 ** (-35 if dtype == np.float32 else -66)
    assert np.array_equal(weights[same], plain[same]), diff_message_of(weights[same], plain[same])
    assert np.abs(weights - plain).max() <= 2.0 ** -(floor - 2), np.abs(weights - plain).max()
    assert_close("row sums", sums, plain.sum(axis=-1, keepdims=True), atol=0, rtol=4 * float(np.finfo(dtype).eps))


def diff_message_of(got, expected):
    return f"{np.count_nonzero(got != expected)} of {got.size} weights differ, by up to {np.abs(got - expected).max()}"


def test_reference_softmax_gives_masked_keys_zero_weight():
    x = np.array([[2.0, -np.inf, 1.0, -np.inf]], dtype=np.float32)  # what the reference's mask leaves
    got = model.softmax(x)
    assert got[0, 1] == got[0, 3] == 0
    assert_close("softmax", got, [[np.e / (np.e + 1), 0, 1 / (np.e + 1), 0]], atol=1e-7)


@pytest.mark.parametrize("linear", [model.linear, engine.linear], ids=["model", "engine"])
def test_linear_uses_out_in_layout(linear):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)  # [N=2, in=3]
    w = np.array([[1, 0, 0], [0, 1, 1]], dtype=np.float32)  # [out=2, in=3]
    b = np.array([10, 20], dtype=np.float32)
    assert np.array_equal(linear(x, w, b), [[10, 23], [13, 29]])


def test_position_ids_start_after_padding_idx():
    ids = np.array([[0, 9, 2, 1, 1], [0, 5, 6, 7, 2]])
    assert np.array_equal(model.position_ids(ids, padding_idx=1), [[2, 3, 4, 1, 1], [2, 3, 4, 5, 6]])
