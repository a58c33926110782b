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
import math
import mmap as _mmap
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
_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
}
_INT_DTYPES: dict[str, np.dtype] = {
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
WORD_EMBEDDINGS = "roberta.embeddings.word_embeddings.weight"
# Buffers older transformers versions saved with the weights; they are recomputed, never loaded.
_IGNORED_SUFFIXES = ("embeddings.position_ids", "embeddings.token_type_ids")
_POOLER = "roberta.pooler."
_TENSORS_PER_LAYER = 16  # q, k, v, attention output, intermediate, output: weight and bias; two LayerNorms


@dataclass
class RawTensor:
    """One tensor as stored: a read-only view into the mapped file, plus where it came from."""

    key: str  # the key as written in the file
    file: str
    dtype: str  # safetensors dtype tag, e.g. "F32" or "BF16"
    array: np.ndarray  # stored bits: float32/float16/float64, or uint16 for BF16
    offset: int = 0  # byte offset of the tensor's data in the file
    mapped: bool = True  # a view of the mapped file (False: of a copy in memory)


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
        self._fd = None
        if not raw.mapped:  # the table is in memory already: index it
            return
        self._fd = os.open(raw.file, os.O_RDONLY)
        weakref.finalize(self, os.close, self._fd)
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self._fd, raw.offset, raw.array.nbytes, os.POSIX_FADV_RANDOM)

    def __getitem__(self, ids) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.size and (ids.min() < 0 or ids.max() >= self.shape[0]):
            raise IndexError(f"row ids must lie in [0, {self.shape[0]}); found {ids.min()}..{ids.max()}")
        if self._fd is None:
            return _to_float(self.raw.array[ids], self.raw.dtype, self.dtype)
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


def read_safetensors(path: str | Path, mmap: bool = True) -> dict[str, RawTensor]:
    """Map one safetensors file (or with mmap=False, copy it into memory) and return a view per tensor,
    validating the header against the file.

    Raises CheckpointError for a missing, truncated or corrupt file, naming the file and the key: any
    byte string either loads or raises CheckpointError (tests/test_fuzz.py mutates real headers).
    """
    path = Path(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: weights file not found") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot open weights file ({e.strerror or e})") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if size < 8:
            raise CheckpointError(f"{path}: {size} bytes is too short for a safetensors file (truncated?)")
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > size - 8 or header_len > 100_000_000:
            raise CheckpointError(
                f"{path}: header claims {header_len} bytes but the file has {size - 8} after the length "
                f"field (truncated or not a safetensors file)"
            )
        header = _parse_header(f.read(header_len), path)
        data_start = 8 + header_len
        data_len = size - data_start
        buffer: _mmap.mmap | bytes
        if mmap:
            buffer = _mmap.mmap(f.fileno(), 0, access=_mmap.ACCESS_READ)
        else:
            f.seek(0)
            buffer = f.read()
            if len(buffer) != size:
                raise CheckpointError(f"{path}: read {len(buffer)} of {size} bytes; the file changed while read")

    tensors: dict[str, RawTensor] = {}
    spans = []
    for key, info in header.items():
        if key == "__metadata__":
            continue
        tag, shape, begin, end = _header_entry(path, key, info)
        dtype: np.dtype = _DTYPES.get(tag) or _INT_DTYPES[tag]
        nbytes = math.prod(shape) * dtype.itemsize  # Python ints: a forged shape cannot overflow
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
        spans.append((begin, end, key))
        offset = data_start + begin
        array = np.frombuffer(buffer, dtype=dtype, count=nbytes // dtype.itemsize, offset=offset)
        if offset % dtype.itemsize:  # unaligned views work but are slow in BLAS: copy the rare ones
            array = array.copy()
        tensors[key] = RawTensor(
            key=key, file=str(path), dtype=tag, array=array.reshape(shape), offset=offset, mapped=mmap
        )
    _check_tiling(path, sorted(spans), data_len)
    return tensors


def _parse_header(raw: bytes, path: Path) -> dict:
    try:
        header = json.loads(raw.decode("utf-8"))
    except ValueError as e:  # not UTF-8, not JSON, or an integer too long to convert
        raise CheckpointError(f"{path}: header is not valid JSON ({e}); the file is corrupt") from None
    except RecursionError:
        raise CheckpointError(
            f"{path}: header is nested too deeply to be a safetensors header; the file is corrupt"
        ) from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: header is not a JSON object; the file is corrupt")
    return header


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _header_entry(path: Path, key: str, info) -> tuple[str, tuple[int, ...], int, int]:
    """(dtype tag, shape, begin, end) of one header entry, each of the type the format prescribes:
    {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}."""

    def bad(what: str) -> CheckpointError:
        return CheckpointError(
            f"{path}: header entry for {key!r} is malformed: {what}, found {info!r:.200}; the file is corrupt"
        )

    if not isinstance(info, dict):
        raise bad("expected an object with dtype, shape and data_offsets")
    tag, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(tag, str):
        raise bad('dtype must be a string such as "F32"')
    if tag not in _DTYPES and tag not in _INT_DTYPES:
        raise CheckpointError(f"{path}: tensor {key!r} has unsupported dtype {tag!r}")
    if not isinstance(shape, list) or not all(_is_count(n) for n in shape):
        raise bad("shape must be a list of non-negative integers")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(n) for n in offsets):
        raise bad("data_offsets must be [begin, end], two non-negative integers")
    return tag, tuple(shape), offsets[0], offsets[1]


