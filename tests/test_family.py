"""The known models of the family and the one length rule (xlmr_np.family), and the entry points following it.

Models here are written with numpy alone: the committed tiny golden model's weights, with the vocabulary
and the position table grown to the sizes under test, beside the real XLM-R tokenizer.json.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from xlmr_np import Reranker
from xlmr_np.config import XLMRobertaConfig
from xlmr_np.errors import ConfigError, InputError
from xlmr_np.family import KNOWN_MODELS, identify, known_by_name, model_max_length, resolve_max_length
from xlmr_np.testing import xlmr_tokenizer_json

GOLDEN = Path(__file__).parent / "fixtures" / "tiny-golden"
POSITIONS = "roberta.embeddings.position_embeddings.weight"
WORDS = "roberta.embeddings.word_embeddings.weight"


def config_like(repo_id: str, **overrides) -> XLMRobertaConfig:
    """A config with a known model's shapes (and bge-reranker-base's other fields)."""
    known = known_by_name(repo_id)
    assert known is not None
    fields = dict(
        model_type="xlm-roberta",
        vocab_size=250002,
        hidden_size=known.hidden_size,
        num_hidden_layers=known.num_hidden_layers,
        num_attention_heads=known.num_attention_heads,
        intermediate_size=known.intermediate_size,
        hidden_act="gelu",
        max_position_embeddings=known.max_position_embeddings,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=1,
        num_labels=1,
    )
    return XLMRobertaConfig(**{**fields, **overrides})


def write_model(directory: Path, max_position_embeddings: int, tokenizer_config: dict | None = None) -> Path:
    """The tiny golden model with a position table of max_position_embeddings rows, the real tokenizer
    and, if given, a tokenizer_config.json."""
    directory.mkdir(parents=True, exist_ok=True)
    config = json.loads((GOLDEN / "config.json").read_text())
    # the real tokenizer's vocabulary, one relevance logit, and the position table under test
    config.update(vocab_size=250002, id2label={"0": "LABEL_0"}, max_position_embeddings=max_position_embeddings)
    (directory / "config.json").write_text(json.dumps(config))
    params = load_file(GOLDEN / "model.safetensors")
    rng = np.random.default_rng(0)
    for key, rows in ((POSITIONS, max_position_embeddings), (WORDS, 250002)):
        params[key] = rng.normal(0, 0.02, (rows, config["hidden_size"])).astype(np.float32)
    for key in ("classifier.out_proj.weight", "classifier.out_proj.bias"):
        params[key] = params[key][:1]
    save_file(params, directory / "model.safetensors")
    shutil.copy(xlmr_tokenizer_json(), directory / "tokenizer.json")
    if tokenizer_config is not None:
        (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return directory


# ---- the table ----


def test_known_models_are_the_family_with_their_hub_configs():
    """The shapes as each model's config.json on the hub gives them (../shared/REFERENCE.md)."""
    shapes = {
        k.repo_id: (k.num_hidden_layers, k.hidden_size, k.num_attention_heads, k.intermediate_size)
        for k in KNOWN_MODELS
    }
    assert shapes == {
        "BAAI/bge-reranker-base": (12, 768, 12, 3072),
        "BAAI/bge-reranker-large": (24, 1024, 16, 4096),
        "BAAI/bge-reranker-v2-m3": (24, 1024, 16, 4096),
        "maidalun1020/bce-reranker-base_v1": (12, 768, 12, 3072),
    }
    positions = {k.name: (k.max_position_embeddings, k.max_length) for k in KNOWN_MODELS}
    assert positions["bge-reranker-v2-m3"] == (8194, 8192)
    assert all(v == (514, 512) for name, v in positions.items() if name != "bge-reranker-v2-m3")
    for known in KNOWN_MODELS:  # the length in the table is what the rule gives for the model's own files
        assert known.max_length == known.max_position_embeddings - 2


