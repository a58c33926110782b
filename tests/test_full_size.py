"""Tier 2, full size: bge-reranker-base's exact config with random weights (the real weights cannot be
downloaded here). Both forwards (the reference xlmr_np.model and the engine xlmr_np.engine): float32 logits
within 1e-4 of transformers, float64 within 1e-9 of torch float64, and the engine within 1e-12 of the
reference's scale at every layer in float64. The model is built once; each forward runs once per dtype."""

from __future__ import annotations

import numpy as np
import pytest

from xlmr_np import Reranker, engine, model
from xlmr_np.testing import BGE_RERANKER_BASE, LONG_PAIRS, assert_close, build_model, diff_message
from xlmr_np.tracing import Trace

pytestmark = [pytest.mark.parity, pytest.mark.slow]

PAIRS = {np.float32: LONG_PAIRS, np.float64: LONG_PAIRS[:3]}  # float64 without the 512-token pair: time


@pytest.fixture(scope="module")
def full_size(torch, tmp_path_factory):
    directory = tmp_path_factory.mktemp("bge-reranker-base-random")
    # initializer_range 0.02 as in the real config; the head scaled so logits span about -10..10 as a
    # trained reranker's do, so the 1e-4 bound is tested at realistic magnitudes
    torch_model = build_model(directory, seed=0, head_scale=120.0, **BGE_RERANKER_BASE)
    return directory, torch_model


@pytest.fixture(scope="module")
def runs(full_size, torch):
    """run(forward, dtype) -> (batch, logits, hidden states): each computed once, then kept."""
    directory, torch_model = full_size
    rerankers, cache = {}, {}

    def run(forward, dtype):
        if (forward, dtype) not in cache:
            if dtype not in rerankers:
                rerankers[dtype] = Reranker.from_pretrained(directory, dtype=dtype)
            reranker = rerankers[dtype]
            batch = reranker.tokenize(PAIRS[dtype])
            cache[forward, dtype] = (batch, *FORWARDS[forward](torch, torch_model, reranker, batch, dtype))
        return cache[forward, dtype]

    return run


def run_transformers(torch, torch_model, reranker, batch, dtype):
    m = torch_model.to(torch.float64 if dtype == np.float64 else torch.float32)
    with torch.inference_mode():
        out = m(
            input_ids=torch.from_numpy(batch.input_ids),
            attention_mask=torch.from_numpy(batch.attention_mask),
            output_hidden_states=True,
        )
    torch_model.float()
    return out.logits.numpy(), [h.numpy() for h in out.hidden_states]


def run_engine(torch, torch_model, reranker, batch, dtype):
    states: list[np.ndarray] = []
    return engine.forward(reranker.params, reranker.config, batch.input_ids, batch.attention_mask, states), states


def run_reference(torch, torch_model, reranker, batch, dtype):
    names = ["embeddings"] + [f"encoder.layer.{i}.output" for i in range(reranker.config.num_hidden_layers)]
    trace = Trace(names)
    logits = model.forward(reranker.params, reranker.config, batch.input_ids, batch.attention_mask, trace)
    return logits, [trace[name] for name in names]


FORWARDS = {"transformers": run_transformers, "engine": run_engine, "reference": run_reference}


@pytest.mark.parametrize("forward", ["engine", "reference"])
@pytest.mark.parametrize("dtype, atol", [(np.float32, 1e-4), (np.float64, 1e-9)])
def test_full_size_logits_match_transformers(runs, forward, dtype, atol):
    batch, logits, states = runs(forward, dtype)
    _, ref_logits, ref_states = runs("transformers", dtype)
    name = f"full-size {forward} {np.dtype(dtype).name}"
    real = batch.attention_mask.astype(bool)
    print(
        f"\n{diff_message(name + ' logits', logits, ref_logits)}; logits span "
        f"{ref_logits.min():.4f}..{ref_logits.max():.4f}"
    )
    print(diff_message(name + " last hidden state", states[-1][real], ref_states[-1][real]))
    if dtype == np.float32:
        assert batch.truncated == [False, False, False, True]
        assert batch.input_ids.shape[1] == 512
    assert logits.dtype == dtype
    assert_close(name + " logits", logits, ref_logits, atol=atol)
    assert_close(name + " last hidden state", states[-1][real], ref_states[-1][real], atol=100 * atol)


def test_full_size_engine_agrees_with_the_reference_at_every_layer_in_float64(runs):
    batch, logits, states = runs("engine", np.float64)
    _, ref_logits, ref_states = runs("reference", np.float64)
    real = batch.attention_mask.astype(bool)
    for i, (a, b) in enumerate(zip(states + [logits], ref_states + [ref_logits])):
        a, b = (a, b) if i == len(states) else (a[real], b[real])
        diff, scale = float(np.abs(a - b).max()), float(np.abs(b).max())
        assert diff <= 1e-12 * scale, f"stage {i}: max |engine - reference| {diff:.3e} > 1e-12 * {scale:.3g}"


@pytest.mark.parametrize("forward", ["reference", "engine"])
def test_full_size_compare_finds_no_divergence_at_default_tolerance(full_size, forward):
    """xlmr_np.compare's default tolerance (parity.ATOL, RTOL) must not flag float32 round-off at full size."""
    import xlmr_np

    directory, torch_model = full_size
    result = xlmr_np.compare(Reranker.from_pretrained(directory), LONG_PAIRS[:2], torch_model, forward=forward)
    print("\n" + "\n".join(f"{r.name}: max {r.max_abs:.3g}, tolerance {r.tolerance:.3g}" for r in result.rows[-4:]))
    assert result.first_divergence is None, result.verdict()
    layers = BGE_RERANKER_BASE["num_hidden_layers"]
    assert len(result.rows) == (3 + 8 * layers + 2 if forward == "reference" else 1 + layers + 1)
