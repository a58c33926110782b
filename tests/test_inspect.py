"""The inspection API: one pair's intermediates, attention mapped to tokens, gradient-free attribution."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import write_model

from xlmr_np import InputError, Reranker, engine
from xlmr_np.testing import require
from xlmr_np.tracing import attribute, format_table, inspect_pair, layer_table, render_terminal, stats

QUERY = "capital of France"
DOCUMENT = "Paris is the capital of France. Bananas!"


@pytest.fixture(scope="module")
def reranker(tmp_path_factory):
    return Reranker.from_pretrained(write_model(tmp_path_factory.mktemp("tiny"), seed=1))


@pytest.fixture(scope="module")
def seen(reranker):
    return inspect_pair(reranker, QUERY, DOCUMENT)


def test_tokens_segments_and_positions(seen):
    assert seen.tokens[:4] == ["<s>", "▁capital", "▁of", "▁France"]
    assert seen.tokens[-1] == "</s>"
    assert seen.segments == [None, 0, 0, 0, None, None] + [1] * (len(seen.tokens) - 7) + [None]
    doc = [i for i, s in enumerate(seen.segments) if s == 1]
    assert "".join(seen.tokens[i] for i in doc).replace("▁", " ").strip() == DOCUMENT
    assert seen.positions.tolist() == list(range(2, 2 + len(seen.tokens)))
    assert not seen.truncated


def test_every_intermediate_is_kept_for_the_pair(reranker, seen):
    T, D, H = len(seen.tokens), reranker.config.hidden_size, reranker.config.num_attention_heads
    assert seen.tensors["embeddings"].shape == (T, D)
    assert seen.tensors["encoder.layer.1.intermediate"].shape == (T, reranker.config.intermediate_size)
    assert seen.attention(1).shape == (H, T, T)
    np.testing.assert_allclose(seen.attention(0, 2).sum(axis=-1), 1, rtol=1e-6)
    # the reference forward pass (inspect) and the engine (compute_score) agree to float32 round-off
    assert float(seen.logits[0]) == pytest.approx(reranker.compute_score((QUERY, DOCUMENT)), abs=1e-6)


def test_stats_cover_every_traced_name_in_data_flow_order(seen):
    rows = stats(seen)
    assert [r.name for r in rows] == list(seen.tensors)
    emb = next(r for r in rows if r.name == "embeddings")
    x = seen.tensors["embeddings"].astype(np.float64)
    assert (emb.mean, emb.max, emb.abs_mean) == (x.mean(), x.max(), np.abs(x).mean())
    table = format_table(rows)
    assert table.splitlines()[0].split() == ["name", "shape", "mean", "std", "min", "max", "abs_mean"]
    assert "encoder.layer.1.attention.self.probs" in table


def test_layer_table(reranker, seen):
    rows = layer_table(seen)
    assert [r["stage"] for r in rows] == ["embeddings", "layer 0", "layer 1"]
    last = seen.tensors["encoder.layer.1.output"].astype(np.float64)
    assert rows[-1]["rms"] == pytest.approx(np.sqrt(np.mean(last**2)))
    for r in rows[1:]:
        assert 0 <= r["<s> on doc"] <= 1
        assert 0 < r["entropy"] <= np.log(len(seen.tokens))
        assert r["<s> looks at"] in seen.tokens


def test_attends_to_maps_attention_back_to_token_strings(seen):
    top = seen.attends_to(layer=1, head=2, token=0, k=3)
    row = seen.attention(1, 2)[0]
    assert [p for _, p in top] == sorted(row.tolist(), reverse=True)[:3]
    assert top[0][0] == seen.tokens[int(row.argmax())]
    mean = seen.attends_to(layer=0, head=None, token=4, k=len(seen.tokens))
    assert sum(p for _, p in mean) == pytest.approx(1, abs=1e-6)


def test_attention_index_errors(seen):
    with pytest.raises(InputError, match=r"layer must be in \[0, 2\), got 2"):
        seen.attention(2)
    with pytest.raises(InputError, match=r"head must be in \[0, 4\), got -1"):
        seen.attention(0, -1)


def _score(reranker, ids):
    ids = np.array([ids])
    return float(engine.forward(reranker.params, reranker.config, ids, np.ones_like(ids))[0, 0])


def test_word_removal_attribution_is_the_logit_minus_the_logit_without_the_word(reranker, seen):
    result = attribute(reranker, QUERY, DOCUMENT, unit="word", method="remove", batch_size=3)
    assert result.texts == ["Paris", "is", "the", "capital", "of", "France.", "Bananas!"]
    assert result.logit == pytest.approx(float(seen.logits[0]), abs=1e-6)
    bananas = [i for i, t in enumerate(seen.tokens) if t in ("▁Bana", "nas", "!")]
    ids = [t for i, t in enumerate(seen.input_ids.tolist()) if i not in bananas]
    assert result.contributions[-1] == pytest.approx(result.logit - _score(reranker, ids), abs=1e-5)


def test_token_mask_attribution_keeps_positions(reranker, seen):
    result = attribute(reranker, QUERY, DOCUMENT, unit="token", method="mask")
    doc = [i for i, s in enumerate(seen.segments) if s == 1]
    assert len(result.contributions) == len(doc)
    ids = seen.input_ids.tolist()
    ids[doc[0]] = reranker.tokenizer.token_to_id("<mask>")
    assert result.contributions[0] == pytest.approx(result.logit - _score(reranker, ids), abs=1e-5)


def test_render_terminal(reranker):
    result = attribute(reranker, QUERY, DOCUMENT)
    plain = render_terminal(result, color=False)
    first = plain.splitlines()[0]
    assert first.startswith("Paris[") and " Bananas![" in first
    assert f"{result.contributions[0]:+.3g}" in first
    legend = plain.splitlines()[-1]
    assert legend.startswith(f"logit {result.logit:.4g}; highlight = logit - logit with the word removed"), legend
    colored = render_terminal(result)
    assert colored.count("\x1b[48;2;") == len(result.contributions)
    strongest = int(np.abs(result.contributions).argmax())
    assert ("\x1b[48;2;0;255;0m" if result.contributions[strongest] > 0 else "\x1b[48;2;255;0;0m") in colored


def test_attribution_errors(reranker, monkeypatch):
    with pytest.raises(InputError, match="unit must be one of"):
        attribute(reranker, QUERY, DOCUMENT, unit="sentence")
    with pytest.raises(InputError, match="method must be one of"):
        attribute(reranker, QUERY, DOCUMENT, method="blur")
    with pytest.raises(InputError, match=r"label must be in \[0, 1\), got 1"):
        attribute(reranker, QUERY, DOCUMENT, label=1)
    with pytest.raises(InputError, match="the document has no tokens"):
        attribute(reranker, QUERY, "")
    monkeypatch.setattr(reranker.tokenizer, "token_to_id", lambda token: None)
    with pytest.raises(InputError, match="needs a '<mask>' token"):
        attribute(reranker, QUERY, DOCUMENT, method="mask")


def test_attention_figure_labels_tokens_and_checks_heads(seen):
    require("matplotlib", "attention plots")
    from xlmr_np.plot import attention_figure

    fig = attention_figure(seen, layers=[1], heads=[0, 3])
    assert [ax.get_title() for ax in fig.axes[:2]] == ["layer 1, head 0", "layer 1, head 3"]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == seen.tokens
    assert fig.axes[0].get_ylabel() == "attending token (query)"
    with pytest.raises(InputError, match=r"head must be in \[0, 4\), got 4"):
        attention_figure(seen, heads=[4])
