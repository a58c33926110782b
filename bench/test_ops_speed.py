"""Micro-benchmarks of each op of xlmr_np.engine at bge-reranker-base's sizes (pytest-benchmark).

Each also checks the output of what it times. CI runs them once each (.ci/run); measure from the
repository root with:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest bench/ --benchmark-columns=median,iqr,rounds

Shapes: one batch of 16 pairs x 256 tokens (N = 4096 packed tokens), D 768, H 12, F 3072, and one pair of
512 tokens for attention. Each benchmark reports its throughput in extra_info (elements/s or GFLOP/s) so ops
can be compared with the GEMMs, and each elementwise op its time in memory passes: its median over the
median of one copy of the same array (test_bandwidth_floor_*, a read and a write of every value), the floor
an op that reads its input and writes its output once could reach.

All of it on one thread, BLAS included (threadpoolctl): the engine's numbers are defined with one BLAS thread
and xlmr_np.workers gives each core its own pairs (test_layer_on_every_core shows a layer that way).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from xlmr_np import engine, numerics, workers
from xlmr_np.config import XLMRobertaConfig

threadpoolctl = pytest.importorskip("threadpoolctl")

N, D, H, F, PAIR = 4096, 768, 12, 3072, 256
CONFIG = XLMRobertaConfig(
    model_type="xlm-roberta",
    vocab_size=250002,
    hidden_size=D,
    num_hidden_layers=1,
    num_attention_heads=H,
    intermediate_size=F,
    hidden_act="gelu",
    max_position_embeddings=514,
    type_vocab_size=1,
    layer_norm_eps=1e-5,
    pad_token_id=1,
    num_labels=1,
)
OFFSETS = np.arange(0, N + 1, PAIR)  # 16 pairs of 256 tokens


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(0)


FLOOR: dict[tuple, float] = {}  # shape -> median seconds of one copy (filled by the floor benchmarks)


def copy_floor(shape) -> float:
    """Median seconds of np.copyto over a float32 array of this shape (measured here if no benchmark did)."""
    if shape not in FLOOR:
        import time

        a, b = np.ones(shape, dtype=np.float32), np.empty(shape, dtype=np.float32)
        times = []
        for _ in range(20):
            t = time.perf_counter()
            np.copyto(b, a)
            times.append(time.perf_counter() - t)
        FLOOR[shape] = float(np.median(times))
    return FLOOR[shape]


def passes(benchmark, shape) -> None:
    """extra_info: the op's median in copies of its array (1.0 would be the bandwidth floor)."""
    benchmark.extra_info["copies_of_the_array"] = benchmark.stats.stats.median / copy_floor(shape)


@pytest.mark.parametrize("shape", [(N, F), (N, D), (H * 512, 512)], ids=["N-F", "N-D", "scores-512"])
def test_bandwidth_floor_copy(benchmark, shape):
    a, b = np.ones(shape, dtype=np.float32), np.empty(shape, dtype=np.float32)
    benchmark(np.copyto, b, a)
    assert np.array_equal(b, a)
    FLOOR[shape] = benchmark.stats.stats.median
    benchmark.extra_info["GB_per_s_read_and_write"] = 2 * a.nbytes / benchmark.stats.stats.median / 1e9


@pytest.fixture(scope="module")
def layer_params(rng):
    """Random weights of layer 0 under the checkpoint's key names."""
    p = "roberta.encoder.layer.0."
    shapes = {
        "attention.self.query": (D, D),
        "attention.self.key": (D, D),
        "attention.self.value": (D, D),
        "attention.output.dense": (D, D),
        "intermediate.dense": (F, D),
        "output.dense": (D, F),
    }
    params = {}
    for name, shape in shapes.items():
        params[p + name + ".weight"] = rng.standard_normal(shape, dtype=np.float32) * 0.02
        params[p + name + ".bias"] = rng.standard_normal(shape[0], dtype=np.float32) * 0.02
    for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
        params[p + ln + ".weight"] = np.ones(D, dtype=np.float32)
        params[p + ln + ".bias"] = np.zeros(D, dtype=np.float32)
    return params


def test_gelu(benchmark, rng):
    x = rng.standard_normal((N, F), dtype=np.float32)
    out = np.empty_like(x)
    benchmark(engine.gelu, x, out=out)
    assert np.array_equal(out, numerics.gelu(x))  # what was timed is the GELU, bit for bit
    benchmark.extra_info["Melements_per_s"] = x.size / benchmark.stats.stats.median / 1e6
    passes(benchmark, x.shape)


