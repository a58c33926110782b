"""Checkpoint variants every XLMRobertaForSequenceClassification may come in, and strict validation."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
from helpers import transformers_forward
from safetensors.numpy import load_file, save_file

from xlmr_np import CheckpointError, ConfigError, InputError, Reranker
from xlmr_np.testing import assert_close, build_model
from xlmr_np.weights import RowTable, read_safetensors

PAIRS = [
    ("what is the capital of France?", "Paris is the capital of France."),
    ("北京", "北京是中国的首都。" * 3),
    ("q", ""),
]


def copy_model(src, dst):
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parity
@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
def test_half_precision_checkpoints_are_widened_exactly(torch, tmp_path, dtype_name):
    model = build_model(tmp_path, seed=3, init_std=0.2, dtype=getattr(torch, dtype_name))
    stored = read_safetensors(tmp_path / "model.safetensors")
    assert {t.dtype for t in stored.values()} == {"F16" if dtype_name == "float16" else "BF16"}
    reranker = Reranker.from_pretrained(tmp_path)
    # the reference holds the same rounded weights, widened to float32 by torch
    for key, value in model.state_dict().items():
        if key in reranker.params:
            ours = np.asarray(reranker.params[key])
            assert ours.dtype == np.float32 and np.array_equal(ours, value.numpy()), key
    batch = reranker.tokenize(PAIRS)
    assert_close(
        f"{dtype_name} checkpoint logits",
        reranker.forward(batch.input_ids, batch.attention_mask).logits,
        transformers_forward(torch, model, batch).logits,
        atol=2e-5,
        rtol=2e-5,
    )


@pytest.mark.parity
def test_checkpoint_without_roberta_prefix_with_pooler_and_old_buffers(tiny_model, tmp_path, caplog, torch):
    src, torch_model = tiny_model
    directory = copy_model(src, tmp_path / "m")
    tensors = load_file(directory / "model.safetensors")
    renamed = {k.removeprefix("roberta."): v for k, v in tensors.items()}
    D = tensors["roberta.embeddings.LayerNorm.weight"].shape[0]
    renamed["pooler.dense.weight"] = np.zeros((D, D), np.float32)
    renamed["pooler.dense.bias"] = np.zeros(D, np.float32)
    renamed["embeddings.position_ids"] = np.arange(514, dtype=np.int64)[None]  # saved by transformers < 4.31
    save_file(renamed, directory / "model.safetensors")
    with caplog.at_level(logging.INFO, logger="xlmr_np.weights"):
        reranker = Reranker.from_pretrained(directory)
    assert "pooler.dense.weight" in caplog.text and "embeddings.position_ids" in caplog.text
    batch = reranker.tokenize(PAIRS)
    assert_close(
        "renamed checkpoint logits",
        reranker.forward(batch.input_ids, batch.attention_mask).logits,
        transformers_forward(torch, torch_model, batch).logits,
        atol=2e-5,
        rtol=2e-5,
    )


@pytest.mark.parity
def test_sharded_checkpoint(tiny_model, tmp_path, torch):
    src, torch_model = tiny_model
    directory = tmp_path / "sharded"
    torch_model.save_pretrained(directory, safe_serialization=True, max_shard_size="5MB")
    shutil.copy(src / "tokenizer.json", directory)
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1 and not (directory / "model.safetensors").exists()
    reranker = Reranker.from_pretrained(directory)
    batch = reranker.tokenize(PAIRS)
    assert_close(
        "sharded logits",
        reranker.forward(batch.input_ids, batch.attention_mask).logits,
        transformers_forward(torch, torch_model, batch).logits,
        atol=2e-5,
        rtol=2e-5,
    )


@pytest.mark.parity
def test_long_position_table_beyond_512_tokens(torch, tmp_path):
    """bge-reranker-v2-m3 has 8,194 position slots; nothing may assume 514."""
    model = build_model(
        tmp_path,
        seed=4,
        init_std=0.2,
        max_position_embeddings=1026,
        hidden_size=24,
        num_attention_heads=2,
        intermediate_size=31,
        num_hidden_layers=3,
    )
    reranker = Reranker.from_pretrained(tmp_path, max_length=1024)
    pairs = [("long query " * 20, "a long document about many things " * 250), ("q", "d")]
    batch = reranker.tokenize(pairs)
    assert batch.input_ids.shape[1] == 1024 and batch.truncated == [True, False]
    assert_close(
        "1024-token logits",
        reranker.forward(batch.input_ids, batch.attention_mask).logits,
        transformers_forward(torch, model, batch).logits,
        atol=2e-5,
        rtol=2e-5,
    )


def test_embedding_table_is_read_row_by_row(tiny_dir):
    reranker = Reranker.from_pretrained(tiny_dir)
    table = reranker.params["roberta.embeddings.word_embeddings.weight"]
    assert isinstance(table, RowTable)
    assert table[np.array([0, 5])].shape == (2, table.shape[1])
    assert not table.raw.array.flags.writeable  # a read-only view of the mapped file, not a copy


# ---------------------------------------------------------------------------------------------------
# Every failure a user can cause has a clear error


def test_missing_directory_config_and_weights(tiny_dir, tmp_path):
    with pytest.raises(ConfigError, match="not a directory"):
        Reranker.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="config.json not found"):
        Reranker.from_pretrained(tmp_path)
    directory = copy_model(tiny_dir, tmp_path / "m")
    (directory / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        Reranker.from_pretrained(directory)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_type": "bert"}, "model_type is 'bert'"),
        ({"architectures": ["XLMRobertaModel"]}, "classification head"),
        ({"hidden_act": "gelu_new"}, "hidden_act is 'gelu_new'"),
        ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
        ({"hidden_size": "32"}, "'hidden_size' should be int"),
        ({"num_attention_heads": 5}, "not a multiple"),
        ({"hidden_size": None}, "hidden_size"),
    ],
)
def test_wrong_config(tiny_dir, tmp_path, change, message):
    directory = copy_model(tiny_dir, tmp_path / "m")
    config = json.loads((directory / "config.json").read_text())
    config.update(change)
    config = {k: v for k, v in config.items() if v is not None}
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=message):
        Reranker.from_pretrained(directory)


def test_config_that_is_not_json(tiny_dir, tmp_path):
    directory = copy_model(tiny_dir, tmp_path / "m")
    (directory / "config.json").write_text("{oops")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Reranker.from_pretrained(directory)


def rewrite(directory, edit):
    tensors = load_file(directory / "model.safetensors")
    edit(tensors)
    save_file(tensors, directory / "model.safetensors")


def test_missing_tensor_names_the_key(tiny_dir, tmp_path):
    directory = copy_model(tiny_dir, tmp_path / "m")
    rewrite(directory, lambda t: t.pop("roberta.encoder.layer.1.output.dense.weight"))
    with pytest.raises(CheckpointError, match=r"missing 1 tensor.*encoder.layer.1.output.dense.weight"):
        Reranker.from_pretrained(directory)


def test_encoder_without_classification_head_is_refused(tiny_dir, tmp_path):
    directory = copy_model(tiny_dir, tmp_path / "m")
    rewrite(directory, lambda t: [t.pop(k) for k in list(t) if k.startswith("classifier.")])
    with pytest.raises(CheckpointError, match="no classification head"):
        Reranker.from_pretrained(directory)


def test_unexpected_tensor(tiny_dir, tmp_path):
    directory = copy_model(tiny_dir, tmp_path / "m")
    rewrite(directory, lambda t: t.update({"roberta.encoder.layer.7.output.dense.weight": np.zeros((2, 2), "f4")}))
    with pytest.raises(CheckpointError, match="unexpected.*layer.7"):
        Reranker.from_pretrained(directory)


def test_wrong_shape_names_file_key_expected_and_found(tiny_dir, tmp_path):
    directory = copy_model(tiny_dir, tmp_path / "m")
    key = "roberta.encoder.layer.0.intermediate.dense.weight"
    rewrite(directory, lambda t: t.update({key: np.ascontiguousarray(t[key].T)}))  # a transposed weight
    with pytest.raises(CheckpointError, match=r"model.safetensors.*intermediate.dense.weight.*\[32, 37\].*\[37, 32\]"):
        Reranker.from_pretrained(directory)


def test_integer_tensor_where_a_float_is_expected(tiny_dir, tmp_path):
    directory = copy_model(tiny_dir, tmp_path / "m")
    rewrite(directory, lambda t: t.update({"classifier.dense.bias": np.zeros(32, np.int32)}))
    with pytest.raises(CheckpointError, match="classifier.dense.bias.*I32"):
        Reranker.from_pretrained(directory)


@pytest.mark.parametrize("cut", [4, 100, 1000, -10])
def test_truncated_file(tiny_dir, tmp_path, cut):
    directory = copy_model(tiny_dir, tmp_path / "m")
    path = directory / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:cut])
    with pytest.raises(CheckpointError, match="model.safetensors.*(truncated|corrupt|too short)"):
        Reranker.from_pretrained(directory)


def test_corrupted_header(tiny_dir, tmp_path):
    directory = copy_model(tiny_dir, tmp_path / "m")
    path = directory / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[10:30] = b"\xff" * 20
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors.*corrupt"):
        Reranker.from_pretrained(directory)


def test_corrupted_offsets(tiny_dir, tmp_path):
    directory = copy_model(tiny_dir, tmp_path / "m")
    path = directory / "model.safetensors"
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    key = "classifier.out_proj.bias"
    begin, end = header[key]["data_offsets"]
    header[key]["data_offsets"] = [begin, end + 4]
    raw = json.dumps(header, separators=(",", ":")).encode().ljust(n)
    assert len(raw) == n
    path.write_bytes(data[:8] + raw + data[8 + n :])
    with pytest.raises(CheckpointError, match="classifier.out_proj.bias.*should span"):
        Reranker.from_pretrained(directory)


def test_bad_arguments_and_inputs(tiny_dir):
    directory = tiny_dir
    with pytest.raises(ValueError, match="max_length must be an int of at most 512"):
        Reranker.from_pretrained(directory, max_length=1024)
    with pytest.raises(ValueError, match="dtype"):
        Reranker.from_pretrained(directory, dtype=np.float16)
    reranker = Reranker.from_pretrained(directory)
    with pytest.raises(InputError, match="empty"):
        reranker.compute_score([])
    with pytest.raises(InputError, match="document must be a str"):
        reranker.compute_score([("q", 3)])
    with pytest.raises(InputError, match="query must be a str"):
        reranker.compute_score([(None, "d")])
    with pytest.raises(InputError, match="batch_size"):
        reranker.compute_score([("q", "d")], batch_size=0)
    with pytest.raises(InputError, match="do not start with a real token"):
        reranker.forward(np.array([[1, 0, 5, 2]]), np.array([[0, 1, 1, 1]]))
    with pytest.raises(InputError, match="position table holds 512"):
        reranker.forward(np.zeros((1, 600), np.int64) + 5, np.ones((1, 600), np.int64))
    with pytest.raises(InputError, match="token ids must lie"):
        reranker.forward(np.array([[0, 250002, 2]]), np.ones((1, 3), np.int64))


# ---------------------------------------------------------------------------------------------------
# Loader regressions found by trying bad files: each raises the package's own error, naming the file


def test_config_that_is_not_utf8(tiny_dir, tmp_path):
    directory = copy_model(tiny_dir, tmp_path / "m")
    (directory / "config.json").write_bytes(b'{"model_type": "xlm-roberta", "note": "caf\xe9"}')
    with pytest.raises(ConfigError, match=r"config.json: not UTF-8 text \(byte 0xe9 at offset 42\)"):
        Reranker.from_pretrained(directory)


def test_config_nested_too_deeply(tiny_dir, tmp_path):
    directory = copy_model(tiny_dir, tmp_path / "m")
    (directory / "config.json").write_text("[" * 100_000)
    with pytest.raises(ConfigError, match="nested too deeply"):
        Reranker.from_pretrained(directory)


@pytest.mark.parametrize(
    "architectures, message",
    [
        (
            "XLMRobertaForSequenceClassification",
            r"architectures must be a list of class names such as "
            r"\['XLMRobertaForSequenceClassification'\], found str",
        ),
        ([1], "architectures must be a list of class names"),
        (["XLMRobertaModel"], "architectures is"),
    ],
)
def test_architectures_must_be_a_list_of_names(tiny_dir, tmp_path, architectures, message):
    directory = copy_model(tiny_dir, tmp_path / "m")
    config = json.loads((directory / "config.json").read_text())
    config["architectures"] = architectures
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=message):
        Reranker.from_pretrained(directory)


def forge_header(path, key, edit):
    """Rewrite one header entry of a safetensors file, keeping the data section (padded to 8 bytes, as written)."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    edit(header, key)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw = raw.ljust(-(-len(raw) // 8) * 8)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + n :])


