"""The special functions the model needs, accurate to the rounding of their dtype: erf and the exact GELU.

numpy has no erf. The reference forward (xlmr_np.model) writes GELU as its formula on top of `erf`; the fast
engine (xlmr_np.engine) uses `gelu`, which in float32 takes the normal-tail form below so that nothing
cancels for negative inputs. tests/test_ops.py holds each function to its stated accuracy:

    erf:   max abs error <= 2e-7 in float32, <= 1e-14 in float64 (against math.erf)
    gelu:  float32 within 1 ulp + 2^-23 |x| of the exact x Phi(x); float64 within 4 ulp + 1.5e-15 |x|

The coefficients were fitted for this project by tools/fit_erf.py (`--tail` for the GELU's).
"""

from __future__ import annotations

import math

import numpy as np

from .arrays import ops_of

# erf(x) ~= x * P(x^2) / Q(x^2) on |x| <= 3.92 (beyond it erf rounds to +-1 in float32); max abs error
# 1.6e-8 in float64 arithmetic.
_ERF_P = (
    1.1283790229052877,
    0.19275430546134809,
    0.053059188835358755,
    0.0038679028709637953,
    0.0002874687126989401,
    2.034798547538262e-06,
)
_ERF_Q = (
    1.0,
    0.5041557264764025,
    0.11508058163382621,
    0.015171455139374668,
    0.0011880096011616798,
    3.8070733794207105e-05,
)
_ERF_CLIP = 3.92


def erf_rational(x):
    """erf in float64 arithmetic, accurate to float32: max abs error 1.6e-8 (5e-8 once rounded to float32).

    Evaluated in float64: in float32 arithmetic the rational's own rounding reaches 4e-7 near |x| = 3.6.
    x: a float64 array the caller owns, overwritten (clipped) here: every pass runs in place (on numpy).
    """
    xp = ops_of(x)
    x = xp.clip(x, -_ERF_CLIP, _ERF_CLIP, out=x)
    t = x * x
    p = t * _ERF_P[-1]
    q = t * _ERF_Q[-1]
    p = xp.add(p, _ERF_P[-2], out=p)
    q = xp.add(q, _ERF_Q[-2], out=q)
    for cp, cq in zip(_ERF_P[-3::-1], _ERF_Q[-3::-1]):
        p = xp.multiply(p, t, out=p)
        p = xp.add(p, cp, out=p)
        q = xp.multiply(q, t, out=q)
        q = xp.add(q, cq, out=q)
    p = xp.multiply(p, x, out=p)
    return xp.divide(p, q, out=p)


def erf_series(x):
    """erf to float64 accuracy (max abs error 2.8e-15 against math.erf).

    erf(x) = 2/sqrt(pi) * exp(-x^2) * sum_n x (2x^2)^n / (1*3*...*(2n+1)): every term is positive, so
    nothing cancels; it is summed until the last term is below 1e-17 of the sum (~100 terms at |x| = 6,
    beyond which erf is +-1 in float64).
    """
    xp = ops_of(x)
    x = xp.clip(x, -6.0, 6.0)
    x2 = x * x
    term = xp.copy(x)
    total = xp.copy(x)
    n = 0
    while True:
        n += 1
        term = xp.multiply(term, x2 * (2.0 / (2 * n + 1)), out=term)
        total = xp.add(total, term, out=total)
        if n % 8 == 0 and bool(xp.all(xp.abs(term) <= 1e-17 * xp.abs(total))):
            break
    return (2.0 / math.sqrt(math.pi)) * xp.exp(-x2) * total


def erf(x):
    """The error function, elementwise, accurate to the rounding of x's dtype (float32: the rational;
    float64: the series). Both run on a float64 copy of x.

    >>> erf(np.array([0.0, 0.5, -3.0], dtype=np.float32))   # -> [0., 0.5205, -0.99998]
    """
    x = np.asarray(x) if isinstance(x, (int, float, list, tuple, np.generic)) else x
    xp = ops_of(x)
    x64 = xp.astype(x, xp.float64)
    return xp.astype(erf_series(x64) if x.dtype == xp.float64 else erf_rational(x64), x.dtype)


