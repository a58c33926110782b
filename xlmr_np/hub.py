"""Resolve a model argument to a local directory: an existing directory as is, otherwise a Hugging Face
hub repo id, fetched through huggingface-hub's own cache.

Only the files the numpy model reads are fetched: config.json, tokenizer.json, tokenizer_config.json (for
the model's length limit) and the safetensors weights (one file, or an index and its shards). A hub repo
such as BAAI/bge-reranker-base also carries pytorch_model.bin, an ONNX export and sentencepiece files;
those are never downloaded.

huggingface-hub does the caching, so `revision`, `cache_dir` (default: $HF_HUB_CACHE), `token`,
`local_files_only` and HF_HUB_OFFLINE=1 behave exactly as they do for transformers.
"""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError, HubError

# fnmatch patterns, matched by huggingface-hub against the repo's file list.
HUB_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",  # its model_max_length is the model's own length limit (xlmr_np.family)
    "model.safetensors",
    "model.safetensors.index.json",
    "model-*-of-*.safetensors",  # the shards an index names (transformers' naming)
)


def is_repo_id(name: str) -> bool:
    """True for "BAAI/bge-reranker-base" or "bert"; False for paths such as "/tmp/x", "./x" or "a/b/c"."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def resolve_model_dir(
    name_or_path, revision: str | None = None, cache_dir=None, local_files_only: bool = False, token=None
) -> Path:
    """A local model directory for `name_or_path`, downloading it from the hub if needed.

    An existing directory wins over a repo of the same name, as in transformers.
    """
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if not is_repo_id(str(name_or_path)):
        raise ConfigError(
            f"{path}: not a directory (expected a model directory with config.json, "
            f"or a hub repo id such as BAAI/bge-reranker-base)"
        )
    return _snapshot(str(name_or_path), revision, cache_dir, local_files_only, token)


def _snapshot(repo_id: str, revision, cache_dir, local_files_only: bool, token) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.utils import (  # where every huggingface-hub since 0.20 exports them
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo_id} (revision {revision or 'main'})"
    cache = Path(cache_dir) if cache_dir is not None else Path(constants.HF_HUB_CACHE)
    try:
        folder = Path(
            snapshot_download(
                repo_id,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=local_files_only,
                token=token,
                allow_patterns=list(HUB_FILES),
            )
        )
    except LocalEntryNotFoundError as e:
        offline = local_files_only or constants.HF_HUB_OFFLINE
        reason = (
            "downloads are disabled (HF_HUB_OFFLINE=1 or local_files_only)"
            if offline
            else "the hub could not be reached"
        )
        raise HubError(
            f"{where}: not a local directory, not in the hub cache {cache}, and {reason}. Download it once "
            f"with network access (xlmr-np fetches only {', '.join(HUB_FILES[:4])} and safetensors shards), "
            f"or pass a local model directory (to try the commands, `xlmr-np random-model DIR` writes a random one). "
            f"({type(e).__name__})"
        ) from None
    except RevisionNotFoundError:
        raise HubError(f"{where}: the hub repo has no such revision (branch, tag or commit)") from None
    except RepositoryNotFoundError:
        raise HubError(
            f"{repo_id}: not a local directory, and no such hub repo (or it is private: "
            f"log in with `hf auth login` or pass token=)"
        ) from None
    except HfHubHTTPError as e:
        raise HubError(f"{where}: the hub refused the download ({e})") from None
    except ValueError as e:  # a revision or repo id that is not text a URL can carry (a lone surrogate)
        raise HubError(f"{ascii(where)}: not a usable repo id or revision ({e})") from None
    return _check_snapshot(folder, where)


def _check_snapshot(folder: Path, where: str) -> Path:
    """Say which needed file is absent, rather than failing later on a path inside the cache."""
    missing = [name for name in ("config.json", "tokenizer.json") if not (folder / name).is_file()]
    if not any((folder / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")):
        missing.append("model.safetensors (xlmr-np reads only safetensors weights)")
    if missing:
        raise HubError(f"{where}: the snapshot {folder} lacks {', '.join(missing)}")
    return folder
