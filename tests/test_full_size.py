"""Tier 2, full size: bge-reranker-base's exact config with random weights (the real weights cannot be
downloaded here). float32 logits within 1e-4 of transformers, float64 within 1e-9 of torch float64."""

from __future__ import annotations

import numpy as np
import pytest

from xlmr_np import Reranker
from xlmr_np.testing import BGE_RERANKER_BASE, assert_close, build_model, diff_message

pytestmark = pytest.mark.slow

DOC = ("The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named after "
       "the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889. ")
PAIRS = [
    ("Who designed the Eiffel Tower?", DOC * 3),
    ("埃菲尔铁塔是谁设计的？", "埃菲尔铁塔是法国巴黎的地标建筑，由古斯塔夫·埃菲尔的公司设计建造。" * 4),
    ("tallest structure in Paris", DOC[:60]),
    ("what is the capital of France?", DOC * 12),  # longer than 512 tokens: truncated
]


@pytest.fixture(scope="module")
def full_size(torch, tmp_path_factory):
    directory = tmp_path_factory.mktemp("bge-reranker-base-random")
    # initializer_range 0.02 as in the real config; the head scaled so logits span about -10..10 as a
    # trained reranker's do, so the 1e-4 bound is tested at realistic magnitudes
    model = build_model(directory, seed=0, head_scale=120.0, **BGE_RERANKER_BASE)
    return directory, model


def run_torch(torch, model, batch, dtype):
    model = model.to(dtype)
    with torch.inference_mode():
        out = model(input_ids=torch.from_numpy(batch.input_ids), attention_mask=torch.from_numpy(batch.attention_mask),
                    output_hidden_states=True)
    model.float()
    return out.logits.numpy(), out.hidden_states[-1].numpy()


def compare(name, reranker, batch, ref_logits, ref_last, atol):
    ours = reranker.forward(batch.input_ids, batch.attention_mask, output_hidden_states=True)
    real = batch.attention_mask.astype(bool)
    print(f"\n{diff_message(name + ' logits', ours.logits, ref_logits)}; logits span "
          f"{ref_logits.min():.4f}..{ref_logits.max():.4f}")
    print(diff_message(name + " last hidden state", ours.hidden_states[-1][real], ref_last[real]))
    assert ours.logits.dtype == reranker.dtype
    assert_close(name + " logits", ours.logits, ref_logits, atol=atol)
    assert_close(name + " last hidden state", ours.hidden_states[-1][real], ref_last[real], atol=100 * atol)


def test_full_size_float32_logits_within_1e_4(full_size, torch):
    directory, model = full_size
    reranker = Reranker.from_pretrained(directory)
    batch = reranker.tokenize(PAIRS)
    assert batch.truncated == [False, False, False, True]
    assert batch.input_ids.shape[1] == 512
    compare("full-size float32", reranker, batch, *run_torch(torch, model, batch, torch.float32), atol=1e-4)


def test_full_size_float64_logits_within_1e_9(full_size, torch):
    directory, model = full_size
    reranker = Reranker.from_pretrained(directory, dtype=np.float64)
    batch = reranker.tokenize(PAIRS[:3])
    compare("full-size float64", reranker, batch, *run_torch(torch, model, batch, torch.float64), atol=1e-9)


def test_full_size_compare_finds_no_divergence_at_default_tolerance(full_size):
    """xlmr_np.compare's default tolerance (parity.ATOL, RTOL) must not flag float32 round-off at full size."""
    import xlmr_np

    directory, model = full_size
    result = xlmr_np.compare(Reranker.from_pretrained(directory), PAIRS[:2], model)
    print("\n" + "\n".join(f"{r.name}: max {r.max_abs:.3g}, tolerance {r.tolerance:.3g}" for r in result.rows[-4:]))
    assert result.first_divergence is None, result.verdict()
    assert len(result.rows) == 3 + 8 * 12 + 2
