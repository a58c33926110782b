"""`xlmr-np rerank QUERY DOC...`: rank documents for one query, as a table or as /v1/rerank JSON."""

from __future__ import annotations

import shutil
import sys

from ..errors import InputError
from ..tokenizer import check_text
from .common import (
    OutputFile,
    add_device_argument,
    add_model_arguments,
    document_text,
    is_jsonl,
    load_reranker,
    nonnegative_int,
    parse_json_line,
    positive_int,
    query_text,
    read_lines,
    reports_errors,
)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "rerank",
        help="rank documents by relevance to a query",
        description="Rank documents by relevance to QUERY. Documents come from the arguments, from "
        '--documents FILE (one per line, or JSONL: a string or {"text": ...} per line), or '
        "from stdin. Blank lines are skipped; index counts documents, not lines.",
    )
    parser.add_argument("query", metavar="QUERY", type=query_text)
    # default=[]: argparse would otherwise list DOC as required when QUERY is missing
    parser.add_argument("documents", metavar="DOC", nargs="*", default=[], type=document_text, help="documents to rank")
    parser.add_argument(
        "--documents", dest="documents_file", metavar="FILE", help="read documents from FILE ('-': stdin)"
    )
    parser.add_argument("--jsonl", action="store_true", help="the documents file is JSONL (implied by .jsonl)")
    parser.add_argument("--top-n", type=positive_int, help="show only the best N")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the answer POST /v1/rerank gives (id, model, results, usage, meta) instead of a table",
    )
    parser.add_argument("--output", "-o", metavar="FILE", help="write the table or JSON to FILE (default: stdout)")
    parser.add_argument("--raw-scores", action="store_true", help="report the raw logit instead of its sigmoid (0..1)")
    parser.add_argument(
        "--windows",
        action="store_true",
        help="score long documents by their best overlapping window instead of truncating them",
    )
    parser.add_argument(
        "--window-overlap", type=nonnegative_int, default=64, help="tokens shared by adjacent windows (64)"
    )
    add_device_argument(add_model_arguments(parser))
    parser.set_defaults(func=reports_errors(run))


def read_documents(source: str, jsonl: bool) -> list[str]:
    documents = []
    for number, line in read_lines(source):
        if not line.strip():
            continue
        if not jsonl:
            documents.append(line)
            continue
        value = parse_json_line(source, number, line)
        text = value.get("text") if isinstance(value, dict) else value
        if not isinstance(text, str):
            raise InputError(
                f'expected a JSON string or {{"text": string}}, got {line[:60]}', where=f"{source}:{number}"
            )
        documents.append(check_text(text, "document", where=f"{source}:{number}"))
    return documents


def gather_documents(args) -> list[str]:
    documents = list(args.documents)
    if args.documents_file:
        documents += read_documents(args.documents_file, is_jsonl(args.documents_file, args.jsonl))
    elif not documents and not sys.stdin.isatty():
        documents = read_documents("-", args.jsonl)
    if not documents:
        raise InputError("no documents: give them as arguments, with --documents FILE, or on stdin")
    return documents


def table(results: list[dict], raw_scores: bool, max_length: int, width: int | None) -> str:
    """A ranked table whose documents are cut to `width` columns (None: whole); truncated documents are
    marked with *."""
    header = f"{'rank':>4}  {'index':>5}  {'logit' if raw_scores else 'score':>9}  document"
    room = max(20, width - len(header) + len("document")) if width is not None else None
    lines = [header]
    for rank, r in enumerate(results, start=1):
        text = " ".join(r["document"].split())
        if room is not None and len(text) > room:
            text = text[: room - 1] + "…"
        mark = "*" if r["truncated"] else " "
        lines.append(f"{rank:>4}  {r['index']:>5}  {r['relevance_score']:>9.6f}{mark} {text}")
    if any(r["truncated"] for r in results):
        lines.append(f"* truncated to {max_length} tokens; --windows scores the whole document")
    return "\n".join(lines)


def run(args) -> int:
    documents = gather_documents(args)
    output = OutputFile(args.output) if args.output else None  # a bad path fails now, not after the scoring
    try:
        text = _ranking(args, documents)
        if output is not None:
            output.write(text + "\n")
        else:
            print(text)
    finally:
        if output is not None:
            output.discard()
    return 0


def _ranking(args, documents: list[str]) -> str:
    reranker = load_reranker(args)
    scores = reranker.score_documents(
        args.query,
        documents,
        batch_size=args.batch_size,
        raw_scores=args.raw_scores,
        windows=args.windows,
        window_overlap=args.window_overlap,
    )
    if args.json:  # the answer POST /v1/rerank gives, from the same types (xlmr_np.api)
        from ..api import encode, rerank_response

        echoed = [{"text": document} for document in documents]
        return encode(rerank_response(args.model, scores, echoed, top_n=args.top_n)).decode("utf-8")
    width = None if args.output else shutil.get_terminal_size((100, 20)).columns  # a file gets whole documents
    return table(scores.ranked(documents, top_n=args.top_n), args.raw_scores, reranker.max_length, width)
