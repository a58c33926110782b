"""Strict, memory-mapped loading of safetensors checkpoints.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON mapping each tensor name
to {dtype, shape, data_offsets}, then the raw little-endian tensor bytes. We map the file read-only and
make numpy views at the header's offsets, so loading costs milliseconds and no tensor is copied until it
is used; the 768 MB word-embedding table is only ever read row by row (see RowTable).

Validation is strict and explains itself: every error names the file, the key, and what was expected
versus found (missing and unexpected keys, shapes against the config, dtypes, truncated files).
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import struct
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import XLMRobertaConfig
from .errors import CheckpointError

log = logging.getLogger(__name__)

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
# Float checkpoints we convert; bfloat16 has no numpy dtype and is widened by hand (see _to_float).
_DTYPES = {"F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2")}
_INT_DTYPES = {"I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
               "U8": np.dtype("u1"), "BOOL": np.dtype("?")}
WORD_EMBEDDINGS = "roberta.embeddings.word_embeddings.weight"
# Buffers older transformers versions saved with the weights; they are recomputed, never loaded.
_IGNORED_SUFFIXES = ("embeddings.position_ids", "embeddings.token_type_ids")
_POOLER = "roberta.pooler."


@dataclass
class RawTensor:
    """One tensor as stored: a read-only view into the mapped file, plus where it came from."""

    key: str  # the key as written in the file
    file: str
    dtype: str  # safetensors dtype tag, e.g. "F32" or "BF16"
    array: np.ndarray  # stored bits: float32/float16/float64, or uint16 for BF16
    offset: int = 0  # byte offset of the tensor's data in the file


@dataclass
class Checkpoint:
    """Everything read from the weights files, before conversion to the compute dtype."""

    tensors: dict[str, RawTensor]  # canonical key (roberta./classifier. prefixed) -> tensor
    ignored: list[str] = field(default_factory=list)  # keys present but not used (pooler, buffers)
    files: list[str] = field(default_factory=list)


class RowTable:
    """A [V, D] embedding table that stays on disk and is read row by row.

    `table[ids]` reads only the rows it is asked for, each with one pread from the file, and converts
    them to the compute dtype. Reading through the mapping instead would map far more than the rows:
    on a page fault the kernel also maps the neighbouring pages already in the page cache (fault-around,
    64 KB), so a few thousand random rows put most of the 768 MB table into the process's RSS. pread
    copies just the rows; the kernel is told the access is random, so a cold cache is not read ahead.

    >>> table[np.array([[0, 5]])].shape   # -> (1, 2, D)
    """

    def __init__(self, raw: RawTensor, dtype: np.dtype):
        self.raw = raw
        self.dtype = np.dtype(dtype)
        self.shape = raw.array.shape
        self.ndim = 2
        self._fd = os.open(raw.file, os.O_RDONLY)
        weakref.finalize(self, os.close, self._fd)
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self._fd, raw.offset, raw.array.nbytes, os.POSIX_FADV_RANDOM)

    def __getitem__(self, ids) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.size and (ids.min() < 0 or ids.max() >= self.shape[0]):
            raise IndexError(f"row ids must lie in [0, {self.shape[0]}); found {ids.min()}..{ids.max()}")
        unique, inverse = np.unique(ids, return_inverse=True)  # each row read once
        rows = np.empty((len(unique), self.shape[1]), dtype=self.raw.array.dtype)  # [U, D] stored bits
        row_bytes = rows.strides[0]
        for i, row in enumerate(unique.tolist()):
            if os.preadv(self._fd, [rows[i]], self.raw.offset + row * row_bytes) != row_bytes:
                raise CheckpointError(f"{self.raw.file}: short read of row {row} of {self.raw.key!r}")
        return _to_float(rows[inverse.reshape(ids.shape)], self.raw.dtype, self.dtype)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """The whole table in memory (reads all of it: for tests and inspection, not the forward pass)."""
        return _to_float(np.asarray(self.raw.array), self.raw.dtype, dtype or self.dtype)


def _to_float(stored: np.ndarray, tag: str, dtype: np.dtype) -> np.ndarray:
    """Convert stored bits to `dtype`. bfloat16 is the top half of a float32, so widen by a 16-bit shift."""
    if tag == "BF16":
        stored = (stored.astype(np.uint32) << 16).view(np.float32)
    return stored.astype(dtype, copy=False)


def read_safetensors(path: str | Path) -> dict[str, RawTensor]:
    """Map one safetensors file and return a view per tensor, validating the header against the file.

    Raises CheckpointError for a missing, truncated or corrupt file, naming the file and the key.
    """
    path = Path(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: weights file not found") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot open weights file ({e})") from None
    with f:
        size = path.stat().st_size
        if size < 8:
            raise CheckpointError(f"{path}: {size} bytes is too short for a safetensors file (truncated?)")
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > size - 8 or header_len > 100_000_000:
            raise CheckpointError(
                f"{path}: header claims {header_len} bytes but the file has {size - 8} after the length "
                f"field (truncated or not a safetensors file)"
            )
        try:
            header = json.loads(f.read(header_len).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path}: header is not valid JSON ({e}); the file is corrupt") from None
        if not isinstance(header, dict):
            raise CheckpointError(f"{path}: header is not a JSON object; the file is corrupt")
        data_start = 8 + header_len
        data_len = size - data_start
        buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""

    tensors: dict[str, RawTensor] = {}
    end_max = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            tag, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: header entry for {key!r} is malformed: {info!r}") from None
        dtype = _DTYPES.get(tag) or _INT_DTYPES.get(tag)
        if dtype is None:
            raise CheckpointError(f"{path}: tensor {key!r} has unsupported dtype {tag!r}")
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if not (0 <= begin <= end) or end - begin != nbytes:
            raise CheckpointError(
                f"{path}: tensor {key!r} ({tag}{list(shape)}) should span {nbytes} bytes, "
                f"header gives offsets {begin}..{end}; the file is corrupt"
            )
        if end > data_len:
            raise CheckpointError(
                f"{path}: tensor {key!r} ends at byte {end} of the data section but the file holds only "
                f"{data_len} bytes: the file is truncated"
            )
        end_max = max(end_max, end)
        offset = data_start + begin
        array = np.frombuffer(buffer, dtype=dtype, count=nbytes // dtype.itemsize, offset=offset)
        if offset % dtype.itemsize:  # unaligned views work but are slow in BLAS: copy the rare ones
            array = array.copy()
        tensors[key] = RawTensor(key=key, file=str(path), dtype=tag, array=array.reshape(shape), offset=offset)
    if end_max != data_len:
        raise CheckpointError(
            f"{path}: the header's tensors end at byte {end_max} of the data section but the file has "
            f"{data_len} bytes; the file is corrupt"
        )
    return tensors


def _canonical(key: str) -> str:
    """Checkpoints saved from XLMRobertaModel lack the 'roberta.' prefix the classifier model uses."""
    if key.startswith(("roberta.", "classifier.")):
        return key
    return "roberta." + key


def read_checkpoint(model_dir: str | Path) -> Checkpoint:
    """Read model.safetensors, or every shard listed in model.safetensors.index.json."""
    model_dir = Path(model_dir)
    index_path = model_dir / SAFETENSORS_INDEX
    single_path = model_dir / SAFETENSORS_FILE
    if single_path.exists():
        files = [single_path]
        expected_in: dict[str, str] | None = None
    elif index_path.exists():
        try:
            weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index_path}: not a valid safetensors index ({e!r})") from None
        expected_in = {k: str(model_dir / v) for k, v in weight_map.items()}
        files = [model_dir / name for name in dict.fromkeys(weight_map.values())]
    else:
        present = sorted(p.name for p in model_dir.iterdir()) if model_dir.is_dir() else []
        raise CheckpointError(
            f"{model_dir}: no {SAFETENSORS_FILE} or {SAFETENSORS_INDEX} found (directory holds {present}); "
            f"xlmr_np reads safetensors weights only"
        )

    checkpoint = Checkpoint(tensors={}, files=[str(p) for p in files])
    for file in files:
        for key, raw in read_safetensors(file).items():
            if expected_in is not None and expected_in.get(key) != str(file):
                raise CheckpointError(
                    f"{file}: holds {key!r}, which {SAFETENSORS_INDEX} places in {expected_in.get(key)}"
                )
            if key.endswith(_IGNORED_SUFFIXES) or _canonical(key).startswith(_POOLER):
                checkpoint.ignored.append(key)
                continue
            name = _canonical(key)
            if name in checkpoint.tensors:
                raise CheckpointError(
                    f"{file}: {key!r} duplicates {checkpoint.tensors[name].key!r} "
                    f"from {checkpoint.tensors[name].file}"
                )
            checkpoint.tensors[name] = raw
    if expected_in is not None:
        found = {raw.key for raw in checkpoint.tensors.values()} | set(checkpoint.ignored)
        missing = [k for k in expected_in if k not in found]
        if missing:
            raise CheckpointError(f"{index_path}: lists {missing[:5]} but no shard holds them")
    if checkpoint.ignored:
        log.info("ignored checkpoint tensors not used by a cross-encoder: %s", checkpoint.ignored)
    return checkpoint


def expected_shapes(config: XLMRobertaConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter of XLMRobertaForSequenceClassification with the shape the config implies.

    Linear weights are [out_features, in_features], as torch stores them.
    """
    D, F, L = config.hidden_size, config.intermediate_size, config.num_labels
    shapes = {
        WORD_EMBEDDINGS: (config.vocab_size, D),
        "roberta.embeddings.position_embeddings.weight": (config.max_position_embeddings, D),
        "roberta.embeddings.token_type_embeddings.weight": (config.type_vocab_size, D),
        "roberta.embeddings.LayerNorm.weight": (D,),
        "roberta.embeddings.LayerNorm.bias": (D,),
    }
    for i in range(config.num_hidden_layers):
        p = f"roberta.encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value",
                     "attention.output.dense"):
            shapes[p + name + ".weight"] = (D, D)
            shapes[p + name + ".bias"] = (D,)
        shapes[p + "intermediate.dense.weight"] = (F, D)
        shapes[p + "intermediate.dense.bias"] = (F,)
        shapes[p + "output.dense.weight"] = (D, F)
        shapes[p + "output.dense.bias"] = (D,)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[p + ln + ".weight"] = (D,)
            shapes[p + ln + ".bias"] = (D,)
    shapes["classifier.dense.weight"] = (D, D)
    shapes["classifier.dense.bias"] = (D,)
    shapes["classifier.out_proj.weight"] = (L, D)
    shapes["classifier.out_proj.bias"] = (L,)
    return shapes


