"""`xlmr-np score [FILE]`: score (query, document) pairs from TSV or JSONL, in input order.

TSV: `query<TAB>document` per line (the first tab splits; the document may contain more tabs); output is
one score per line. JSONL: {"query": ..., "document": ...} per line; output is each input object with
"score" (or with --raw-scores "logit") and "truncated" added, so ids and labels travel along.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from ..errors import ConfigError, InputError
from ..tokenizer import check_text
from .common import (
    OutputFile,
    add_device_argument,
    add_model_arguments,
    is_jsonl,
    load_reranker,
    parse_json_line,
    read_lines,
    reports_errors,
)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "score", help="score (query, document) pairs from a TSV or JSONL file", description=__doc__.split("\n\n", 1)[1]
    )
    parser.add_argument("input", metavar="FILE", nargs="?", default="-", help="pairs file (default: stdin)")
    parser.add_argument("--jsonl", action="store_true", help="the input is JSONL (implied by .jsonl)")
    parser.add_argument("--output", "-o", metavar="FILE", help="write scores to FILE (default: stdout)")
    parser.add_argument("--raw-scores", action="store_true", help="write raw logits instead of sigmoid scores (0..1)")
    add_device_argument(add_model_arguments(parser))
    parser.set_defaults(func=reports_errors(run))


def read_pairs(source: str, jsonl: bool) -> tuple[list[tuple[str, str]], list[dict] | None]:
    """The pairs, and for JSONL the parsed objects (to echo back with their scores)."""
    pairs: list[tuple[str, str]] = []
    objects: list[dict] = []
    for number, line in read_lines(source):
        if not line.strip():
            raise InputError("empty line (every line must hold one pair)", where=f"{source}:{number}")
        if jsonl:
            value = parse_json_line(source, number, line)
            if not isinstance(value, dict):
                raise InputError(
                    f'expected {{"query": ..., "document": ...}}, got {line[:60]}', where=f"{source}:{number}"
                )
            for field in ("query", "document"):
                if not isinstance(value.get(field), str):
                    raise InputError(f"field {field!r} must be a string", where=f"{source}:{number}")
            pairs.append(_pair(value["query"], value["document"], f"{source}:{number}"))
            objects.append(value)
        else:
            query, tab, document = line.partition("\t")
            if not tab:
                raise InputError("no tab: expected query<TAB>document", where=f"{source}:{number}")
            pairs.append(_pair(query, document, f"{source}:{number}"))
    if not pairs:
        raise InputError("no pairs", where=source)
    return pairs, objects if jsonl else None


def _pair(query: str, document: str, where: str) -> tuple[str, str]:
    return check_text(query, "query", where), check_text(document, "document", where)


def run(args) -> int:
    from ..reranker import sigmoid64

    pairs, objects = read_pairs(args.input, is_jsonl(args.input, args.jsonl))
    output = OutputFile(args.output) if args.output else None  # a bad path fails now, not after the scoring
    try:
        reranker = load_reranker(args)
        if reranker.config.num_labels != 1:
            raise ConfigError(f"score needs one relevance logit; this model has {reranker.config.num_labels} labels")
        logits, truncated = reranker.predict_logits(pairs, batch_size=args.batch_size)
        logits = logits[:, 0].astype(np.float64)
        values = (logits if args.raw_scores else sigmoid64(logits)).tolist()
        field = "logit" if args.raw_scores else "score"
        if objects is None:
            lines = [repr(v) for v in values]
        else:
            lines = [
                json.dumps({**o, field: v, "truncated": t}, ensure_ascii=False)
                for o, v, t in zip(objects, values, truncated)
            ]
        text = "\n".join(lines) + "\n"
        if output is not None:
            output.write(text)
        else:
            sys.stdout.write(text)
    finally:
        if output is not None:
            output.discard()
    cut = [i + 1 for i, t in enumerate(truncated) if t]
    if cut:
        print(
            f"xlmr-np score: {len(cut)} of {len(pairs)} pairs truncated to {reranker.max_length} tokens "
            f"(pairs {', '.join(map(str, cut[:10]))}{', ...' if len(cut) > 10 else ''})",
            file=sys.stderr,
        )
    return 0