def test_published_figures_are_the_published_ones():
    base, large = known_by_name("bge-reranker-base"), known_by_name("BAAI/bge-reranker-large")
    assert base is not None and large is not None
    assert base.cmteb["T2Reranking"].map == 67.27728847727172
    assert base.cmteb["CMedQAv2-reranking"].mrr == 86.79376984126984
    assert [large.cmteb[t].map for t in large.cmteb] == [67.60, 37.64, 82.14, 84.18]
    assert all(p.mrr is None for p in large.cmteb.values())  # never published for the large model
    v2 = known_by_name("bge-reranker-v2-m3")
    assert v2 is not None and not v2.cmteb


@pytest.mark.parametrize(
    "name",
    [
        "BAAI/bge-reranker-v2-m3",
        "baai/BGE-RERANKER-V2-M3",
        "/models/bge-reranker-v2-m3",
        "cache/models--BAAI--bge-reranker-v2-m3/snapshots/0123abcd",
    ],
)
def test_a_known_model_is_identified_by_its_name_and_shapes(name):
    known = identify(config_like("BAAI/bge-reranker-v2-m3"), name)
    assert known is not None and known.repo_id == "BAAI/bge-reranker-v2-m3"


def test_a_model_of_other_shapes_or_another_name_is_not_claimed():
    assert identify(config_like("BAAI/bge-reranker-base", num_hidden_layers=2), "BAAI/bge-reranker-base") is None
    assert identify(config_like("BAAI/bge-reranker-base"), "/models/my-finetuned-reranker") is None
    # bge-reranker-base and bce-reranker-base_v1 share every shape: the name decides
    bce = identify(config_like("BAAI/bge-reranker-base"), "maidalun1020/bce-reranker-base_v1")
    assert bce is not None and bce.name == "bce-reranker-base_v1"


# ---- the length rule ----


@pytest.mark.parametrize(
    ("positions", "tokenizer_config", "expected"),
    [
        (514, None, 512),  # no tokenizer_config.json: the position table's limit
        (8194, None, 8192),
        (8194, {"model_max_length": 8192}, 8192),  # bge-reranker-v2-m3's files
        (514, {"model_max_length": 512}, 512),  # bge-reranker-base's
        (8194, {"model_max_length": 512}, 512),  # a file asking for less than the table holds
        (514, {"model_max_length": 8192}, 512),  # or for more: the table caps it
        (514, {"model_max_length": 1000000000000000019884624838656}, 512),  # transformers' "no limit" sentinel
        (514, {"model_max_length": 1e30}, 512),
        (514, {"tokenizer_class": "XLMRobertaTokenizer"}, 512),  # the field missing
    ],
)
def test_the_model_own_limit(tmp_path, positions, tokenizer_config, expected):
    config = config_like("BAAI/bge-reranker-base", max_position_embeddings=positions)
    if tokenizer_config is not None:
        (tmp_path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    assert model_max_length(tmp_path, config) == expected
    assert resolve_max_length(tmp_path, config, None) == expected
    assert resolve_max_length(tmp_path, config, 100) == 100  # the caller's choice wins


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not a readable JSON file"),
        ('{"model_max_length": "long"}', "model_max_length must be an integer of at least 6, got 'long'"),
        ('{"model_max_length": 3}', "model_max_length must be an integer of at least 6, got 3"),
        ('{"model_max_length": true}', "model_max_length must be an integer of at least 6, got True"),
    ],
)
def test_a_broken_tokenizer_config_is_a_config_error(tmp_path, text, message):
    (tmp_path / "tokenizer_config.json").write_text(text)
    with pytest.raises(ConfigError, match=message):
        model_max_length(tmp_path, config_like("BAAI/bge-reranker-base"))


def test_a_length_beyond_the_position_table_is_refused(tmp_path):
    config = config_like("BAAI/bge-reranker-v2-m3")
    with pytest.raises(InputError, match="max_length must be an int of at most 8192: the position table has 8194"):
        resolve_max_length(tmp_path, config, 8193)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[int, Path]:
    """A 514-position and an 8194-position model, without tokenizer_config.json, by position count."""
    root = tmp_path_factory.mktemp("family")
    return {positions: write_model(root / str(positions), positions) for positions in (514, 8194)}