def _describe(keys: Iterable[str], limit: int = 6) -> str:
    keys = list(keys)
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_params(model_dir: str | Path, config: XLMRobertaConfig, dtype=np.float32) -> dict:
    """Load and validate every parameter, returning {checkpoint key: array} in the compute dtype.

    Float32 tensors loaded for float32 compute are zero-copy views of the mapped file; other dtypes are
    converted once here. The word-embedding table is returned as a RowTable, read on use.
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be np.float32 or np.float64, got {dtype}")
    checkpoint = read_checkpoint(model_dir)
    shapes = expected_shapes(config)
    missing = [k for k in shapes if k not in checkpoint.tensors]
    unexpected = [raw.key for k, raw in checkpoint.tensors.items() if k not in shapes]
    where = _describe(checkpoint.files, 2)
    if missing:
        hint = ""
        if all(k.startswith("classifier.") for k in missing):
            hint = " (this checkpoint has no classification head: it is an encoder, not a reranker)"
        raise CheckpointError(f"{where}: missing {len(missing)} tensor(s): {_describe(missing)}{hint}")
    if unexpected:
        raise CheckpointError(f"{where}: unexpected tensor(s) for this config: {_describe(unexpected)}")

    params: dict = {}
    for key, shape in shapes.items():
        raw = checkpoint.tensors[key]
        if raw.dtype not in _DTYPES:
            raise CheckpointError(f"{raw.file}: tensor {raw.key!r} has dtype {raw.dtype}; expected a float dtype")
        if raw.array.shape != shape:
            raise CheckpointError(
                f"{raw.file}: tensor {raw.key!r} has shape {list(raw.array.shape)}; "
                f"config.json implies {list(shape)}"
            )
        if key == WORD_EMBEDDINGS:
            params[key] = RowTable(raw, dtype)
        else:
            params[key] = _to_float(raw.array, raw.dtype, dtype)
    return params
