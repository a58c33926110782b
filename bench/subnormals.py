"""Subnormal floats in attention: the share of softmax probabilities below float32's smallest normal number
(1.2e-38) that a model produces, in the plain formula (xlmr_np.model) and in the engine (xlmr_np.engine, whose
weights below 2^-60 of their row's largest are exactly 0), and what that floor changes in the logits.

Subnormal floats are what makes sharp attention slow on many CPUs (OpenBLAS's sgemm on an Intel Xeon: 120x);
random weights of std 0.02 never produce them, trained models and std-0.2 random weights do.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from xlmr_np import engine, model
from xlmr_np.numerics import count_subnormal


class ProbabilityCounter:
    """A record callback for xlmr_np.model.forward: counts the attention probabilities it sees, keeps none."""

    def __init__(self):
        self.total = self.subnormal = 0

    def __call__(self, name: str, x: np.ndarray) -> None:
        if name.endswith("attention.self.probs"):
            self.total += x.size
            self.subnormal += count_subnormal(x)


@contextmanager
def counting_engine_weights():
    """Count, while inside, the softmax weights engine.forward computes (on the calling thread): a dict with
    "total", "subnormal" and "zero" (weights the floor set to exactly 0)."""
    counts = {"total": 0, "subnormal": 0, "zero": 0}
    weights = engine.softmax_weights

    def counted(x, floor, scale=None, zero=None):
        x, sums = weights(x, floor, scale, zero)
        counts["total"] += x.size
        counts["subnormal"] += count_subnormal(x)
        counts["zero"] += x.size - int(np.count_nonzero(x))
        return x, sums

    engine.softmax_weights = counted
    try:
        yield counts
    finally:
        engine.softmax_weights = weights


@contextmanager
def without_weight_floor(dtype):
    """engine.forward with its softmax floor out of reach (2^-5000): the plain softmax's weights."""
    floors = dict(engine.WEIGHT_FLOOR)
    engine.WEIGHT_FLOOR[np.dtype(dtype)] = 5000
    engine.weight_floor.cache_clear()
    try:
        yield
    finally:
        engine.WEIGHT_FLOOR.clear()
        engine.WEIGHT_FLOOR.update(floors)
        engine.weight_floor.cache_clear()


def subnormal_report(params, config, input_ids, attention_mask) -> dict:
    """On one unpadded batch [B, T]: the plain formula's and the engine's subnormal probabilities (counts and
    shares), the weights the engine floors to 0, and max |logits with the floor - logits without| (float32).

    Runs the reference forward, so keep the batch short: it holds one layer's [B, H, T, T] probabilities.
    """
    plain = ProbabilityCounter()
    model.forward(params, config, input_ids, attention_mask, record=plain)
    with counting_engine_weights() as fast:
        floored = engine.forward(params, config, input_ids, attention_mask)
    with without_weight_floor(np.float32):
        unfloored = engine.forward(params, config, input_ids, attention_mask)
    return {
        "tokens": int(np.asarray(attention_mask).sum()),
        "plain_total": plain.total,
        "plain_subnormal": plain.subnormal,
        "plain_share": plain.subnormal / max(plain.total, 1),
        "engine_total": fast["total"],
        "engine_subnormal": fast["subnormal"],
        "engine_share": fast["subnormal"] / max(fast["total"], 1),
        "engine_zero_share": fast["zero"] / max(fast["total"], 1),
        "floor_logit_change": float(np.abs(floored.astype(np.float64) - unfloored).max()),
    }