def test_gelu_split_over_two_threads(benchmark, rng):
    """Why one call's elementwise work stays on one thread (engine.BLOCK_ELEMENTS): the same GELU with its
    blocks split between two threads. Each numpy pass over a block releases the GIL for only 1-3 us, and
    re-taking it costs more; xlmr_np.workers splits whole passes over pairs among the cores instead."""
    x = rng.standard_normal((N, F), dtype=np.float32)
    out = np.empty_like(x)
    pool = ThreadPoolExecutor(2)

    def run():
        halves = [(0, N // 2), (N // 2, N)]
        list(pool.map(lambda rows: engine.gelu(x[rows[0] : rows[1]], out=out[rows[0] : rows[1]]), halves))

    benchmark(run)
    pool.shutdown()
    assert np.array_equal(out, numerics.gelu(x))  # the halves make the whole, bit for bit
    benchmark.extra_info["Melements_per_s"] = x.size / benchmark.stats.stats.median / 1e6


def test_gelu_on_two_workers_at_once(benchmark, rng):
    """Two threads each running the whole GELU on its own [N, F] at the same time, as two workers do (twice
    test_gelu's work): on two free cores this takes test_gelu's time when the threads do not wait for each
    other's GIL. Larger engine.BLOCK_ELEMENTS means fewer numpy passes, so fewer waits (see its comment)."""
    xs = [rng.standard_normal((N, F), dtype=np.float32) for _ in range(2)]
    outs = [np.empty_like(x) for x in xs]
    pool = ThreadPoolExecutor(2)

    def run():
        list(pool.map(lambda k: engine.gelu(xs[k], out=outs[k]), range(2)))

    benchmark(run)
    pool.shutdown()
    assert all(np.array_equal(outs[k], numerics.gelu(xs[k])) for k in range(2))
    benchmark.extra_info["Melements_per_s"] = 2 * xs[0].size / benchmark.stats.stats.median / 1e6


def test_softmax_attention_scores(benchmark, rng):
    """One pair's scores for every head, [H * n, n], in place (the attention's softmax for one pair)."""
    scores = rng.standard_normal((H * PAIR, PAIR), dtype=np.float32)
    work = np.empty_like(scores)

    def run():
        np.copyto(work, scores)
        engine.softmax(work, out=work, scale=np.float32(0.125))

    benchmark(run)
    np.testing.assert_allclose(work.sum(axis=-1), 1, atol=1e-5)  # each row a distribution
    benchmark.extra_info["Melements_per_s"] = scores.size / benchmark.stats.stats.median / 1e6
    passes(benchmark, scores.shape)  # includes the copy that restores the scores: subtract 1


def test_softmax_attention_scores_512_one_head_chunk(benchmark, rng):
    """The softmax as attention now runs it at 512 tokens: one head's [512, 512] scores at a time (about
    SCORES_ELEMENTS: in cache for all its passes), scale folded into Q (1/8 is a power of two)."""
    n = 512
    scores = rng.standard_normal((H, n, n), dtype=np.float32)
    work = np.empty(engine.SCORES_ELEMENTS * 2, dtype=np.float32)
    step = max(1, len(work) // (n * n))

    def run():
        for h in range(0, H, step):
            s = work[: step * n * n].reshape(step, n, n)
            np.copyto(s, scores[h : h + step])
            engine.softmax(s, out=s)

    benchmark(run)
    last = work[: step * n * n].reshape(step, n, n)
    np.testing.assert_allclose(last.sum(axis=-1), 1, atol=1e-5)  # the last chunk's rows: distributions
    benchmark.extra_info["Melements_per_s"] = scores.size / benchmark.stats.stats.median / 1e6
    passes(benchmark, (H * n, n))  # includes the copies in: subtract 1


def test_layer_norm_with_bias_and_residual(benchmark, rng):
    x = rng.standard_normal((N, D), dtype=np.float32)
    residual = rng.standard_normal((N, D), dtype=np.float32)
    w, b = np.ones(D, dtype=np.float32), np.zeros(D, dtype=np.float32)
    out = np.empty_like(x)
    benchmark(engine.layer_norm, x, w, b, 1e-5, out=out, add=(b, residual))
    np.testing.assert_allclose(out.mean(axis=-1), 0, atol=1e-5)  # weight 1, bias 0: rows of mean 0, std 1
    np.testing.assert_allclose(out.std(axis=-1), 1, atol=1e-3)
    benchmark.extra_info["Melements_per_s"] = x.size / benchmark.stats.stats.median / 1e6
    passes(benchmark, x.shape)


def test_attention(benchmark, rng, layer_params):
    """Q, K, V projections and attention for 16 pairs x 256 tokens."""
    x = rng.standard_normal((N, D), dtype=np.float32)
    out = benchmark(engine.self_attention, x, OFFSETS, layer_params, "roberta.encoder.layer.0.", CONFIG)
    assert out.shape == (N, D) and np.isfinite(out).all()
    flops = 2 * N * 3 * D * D + len(OFFSETS[:-1]) * 4 * PAIR * PAIR * D
    benchmark.extra_info["GFLOP_per_s"] = flops / benchmark.stats.stats.median / 1e9


def test_attention_one_pair_of_512(benchmark, rng, layer_params):
    """Q, K, V projections and attention for one pair of 512 tokens: chunks of heads in cache."""
    x = rng.standard_normal((512, D), dtype=np.float32)
    offsets = np.array([0, 512])
    out = benchmark(engine.self_attention, x, offsets, layer_params, "roberta.encoder.layer.0.", CONFIG)
    assert out.shape == (512, D) and np.isfinite(out).all()
    flops = 2 * 512 * 3 * D * D + 4 * 512 * 512 * D
    benchmark.extra_info["GFLOP_per_s"] = flops / benchmark.stats.stats.median / 1e9


def test_one_layer(benchmark, rng, layer_params):
    x = rng.standard_normal((N, D), dtype=np.float32)
    out = benchmark(engine.encoder_layer, x, OFFSETS, layer_params, 0, CONFIG)
    assert out.shape == (N, D) and np.isfinite(out).all()
    flops = 2 * N * (4 * D * D + 2 * D * F) + len(OFFSETS[:-1]) * 4 * PAIR * PAIR * D
    benchmark.extra_info["GFLOP_per_s"] = flops / benchmark.stats.stats.median / 1e9


def test_sgemm_feed_forward_shape(benchmark, rng):
    """The reference point: numpy's sgemm on the feed-forward's [N, D] x [D, F]."""
    x = rng.standard_normal((N, D), dtype=np.float32)
    w = rng.standard_normal((F, D), dtype=np.float32)
    out = benchmark(engine.matmul_wt, x, w)
    np.testing.assert_allclose(out, x.astype(np.float64) @ w.T.astype(np.float64), rtol=1e-4, atol=1e-3)
    benchmark.extra_info["GFLOP_per_s"] = 2 * N * D * F / benchmark.stats.stats.median / 1e9


def test_layer_on_every_core(benchmark, rng, layer_params):
    """test_one_layer with its 16 pairs split among one worker thread per core (xlmr_np.workers' way),
    each on one BLAS thread: the speed-up over test_one_layer is what the workers give a layer."""
    x = rng.standard_normal((N, D), dtype=np.float32)
    pool = workers.Workers(workers.available_cores())
    shares = [np.arange(k, len(OFFSETS) - 1, pool.workers) for k in range(pool.workers)]
    inputs = [
        (x[np.concatenate([np.arange(OFFSETS[b], OFFSETS[b + 1]) for b in s])], np.arange(0, len(s) * PAIR + 1, PAIR))
        for s in shares
    ]

    outputs = [None] * len(inputs)

    def run():
        def layer(k):
            outputs[k] = engine.encoder_layer(*inputs[k], layer_params, 0, CONFIG)

        pool.map([lambda k=k: layer(k) for k in range(len(inputs))])

    benchmark(run)
    pool.close()
    for (xi, oi), out in zip(inputs, outputs):  # each worker's share: the bits one thread gives it
        assert np.array_equal(out, engine.encoder_layer(xi, oi, layer_params, 0, CONFIG))
    flops = 2 * N * (4 * D * D + 2 * D * F) + len(OFFSETS[:-1]) * 4 * PAIR * PAIR * D
    benchmark.extra_info["GFLOP_per_s"] = flops / benchmark.stats.stats.median / 1e9