def set_field(field, value):
    def edit(header, key):
        header[key][field] = value

    return edit


@pytest.mark.parametrize(
    "edit, message",
    [
        (set_field("dtype", ["F32"]), "dtype must be a string"),
        (set_field("dtype", None), "dtype must be a string"),
        (set_field("dtype", "F8_E4M3"), "unsupported dtype 'F8_E4M3'"),
        (set_field("shape", "32"), "shape must be a list of non-negative integers"),
        (set_field("shape", [32.0]), "shape must be a list of non-negative integers"),
        (set_field("shape", [-32]), "shape must be a list of non-negative integers"),
        (set_field("shape", [True]), "shape must be a list of non-negative integers"),
        (set_field("shape", [2**32, 2**32, 2**32]), "should span"),  # wrapped to 0 in int64 before
        (set_field("data_offsets", [0]), r"data_offsets must be \[begin, end\]"),
        (set_field("data_offsets", ["0", "128"]), r"data_offsets must be \[begin, end\]"),
        (set_field("data_offsets", [0.0, 128.0]), r"data_offsets must be \[begin, end\]"),
        (set_field("data_offsets", {"begin": 0}), r"data_offsets must be \[begin, end\]"),
        (lambda header, key: header.update({key: [1, 2]}), "expected an object with dtype, shape and data_offsets"),
        (lambda header, key: header.update({key: None}), "expected an object"),
        (lambda header, key: header[key].pop("shape"), "shape must be a list"),
    ],
)
def test_malformed_header_fields_name_the_entry(tiny_dir, tmp_path, edit, message):
    directory = copy_model(tiny_dir, tmp_path / "m")
    forge_header(directory / "model.safetensors", "classifier.out_proj.bias", edit)
    with pytest.raises(CheckpointError, match=f"model.safetensors.*classifier.out_proj.bias.*{message}"):
        Reranker.from_pretrained(directory)


