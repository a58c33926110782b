"""Random cross-encoders built by transformers at test time, loaded through the public API (parity tier).

Both forward passes against transformers' eager implementation, on batches with padding and mixed lengths,
in float32 and float64: the reference (xlmr_np.model) on every hidden state, every attention-probability
tensor and the logits; the engine (xlmr_np.engine, what Reranker scores with) on every hidden state and
the logits. Then the engine's promises, on the unit tier's numpy model: scores independent of batch,
neighbours and order, bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import transformers_forward

from xlmr_np import Reranker, engine
from xlmr_np.testing import SAMPLE_PAIRS as PAIRS
from xlmr_np.testing import assert_close, build_model

# (name, seed, overrides): odd sizes catch transposed weights; num_labels 2 checks the head's shape.
MODELS = [
    ("h32-l2-labels1-seed0", 0, dict()),
    ("h32-l2-labels2-seed1", 1, dict(num_labels=2)),
    (
        "h48-l3-heads6-ff53-seed2",
        2,
        dict(hidden_size=48, num_attention_heads=6, intermediate_size=53, num_hidden_layers=3),
    ),
]


@pytest.fixture(scope="module", params=MODELS, ids=[m[0] for m in MODELS])
def built(request, torch, tmp_path_factory):
    name, seed, overrides = request.param
    directory = tmp_path_factory.mktemp(name)
    return directory, build_model(directory, seed=seed, init_std=0.2, **overrides)


@pytest.mark.parity
@pytest.mark.parametrize("dtype, atol", [(np.float32, 2e-5), (np.float64, 1e-12)])
def test_reference_matches_transformers_in_every_hidden_state_attention_and_logit(built, torch, dtype, atol):
    """Reranker.forward with attentions runs the reference forward pass (xlmr_np.model)."""
    directory, torch_model = built
    reranker = Reranker.from_pretrained(directory, dtype=dtype)
    batch = reranker.tokenize(PAIRS)
    assert len(set(batch.lengths.tolist())) > 2, "the batch must mix lengths and padding"
    ours = reranker.forward(batch.input_ids, batch.attention_mask, output_hidden_states=True, output_attentions=True)
    ref = transformers_forward(torch, torch_model, batch, dtype, hidden_states=True, attentions=True)
    real = batch.attention_mask.astype(bool)  # [B, T]: only real tokens are comparable across implementations
    check_hidden_states_and_logits(ours, ref, real, dtype, atol)
    pair_real = real[:, None, :, None] & real[:, None, None, :]  # [B, 1, T, T]
    for i, (a, b) in enumerate(zip(ours.attentions, ref.attentions)):
        mask = np.broadcast_to(pair_real, a.shape)
        assert_close(f"attentions[{i}]", a[mask], b[mask], atol=atol)
        assert np.all(a[~mask] == 0)


@pytest.mark.parity
@pytest.mark.parametrize("dtype, atol", [(np.float32, 2e-5), (np.float64, 1e-12)])
def test_engine_matches_transformers_in_every_hidden_state_and_logit(built, torch, dtype, atol):
    """Reranker.forward without attentions or a trace runs the engine (xlmr_np.engine)."""
    directory, torch_model = built
    reranker = Reranker.from_pretrained(directory, dtype=dtype)
    batch = reranker.tokenize(PAIRS)
    ours = reranker.forward(batch.input_ids, batch.attention_mask, output_hidden_states=True)
    assert ours.attentions is None and ours.trace is None
    check_hidden_states_and_logits(
        ours,
        transformers_forward(torch, torch_model, batch, dtype, hidden_states=True),
        batch.attention_mask.astype(bool),
        dtype,
        atol,
    )


def check_hidden_states_and_logits(ours, ref, real, dtype, atol):
    assert len(ours.hidden_states) == len(ref.hidden_states)
    for i, (a, b) in enumerate(zip(ours.hidden_states, ref.hidden_states)):
        assert a.dtype == dtype
        assert_close(f"hidden_states[{i}]", a[real], b[real], atol=atol, rtol=atol)
        assert np.all(a[~real] == 0)
    assert ours.logits.dtype == dtype
    assert_close("logits", ours.logits, ref.logits, atol=atol, rtol=atol)
    assert np.ptp(ref.logits[:, 0]) > 100 * atol, "the random model must separate the pairs"


@pytest.mark.parity
def test_compute_score_returns_the_logits_in_input_order(built, torch):
    directory, torch_model = built
    reranker = Reranker.from_pretrained(directory)
    batch = reranker.tokenize(PAIRS)
    ref = transformers_forward(torch, torch_model, batch).logits
    scores = reranker.compute_score(PAIRS, batch_size=2)
    expected = ref[:, 0] if ref.shape[1] == 1 else ref
    assert_close("compute_score", scores, expected, atol=2e-5, rtol=2e-5)


def test_scores_do_not_depend_on_batch_size_neighbours_or_order(tiny_dir):
    reranker = Reranker.from_pretrained(tiny_dir)
    alone = np.array([reranker.compute_score([p]) for p in PAIRS])
    for batch_size in (1, 2, 3, len(PAIRS)):
        assert_close(f"batch_size {batch_size}", reranker.compute_score(PAIRS, batch_size=batch_size), alone, atol=0)
    order = np.random.default_rng(0).permutation(len(PAIRS))
    shuffled = reranker.compute_score([PAIRS[i] for i in order], batch_size=4)
    assert_close("shuffled", np.array(shuffled)[np.argsort(order)], alone, atol=0)
    crowd = PAIRS + [("other query", "other document " * 40)] * 7
    assert_close("among other pairs", reranker.compute_score(crowd, batch_size=16)[: len(PAIRS)], alone, atol=0)


def test_feed_forward_in_row_chunks_changes_no_bit(tiny_dir, monkeypatch):
    """The engine's feed-forward runs FFN_ROWS rows at a time: with chunks of GEMM_ROWS, several chunk
    boundaries fall inside this batch, and every hidden state and score stays identical, bit for bit."""
    reranker = Reranker.from_pretrained(tiny_dir)
    crowd = PAIRS + [("other query", "other document " * 40)] * 7
    alone = np.array([reranker.compute_score([p]) for p in PAIRS])
    batch = reranker.tokenize(crowd)
    assert batch.attention_mask.sum() > 4 * engine.GEMM_ROWS  # several chunks
    whole = reranker.forward(batch.input_ids, batch.attention_mask, output_hidden_states=True)  # one chunk
    monkeypatch.setattr(engine, "FFN_ROWS", engine.GEMM_ROWS)
    chunked = reranker.forward(batch.input_ids, batch.attention_mask, output_hidden_states=True)
    for i, (a, b) in enumerate(zip(chunked.hidden_states, whole.hidden_states)):
        assert_close(f"chunked vs whole hidden_states[{i}]", a, b, atol=0)
    assert_close("chunked vs whole logits", chunked.logits, whole.logits, atol=0)
    assert_close("chunked crowd vs alone", reranker.compute_score(crowd, batch_size=16)[: len(PAIRS)], alone, atol=0)


def test_normalize_is_a_float64_sigmoid_of_the_logits(tiny_dir):
    reranker = Reranker.from_pretrained(tiny_dir)
    logits = np.array(reranker.compute_score(PAIRS))
    probs = np.array(reranker.compute_score(PAIRS, normalize=True))
    assert_close("sigmoid", probs, 1 / (1 + np.exp(-logits)), atol=1e-15)
    assert isinstance(reranker.compute_score(PAIRS[0]), float)
    assert isinstance(reranker.compute_score([PAIRS[0]]), float)
