"""Full size: bge-reranker-base's exact config with random weights drawn by numpy from a seed (the real weights
cannot be downloaded here), on pairs of up to 512 tokens.

Both forwards (the reference xlmr_np.model and the engine xlmr_np.engine) against transformers' outputs for
the same weights: float32 logits within 1e-4, float64 within 1e-9, the <s> rows of the last hidden state
within 100 times that; and the engine within 1e-12 of the reference's scale at every layer in float64.

transformers' outputs are committed (fixtures/full-size-golden, a few KB), so the first check needs no torch;
the parity test beside it recomputes them with transformers, compares xlmr_np with them directly, and fails
if the committed ones went stale. Regenerate them with

    XLMR_NP_WRITE_GOLDEN=1 python -m pytest -q tests/test_full_size.py -k agrees_with_xlmr_np

Memory (under 3 GB): each forward runs once, its results are kept, and its model is dropped before the next
is loaded; transformers runs in float64 on the embedding rows the batch uses (rows_in_use).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
from pathlib import Path

import numpy as np
import pytest
from helpers import transformers_forward, write_model

from xlmr_np import Reranker, engine, model
from xlmr_np.testing import BGE_RERANKER_BASE, LONG_PAIRS, assert_close, diff_message, xlmr_tokenizer_json
from xlmr_np.tracing import Trace

pytestmark = [pytest.mark.parity, pytest.mark.slow]

GOLDEN = Path(__file__).parent / "fixtures" / "full-size-golden"
FORMAT = 1
# initializer_range 0.02 as in the real config; the head scaled so that logits span about -10..10 as a
# trained reranker's do, so the 1e-4 bound is tested at realistic magnitudes
WEIGHTS = dict(seed=0, std=0.02, head_scale=120.0)
PAIRS = {"float32": LONG_PAIRS, "float64": LONG_PAIRS[:3]}  # float64 without the 512-token pair: time
ATOL = {"float32": 1e-4, "float64": 1e-9}
LAYERS = BGE_RERANKER_BASE["num_hidden_layers"]


@pytest.fixture(scope="module")
def directory(tmp_path_factory):
    """The full-size model in the hub layout: 1.1 GB written one tensor at a time, with the real tokenizer."""
    return write_model(
        tmp_path_factory.mktemp("bge-reranker-base-random"),
        tokenizer=xlmr_tokenizer_json(),
        **WEIGHTS,
        **BGE_RERANKER_BASE,
    )


def run_both_forwards(directory, dtype: str) -> dict:
    """Both forwards of xlmr_np on PAIRS[dtype]: the batch, logits, and the embeddings and every layer's
    output over real tokens; the weights are dropped on return."""
    reranker = Reranker.from_pretrained(directory, dtype=np.dtype(dtype))
    batch = reranker.tokenize(PAIRS[dtype])
    real = batch.attention_mask.astype(bool)  # [B, T]
    states: list[np.ndarray] = []
    fast = engine.forward(reranker.params, reranker.config, batch.input_ids, batch.attention_mask, states)
    names = ["embeddings"] + [f"encoder.layer.{i}.output" for i in range(LAYERS)]
    trace = Trace(names)
    plain = model.forward(reranker.params, reranker.config, batch.input_ids, batch.attention_mask, trace)
    return {
        "batch": batch,
        "engine": (fast, [s[real] for s in states]),
        "reference": (plain, [trace[name][real] for name in names]),
    }


@pytest.fixture(scope="module")
def ours(directory):
    """run_both_forwards for each dtype, one after the other."""
    results = {}
    for dtype in PAIRS:
        results[dtype] = run_both_forwards(directory, dtype)
        gc.collect()
    return results


@pytest.fixture(scope="module")
def golden():
    provenance = json.loads((GOLDEN / "provenance.json").read_text())
    assert provenance["format"] == FORMAT and provenance["weights"] == WEIGHTS, (
        f"{GOLDEN} is stale (format {provenance['format']}, weights {provenance['weights']}): regenerate it, see "
        "this module's docstring"
    )
    return dict(np.load(GOLDEN / "golden.npz"))


def cls_rows(last_hidden: np.ndarray, batch) -> np.ndarray:
    """The <s> row of each pair (what the head reads) from a last hidden state over real tokens [N, D]."""
    starts = np.concatenate([[0], np.cumsum(batch.lengths)[:-1]])  # [B]
    return last_hidden[starts]  # [N, D] -> [B, D]


@pytest.mark.parametrize("forward", ["engine", "reference"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_full_size_matches_committed_transformers_outputs(ours, golden, forward, dtype):
    """No torch needed: transformers' logits and <s> rows for these weights, as committed."""
    run = ours[dtype]
    batch, (logits, states) = run["batch"], run[forward]
    assert np.array_equal(batch.input_ids, golden[f"{dtype}/input_ids"]), "the tokenizer's ids changed"
    if dtype == "float32":
        assert batch.truncated == [False, False, False, True] and batch.input_ids.shape[1] == 512
    ref = golden[f"{dtype}/logits"]
    name = f"full-size {forward} {dtype}"
    print(f"\n{diff_message(name + ' logits', logits, ref)}; logits span {ref.min():.4f}..{ref.max():.4f}")
    assert logits.dtype == dtype
    assert_close(name + " logits", logits, ref, atol=ATOL[dtype])
    assert_close(name + " <s> rows", cls_rows(states[-1], batch), golden[f"{dtype}/cls"], atol=100 * ATOL[dtype])


