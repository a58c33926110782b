"""Micro-benchmarks of each op of xlmr_np.engine at bge-reranker-base's sizes (pytest-benchmark).

Not part of the CI test run (pytest's testpaths is tests/). Run from the repository root with:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest bench/ --benchmark-columns=median,iqr,rounds

Shapes: one batch of 16 pairs x 256 tokens (N = 4096 packed tokens), D 768, H 12, F 3072. Each benchmark
also reports its throughput in extra_info (elements/s or GFLOP/s) so ops can be compared with the GEMMs.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from xlmr_np import engine
from xlmr_np.config import XLMRobertaConfig

N, D, H, F, PAIR = 4096, 768, 12, 3072, 256
CONFIG = XLMRobertaConfig(model_type="xlm-roberta", vocab_size=250002, hidden_size=D, num_hidden_layers=1,
                          num_attention_heads=H, intermediate_size=F, hidden_act="gelu",
                          max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1,
                          num_labels=1)
OFFSETS = np.arange(0, N + 1, PAIR)  # 16 pairs of 256 tokens


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def layer_params(rng):
    """Random weights of layer 0 under the checkpoint's key names."""
    p = "roberta.encoder.layer.0."
    shapes = {"attention.self.query": (D, D), "attention.self.key": (D, D), "attention.self.value": (D, D),
              "attention.output.dense": (D, D), "intermediate.dense": (F, D), "output.dense": (D, F)}
    params = {}
    for name, shape in shapes.items():
        params[p + name + ".weight"] = (rng.standard_normal(shape, dtype=np.float32) * 0.02)
        params[p + name + ".bias"] = rng.standard_normal(shape[0], dtype=np.float32) * 0.02
    for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
        params[p + ln + ".weight"] = np.ones(D, dtype=np.float32)
        params[p + ln + ".bias"] = np.zeros(D, dtype=np.float32)
    return params


def test_gelu(benchmark, rng):
    x = rng.standard_normal((N, F), dtype=np.float32)
    benchmark(engine.gelu, x)
    benchmark.extra_info["Melements_per_s"] = x.size / benchmark.stats.stats.median / 1e6


def test_gelu_split_over_two_threads(benchmark, rng):
    """The evidence for running elementwise work on one thread (engine.BLOCK_ELEMENTS): the same GELU with
    its blocks split between two threads. Each numpy pass over a block releases the GIL for only 1-3 us,
    and re-taking it costs more, so on a 2-core machine this is slower than test_gelu, not twice as fast."""
    x = rng.standard_normal((N, F), dtype=np.float32)
    out = np.empty_like(x)
    pool = ThreadPoolExecutor(2)

    def run():
        halves = [(0, N // 2), (N // 2, N)]
        list(pool.map(lambda rows: engine.gelu(x[rows[0]:rows[1]], out=out[rows[0]:rows[1]]), halves))

    benchmark(run)
    pool.shutdown()
    benchmark.extra_info["Melements_per_s"] = x.size / benchmark.stats.stats.median / 1e6


def test_softmax_attention_scores(benchmark, rng):
    """One pair's scores for every head, [H * n, n], in place (the attention's softmax for one pair)."""
    scores = rng.standard_normal((H * PAIR, PAIR), dtype=np.float32)
    work = np.empty_like(scores)

    def run():
        np.copyto(work, scores)
        engine.softmax(work, out=work, scale=np.float32(0.125))

    benchmark(run)
    benchmark.extra_info["Melements_per_s"] = scores.size / benchmark.stats.stats.median / 1e6


def test_layer_norm_with_bias_and_residual(benchmark, rng):
    x = rng.standard_normal((N, D), dtype=np.float32)
    residual = rng.standard_normal((N, D), dtype=np.float32)
    w, b = np.ones(D, dtype=np.float32), np.zeros(D, dtype=np.float32)
    out = np.empty_like(x)
    benchmark(engine.layer_norm, x, w, b, 1e-5, out=out, add=(b, residual))
    benchmark.extra_info["Melements_per_s"] = x.size / benchmark.stats.stats.median / 1e6


def test_attention(benchmark, rng, layer_params):
    """Q, K, V projections and attention for 16 pairs x 256 tokens."""
    x = rng.standard_normal((N, D), dtype=np.float32)
    benchmark(engine.self_attention, x, OFFSETS, layer_params, "roberta.encoder.layer.0.", CONFIG)
    flops = 2 * N * 3 * D * D + len(OFFSETS[:-1]) * 4 * PAIR * PAIR * D
    benchmark.extra_info["GFLOP_per_s"] = flops / benchmark.stats.stats.median / 1e9


def test_one_layer(benchmark, rng, layer_params):
    x = rng.standard_normal((N, D), dtype=np.float32)
    benchmark(engine.encoder_layer, x, OFFSETS, layer_params, 0, CONFIG)
    flops = 2 * N * (4 * D * D + 2 * D * F) + len(OFFSETS[:-1]) * 4 * PAIR * PAIR * D
    benchmark.extra_info["GFLOP_per_s"] = flops / benchmark.stats.stats.median / 1e9


def test_sgemm_feed_forward_shape(benchmark, rng):
    """The reference point: numpy's sgemm on the feed-forward's [N, D] x [D, F]."""
    x = rng.standard_normal((N, D), dtype=np.float32)
    w = rng.standard_normal((F, D), dtype=np.float32)
    benchmark(engine.matmul_wt, x, w)
    benchmark.extra_info["GFLOP_per_s"] = 2 * N * D * F / benchmark.stats.stats.median / 1e9
