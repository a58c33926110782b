"""Options, input readers and error reporting shared by the subcommands.

Every failure reaches the user as one line on stderr, `xlmr-np <command>: error: <what> (<where>)`, with
exit status 2 for a usage error (a bad option or argument, as argparse) and 1 for a failure (a bad input
file, model or environment); see `report`.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import sys
import tempfile
from pathlib import Path

from ..device import DEFAULT_DEVICE, DEVICES
from ..errors import InputError, OutputError, UsageError, XlmrNpError

DEFAULT_MODEL = "BAAI/bge-reranker-base"
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


# ---- argparse value types: a bad value is a usage error (exit 2) named by argparse ----


def positive_int(text: str) -> int:
    return _int_at_least(text, 1, "a positive integer")


def nonnegative_int(text: str) -> int:
    return _int_at_least(text, 0, "an integer >= 0")


def _int_at_least(text: str, least: int, wanted: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
    return value


def port_number(text: str) -> int:
    """A TCP port, 0..65535 (0: the system picks a free one)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {text!r}")
    return value


def query_text(text: str) -> str:
    """A QUERY argument, held to the rule the Python API and the server apply (ranking.check_query)."""
    from ..ranking import check_query

    try:
        return check_query(text)
    except InputError as e:
        raise argparse.ArgumentTypeError(e.what) from None


def document_text(text: str) -> str:
    """A DOC argument: any text, but only real characters (not undecodable bytes)."""
    from ..tokenizer import check_text

    try:
        return check_text(text, "document")
    except InputError as e:
        raise argparse.ArgumentTypeError(e.what) from None


def add_deprecated_alias(parser, old: str, new: str, dest: str, why: str, **kwargs) -> None:
    """Keep option `old` working as `new` (same dest, one value) for a while: hidden from --help, and each
    use warns on stderr, e.g. "xlmr-np eval: warning: --workers is deprecated here; use --processes
    (--workers is threads in the other commands)"."""
    parser.add_argument(old, dest=dest, help=argparse.SUPPRESS, action=_Deprecated, new=new, why=why, **kwargs)


class _Deprecated(argparse.Action):
    def __init__(self, option_strings, dest, new: str, why: str, **kwargs):
        self.new, self.why = new, why
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(
            f"{parser.prog}: warning: {option_string} is deprecated here; use {self.new} ({self.why})",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values)


# ---- the model options of rerank, score, serve and inspect ----


def add_model_arguments(parser):
    """The model options, in a "model" group (returned, for add_device_argument)."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"a hub repo id or a local model directory (default: {DEFAULT_MODEL})"
    )
    group.add_argument("--revision", help="hub branch, tag or commit (default: main)")
    group.add_argument("--cache-dir", help="hub cache directory (default: $HF_HUB_CACHE)")
    group.add_argument(
        "--max-length",
        type=positive_int,
        default=None,
        help="tokens per sequence (default: the model's own limit, its tokenizer_config.json's model_max_length "
        "capped by its position table: 512 for bge-reranker-base, 8192 for bge-reranker-v2-m3); "
        "--max-length 512 matches FlagEmbedding, which cuts every model at 512",
    )
    group.add_argument(
        "--truncation",
        choices=("longest_first", "only_second"),
        default="longest_first",
        help="how over-long pairs are cut (default: longest_first, as the published scores)",
    )
    group.add_argument("--batch-size", type=positive_int, default=32, help="sequences per forward pass (default: 32)")
    group.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="threads that score each batch, one BLAS thread each (default: one per core); "
        "the scores are the same bits for any count",
    )
    group.add_argument(
        "--in-memory",
        action="store_true",
        help="copy the weights into memory instead of mapping the file: a model file "
        "overwritten in place cannot crash this process (costs RAM of the model's size)",
    )
    return group


def add_device_argument(parser) -> None:
    """--device, where scores are computed (xlmr_np.device): rerank, score, serve, eval and python -m bench."""
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default=DEFAULT_DEVICE,
        help=f"where the model runs (default: {DEFAULT_DEVICE}): cpu is numpy; cuda is an NVIDIA GPU through CuPy "
        "(pip install 'xlmr-np[gpu]'), its float32 in full float32; see docs/gpu.md",
    )


def load_reranker(args):
    """The model the options name; a setting it rejects (--max-length) is a usage error naming the option."""
    from ..reranker import Reranker

    try:
        return Reranker.from_pretrained(
            args.model,
            max_length=args.max_length,
            truncation=args.truncation,
            revision=args.revision,
            cache_dir=args.cache_dir,
            mmap=not getattr(args, "in_memory", False),
            workers=getattr(args, "workers", None),
            device=getattr(args, "device", DEFAULT_DEVICE),
        )
    except InputError as e:
        if e.where in ("max_length", "truncation"):
            raise UsageError(e.what, where="--" + e.where.replace("_", "-")) from None
        raise


# ---- reporting ----

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str) -> str:
    """`text` with line breaks and other control characters escaped, as repr() shows them: an error is
    one line however the input that caused it looks. "a\\nb" -> "a\\\\nb"."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def report(command: str, error: BaseException) -> int:
    """Print `error` as one line on stderr and return the exit status it calls for.

    UsageError -> 2; the package's other errors, non-finite scores, OS errors (a full disk, a file that
    cannot be written) and MemoryError -> 1. Anything else is a bug and is re-raised with its traceback.
    """
    name = f"xlmr-np {command}" if command else "xlmr-np"
    if isinstance(error, UsageError):
        status, message = EXIT_USAGE, str(error)
    elif isinstance(error, (XlmrNpError, FloatingPointError)):
        status, message = EXIT_FAILURE, str(error)
    elif isinstance(error, MemoryError):
        status, message = EXIT_FAILURE, "out of memory (a smaller --batch-size or shorter inputs need less)"
    elif isinstance(error, OSError):
        what = error.strerror or str(error)
        where = error.filename if error.filename is not None else None
        status, message = EXIT_FAILURE, f"{what} ({where})" if where else what
    else:
        raise error
    print(f"{name}: error: {one_line(message)}", file=sys.stderr)
    return status