def test_overlapping_tensors_are_corrupt(tiny_dir, tmp_path):
    directory = copy_model(tiny_dir, tmp_path / "m")

    def overlap(header, key):  # two tensors of the same size swap nothing but share one byte range
        other = "classifier.dense.bias"
        header[key]["shape"] = header[other]["shape"] = [1]
        header[key]["data_offsets"] = header[other]["data_offsets"] = [0, 4]

    forge_header(directory / "model.safetensors", "classifier.out_proj.bias", overlap)
    with pytest.raises(CheckpointError, match="overlaps the tensor before it"):
        read_safetensors(directory / "model.safetensors")


def test_layer_count_is_checked_before_listing_tensors(tiny_dir, tmp_path):
    directory = copy_model(tiny_dir, tmp_path / "m")
    config = json.loads((directory / "config.json").read_text())
    config["num_hidden_layers"] = 10**9  # expected_shapes would build 16e9 names
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="num_hidden_layers 1000000000 needs at least 16000000000 tensors"):
        Reranker.from_pretrained(directory)


@pytest.mark.parametrize(
    "weight_map, message",
    [
        ([], "weight_map must map tensor names to file names, found list"),
        ({"classifier.dense.bias": 3}, r"weight_map\['classifier.dense.bias'\] must be a file name"),
        ({"classifier.dense.bias": "../model.safetensors"}, "must be a file name in the model directory"),
    ],
)
def test_bad_safetensors_index(tiny_dir, tmp_path, weight_map, message):
    directory = copy_model(tiny_dir, tmp_path / "m")
    (directory / "model.safetensors").rename(directory / "shard.safetensors")
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(CheckpointError, match=message):
        Reranker.from_pretrained(directory)


