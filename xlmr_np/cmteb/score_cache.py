"""An append-only file of pair scores, so that a long evaluation resumes where it stopped.

Scores are keyed by (model, scoring settings, task, dataset revision) through the file's header and
its directory, and by pair through a 16-byte hash of the (query, document) texts in each record.

File layout (little-endian):

    magic b"XLMRNPSC" | version u32 | header length u32 | header (UTF-8 JSON) | crc32 of the header u32
    then records of 24 bytes: pair key (16 bytes) | score float32 | crc32 of the record's first 20 bytes

A run appends each finished batch's records with one write(), so a killed run loses at most the batch
it was computing. A record cut short by the kill is the only damage tolerated: it is dropped, and the
file truncated to its last whole record when its writer resumes. Anything else that does not check out
(wrong magic, a header for another model or task, a whole record whose checksum fails) raises
CacheError: a cache is never used when it might hold scores of something else.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import struct
import zlib
from pathlib import Path
from typing import TextIO

import numpy as np

from ..errors import CacheError

MAGIC = b"XLMRNPSC"
VERSION = 1
_PREFIX = struct.Struct("<8sII")  # magic, version, header length
_CRC = struct.Struct("<I")
RECORD = struct.Struct("<16sfI")  # pair key, score, crc32 of key + score
# Header fields that must match for a file's scores to be used; "writer" only names the file's author.
IDENTITY = ("model_fingerprint", "settings", "task", "dataset", "revision")


def pair_key(query: str, document: str) -> bytes:
    """16 bytes identifying a (query, document) pair by its texts.

    The query's length is hashed in front, so ("ab", "c") and ("a", "bc") get different keys.
    """
    q = query.encode("utf-8")
    return hashlib.blake2b(len(q).to_bytes(8, "little") + q + document.encode("utf-8"), digest_size=16).digest()


def _encode_header(header: dict) -> bytes:
    body = json.dumps(header, sort_keys=True).encode("utf-8")
    return _PREFIX.pack(MAGIC, VERSION, len(body)) + body + _CRC.pack(zlib.crc32(body))


def _read_header(data: bytes, path: Path) -> tuple[dict, int]:
    """The header dict and the offset of the first record; CacheError if this is not our file."""
    if len(data) < _PREFIX.size or data[:8] != MAGIC:
        raise CacheError(
            f"{path}: not an xlmr-np score cache (it starts with {data[:8]!r}, expected {MAGIC!r}); "
            f"move it out of the cache directory"
        )
    _, version, size = _PREFIX.unpack_from(data)
    if version != VERSION:
        raise CacheError(
            f"{path}: score cache format version {version}, this xlmr-np reads version {VERSION}; "
            f"delete the file to rescore"
        )
    end = _PREFIX.size + size + _CRC.size
    if len(data) < end:
        raise CacheError(
            f"{path}: the header is cut short ({len(data)} bytes, expected at least {end}); "
            f"the file is corrupted, delete it to rescore"
        )
    body = data[_PREFIX.size : _PREFIX.size + size]
    (crc,) = _CRC.unpack_from(data, _PREFIX.size + size)
    if zlib.crc32(body) != crc:
        raise CacheError(f"{path}: the header's checksum does not match; the file is corrupted, delete it to rescore")
    try:
        header = json.loads(body)
    except (ValueError, RecursionError):
        header = None
    if not isinstance(header, dict):
        raise CacheError(f"{path}: the header is not a JSON object; the file is corrupted, delete it to rescore")
    return header, end


def _os_reason(e: OSError) -> str:
    """What an OSError means for a cache, in words (EPERM on a writable-looking file: chattr +i)."""
    reason = e.strerror or str(e)
    if e.errno == errno.EPERM:
        reason += " (an immutable file or directory? see lsattr)"
    return reason


def read_score_file(path: str | Path, expected: dict) -> tuple[dict[bytes, float], int]:
    """Scores in a cache file, and the byte offset just past its last whole record.

    expected: the header this run needs; the IDENTITY fields must match or CacheError names the
    difference. A partial record at the end (a write cut short) is ignored.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "a directory is where a score file should be", str(path))
    data = path.read_bytes()
    header, offset = _read_header(data, path)
    different = [k for k in IDENTITY if header.get(k) != expected.get(k)]
    if different:
        found = ", ".join(f"{k}={header.get(k)!r}" for k in different)
        wanted = ", ".join(f"{k}={expected.get(k)!r}" for k in different)
        raise CacheError(
            f"{path}: scores of another run ({found}); this run needs {wanted}. "
            f"Move the file out of this cache directory"
        )
    count = (len(data) - offset) // RECORD.size
    scores: dict[bytes, float] = {}
    for i, (key, score, crc) in enumerate(RECORD.iter_unpack(data[offset : offset + count * RECORD.size])):
        start = offset + i * RECORD.size
        if zlib.crc32(data[start : start + RECORD.size - _CRC.size]) != crc or not np.isfinite(score):
            raise CacheError(
                f"{path}: record {i} (byte {start}) fails its checksum; the file is corrupted, delete it to rescore"
            )
        scores.setdefault(key, score)
    return scores, offset + count * RECORD.size