def _check_tiling(path: Path, spans: list[tuple[int, int, str]], data_len: int) -> None:
    """The tensors' byte ranges, sorted, must cover the data section exactly: no overlap, no gap."""
    position = 0
    for begin, end, key in spans:
        if begin != position:
            what = "overlaps the tensor before it" if begin < position else f"leaves a gap at byte {position}"
            raise CheckpointError(
                f"{path}: tensor {key!r} at bytes {begin}..{end} of the data section {what}; the file is corrupt"
            )
        position = end
    if position != data_len:
        raise CheckpointError(
            f"{path}: the header's tensors end at byte {position} of the data section but the file has "
            f"{data_len} bytes; the file is corrupt"
        )


def _read_index(index_path: Path) -> dict[str, str]:
    """model.safetensors.index.json's weight_map: tensor key -> shard file name in the same directory."""
    try:
        weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
        raise CheckpointError(f"{index_path}: not a valid safetensors index ({type(e).__name__}: {e})") from None
    if not isinstance(weight_map, dict):
        raise CheckpointError(
            f"{index_path}: weight_map must map tensor names to file names, found {type(weight_map).__name__}"
        )
    for key, name in weight_map.items():
        if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
            raise CheckpointError(
                f"{index_path}: weight_map[{key!r}] must be a file name in the model directory, found {name!r:.100}"
            )
    return weight_map


def _canonical(key: str) -> str:
    """Checkpoints saved from XLMRobertaModel lack the 'roberta.' prefix the classifier model uses."""
    if key.startswith(("roberta.", "classifier.")):
        return key
    return "roberta." + key


@dataclass(frozen=True)
class FileStamp:
    """A weights file as it was when it was mapped. Writing into it, truncating it or copying another file
    over it (`cp new.safetensors model.safetensors`) changes its size or its change time, which no user
    process can set back (unlike the modification time, which `cp -p` restores)."""

    path: str
    device: int
    inode: int
    size: int
    ctime_ns: int

    @classmethod
    def of(cls, path: str | Path) -> FileStamp:
        st = os.stat(path)
        return cls(str(path), st.st_dev, st.st_ino, st.st_size, st.st_ctime_ns)

    def change(self) -> str | None:
        """How the file was changed in place since the stamp, or None. A file renamed over it, or its
        removal, is no change of the mapped file: the mapping keeps the old one."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        if (st.st_dev, st.st_ino) != (self.device, self.inode):
            return None
        if st.st_size != self.size:
            return f"{self.path} was overwritten in place ({self.size} -> {st.st_size} bytes)"
        if st.st_ctime_ns != self.ctime_ns:
            return f"{self.path} was changed in place (its change time moved)"
        return None


def weight_files(model_dir: str | Path) -> list[Path]:
    """The safetensors files of a model directory, as read_checkpoint reads them."""
    return _locate(Path(model_dir))[0]


def _locate(model_dir: Path) -> tuple[list[Path], dict[str, str] | None]:
    """The weights files, and for a sharded checkpoint the file each key is listed in."""
    index_path = model_dir / SAFETENSORS_INDEX
    single_path = model_dir / SAFETENSORS_FILE
    if single_path.exists():
        return [single_path], None
    if index_path.exists():
        weight_map = _read_index(index_path)
        expected_in = {k: str(model_dir / v) for k, v in weight_map.items()}
        return [model_dir / name for name in dict.fromkeys(weight_map.values())], expected_in
    present = sorted(p.name for p in model_dir.iterdir()) if model_dir.is_dir() else []
    raise CheckpointError(
        f"{model_dir}: no {SAFETENSORS_FILE} or {SAFETENSORS_INDEX} found (directory holds {present}); "
        f"xlmr_np reads safetensors weights only"
    )


def read_checkpoint(model_dir: str | Path, mmap: bool = True) -> Checkpoint:
    """Read model.safetensors, or every shard listed in model.safetensors.index.json (mmap: see
    read_safetensors)."""
    model_dir = Path(model_dir)
    index_path = model_dir / SAFETENSORS_INDEX
    files, expected_in = _locate(model_dir)

    checkpoint = Checkpoint(tensors={}, files=[str(p) for p in files])
    for file in files:
        for key, raw in read_safetensors(file, mmap=mmap).items():
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
                    f"{file}: {key!r} duplicates {checkpoint.tensors[name].key!r} from {checkpoint.tensors[name].file}"
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
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
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


def load_params(model_dir: str | Path, config: XLMRobertaConfig, dtype=np.float32, mmap: bool = True) -> dict:
    """Load and validate every parameter, returning {checkpoint key: array} in the compute dtype.

    Float32 tensors loaded for float32 compute are zero-copy views of the mapped file; other dtypes are
    converted once here. The word-embedding table is returned as a RowTable, read on use.
    mmap=False copies each file into memory first: nothing then depends on the file after loading.
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be np.float32 or np.float64, got {dtype}")
    checkpoint = read_checkpoint(model_dir, mmap=mmap)
    least = _TENSORS_PER_LAYER * config.num_hidden_layers
    if least > len(checkpoint.tensors):  # before listing them all: a forged layer count could be 10**9
        raise CheckpointError(
            f"{_describe(checkpoint.files, 2)}: config.json's num_hidden_layers {config.num_hidden_layers} needs "
            f"at least {least} tensors; the checkpoint holds {len(checkpoint.tensors)}"
        )
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
                f"{raw.file}: tensor {raw.key!r} has shape {list(raw.array.shape)}; config.json implies {list(shape)}"
            )
        if key == WORD_EMBEDDINGS:
            params[key] = RowTable(raw, dtype)
        else:
            params[key] = _to_float(raw.array, raw.dtype, dtype)
    return params
