"""Hub loading through huggingface-hub's real cache code, offline, against a cache built on disk."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import write_model

from xlmr_np import Reranker
from xlmr_np.errors import ConfigError, HubError
from xlmr_np.hub import HUB_FILES, resolve_model_dir
from xlmr_np.testing import add_snapshot

REPO = "BAAI/bge-reranker-base"
COMMIT_V1 = "1" * 40
COMMIT_V2 = "2" * 40
PAIRS = [("capital of France", "Paris is the capital of France."), ("capital of France", "Bananas are yellow.")]


@pytest.fixture(scope="module")
def hub_cache(tiny_dir, tmp_path_factory):
    """A cache holding REPO at two commits (different weights): tag v1 -> COMMIT_V1, main -> COMMIT_V2."""
    cache = tmp_path_factory.mktemp("hub-cache")
    other = tmp_path_factory.mktemp("other-model")
    write_model(other, seed=5)
    add_snapshot(cache, REPO, tiny_dir, COMMIT_V1, refs=("v1",))
    add_snapshot(cache, REPO, other, COMMIT_V2, refs=("main",))
    add_snapshot(cache, "org/no-weights", other, COMMIT_V1, files={"config.json", "tokenizer.json"})
    return cache, other


def test_hub_id_loads_from_cache_offline(hub_cache, monkeypatch):
    from safetensors.numpy import load_file

    cache, other = hub_cache
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    reranker = Reranker.from_pretrained(REPO, cache_dir=cache)
    assert reranker.model_dir.endswith(f"snapshots/{COMMIT_V2}")
    expected = load_file(other / "model.safetensors")["classifier.out_proj.weight"]
    np.testing.assert_array_equal(reranker.params["classifier.out_proj.weight"], expected)
    assert np.isfinite(reranker.compute_score(PAIRS)).all()


@pytest.mark.parametrize("revision", ["v1", COMMIT_V1])
def test_revision_tag_or_commit(hub_cache, tiny_dir, revision):
    cache, _ = hub_cache
    folder = resolve_model_dir(REPO, revision=revision, cache_dir=cache, local_files_only=True)
    assert folder == cache / f"models--BAAI--bge-reranker-base/snapshots/{COMMIT_V1}"
    assert (folder / "model.safetensors").read_bytes() == (tiny_dir / "model.safetensors").read_bytes()


@pytest.mark.parametrize("repo, revision", [("org/not-cached", None), (REPO, "no-such-tag")])
def test_offline_and_not_cached_is_a_clear_error(hub_cache, repo, revision, monkeypatch):
    cache, _ = hub_cache
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match=r"not in the hub cache .*downloads are disabled \(HF_HUB_OFFLINE=1") as e:
        resolve_model_dir(repo, revision=revision, cache_dir=cache)
    assert "to try the commands, `xlmr-np random-model DIR` writes a random one" in str(e.value)


def test_cached_snapshot_without_weights_names_the_missing_file(hub_cache):
    cache, _ = hub_cache
    with pytest.raises(HubError, match="lacks model.safetensors"):
        resolve_model_dir("org/no-weights", cache_dir=cache, local_files_only=True)


def test_path_that_is_neither_directory_nor_repo_id(tmp_path):
    with pytest.raises(ConfigError, match="not a directory"):
        Reranker.from_pretrained(tmp_path / "missing")


def test_only_the_files_the_numpy_model_reads_are_requested():
    """huggingface-hub's own filter over bge-reranker-base's file list (../shared/REFERENCE.md)."""
    from huggingface_hub.utils import filter_repo_objects

    repo_files = [
        "config.json",
        "model.safetensors",
        "pytorch_model.bin",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "sentencepiece.bpe.model",
        "onnx/model.onnx",
        ".gitattributes",
        "README.md",
    ]
    assert sorted(filter_repo_objects(repo_files, allow_patterns=list(HUB_FILES))) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",  # the model's own length limit (xlmr_np.family)
    ]
    sharded = [
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "pytorch_model-00001-of-00002.bin",
    ]
    assert sorted(filter_repo_objects(sharded, allow_patterns=list(HUB_FILES))) == sorted(sharded[:3])