class ScoreCache:
    """The cached scores of one (model, settings, task, dataset revision) directory.

    Reads every `scores-*.bin` file there (shards run on this machine included) and appends new scores
    to this run's own file, `scores-<writer>.bin`, which it locks so that two runs never write one file.
    """

    def __init__(self, directory: str | Path, header: dict, writer: str):
        self.directory = Path(directory)
        self.header = dict(header, writer=writer)
        self.path = self.directory / f"scores-{writer}.bin"
        self._lock: TextIO | None = None  # the open lock file, held until close()
        self._fd: int | None = None  # the score file, open for appending
        try:
            self._open()
        except OSError as e:  # a file where the directory should be, no permission, an immutable file, no space
            self.close()
            raise CacheError(
                f"cannot use the score cache: {_os_reason(e)}; fix that or choose another --cache-dir",
                where=str(e.filename or self.directory),
            ) from None
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        if self.directory.exists() and not self.directory.is_dir():
            raise NotADirectoryError(
                errno.ENOTDIR, "a file is where the cache directory should be", str(self.directory)
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = lock = open(self.directory / f"scores-{self.header['writer']}.lock", "a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CacheError(
                f"{self.path}: another xlmr-np run is writing this cache; wait for it or use another --cache-dir"
            ) from None
        if not self.path.exists():
            temporary = self.path.with_suffix(f".tmp{os.getpid()}")
            try:
                temporary.write_bytes(_encode_header(self.header))
                os.replace(temporary, self.path)
            finally:
                temporary.unlink(missing_ok=True)
        self.scores, end = read_score_file(self.path, self.header)
        for other in sorted(self.directory.glob("scores-*.bin")):
            if other != self.path:
                for key, score in read_score_file(other, self.header)[0].items():
                    self.scores.setdefault(key, score)
        self._fd = fd = os.open(self.path, os.O_RDWR)
        if os.fstat(fd).st_size != end:
            os.ftruncate(fd, end)  # drop a record cut short by a kill
        os.lseek(fd, end, os.SEEK_SET)
        self._end = end

    def __contains__(self, key: bytes) -> bool:
        return key in self.scores

    def __len__(self) -> int:
        return len(self.scores)

    def append(self, keys: list[bytes], scores) -> None:
        """Record scores (float32) for pairs not cached yet, in one write() so a kill cuts at most one record.

        If the write fails (a full disk, a file made immutable) the file is cut back to its last whole
        batch and CacheError says so: every batch recorded before stays, and a rerun resumes from them.
        """
        out, new = bytearray(), {}
        for key, score in zip(keys, np.asarray(scores, dtype=np.float32).tolist()):
            if key in self.scores or key in new:
                continue
            body = RECORD.pack(key, score, 0)[: RECORD.size - _CRC.size]
            out += body + _CRC.pack(zlib.crc32(body))
            new[key] = score
        view = memoryview(bytes(out))
        fd = self._fd
        if fd is None:
            raise CacheError("the score cache is closed", where=str(self.path))
        try:
            while view:
                view = view[os.write(fd, view) :]
        except OSError as e:
            self._roll_back()
            raise CacheError(
                f"cannot record scores: {_os_reason(e)}; the {len(self.scores):,} scores recorded "
                f"before are kept, rerun the same command to resume once that is fixed",
                where=str(self.path),
            ) from None
        self.scores.update(new)
        self._end += len(out)

    def _roll_back(self) -> None:
        """Cut a partly written batch off, so the file ends at a whole record (if even that fails, the next
        run drops the partial record when it opens the file)."""
        try:
            assert self._fd is not None
            os.ftruncate(self._fd, self._end)
            os.lseek(self._fd, self._end, os.SEEK_SET)
        except OSError:
            pass

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> ScoreCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
