"""Options and helpers shared by the rerank, score and serve subcommands."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

from ..errors import InputError, XlmrNpError

DEFAULT_MODEL = "BAAI/bge-reranker-base"


def add_model_arguments(parser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=DEFAULT_MODEL,
                       help=f"a hub repo id or a local model directory (default: {DEFAULT_MODEL})")
    group.add_argument("--revision", help="hub branch, tag or commit (default: main)")
    group.add_argument("--cache-dir", help="hub cache directory (default: $HF_HUB_CACHE)")
    group.add_argument("--max-length", type=int, default=512, help="tokens per sequence (default: 512)")
    group.add_argument("--truncation", choices=("longest_first", "only_second"), default="longest_first",
                       help="how over-long pairs are cut (default: longest_first, as the published scores)")
    group.add_argument("--batch-size", type=int, default=32, help="sequences per forward pass (default: 32)")
    group.add_argument("--workers", type=worker_count, default=None,
                       help="threads that score each batch, one BLAS thread each (default: one per core); "
                            "the scores are the same bits for any count")


def worker_count(text: str) -> int:
    """argparse type of --workers: a positive integer."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def load_reranker(args):
    from ..reranker import Reranker

    return Reranker.from_pretrained(args.model, max_length=args.max_length, truncation=args.truncation,
                                    revision=args.revision, cache_dir=args.cache_dir, workers=args.workers)


def reports_errors(handler):
    """Print xlmr_np's own errors as one line on stderr with exit status 1, not as a traceback."""

    @functools.wraps(handler)
    def run(args) -> int:
        try:
            return handler(args)
        except (XlmrNpError, FloatingPointError) as e:
            print(f"xlmr-np {args.command}: error: {e}", file=sys.stderr)
            return 1

    return run


def read_lines(source: str) -> list[tuple[int, str]]:
    """(line number, line) of a file, or of stdin for "-", without line endings."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{source}: cannot read ({e})") from None
    return list(enumerate(text.splitlines(), start=1))


def is_jsonl(source: str, flag: bool) -> bool:
    return flag or source.endswith((".jsonl", ".ndjson"))


def parse_json_line(source: str, number: int, line: str):
    try:
        return json.loads(line)
    except ValueError as e:
        raise InputError(f"{source}:{number}: not valid JSON ({e})") from None
