"""Derive the two rational approximations in xlmr_np.numerics.

erf (default mode), used by xlmr_np.numerics.erf in float32 mode:

    erf(x) ~= x * P(x^2) / Q(x^2),  |x| <= 3.92,  P of degree 5, Q of degree 5 with Q(0) = 1

Beyond 3.92, erf is within 1.6e-8 of +-1, below float32's resolution there. Minimises the absolute error.

--tail, used by the float32 GELU (xlmr_np.numerics.gelu_float32):

    Q(a) = erfc(a / sqrt 2) / 2 = exp(-a^2 / 2) * R(a),  R(a) ~= P(a) / Q(a),  0 <= a <= 20,
    P of degree 4, Q of degree 5 with Q(0) = 1 (R falls like 1/a, so Q is one degree higher)

Beyond 20, exp(-a^2 / 2) is 0 in float32. Minimises the *relative* error of R, so that the tail
probability keeps its relative accuracy however small it gets; every fitted coefficient comes out
positive, so evaluating it in float32 never cancels.

Both are fitted by Sanathanan-Koerner iteration (linearised least squares, reweighted each round by the
previous denominator) followed by Lawson-style reweighting toward the minimax error, on Chebyshev-spaced
nodes against mpmath.

Run: python tools/fit_erf.py [--tail]   (needs mpmath; prints the coefficients and the max error)
"""

from __future__ import annotations

import math
import sys

import mpmath
import numpy as np

XMAX = 3.92
DEG_P, DEG_Q = 5, 5
TAIL_MAX = 20.0
TAIL_DEG_P, TAIL_DEG_Q = 4, 5


def fit(basis_p, basis_q, f, weight_of_error, iterations=40):
    """Fit f ~= (basis_p @ p) / (1 + basis_q @ q') by Sanathanan-Koerner, then Lawson reweighting.

    basis_p: [M, deg_p + 1] numerator basis at the nodes; basis_q: [M, deg_q] denominator basis without
    its constant 1. weight_of_error: per-node scale of the error being minimised (1 = absolute, 1/f =
    relative). Returns (p, q with q[0] = 1, max weighted error at the nodes).
    """
    previous_q = np.ones_like(f)
    weights = np.ones_like(f)
    for i in range(iterations):
        a = np.concatenate([basis_p, -(f[:, None] * basis_q)], axis=1)
        scale = weights * weight_of_error / previous_q
        c, *_ = np.linalg.lstsq(a * scale[:, None], f * scale, rcond=None)
        p, q = c[: basis_p.shape[1]], np.concatenate([[1.0], c[basis_p.shape[1] :]])
        previous_q = 1.0 + basis_q @ q[1:]
        err = ((basis_p @ p) / previous_q - f) * weight_of_error
        if i > 5:
            weights *= (np.abs(err) / np.abs(err).mean()) ** 0.3
            weights /= weights.mean()
    return p, q, np.abs(err).max()


def chebyshev_nodes(stop, count):
    return np.sort(np.cos(np.linspace(0, np.pi, count)) * stop / 2 + stop / 2)


def fit_erf():
    x = chebyshev_nodes(XMAX, 6000)
    t = x * x
    f = np.array([float(mpmath.erf(v)) for v in x])
    p, q, err = fit(
        x[:, None] * t[:, None] ** np.arange(DEG_P + 1),
        t[:, None] ** np.arange(1, DEG_Q + 1),
        f,
        np.ones_like(f),
        iterations=30,
    )
    grid = np.linspace(0, XMAX, 200_001)
    approx = grid * np.polyval(p[::-1], grid * grid) / np.polyval(q[::-1], grid * grid)
    dense = np.abs(approx - np.array([math.erf(v) for v in grid])).max()
    print(f"P = {tuple(p.tolist())}\nQ = {tuple(q.tolist())}\nmax abs error: nodes {err:.2e}, dense grid {dense:.2e}")


def tail_ratio(a):
    """R(a) = Q(a) exp(a^2 / 2), to 30 digits."""
    with mpmath.workdps(30):
        a = mpmath.mpf(float(a))
        return float(mpmath.erfc(a / mpmath.sqrt(2)) / 2 * mpmath.exp(a * a / 2))


def fit_tail():
    a = chebyshev_nodes(TAIL_MAX, 5000)
    f = np.array([tail_ratio(v) for v in a])
    p, q, err = fit(a[:, None] ** np.arange(TAIL_DEG_P + 1), a[:, None] ** np.arange(1, TAIL_DEG_Q + 1), f, 1 / f)
    grid = np.linspace(0, TAIL_MAX, 20_001)
    approx = np.polyval(p[::-1], grid) / np.polyval(q[::-1], grid)
    exact = np.array([tail_ratio(v) for v in grid])
    dense = np.abs(approx / exact - 1).max()
    print(
        f"P = {tuple(p.tolist())}\nQ = {tuple(q.tolist())}\nmax relative error: nodes {err:.2e}, "
        f"dense grid {dense:.2e}; all coefficients positive: {bool((p > 0).all() and (q > 0).all())}"
    )


if __name__ == "__main__":
    fit_tail() if "--tail" in sys.argv[1:] else fit_erf()