def test_full_size_engine_agrees_with_the_reference_at_every_layer_in_float64(ours):
    (fast, fast_states), (plain, plain_states) = ours["float64"]["engine"], ours["float64"]["reference"]
    for i, (a, b) in enumerate(zip(fast_states + [fast], plain_states + [plain])):
        diff, scale = float(np.abs(a - b).max()), float(np.abs(b).max())
        assert diff <= 1e-12 * scale, f"stage {i}: max |engine - reference| {diff:.3e} > 1e-12 * {scale:.3g}"


@pytest.fixture(scope="module")
def torch_model(torch, directory, ours):
    """transformers' model of the same weights (eager attention, float32), loaded after ours ran."""
    from transformers import AutoModelForSequenceClassification

    loaded = AutoModelForSequenceClassification.from_pretrained(directory, attn_implementation="eager")
    yield loaded.eval()
    del loaded
    gc.collect()


@contextlib.contextmanager
def rows_in_use(torch, torch_model, batch):
    """The model with a word-embedding table of only the rows the batch uses, and the batch with its ids
    renumbered into it (an exact gather either way): float64 then costs 0.7 GB instead of 2.2 GB.

    The pad id keeps its number, since XLM-R counts positions from the tokens that are not padding."""
    pad = torch_model.config.pad_token_id
    used = np.unique(np.concatenate([[0, pad], batch.input_ids.ravel()]))  # sorted: 0 and pad keep their ids
    assert used[pad] == pad
    full = torch_model.roberta.embeddings.word_embeddings
    rows = full.weight.detach()[torch.from_numpy(used)].clone()  # [U, D]
    torch_model.roberta.embeddings.word_embeddings = torch.nn.Embedding.from_pretrained(rows, padding_idx=pad)
    try:
        yield dataclasses.replace(batch, input_ids=np.searchsorted(used, batch.input_ids))
    finally:
        torch_model.roberta.embeddings.word_embeddings = full


def test_full_size_transformers_agrees_with_xlmr_np_and_the_committed_outputs(torch, torch_model, ours):
    """The torch comparison itself, in each dtype: every hidden state at real tokens and the logits of both
    forwards; then the committed outputs must be what transformers gives now (or are rewritten, with
    XLMR_NP_WRITE_GOLDEN=1)."""
    arrays = {}
    for dtype in PAIRS:
        batch = ours[dtype]["batch"]
        real = batch.attention_mask.astype(bool)
        with rows_in_use(torch, torch_model, batch) as renumbered:
            out = transformers_forward(torch, torch_model, renumbered, np.dtype(dtype), hidden_states=True)
        states = [h[real] for h in out.hidden_states]
        for forward in ("engine", "reference"):
            logits, ours_states = ours[dtype][forward]
            name = f"full-size {forward} {dtype} vs transformers"
            print(f"\n{diff_message(name + ' logits', logits, out.logits)}")
            assert_close(name + " logits", logits, out.logits, atol=ATOL[dtype])
            assert_close(name + " last hidden state", ours_states[-1], states[-1], atol=100 * ATOL[dtype])
        arrays.update(
            {
                f"{dtype}/input_ids": batch.input_ids,
                f"{dtype}/logits": out.logits,
                f"{dtype}/cls": cls_rows(states[-1], batch),
            }
        )
        del out, states
        gc.collect()
    if os.environ.get("XLMR_NP_WRITE_GOLDEN") == "1":
        write_golden(arrays, torch)
        return
    golden = dict(np.load(GOLDEN / "golden.npz"))
    for key, value in arrays.items():  # transformers on another machine's BLAS may differ in the last bits
        assert_close(f"committed {key}", golden[key], value, atol=ATOL[key.split("/")[0]] / 100)


def write_golden(arrays: dict, torch) -> None:
    import transformers

    GOLDEN.mkdir(exist_ok=True)
    np.savez_compressed(GOLDEN / "golden.npz", **arrays)
    provenance = {
        "format": FORMAT,
        "generated_by": "XLMR_NP_WRITE_GOLDEN=1 python -m pytest -q tests/test_full_size.py -k agrees_with_xlmr_np",
        "model": "bge-reranker-base's config.json, weights from tests/helpers.py write_model",
        "weights": WEIGHTS,
        "pairs": "xlmr_np.testing.LONG_PAIRS (float64: the first 3)",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "attn_implementation": "eager",
    }
    (GOLDEN / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")


@pytest.mark.parametrize("forward", ["reference", "engine"])
def test_full_size_compare_finds_no_divergence_at_default_tolerance(directory, torch_model, forward):
    """xlmr_np.compare's default tolerance (parity.ATOL, RTOL) must not flag float32 round-off at full size."""
    import xlmr_np

    result = xlmr_np.compare(Reranker.from_pretrained(directory), LONG_PAIRS[:2], torch_model, forward=forward)
    print("\n" + "\n".join(f"{r.name}: max {r.max_abs:.3g}, tolerance {r.tolerance:.3g}" for r in result.rows[-4:]))
    assert result.first_divergence is None, result.verdict()
    assert len(result.rows) == (3 + 8 * LAYERS + 2 if forward == "reference" else 1 + LAYERS + 1)