def test_max_length_out_of_range_is_an_input_error_naming_the_setting(tiny_dir):
    for max_length, message in ((5, "at least 6"), (100_000, "at most 512"), (True, "at most 512")):
        with pytest.raises(InputError, match=message) as caught:
            Reranker.from_pretrained(tiny_dir, max_length=max_length)
        assert caught.value.where == "max_length"


def test_in_memory_load_gives_the_same_scores_and_keeps_no_mapping(tiny_dir):
    mapped = Reranker.from_pretrained(tiny_dir)
    copied = Reranker.from_pretrained(tiny_dir, mmap=False)
    table = copied.params["roberta.embeddings.word_embeddings.weight"]
    assert table._fd is None and not table.raw.mapped
    for key, value in mapped.params.items():
        assert np.array_equal(np.asarray(value), np.asarray(copied.params[key])), key
    a, b = mapped.compute_score(PAIRS), copied.compute_score(PAIRS)
    assert a == b, f"max abs diff {np.max(np.abs(np.subtract(a, b))):.3e}"


OVERWRITE = """
import os, sys
from xlmr_np import Reranker
model_dir, mmap = sys.argv[1], sys.argv[2] == "mmap"
reranker = Reranker.from_pretrained(model_dir, mmap=mmap)
before = reranker.compute_score([("q", "a document")])
path = os.path.join(model_dir, "model.safetensors")
with open(path, "r+b") as f:  # overwritten in place, as `cp new old` or a careless download does
    f.truncate(0)
    f.write(b"\\0" * 64)
if mmap:  # the tensors are views of the file's pages, which are gone
    print(float(reranker.params["classifier.dense.weight"].sum()), flush=True)
after = reranker.compute_score([("q", "a document")])
print(before == after, flush=True)
"""