def reports_errors(handler):
    """Run a subcommand handler `handler(args) -> int`, printing its failures through `report`."""

    @functools.wraps(handler)
    def run(args) -> int:
        try:
            return handler(args)
        except (XlmrNpError, FloatingPointError, MemoryError, OSError) as e:
            if isinstance(e, BrokenPipeError):
                raise  # the reader of stdout went away: main() exits quietly
            return report(args.command, e)

    return run


# ---- input files ----


def read_lines(source: str) -> list[tuple[int, str]]:
    """(line number, line) of a UTF-8 file, or of stdin for "-", without line endings.

    Lines end at "\\n" (or "\\r\\n") only: U+2028, form feeds, NEL and the other characters
    str.splitlines() also splits at are part of a line's text. A UTF-8 byte order mark is skipped.
    Bytes that are not UTF-8 raise InputError naming the line and column.
    """
    try:
        data = _read_stdin() if source == "-" else Path(source).read_bytes()
    except OSError as e:
        raise InputError(f"cannot read the file: {e.strerror or e}", where=source) from None
    except ValueError as e:  # a name no file can have: a NUL byte, a lone surrogate (from Python, not a shell)
        raise InputError(f"not a usable file name ({e})", where=ascii(source)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise InputError(
            f"not valid UTF-8: byte 0x{data[e.start]:02x} at column {column}", where=f"{source}:{line}"
        ) from None
    lines = text.removeprefix("\ufeff").split("\n")
    if lines[-1] == "":
        lines.pop()  # the final newline ends the last line, it does not start another
    return [(number, line.removesuffix("\r")) for number, line in enumerate(lines, start=1)]


def _read_stdin() -> bytes:
    stream = getattr(sys.stdin, "buffer", None)
    if stream is not None:
        return stream.read()
    # a text stream without bytes underneath (io.StringIO in tests): a lone surrogate stays invalid
    return sys.stdin.read().encode("utf-8", "surrogatepass")


def is_jsonl(source: str, flag: bool) -> bool:
    return flag or source.endswith((".jsonl", ".ndjson"))


def parse_json_line(source: str, number: int, line: str):
    try:
        return json.loads(line)
    except ValueError as e:
        raise InputError(f"not valid JSON ({e})", where=f"{source}:{number}") from None
    except RecursionError:
        raise InputError("not valid JSON here (nested too deeply)", where=f"{source}:{number}") from None


# ---- output files ----


class OutputFile:
    """A file written whole or not at all: checked before the work starts, written to a temporary file
    beside it, and renamed over the target only when complete. A failed run leaves the target as it was.

        out = OutputFile(path)       # OutputError now if path is a directory or its directory is missing
        ... long work ...
        out.write(text)              # atomic: the target holds the old contents or all of the new
    """

    def __init__(self, path: str):
        self.path = Path(path)
        where = str(path)
        if self.path.is_dir():
            raise OutputError("the output is a directory; name a file", where=where)
        parent = self.path.parent
        if not parent.is_dir():
            raise OutputError(f"the output's directory {str(parent)!r} does not exist", where=where)
        try:  # claims a name beside the target now, so that a read-only directory fails before the work
            fd, temporary = tempfile.mkstemp(dir=parent, prefix=f".{self.path.name}.", suffix=".tmp")
        except OSError as e:
            raise OutputError(f"cannot write beside the output: {e.strerror or e}", where=where) from None
        except ValueError as e:  # a NUL byte or a lone surrogate: from Python, never from a shell
            raise OutputError(f"not a usable file name ({e})", where=ascii(where)) from None
        os.close(fd)
        self.temporary = Path(temporary)

    def write(self, text: str) -> None:
        try:
            with open(self.temporary, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(self.temporary, _mode_for(self.path))
            os.replace(self.temporary, self.path)
        except OSError as e:
            self.discard()
            raise OutputError(f"cannot write the output: {e.strerror or e}", where=str(self.path)) from None

    def discard(self) -> None:
        self.temporary.unlink(missing_ok=True)


def _mode_for(path: Path) -> int:
    """The target's permissions if it exists, else what open() would give a new file (0o666 less umask)."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
