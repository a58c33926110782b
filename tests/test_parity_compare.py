"""xlmr_np.compare against transformers: a clean model agrees everywhere, and planted errors are named.

Each planted error is a monkeypatch of one function of the reference (xlmr_np.model) or of the engine
(xlmr_np.engine); the comparison must name the first intermediate that the broken function produces, with
everything before it still agreeing.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import xlmr_np
from xlmr_np import ComparisonError, Reranker, engine, model
from xlmr_np.parity import diff_traces
from xlmr_np.testing import build_model
from xlmr_np.tracing import Trace

pytestmark = pytest.mark.parity

PAIRS = [
    ("capital of France", "Paris is the capital of France. Bananas are yellow."),
    ("¿dónde está?", "短い"),  # shorter: padding in the batch, which must not count
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny")
    reference = build_model(directory, seed=0, init_std=0.2)  # eager attention, float32
    return Reranker.from_pretrained(directory), reference


def tanh_gelu(x, bias=None, out=None):
    """The tanh approximation of GELU (transformers' "gelu_new"), the classic porting mistake, with
    engine.gelu's signature (bias added first; out written in place), which covers model.gelu's."""
    x = x if bias is None else x + bias
    inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
    y = (0.5 * x * (1 + np.tanh(inner))).astype(x.dtype)
    if out is None:
        return y
    out[...] = y
    return out


class _TanhIsGelu:
    """An array namespace, except that its tanh is tanh-GELU: plants the error inside the head without
    rewriting it."""

    tanh = staticmethod(tanh_gelu)

    def __init__(self, xp):
        self.xp = xp

    def __getattr__(self, name):
        return getattr(self.xp, name)


def plant_gelu_in_feed_forward(monkeypatch):
    monkeypatch.setattr(model, "gelu", tanh_gelu)


def plant_gelu_in_head(monkeypatch, module=model):
    head = module.classification_head

    ops_of = module.ops_of  # the head takes its array functions from its input

    def broken_head(*args, **kwargs):
        with monkeypatch.context() as m:
            m.setattr(module, "ops_of", lambda x: _TanhIsGelu(ops_of(x)))
            return head(*args, **kwargs)

    monkeypatch.setattr(module, "classification_head", broken_head)


def plant_gelu_in_engine_feed_forward(monkeypatch):
    monkeypatch.setattr(engine, "gelu", tanh_gelu)


def plant_gelu_in_engine_head(monkeypatch):
    plant_gelu_in_head(monkeypatch, engine)


def plant_positions_from_zero(monkeypatch, module=model):
    positions = model.position_ids

    def from_zero(input_ids, padding_idx):  # real tokens at 0, 1, 2, ... instead of 2, 3, 4, ...
        return positions(input_ids, padding_idx) - (padding_idx + 1) * (input_ids != padding_idx)

    monkeypatch.setattr(module, "position_ids", from_zero)


def plant_positions_from_zero_in_engine(monkeypatch):
    plant_positions_from_zero(monkeypatch, engine)


def test_clean_model_agrees_in_every_intermediate(tiny):
    reranker, reference = tiny
    result = xlmr_np.compare(reranker, PAIRS, reference)
    print(result)
    assert result.first_divergence is None
    layers = reranker.config.num_hidden_layers
    assert len(result.rows) == 3 + 8 * layers + 2  # embeddings (3), 8 per layer, head (2)
    assert max(r.max_abs for r in result.rows) < 2e-6  # the figure quoted next to parity.ATOL


def test_clean_engine_agrees_at_every_layer_and_on_the_logits(tiny):
    reranker, reference = tiny
    result = xlmr_np.compare(reranker, PAIRS, reference, forward="engine")
    print(result)
    assert result.first_divergence is None
    names = ["embeddings"] + [f"encoder.layer.{i}.output" for i in range(reranker.config.num_hidden_layers)]
    assert [r.name for r in result.rows] == names + ["classifier.out_proj"]
    assert max(r.max_abs for r in result.rows) < 2e-6


@pytest.mark.parametrize(
    "plant, forward, first, function",
    [
        (plant_gelu_in_feed_forward, "reference", "encoder.layer.0.intermediate", "xlmr_np.model.intermediate"),
        (plant_gelu_in_head, "reference", "classifier.out_proj", "xlmr_np.model.classification_head"),
        (plant_positions_from_zero, "reference", "embeddings.position_embeddings", "xlmr_np.model.embeddings"),
        (plant_gelu_in_engine_feed_forward, "engine", "encoder.layer.0.output", "xlmr_np.engine.encoder_layer"),
        (plant_gelu_in_engine_head, "engine", "classifier.out_proj", "xlmr_np.engine.classification_head"),
        (plant_positions_from_zero_in_engine, "engine", "embeddings", "xlmr_np.engine.embeddings"),
    ],
    ids=[
        "tanh-gelu-in-feed-forward",
        "tanh-gelu-in-head",
        "positions-from-0",
        "engine-tanh-gelu-in-feed-forward",
        "engine-tanh-gelu-in-head",
        "engine-positions-from-0",
    ],
)
def test_planted_error_is_named(tiny, monkeypatch, plant, forward, first, function):
    reranker, reference = tiny
    plant(monkeypatch)
    result = xlmr_np.compare(reranker, PAIRS, reference, forward=forward)
    print(f"\n[{plant.__name__}]\n{result}")
    assert result.first_divergence is not None
    assert result.first_divergence.name == first
    assert result.first_divergence.numpy_function == function
    assert f"look at {function}" in result.verdict()


def test_the_engine_is_not_checked_by_a_reference_comparison(tiny, monkeypatch):
    """A planted engine error leaves the reference clean, and the other way round: each forward is
    compared on its own."""
    reranker, reference = tiny
    plant_gelu_in_engine_feed_forward(monkeypatch)
    assert xlmr_np.compare(reranker, PAIRS, reference).first_divergence is None
    assert xlmr_np.compare(reranker, PAIRS, reference, forward="engine").first_divergence is not None


def test_unknown_forward_is_refused(tiny):
    reranker, reference = tiny
    with pytest.raises(ComparisonError, match=r"forward must be one of \('reference', 'engine'\), got 'fast'"):
        xlmr_np.compare(reranker, PAIRS, reference, forward="fast")


def test_feed_forward_gelu_error_is_far_beyond_tolerance(tiny, monkeypatch):
    """The margin behind parity.ATOL/RTOL: tanh-GELU moves the feed-forward by 4.7e-4 here."""
    reranker, reference = tiny
    plant_gelu_in_feed_forward(monkeypatch)
    row = xlmr_np.compare(reranker, PAIRS, reference).first_divergence
    assert row.max_abs > 4e-4 > 5 * row.tolerance


def test_padding_is_left_out(tiny):
    """Garbage at padding positions of the reference must not count as a difference."""
    reranker, reference = tiny
    batch = reranker.tokenize(PAIRS)
    trace = Trace(["encoder.layer.0.output", "encoder.layer.0.attention.self.probs"])
    model.forward(reranker.params, reranker.config, batch.input_ids, batch.attention_mask, trace)
    theirs = {n: t.astype(np.float64) for n, t in trace.items()}
    pad = ~batch.attention_mask.astype(bool)
    assert pad.any()
    theirs["encoder.layer.0.output"][pad] = 1e9
    theirs["encoder.layer.0.attention.self.probs"][1, :, :, pad[1]] = 1e9
    result = diff_traces(trace, theirs, batch.attention_mask)
    assert all(r.max_abs == 0 for r in result.rows)


def test_sdpa_reference_is_refused_with_advice(tiny):
    reranker, _ = tiny
    from transformers import AutoModelForSequenceClassification

    sdpa = AutoModelForSequenceClassification.from_pretrained(reranker.model_dir, attn_implementation="sdpa")
    with pytest.raises(ComparisonError, match="attn_implementation='eager'"):
        xlmr_np.compare(reranker, PAIRS, sdpa.eval())


def test_reference_without_the_head_is_refused(tiny):
    reranker, reference = tiny
    with pytest.raises(ComparisonError, match="no module 'roberta.embeddings.word_embeddings'.*XLMRobertaModel given"):
        xlmr_np.compare(reranker, PAIRS, reference.roberta)


def test_mismatched_traces_are_refused():
    keep = np.ones((1, 2), dtype=np.int64)
    ours = {"embeddings": np.zeros((1, 2, 4))}
    with pytest.raises(ComparisonError, match="embeddings is in one trace but not the other"):
        diff_traces(ours, {}, keep)
    with pytest.raises(ComparisonError, match=r"shapes differ, \(1, 2, 4\) here and \(1, 2, 3\)"):
        diff_traces(ours, {"embeddings": np.zeros((1, 2, 3))}, keep)


def test_compare_from_a_directory_loads_transformers_itself(tiny):
    reranker, _ = tiny
    result = xlmr_np.compare(reranker.model_dir, PAIRS[:1])
    assert result.first_divergence is None
    assert result.rows[-1].name == "classifier.out_proj"