@pytest.mark.integration  # a subprocess
@pytest.mark.parametrize("mode", ["mmap", "memory"])
def test_model_overwritten_in_place_under_a_running_process(tiny_dir, tmp_path, mode):
    """With the file mapped, reading a page the file no longer has faults (SIGBUS): the documented hazard,
    which a rename avoids (the embedding rows, read with pread, give a CheckpointError instead). mmap=False
    copies the weights, and the process scores on unharmed, with the same score."""
    import signal
    import subprocess
    import sys

    directory = copy_model(tiny_dir, tmp_path / "m")
    result = subprocess.run(
        [sys.executable, "-c", OVERWRITE, str(directory), mode], capture_output=True, text=True, timeout=120
    )
    if mode == "mmap":
        assert result.returncode == -signal.SIGBUS, (result.returncode, result.stderr[-500:])
    else:
        assert result.returncode == 0 and result.stdout.strip() == "True", result.stderr[-500:]


def test_replacing_a_model_by_rename_is_safe_under_a_mapping(tiny_dir, tmp_path):
    directory = copy_model(tiny_dir, tmp_path / "m")
    reranker = Reranker.from_pretrained(directory)
    before = reranker.compute_score(PAIRS)
    path = directory / "model.safetensors"
    replacement = directory / "model.safetensors.new"
    replacement.write_bytes(b"\0" * 64)
    replacement.replace(path)  # the old inode lives on while mapped
    assert reranker.compute_score(PAIRS) == before
