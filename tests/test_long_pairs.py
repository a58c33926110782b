"""The engine against transformers on pairs of real multilingual text up to 8,192 tokens, tokenized by the real
XLM-R tokenizer, on random models with the family's exact widths (xlmr_np.family.KNOWN_MODELS).

Each model has its family member's width, heads, feed-forward size and position table, one layer (the
full-depth model is slow-tier), and a vocabulary of VOCAB pieces: the tokenizer's ids are folded into it
(fold_ids), so the word-embedding table is 32 MB rather than 1 GB in float32 (2 GB in float64), and every
token still sits where the real tokenizer put it. transformers runs its SDPA attention (eager attention
would hold [16, 8192, 8192] scores: 4.3 GB in float32). Compared: the logits and every hidden state over
real tokens, float64 within 1e-12 of their scale, float32 within 3e-6 of it (float32 rounding, 50 ulps)
times the square root of the depth.

- parity tier: bge-reranker-base's (and bce-reranker-base_v1's) shape at about 100 and 510 tokens,
  bge-reranker-v2-m3's (and bge-reranker-large's, whose layers are the same) at about 100 and 1,000; and,
  where only the length matters, a narrow model (2 heads of 64) with v2-m3's position table at about
  4,000 and 8,192;
- slow tier: v2-m3's exact shape at 8,192 tokens, and the full 24 layers at about 300 (float32: in
  float64 the weights alone are 2.4 GB).
"""

from __future__ import annotations

import gc
import itertools

import numpy as np
import pytest

from xlmr_np import engine
from xlmr_np.config import XLMRobertaConfig
from xlmr_np.testing import LONG_PAIRS, SAMPLE_PAIRS, build_model, family_shape, xlmr_tokenizer_json
from xlmr_np.tokenizer import PairTokenizer

pytestmark = pytest.mark.parity

VOCAB = 8192
# Real text in several scripts, cycled into documents as long as a test needs.
PARAGRAPHS = [text for pair in SAMPLE_PAIRS + LONG_PAIRS for text in pair if text]
QUERY = "Wer hat den Eiffelturm entworfen, und wie hoch ist er? 埃菲尔铁塔有多高？"


def shape(name, layers=1):
    """A known model's shape (config fields), cut to `layers`."""
    return family_shape(name, layers)


NARROW_LONG = dict(shape("bge-reranker-v2-m3"), hidden_size=128, num_attention_heads=2, intermediate_size=256)
BOTH = (np.float32, np.float64)
CASES = [  # (id, shape, lengths, dtypes)
    ("bge-reranker-base", shape("bge-reranker-base"), (100, 510), BOTH),
    ("bge-reranker-v2-m3", shape("bge-reranker-v2-m3"), (100, 1000), BOTH),
    ("narrow-8194-positions", NARROW_LONG, (4000, 8192), BOTH),
    pytest.param("bge-reranker-v2-m3", shape("bge-reranker-v2-m3"), (8192,), BOTH, marks=pytest.mark.slow),
    # float32 alone: 24 layers in float64 are 2.4 GB of weights, and torch holds both copies while converting
    pytest.param(
        "bge-reranker-v2-m3-24-layers", shape("bge-reranker-v2-m3", 24), (300,), (np.float32,), marks=pytest.mark.slow
    ),
]


def fold_ids(ids):
    """Token ids folded into VOCAB pieces: the special ids 0..4 (<s>, <pad>, </s>, <unk>) stay, every other
    id goes to 5 + (id - 5) % (VOCAB - 5), never to a special one (a piece read as <pad> would move the
    position ids)."""
    ids = np.asarray(ids)
    return np.where(ids < 5, ids, 5 + (ids - 5) % (VOCAB - 5))


def batch(length, tokenizer):
    """input_ids and attention_mask [B, T] of real text: one pair of exactly `length` tokens, and for short
    lengths two more, shorter ones, so the batch has padding."""
    document = " ".join(itertools.islice(itertools.cycle(PARAGRAPHS), 4 * length // 10 + 10))
    pairs = [(QUERY, document)]
    if length <= 512:
        pairs += [(QUERY, document[: length // 3]), (SAMPLE_PAIRS[2][0], document[:length])]
    encoded = PairTokenizer(tokenizer, max_length=length).encode(pairs)
    assert len(encoded[0].ids) == length, f"the document is too short: {len(encoded[0].ids)} tokens"
    ids = np.ones((len(encoded), length), dtype=np.int64)
    for b, e in enumerate(encoded):
        ids[b, : len(e.ids)] = e.ids
    return fold_ids(ids), (ids != 1).astype(np.int64)


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(xlmr_tokenizer_json()))


@pytest.mark.parametrize("name, config_shape, lengths, dtypes", CASES)
def test_the_engine_matches_transformers_on_long_real_pairs(
    name, config_shape, lengths, dtypes, torch, tokenizer, tmp_path
):
    # std 0.05 (the family's real weights are trained, not random): attention neither uniform nor, at 1024
    # wide, so sharp that float32 rounding of the scores dominates; the head scaled to logits of about +-10
    net = build_model(tmp_path, seed=1, init_std=0.05, head_scale=20.0, vocab_size=VOCAB, **config_shape)
    net.set_attn_implementation("sdpa")
    config = XLMRobertaConfig.from_dict(net.config.to_dict())
    layers = config.num_hidden_layers  # float32 rounding grows with depth, about as its square root
    for dtype in dtypes:
        relative = 3e-6 * layers**0.5 if dtype == np.float32 else 1e-12
        net.to(torch.float32 if dtype == np.float32 else torch.float64)
        params = {k: v.numpy() for k, v in net.state_dict().items()}  # shares torch's memory
        for length in lengths:
            ids, mask = batch(length, tokenizer)
            with torch.inference_mode():
                out = net(
                    input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), output_hidden_states=True
                )
            theirs = [h.numpy()[mask.astype(bool)] for h in out.hidden_states] + [out.logits.numpy()]
            states: list[np.ndarray] = []
            logits = engine.forward(params, config, ids, mask, states)
            ours = [h[mask.astype(bool)] for h in states] + [logits]
            assert len(ours) == len(theirs) == config.num_hidden_layers + 2
            for i, (a, b) in enumerate(zip(ours, theirs)):
                where = "logits" if i == len(ours) - 1 else f"hidden state {i}"
                diff, scale = float(np.abs(a - b).max()), float(np.abs(b).max())
                print(f"{name} {np.dtype(dtype).name} {length} tokens, {where}: max diff {diff:.3e}, scale {scale:.3g}")
                assert a.dtype == dtype and diff <= relative * scale, f"{where}: {diff:.3e} > {relative} * {scale:.3g}"
            del out, states, theirs, ours
            gc.collect()
        del params
