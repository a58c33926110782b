"""Committed fixtures, without torch: transformers' golden outputs for a tiny random model, and the small tokenizer.

Regenerate with `python tools/make_fixtures.py` (provenance.json records the versions that made them).
Each test runs on numpy and on array-api-strict (the array API standard alone, as CuPy runs the engine
on a GPU: see tests/test_namespaces.py), against the same values within the same tolerances.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xlmr_np import XLMRobertaConfig, engine, model
from xlmr_np.arrays import to_namespace, to_numpy
from xlmr_np.testing import assert_close, strict_array_api
from xlmr_np.tracing import Trace
from xlmr_np.weights import load_params

FIXTURE = Path(__file__).parent / "fixtures" / "tiny-golden"
FORMAT = 1


@pytest.fixture(scope="module")
def golden():
    provenance = json.loads((FIXTURE / "provenance.json").read_text())
    assert provenance["format"] == FORMAT, (
        f"fixture format {provenance['format']} is stale (expected {FORMAT}): run python tools/make_fixtures.py"
    )
    return dict(np.load(FIXTURE / "golden.npz"))


@pytest.fixture(params=["numpy", "array-api-strict"])
def namespace(request):
    return request.param


def load(dtype, namespace="numpy"):
    config = XLMRobertaConfig.from_file(FIXTURE / "config.json")
    params = load_params(FIXTURE, config, dtype)
    return (params if namespace == "numpy" else to_namespace(params, strict_array_api())), config


def check(tag, states, logits, golden, atol):
    real = golden["attention_mask"].astype(bool)
    for i, state in enumerate(states):
        assert_close(
            f"{tag} hidden_states[{i}]",
            to_numpy(state)[real],
            golden[f"{tag}/hidden_states/{i}"][real],
            atol=atol,
            rtol=atol,
        )
    assert_close(f"{tag} logits", to_numpy(logits), golden[f"{tag}/logits"], atol=atol, rtol=atol)


@pytest.mark.parametrize("dtype, atol", [(np.float32, 2e-5), (np.float64, 1e-12)])
def test_reference_matches_committed_transformers_outputs(golden, dtype, atol, namespace):
    params, config = load(dtype, namespace)
    names = ["embeddings"] + [f"encoder.layer.{i}.output" for i in range(config.num_hidden_layers)]
    trace = Trace(names + ["encoder.layer.*.attention.self.probs"])
    logits = model.forward(params, config, golden["input_ids"], golden["attention_mask"], trace)
    tag = np.dtype(dtype).name
    assert to_numpy(logits).dtype == dtype
    check(tag, [trace[name] for name in names], logits, golden, atol)
    real = golden["attention_mask"].astype(bool)
    pair_real = np.broadcast_to(real[:, None, :, None] & real[:, None, None, :], golden[f"{tag}/attentions/0"].shape)
    for i in range(config.num_hidden_layers):
        probs = trace[f"encoder.layer.{i}.attention.self.probs"]
        assert_close(f"{tag} attentions[{i}]", probs[pair_real], golden[f"{tag}/attentions/{i}"][pair_real], atol=atol)


@pytest.mark.parametrize("dtype, atol", [(np.float32, 2e-5), (np.float64, 1e-12)])
def test_engine_matches_committed_transformers_outputs(golden, dtype, atol, namespace):
    params, config = load(dtype, namespace)
    states: list[np.ndarray] = []
    logits = engine.forward(params, config, golden["input_ids"], golden["attention_mask"], states)
    assert type(logits) is type(params["classifier.out_proj.weight"])  # computed on that namespace
    assert to_numpy(logits).dtype == dtype
    check(np.dtype(dtype).name, states, logits, golden, atol)


# ---------------------------------------------------------------------------------------------------
# The small tokenizer (tools/make_small_tokenizer.py): the unit tier's models tokenize with it


def test_small_tokenizer_is_the_real_one_cut_to_its_stated_vocabulary():
    from helpers import SMALL_TOKENIZER, SMALL_VOCAB
    from tokenizers import Tokenizer

    provenance = json.loads((SMALL_TOKENIZER.parent / "provenance.json").read_text())
    assert provenance["format"] == 1, "stale: run python tools/make_small_tokenizer.py"
    small = Tokenizer.from_file(str(SMALL_TOKENIZER))
    assert small.get_vocab_size() == SMALL_VOCAB  # helpers reads it from provenance.json
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    assert [small.token_to_id(t) for t in specials] == [0, 1, 2, 3]
    assert small.token_to_id("<mask>") == SMALL_VOCAB - 1


def test_small_tokenizer_segments_the_test_texts_as_the_real_one():
    """The pairs every test model sees: the same token strings as the real 250,002-piece file (whose ids
    differ: the small file renumbers them)."""
    from helpers import SMALL_TOKENIZER
    from tokenizers import Tokenizer

    from xlmr_np.testing import LONG_PAIRS, SAMPLE_PAIRS, xlmr_tokenizer_json

    real, small = (Tokenizer.from_file(str(p)) for p in (xlmr_tokenizer_json(), SMALL_TOKENIZER))
    pairs = SAMPLE_PAIRS + LONG_PAIRS
    for a, b in zip(real.encode_batch(pairs), small.encode_batch(pairs)):
        assert a.tokens == b.tokens, (
            f"{len(a.tokens)} real tokens vs {len(b.tokens)}: {a.tokens[:12]} / {b.tokens[:12]}"
        )