@pytest.mark.parametrize(
    ("positions", "tokenizer_config", "expected"), [(514, None, 512), (8194, None, 8192), (8194, 4096, 4096)]
)
def test_from_pretrained_takes_the_model_own_limit(models, tmp_path, positions, tokenizer_config, expected):
    directory = models[positions]
    if tokenizer_config is not None:  # the same files beside a tokenizer_config.json
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            (tmp_path / name).symlink_to(directory / name)
        (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": tokenizer_config}))
        directory = tmp_path
    assert Reranker.from_pretrained(directory).max_length == expected


def test_an_8194_position_model_reads_8000_token_documents_whole(models):
    """A long-context model needs neither truncation nor windows below its own limit; windows are cut at the
    model's own length."""
    document = " ".join(f"w{i % 900}" for i in range(3400))  # about 8,050 tokens
    long = Reranker.from_pretrained(models[8194])
    (pair,) = long.tokenizer.encode([("query", document)])
    assert 7500 < len(pair.ids) <= 8190 and not pair.truncated, len(pair.ids)
    encoded, owners = long.encode_documents("query", [document], long.call_options(windows=True))
    assert owners == [0] and encoded[0].ids == pair.ids and not encoded[0].truncated
    short = Reranker.from_pretrained(models[514])
    encoded, owners = short.encode_documents("query", [document], short.call_options(windows=True, window_overlap=0))
    assert owners == [0] * 16 and max(len(e.ids) for e in encoded) == 512, [len(e.ids) for e in encoded]


@pytest.mark.parametrize(("length", "truncated"), [(None, False), (512, True)])
def test_the_cli_cuts_at_the_model_own_limit_unless_told(models, capsys, length, truncated):
    from xlmr_np.cli import main

    document = " ".join(f"w{i % 900}" for i in range(400))  # about 950 tokens
    argv = ["rerank", "--model", str(models[8194]), "query", document]
    assert main(argv + (["--max-length", str(length)] if length else [])) == 0
    out = capsys.readouterr().out
    assert ("* truncated to 512 tokens" in out) == truncated, out


# ---- eval prints the figures of the model it runs ----


def test_eval_results_carry_the_figures_published_for_the_model_evaluated():
    from xlmr_np.cmteb import TASKS, format_table
    from xlmr_np.cmteb.results import task_result

    structure = [(0, 1, [0, 1, 2]), (1, 1, [3, 4])]  # (row, positives, pair positions) per query
    scores = np.array([0.9, 0.1, 0.5, 0.2, 0.8])  # query 0: AP 1, query 1: AP 1/2
    task = TASKS["CMedQAv1-reranking"]
    large = task_result(task, structure, scores, None, "BAAI/bge-reranker-large")
    assert large["map"] == pytest.approx(75.0, abs=1e-12) and large["mrr@10"] == pytest.approx(75.0, abs=1e-12)
    assert large["published"] == {
        "map": 82.14,
        "mrr@10": None,
        "model": "BAAI/bge-reranker-large",
        "source": "BCEmbedding's reranker evaluation summary, two decimals",
    }
    assert large["difference"] == {"map": pytest.approx(75.0 - 82.14, abs=1e-12)}  # no MRR@10 was published
    row, *_, note = format_table({"tasks": [large]}).splitlines()[1:]
    assert row.split()[3:] == ["75.0000", "75.0000", "82.1400", "-", "-7.1400", "-"]
    assert note == "published: BAAI/bge-reranker-large, BCEmbedding's reranker evaluation summary, two decimals"
    base = task_result(task, structure, scores, None, "BAAI/bge-reranker-base")
    assert base["published"]["mrr@10"] == 84.14238095238095
    assert task_result(task, structure, scores, None, "BAAI/bge-reranker-v2-m3")["published"] is None