# The normal upper tail Q(a) = erfc(a / sqrt 2) / 2 = exp(-a^2 / 2) * R(a) for a >= 0, with R(a) ~= P(a) /
# Q(a) fitted on 0 <= a <= 20 (beyond it exp(-a^2 / 2) is 0 in float32): max *relative* error 1.0e-8.
# Every coefficient is positive, so Horner's rule in float32 never cancels.
_TAIL_P = (0.5000000050391333, 0.4468741480745188, 0.1896655903669911, 0.04282084103367643, 0.004446058620554033)
_TAIL_Q = (1.0, 1.6916335472693207, 1.2290519186781215, 0.48646037846002005, 0.10733989679998267, 0.011144553775259856)

# The float32 GELU takes the tail term at a = min(|x|, TAIL_CAP). Left to fall, a Q(a) turns subnormal (below
# float32's smallest normal number, 1.2e-38) for |x| between 13.1 and 14.2 before it reaches 0, and subnormal
# floats make the next product slow on some CPUs (docs/performance.md); at 12 the term and every value that
# forms it are normal (12 Q(12) = 2.1e-32), so GELU's output has no subnormal float. The cost: GELU(x) for
# x <= -12 is -2.1e-32 instead of a value between that and 0, and for x >= 12 it is x either way.
TAIL_CAP = 12.0


def gelu_float32(x, out=None, zeros=None, cap=None):
    """x Phi(x) in float32 arithmetic, off by at most 1 ulp + 2^-23 |x|; torch's own float32 GELU is off
    by 3e-7 |x| at x = -3.47 (both measured in tests/test_ops.py).

    With a = |x|: x Phi(x) = max(x, 0) - a Q(a), a form in which nothing cancels: for x < 0 the result
    -a Q(a) keeps a few ulps of relative accuracy however small it is (1 + erf(x / sqrt 2) would cancel).
    out: where to write (may be x). zeros, cap: optional arrays of x's shape filled with 0 and TAIL_CAP
    (numpy's maximum/minimum against a scalar run 3x slower than against an array, so the engine fills
    them once per call and passes them for every block).
    """
    xp = ops_of(x)
    f32 = lambda value: xp.scalar(value, x.dtype)  # noqa: E731
    out = np.empty_like(x) if out is None and not xp.standard else out
    zeros = f32(0) if zeros is None else zeros
    cap = f32(TAIL_CAP) if cap is None else cap
    a = xp.abs(x)
    y = xp.maximum(x, zeros, out=out)  # max(x, 0); out may be x, which is not needed after this
    a = xp.minimum(a, cap, out=a)  # the tail term held at its value at the cap (TAIL_CAP)
    g = xp.square(a)
    g = xp.multiply(g, f32(-0.5), out=g)
    g = xp.exp(g, out=g)  # exp(-a^2 / 2)
    p = a * f32(_TAIL_P[-1])
    p = xp.add(p, f32(_TAIL_P[-2]), out=p)
    for c in _TAIL_P[-3::-1]:
        p = xp.multiply(p, a, out=p)
        p = xp.add(p, f32(c), out=p)
    q = a * f32(_TAIL_Q[-1])
    q = xp.add(q, f32(_TAIL_Q[-2]), out=q)
    for c in _TAIL_Q[-3::-1]:
        q = xp.multiply(q, a, out=q)
        q = xp.add(q, f32(c), out=q)
    p = xp.divide(p, q, out=p)
    p = xp.multiply(p, g, out=p)
    p = xp.multiply(p, a, out=p)  # a Q(a)
    return xp.subtract(y, p, out=y)


def gelu_float64(x, out=None):
    """x Phi(x) = x/2 (1 + erf(x / sqrt 2)) in float64, with the series erf."""
    xp = ops_of(x)
    phi = erf_series(x * (1 / math.sqrt(2)))  # erf(x / sqrt 2)
    phi = xp.add(phi, 1.0, out=phi)
    phi = xp.multiply(phi, 0.5, out=phi)
    return xp.multiply(phi, x, out=out)


def count_subnormal(x) -> int:
    """How many values of x are subnormal: nonzero and of magnitude below the dtype's smallest normal number
    (1.2e-38 in float32, 2.2e-308 in float64).

    >>> count_subnormal(np.array([1e-39, 0.0, 1e-30], dtype=np.float32))   # -> 1
    """
    x = np.asarray(x)
    return int(np.count_nonzero((x != 0) & (np.abs(x) < np.finfo(x.dtype).tiny)))


def gelu(x, out=None):
    """The exact GELU x Phi(x) (transformers' "gelu"), accurate to the rounding of x's dtype."""
    return gelu_float64(x, out) if x.dtype == ops_of(x).float64 else gelu_float32(x, out)
