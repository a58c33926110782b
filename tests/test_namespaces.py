"""The engine and the reference on another array namespace: array-api-strict, which rejects every call the
array API standard does not have (numpy's out=, methods, flat indexing, data-dependent shapes), stands in
for CuPy here. tests/test_fixtures.py holds both namespaces to the same committed golden values; this file
checks the other namespaces' schedule of attention, the Reranker on them and the device errors. The GPU
itself is checked by tools/gpu_check.py on a machine that has one (docs/gpu.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xlmr_np import Reranker, XLMRobertaConfig, engine
from xlmr_np.arrays import NUMPY, ops_of, to_namespace, to_numpy
from xlmr_np.errors import ConfigError
from xlmr_np.testing import assert_close, strict_array_api
from xlmr_np.weights import load_params

FIXTURE = Path(__file__).parent / "fixtures" / "tiny-golden"
DTYPES = [np.float32, np.float64]


@pytest.fixture(scope="module")
def xs():
    return strict_array_api()


def load(dtype):
    config = XLMRobertaConfig.from_file(FIXTURE / "config.json")
    return load_params(FIXTURE, config, dtype), config


def packed_qkv(lengths, dtype, D=32, seed=0):
    rng = np.random.default_rng(seed)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    q, k, v = (rng.standard_normal((offsets[-1], D)).astype(dtype) * 2 for _ in range(3))
    return q, k, v, offsets


@pytest.mark.parametrize("first_only", [False, True])
@pytest.mark.parametrize("budget", [1 << 26, 300])  # 300: groups of a pair or a few, query rows in blocks of 3
def test_padded_attention_is_the_per_pair_attention(monkeypatch, first_only, budget):
    """The other namespaces' schedule (padded groups, masked keys) on numpy, against the numpy one (per pair,
    unpadded): the same function, to float64 round-off; padding keys get weight exactly 0."""
    monkeypatch.setattr(engine, "DEVICE_SCORES", budget)
    lengths = [7, 19, 1, 12, 12, 3]
    q, k, v, offsets = packed_qkv(lengths, np.float64)
    queries = q[offsets[:-1]] if first_only else q
    want = engine.attention(queries.copy(), k, v, offsets, 4, 0.3, first_only)
    got = engine.padded_attention(queries.copy(), k, v, offsets, 4, 0.3, first_only)
    assert_close("padded vs per-pair attention", got, want, atol=1e-14, rtol=1e-13)
    groups = engine.padded_groups(lengths, 4, first_only)
    assert [a for a, _, _ in groups] == sorted(a for a, _, _ in groups) and groups[-1][1] == len(lengths)
    assert (len(groups) == 1) == (budget == 1 << 26)


def test_padded_groups_keep_a_groups_scores_within_the_budget():
    assert engine.padded_groups([512] * 32, 12) == [(0, 21, 512), (21, 32, 512)]  # 21 * 12 * 512^2 <= 2^26
    assert engine.padded_groups([8192], 16) == [(0, 1, 512)]  # one long pair: 512 query rows a block
    assert engine.padded_groups([8192] * 3, 16, first_only=True) == [(0, 3, 1)]
    assert engine.padded_groups([5, 300, 7], 2) == [(0, 3, 300)]


def test_engine_on_array_api_strict_over_long_pairs_in_row_blocks(xs, monkeypatch):
    """A pair too long for one block of scores goes by blocks of query rows: the same logits as numpy's."""
    monkeypatch.setattr(engine, "DEVICE_SCORES", 2000)
    params, config = load(np.float64)
    rng = np.random.default_rng(1)
    ids = rng.integers(5, config.vocab_size, (3, 60))
    mask = np.ones_like(ids)
    mask[1, 45:] = mask[2, 8:] = 0
    want = engine.forward(params, config, ids, mask)
    got = to_numpy(engine.forward(to_namespace(params, xs), config, ids, mask))
    assert_close("strict vs numpy logits, row blocks", got, want, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_weights_below_the_floor_are_exactly_zero_on_array_api_strict(xs, dtype):
    ops = ops_of(xs.asarray(np.zeros(1)))
    scores = np.array([[0.0, -10.0, -41.0, -42.0, -90.0, -1e4]], dtype=dtype)  # 2^-60 = e^-41.6
    floor, zero = engine.floor_row(ops, scores.shape[-1], xs.float32 if dtype == np.float32 else xs.float64)
    weights, sums = engine.softmax_weights(xs.asarray(scores), floor, zero=zero)
    want, want_sums = engine.softmax_weights(scores.copy(), engine.floor_row(NUMPY, scores.shape[-1], dtype)[0])
    kept = 3 if dtype == np.float32 else 4  # e^-41 is above 2^-60 = e^-41.6; float64's floor is 2^-120 = e^-83.2
    print(to_numpy(weights), want)
    assert np.array_equal(to_numpy(weights), want) and np.array_equal(to_numpy(sums), want_sums)
    assert np.all(want[0, :kept] > 0) and np.array_equal(want[0, kept:], np.zeros(6 - kept))


def test_a_reranker_on_array_api_strict_scores_as_on_numpy(xs, tiny_dir):
    """Reranker with its params on another namespace: whole batches through the engine there, numpy out."""
    on_numpy = Reranker.from_pretrained(tiny_dir, workers=1)
    strict = to_namespace(on_numpy.params, xs)
    on_strict = Reranker(strict, on_numpy.config, on_numpy.tokenizer, model_dir=on_numpy.model_dir)
    pairs = [("what is the capital of France?", "Paris is the capital of France."), ("q", ""), ("a " * 40, "b " * 40)]
    want, want_cut = on_numpy.predict_logits(pairs, batch_size=2)
    got, got_cut = on_strict.predict_logits(pairs, batch_size=2)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got_cut == want_cut
    assert_close("strict vs numpy reranker logits", got, want, atol=2e-6, rtol=2e-6)
    batch = on_numpy.tokenize(pairs)
    out = on_strict.forward(batch.input_ids, batch.attention_mask, output_hidden_states=True)
    assert all(isinstance(s, np.ndarray) for s in out.hidden_states) and isinstance(out.logits, np.ndarray)
    traced = on_strict.forward(batch.input_ids, batch.attention_mask, trace=["embeddings"])
    assert isinstance(traced.trace["embeddings"], np.ndarray)
    assert_close("strict reference vs engine", traced.logits, out.logits, atol=2e-6, rtol=2e-6)


def test_arrays_without_array_api_compat_get_a_clear_error(xs, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "array_api_compat", None)  # import array_api_compat -> ImportError
    with pytest.raises(ConfigError, match=r"array_api_strict.*Array arrays need array-api-compat: pip install"):
        ops_of(xs.asarray(np.zeros(2)))
    assert ops_of(np.zeros(2)) is NUMPY  # numpy needs nothing more


def test_device_cuda_without_cupy_says_what_is_missing(monkeypatch, tiny_dir):
    import sys

    directory = tiny_dir
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError, as on a machine without it
    with pytest.raises(
        ConfigError, match=r"^device 'cuda' needs CuPy, which is not installed here .*xlmr-np\[gpu\]"
    ) as e:
        Reranker.from_pretrained(directory, device="cuda")
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"^device must be one of 'cpu', 'cuda', got 'gpu'$"):
        Reranker.from_pretrained(directory, device="gpu")


def test_device_cuda_without_a_gpu_says_so(monkeypatch, tiny_dir):
    """CuPy installed but no driver or device: CuPy's own error, first line, after what is missing."""
    import sys
    from types import SimpleNamespace

    def no_device():
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected\nmore lines")

    cupy = SimpleNamespace(cuda=SimpleNamespace(runtime=SimpleNamespace(getDeviceCount=no_device)))
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    with pytest.raises(ConfigError) as e:
        Reranker.from_pretrained(tiny_dir, device="cuda")
    assert (
        str(e.value)
        == "device 'cuda': CuPy finds no usable GPU (cudaErrorNoDevice: no CUDA-capable device is detected)"
    )
