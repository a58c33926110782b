"""xlmr_np.random_model and `xlmr-np random-model`: a random model in the hub's layout, written with numpy alone."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from xlmr_np import Reranker, XLMRobertaConfig
from xlmr_np.cli import main
from xlmr_np.errors import InputError, OutputError, XlmrNpError
from xlmr_np.random_model import FILES, random_config, random_params, write_random_model
from xlmr_np.testing import diff_message
from xlmr_np.weights import expected_shapes

PAIRS = [("capital of France", "Paris is the capital of France."), ("capital of France", "Bananas are yellow.")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_random_model(tmp_path_factory.mktemp("random") / "tiny", std=0.2, seed=0)


def test_the_real_safetensors_library_reads_every_tensor_as_drawn(tiny):
    from safetensors import safe_open

    config = XLMRobertaConfig.from_file(tiny / "config.json")
    drawn = dict(random_params(config, std=0.2, seed=0))
    with safe_open(tiny / "model.safetensors", framework="numpy") as f:
        assert f.metadata() == {"format": "pt"}  # what transformers asks of a safetensors checkpoint
        assert set(f.keys()) == set(expected_shapes(config))
        for key in f.keys():
            stored = f.get_tensor(key)
            assert stored.dtype == np.float32 and stored.shape == expected_shapes(config)[key], key
            assert np.array_equal(stored, drawn[key]), diff_message(key, stored, drawn[key])
    assert sorted(p.name for p in tiny.iterdir()) == sorted(FILES)


def test_weights_are_drawn_as_described(tiny):
    config = XLMRobertaConfig.from_file(tiny / "config.json")
    params = dict(random_params(config, std=0.2, seed=0))
    words = params["roberta.embeddings.word_embeddings.weight"]  # [V, D]
    assert not words[config.pad_token_id].any() and not params["roberta.embeddings.position_embeddings.weight"][1].any()
    for key, want in (
        ("roberta.embeddings.word_embeddings.weight", 0.2),
        ("roberta.encoder.layer.1.output.dense.weight", 0.2),
    ):
        got = float(params[key].std())
        assert abs(got - want) < 0.05 * want, f"{key}: std {got:.4f}, expected {want}"
    ln = params["roberta.encoder.layer.0.output.LayerNorm.weight"]
    assert abs(float(ln.mean()) - 1) < 0.1 and 0.05 < float(ln.std()) < 0.15, (ln.mean(), ln.std())
    soft = dict(random_params(config, std=0.02, seed=0))["roberta.encoder.layer.0.attention.self.query.weight"]
    assert np.allclose(soft * 10, params["roberta.encoder.layer.0.attention.self.query.weight"], rtol=1e-6)


def test_a_deeper_model_shares_the_shallower_ones_layers_and_seeds_differ():
    small = XLMRobertaConfig.from_dict(random_config(vocab_size=50, num_hidden_layers=1))
    deep = XLMRobertaConfig.from_dict(random_config(vocab_size=50, num_hidden_layers=3))
    one, three = dict(random_params(small, 0.02, 7)), dict(random_params(deep, 0.02, 7))
    for key in one:
        assert np.array_equal(one[key], three[key]), key
    other = dict(random_params(small, 0.02, 8))
    assert not np.array_equal(one["classifier.dense.weight"], other["classifier.dense.weight"])


def test_a_known_models_shapes_and_length_limit():
    from xlmr_np.family import known_by_name
    from xlmr_np.random_model import tokenizer_config

    raw = random_config("bge-reranker-v2-m3", num_hidden_layers=2)
    config = XLMRobertaConfig.from_dict(raw)
    known = known_by_name("BAAI/bge-reranker-v2-m3")
    assert (config.hidden_size, config.num_attention_heads, config.intermediate_size) == (1024, 16, 4096)
    assert config.num_hidden_layers == 2 and config.max_position_embeddings == known.max_position_embeddings
    assert tokenizer_config(config, config.max_tokens)["model_max_length"] == known.max_length == 8192
    assert XLMRobertaConfig.from_dict(random_config("bge-reranker-large")).num_hidden_layers == 24
    with pytest.raises(InputError, match="unknown model 'bge-reranker-huge'; expected one of bge-reranker-base, "):
        random_config("bge-reranker-huge")


def test_files_describe_the_model(tiny):
    config = json.loads((tiny / "config.json").read_text())
    assert config["architectures"] == ["XLMRobertaForSequenceClassification"] and config["initializer_range"] == 0.2
    assert json.loads((tiny / "tokenizer_config.json").read_text())["model_max_length"] == 512
    reranker = Reranker.from_pretrained(tiny)
    scores = reranker.compute_score(PAIRS)
    assert np.all(np.isfinite(scores)) and scores[0] != scores[1], scores


def test_rewriting_an_earlier_random_model_but_nothing_else(tmp_path, tiny):
    again = write_random_model(tmp_path / "m", std=0.2, seed=0)
    write_random_model(again, std=0.2, seed=0)  # the same directory again: replaced file by file
    assert (again / "model.safetensors").read_bytes() == (tiny / "model.safetensors").read_bytes()
    (again / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="holds other files"):
        write_random_model(again)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="not a directory"):
        write_random_model(tmp_path / "file")


def test_bad_settings_are_refused_before_anything_is_written(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="std must be a positive number"):
        write_random_model(tmp_path / "a", std=0)
    with pytest.raises(InputError, match="not a config.json field"):
        random_config(hidden_sise=8)
    with pytest.raises(InputError, match="max_length must be from 6 to 512"):
        write_random_model(tmp_path / "b", max_length=513)
    with pytest.raises(InputError, match="no such file"):
        write_random_model(tmp_path / "c", tokenizer=tmp_path / "missing.json")
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(XlmrNpError, match=r"pip install 'xlmr-np\[try\]'"):
        write_random_model(tmp_path / "d")
    assert not any(tmp_path.iterdir())


def test_command_writes_the_model_and_says_what_it_is(tmp_path, capsys):
    assert main(["random-model", str(tmp_path / "m"), "--std", "0.2", "--num-layers", "1", "--max-length", "128"]) == 0
    out = capsys.readouterr().out
    assert "a random model (1 layers, hidden 32, 4 heads" in out and "std 0.2, seed 0" in out, out
    assert json.loads((tmp_path / "m" / "tokenizer_config.json").read_text())["model_max_length"] == 128
    assert main(["random-model", str(tmp_path / "n"), "--std", "-1"]) == 2
    assert "expected a positive number, got '-1'" in capsys.readouterr().err


@pytest.mark.parity
def test_transformers_loads_it_and_agrees(tiny):
    from xlmr_np.testing import require

    torch = require("torch", "loading the random model with transformers")
    transformers = require("transformers", "loading the random model with transformers")
    theirs, info = transformers.AutoModelForSequenceClassification.from_pretrained(
        tiny, attn_implementation="eager", output_loading_info=True
    )
    assert not any(info.values()), info  # no missing, unexpected or mismatched key
    reranker = Reranker.from_pretrained(tiny)
    batch = reranker.tokenize(PAIRS)
    with torch.no_grad():
        ref = theirs.eval()(
            input_ids=torch.tensor(batch.input_ids), attention_mask=torch.tensor(batch.attention_mask)
        ).logits[:, 0]
    ours = np.array(reranker.compute_score(PAIRS))
    assert np.abs(ours - ref.numpy()).max() < 2e-5, diff_message("logits", ours, ref.numpy())


def test_the_readme_shows_what_its_first_rerank_prints(tmp_path, capsys, monkeypatch):
    """The README's first example (random-model, then rerank on it) prints, to the digit, what it says."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    commands, shown = re.search(
        r"```bash\n(xlmr-np random-model .*?)```\n\n```console\n(.*?)```", readme, re.S
    ).groups()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "100")
    for line in commands.strip().splitlines():
        argv = shlex.split(line)
        assert argv[0] == "xlmr-np" and main(argv[1:]) == 0, line
    printed = capsys.readouterr().out
    assert printed.endswith(shown), f"README shows:\n{shown}\nthe commands print:\n{printed}"
