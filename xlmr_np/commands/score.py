"""`xlmr-np score [FILE]`: score (query, document) pairs from TSV or JSONL, in input order.

TSV: `query<TAB>document` per line (the first tab splits; the document may contain more tabs); output is
one score per line. JSONL: {"query": ..., "document": ...} per line; output is each input object with
"score" and "truncated" added, so ids and labels travel along.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from ..errors import ConfigError, InputError
from .common import add_model_arguments, is_jsonl, load_reranker, parse_json_line, read_lines, reports_errors


def register(subparsers) -> None:
    parser = subparsers.add_parser("score", help="score (query, document) pairs from a TSV or JSONL file",
                                   description=__doc__.split("\n\n", 1)[1])
    parser.add_argument("input", metavar="FILE", nargs="?", default="-", help="pairs file (default: stdin)")
    parser.add_argument("--jsonl", action="store_true", help="the input is JSONL (implied by .jsonl)")
    parser.add_argument("--output", "-o", metavar="FILE", help="write scores to FILE (default: stdout)")
    parser.add_argument("--raw-scores", action="store_true", help="write raw logits instead of sigmoid scores (0..1)")
    add_model_arguments(parser)
    parser.set_defaults(func=reports_errors(run))


def read_pairs(source: str, jsonl: bool) -> tuple[list[tuple[str, str]], list[dict] | None]:
    """The pairs, and for JSONL the parsed objects (to echo back with their scores)."""
    pairs, objects = [], [] if jsonl else None
    for number, line in read_lines(source):
        if not line.strip():
            raise InputError(f"{source}:{number}: empty line (every line must hold one pair)")
        if jsonl:
            value = parse_json_line(source, number, line)
            if not isinstance(value, dict):
                raise InputError(f'{source}:{number}: expected {{"query": ..., "document": ...}}, got {line[:60]}')
            for field in ("query", "document"):
                if not isinstance(value.get(field), str):
                    raise InputError(f"{source}:{number}: field {field!r} must be a string")
            pairs.append((value["query"], value["document"]))
            objects.append(value)
        else:
            query, tab, document = line.partition("\t")
            if not tab:
                raise InputError(f"{source}:{number}: no tab: expected query<TAB>document")
            pairs.append((query, document))
    if not pairs:
        raise InputError(f"{source}: no pairs")
    return pairs, objects


def run(args) -> int:
    from ..reranker import sigmoid64

    pairs, objects = read_pairs(args.input, is_jsonl(args.input, args.jsonl))
    reranker = load_reranker(args)
    if reranker.config.num_labels != 1:
        raise ConfigError(f"score needs one relevance logit; this model has {reranker.config.num_labels} labels")
    logits, truncated = reranker.predict_logits(pairs, batch_size=args.batch_size)
    logits = logits[:, 0].astype(np.float64)
    scores = (logits if args.raw_scores else sigmoid64(logits)).tolist()
    if objects is None:
        lines = [repr(s) for s in scores]
    else:
        lines = [json.dumps(dict(o, score=s, truncated=t), ensure_ascii=False)
                 for o, s, t in zip(objects, scores, truncated)]
    text = "\n".join(lines) + "\n"
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    cut = [i + 1 for i, t in enumerate(truncated) if t]
    if cut:
        print(f"xlmr-np score: {len(cut)} of {len(pairs)} pairs truncated to {reranker.max_length} tokens "
              f"(pairs {', '.join(map(str, cut[:10]))}{', ...' if len(cut) > 10 else ''})", file=sys.stderr)
    return 0
