"""Reranking one query against many documents: validation, per-document scores, and the ranked list.

The ranked list looks like the hosted rerank APIs' results (Cohere, Jina) and sentence-transformers'
CrossEncoder.rank: `index` points into the caller's documents, `relevance_score` is by default the
float64 sigmoid of the logit (0..1, what hosted APIs return), or the raw logit on request.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .tokenizer import check_text

# auto progress bars only for jobs of at least this many sequences: a few batches of the default size.
PROGRESS_MIN_SEQUENCES = 256


def check_query(query) -> str:
    """The rule every front end shares (Python API, CLI, HTTP server): a query is a str with at least one
    non-whitespace character and only real characters (see tokenizer.unicode_problem)."""
    check_text(query, "query")
    if not query.strip():
        raise InputError(
            f"query must be a non-empty string, got {query!r:.20} (only whitespace)"
            if query
            else "query must be a non-empty string, got an empty one"
        )
    return query


def check_documents(query, documents) -> list[str]:
    """Validate a query (check_query) and a non-empty list of document strings, naming the first bad one.

    A document may be empty: it is scored like any other (hosted rerank APIs accept one too).
    """
    check_query(query)
    if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
        raise InputError(f"documents must be a list of str, got {type(documents).__name__}")
    if len(documents) == 0:
        raise InputError("documents is empty: give at least one document")
    for i, document in enumerate(documents):
        if not isinstance(document, str):
            raise InputError(f"documents[{i}] must be a str, got {type(document).__name__}")
        check_text(document, "document", where=f"documents[{i}]")
    return list(documents)


def check_top_n(top_n) -> int | None:
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        raise InputError(f"top_n must be a positive int or None, got {top_n!r}")
    return top_n


@dataclass
class DocumentScores:
    """Scores of one query against documents, in the documents' order."""

    logits: np.ndarray  # [N] float64: the document's logit (its best window's, in window mode)
    relevance: np.ndarray  # [N] float64: what is reported as relevance_score (sigmoid64(logits) or logits)
    truncated: list[bool]  # per document: was any token of the query or the document left out?
    windows: list[int]  # per document: sequences scored (1 unless window mode split it)
    total_tokens: int  # tokens of every sequence scored, special tokens included

    def ranked(self, documents, top_n=None, return_documents: bool = True) -> list[dict]:
        """Results best first: {index, relevance_score, truncated, windows[, document]}.

        Ordered by logit (finer than a saturated sigmoid), ties by input order, so the ranking never
        depends on whether raw scores were asked for.
        """
        top_n = check_top_n(top_n)
        order = sorted(range(len(self.logits)), key=lambda i: -self.logits[i])[:top_n]
        results = []
        for i in order:
            result = {
                "index": i,
                "relevance_score": float(self.relevance[i]),
                "truncated": self.truncated[i],
                "windows": self.windows[i],
            }
            if return_documents:
                result["document"] = documents[i]
            results.append(result)
        return results


def progress_bar(total: int, enabled: bool | None):
    """A tqdm bar on stderr, or a bar that shows nothing. enabled=None: only when stderr is a terminal and
    the job has at least PROGRESS_MIN_SEQUENCES sequences. HF_HUB_DISABLE_PROGRESS_BARS=1 turns it off too.

    tqdm is imported only for a bar that shows: importing it in a Jupyter kernel without ipywidgets prints
    a TqdmWarning into the notebook."""
    if enabled is None:
        enabled = total >= PROGRESS_MIN_SEQUENCES and sys.stderr.isatty()
    if not enabled:
        return _NoBar()
    from huggingface_hub.utils import tqdm

    return tqdm(total=total, unit="seq", desc="scoring", file=sys.stderr)


class _NoBar:
    """What the scoring loop asks of a bar, doing nothing."""

    disable = True  # as a disabled tqdm bar says

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def update(self, n: int = 1) -> None:
        return None
