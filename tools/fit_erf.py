"""Derive the rational erf approximation used by xlmr_np.model._erf_rational.

    erf(x) ~= x * P(x^2) / Q(x^2),  |x| <= 3.92,  P of degree 5, Q of degree 5 with Q(0) = 1

fitted by Sanathanan-Koerner iteration (linearised least squares, reweighted each round by the previous
denominator) followed by Lawson-style reweighting toward the minimax error, on Chebyshev-spaced nodes
against mpmath's erf. Beyond 3.92, erf is within 1.6e-8 of +-1, below float32's resolution there.

Run: python tools/fit_erf.py   (needs mpmath; prints the coefficients and the max abs error)
"""

from __future__ import annotations

import math

import mpmath
import numpy as np

XMAX = 3.92
DEG_P, DEG_Q = 5, 5


def fit(x, f, iterations=30):
    t = x * x
    previous_q = np.ones_like(t)
    weights = np.ones_like(t)
    for i in range(iterations):
        a = np.concatenate([x[:, None] * t[:, None] ** np.arange(DEG_P + 1),
                            -(f[:, None] * t[:, None] ** np.arange(1, DEG_Q + 1))], axis=1)
        scale = weights / previous_q
        c, *_ = np.linalg.lstsq(a * scale[:, None], f * scale, rcond=None)
        p, q = c[: DEG_P + 1], np.concatenate([[1.0], c[DEG_P + 1 :]])
        previous_q = np.polyval(q[::-1], t)
        err = x * np.polyval(p[::-1], t) / previous_q - f
        if i > 5:
            weights *= (np.abs(err) / np.abs(err).mean()) ** 0.3
            weights /= weights.mean()
    return p, q, np.abs(err).max()


def main():
    x = np.sort(np.cos(np.linspace(0, np.pi, 6000)) * XMAX / 2 + XMAX / 2)
    f = np.array([float(mpmath.erf(v)) for v in x])
    p, q, err = fit(x, f)
    grid = np.linspace(0, XMAX, 200_001)
    t = grid * grid
    approx = grid * np.polyval(p[::-1], t) / np.polyval(q[::-1], t)
    dense = np.abs(approx - np.array([math.erf(v) for v in grid])).max()
    print(f"P = {tuple(p.tolist())}\nQ = {tuple(q.tolist())}\nmax abs error: nodes {err:.2e}, dense grid {dense:.2e}")


if __name__ == "__main__":
    main()
