"""Two forwards, one truth: the engine (xlmr_np.engine) against the reference (xlmr_np.model), layer by layer.

In float64 both compute the same function to within 1e-12 of each tensor's scale (max |reference|) at the
embeddings, every layer's output and the logits; in float32 to within float32 round-off.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import write_model

from xlmr_np import Reranker, engine, model
from xlmr_np.testing import SAMPLE_PAIRS, diff_message
from xlmr_np.tracing import Trace

# (name, seed, overrides): the tiny test model, and odd sizes with more layers and two labels
MODELS = [
    ("h32-l2-seed0", 0, dict()),
    (
        "h48-l3-heads6-ff53-labels2-seed2",
        2,
        dict(hidden_size=48, num_attention_heads=6, intermediate_size=53, num_hidden_layers=3, num_labels=2),
    ),
]


@pytest.fixture(scope="module", params=MODELS, ids=[m[0] for m in MODELS])
def directory(request, tmp_path_factory):
    name, seed, overrides = request.param
    return write_model(tmp_path_factory.mktemp(name), seed=seed, **overrides)


def layer_by_layer(reranker, pairs):
    """[(name, engine tensor, reference tensor)] over real tokens: embeddings, each layer, logits."""
    batch = reranker.tokenize(pairs)
    real = batch.attention_mask.astype(bool)  # [B, T]
    states: list[np.ndarray] = []
    fast = engine.forward(reranker.params, reranker.config, batch.input_ids, batch.attention_mask, states)
    names = ["embeddings"] + [f"encoder.layer.{i}.output" for i in range(reranker.config.num_hidden_layers)]
    trace = Trace(names)
    plain = model.forward(reranker.params, reranker.config, batch.input_ids, batch.attention_mask, trace)
    assert len(states) == len(names) == len(trace)
    return [(name, state[real], trace[name][real]) for name, state in zip(names, states)] + [("logits", fast, plain)]


@pytest.mark.parametrize("dtype, relative", [(np.float64, 1e-12), (np.float32, 2e-6)])
def test_engine_agrees_with_the_reference_on_every_layer(directory, dtype, relative):
    reranker = Reranker.from_pretrained(directory, dtype=dtype)
    rows = layer_by_layer(reranker, SAMPLE_PAIRS)
    for name, fast, plain in rows:
        assert fast.dtype == plain.dtype == dtype
        diff = float(np.abs(fast.astype(np.float64) - plain).max())
        scale = float(np.abs(plain.astype(np.float64)).max())
        print(f"{diff_message(name, fast, plain)}; scale {scale:.3g}")
        assert diff <= relative * scale, f"{name}: max |engine - reference| {diff:.3e} > {relative:g} * {scale:.3g}"


def test_reranker_forward_runs_the_engine_unless_asked_for_attentions_or_a_trace(tiny_dir):
    reranker = Reranker.from_pretrained(tiny_dir)
    batch = reranker.tokenize(SAMPLE_PAIRS)
    fast = engine.forward(reranker.params, reranker.config, batch.input_ids, batch.attention_mask)
    plain = model.forward(reranker.params, reranker.config, batch.input_ids, batch.attention_mask)
    assert not np.array_equal(fast, plain), "float32 round-off should tell the two forwards apart"
    assert np.array_equal(reranker.forward(batch.input_ids, batch.attention_mask).logits, fast)
    assert np.array_equal(
        reranker.forward(batch.input_ids, batch.attention_mask, output_hidden_states=True).logits, fast
    )
    for kwargs in (dict(output_attentions=True), dict(trace="classifier.*"), dict(trace=True)):
        assert np.array_equal(reranker.forward(batch.input_ids, batch.attention_mask, **kwargs).logits, plain)


def test_recording_does_not_change_the_reference(tiny_dir):
    """record is a callback, not a branch: the logits are the same bits with and without a Trace."""
    reranker = Reranker.from_pretrained(tiny_dir)
    batch = reranker.tokenize(SAMPLE_PAIRS)
    trace = Trace()
    traced = model.forward(reranker.params, reranker.config, batch.input_ids, batch.attention_mask, trace)
    plain = model.forward(reranker.params, reranker.config, batch.input_ids, batch.attention_mask)
    assert np.array_equal(traced, plain)
    assert len(trace) == 3 + 8 * reranker.config.num_hidden_layers + 2
    assert np.array_equal(trace["classifier.out_proj"], plain)


def test_both_forwards_refuse_the_same_bad_batches(tiny_dir):
    reranker = Reranker.from_pretrained(tiny_dir)
    ids = np.array([[1, 0, 5, 2]])  # left padding: the head's <s> is not first
    for forward in (model.forward, engine.forward):
        with pytest.raises(Exception, match=r"pairs \[0\] do not start with a real token"):
            forward(reranker.params, reranker.config, ids, ids != 1)
