"""The rerank wire format, typed, with no web framework: every JSON answer of `xlmr-np serve` and what
`xlmr-np rerank --json` prints. Each class here is the one definition of its shape: `wire()` turns it into
the JSON object, and xlmr_np.serve derives its OpenAPI schema from the same classes (pydantic reads a
stdlib dataclass and its field docstrings; the core install needs no pydantic).

    >>> response = rerank_response("BAAI/bge-reranker-base", scores, [{"text": d} for d in documents])
    >>> encode(response)
    b'{"id": "...", "model": "BAAI/bge-reranker-base", "results": [{"index": 1, "relevance_score": 0.99, ...'

A field whose default is None is left out of the JSON while it is None (`document` without
return_documents, TEI's `text` without return_text); every other field is always present.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

from .ranking import DocumentScores

# pydantic (on the server) reads each field's docstring as its description in /openapi.json
DOCUMENTED = {"use_attribute_docstrings": True}


@dataclass(frozen=True)
class RerankResult:
    __pydantic_config__ = DOCUMENTED

    index: int
    """position of the document in the request"""
    relevance_score: float
    """float64 sigmoid of the model's logit, in (0, 1); the logit itself with raw_scores"""
    truncated: bool
    """whether any token of the query or this document was left out"""
    windows: int
    """sequences this document was scored as: 1, or its windows (scored by the best) in window mode"""
    document: dict[str, Any] | None = None
    """with return_documents: {"text": ...} for a string document, an object document whole"""


@dataclass(frozen=True)
class Usage:
    __pydantic_config__ = DOCUMENTED

    total_tokens: int
    """tokens of every sequence scored, special tokens included"""


@dataclass(frozen=True)
class ApiVersion:
    version: str


@dataclass(frozen=True)
class BilledUnits:
    __pydantic_config__ = DOCUMENTED

    search_units: int
    """one per 100 documents, as Cohere bills"""


@dataclass(frozen=True)
class Meta:
    api_version: ApiVersion
    billed_units: BilledUnits


@dataclass(frozen=True)
class RerankResponse:
    """POST /v1/rerank and /v2/rerank (Cohere, Jina), and `xlmr-np rerank --json`."""

    __pydantic_config__ = DOCUMENTED

    id: str
    """a fresh UUID per response"""
    model: str
    """the served model name"""
    results: list[RerankResult]
    """best first; ties in request order"""
    usage: Usage
    meta: Meta


@dataclass(frozen=True)
class TeiRank:
    """One result of POST /rerank (text-embeddings-inference); the answer is a list of them, best first."""

    __pydantic_config__ = DOCUMENTED

    index: int
    """position of the text in the request"""
    score: float
    """float64 sigmoid of the model's logit; the logit itself with raw_scores"""
    text: str | None = None
    """the text, with return_text"""


@dataclass(frozen=True)
class ErrorDetail:
    __pydantic_config__ = DOCUMENTED

    type: str
    """invalid_request_error, authentication_error, model_not_found, overloaded, ..."""
    message: str
    field: str | None
    """the JSON path of the offending field, a header name, or null"""


@dataclass(frozen=True)
class ErrorResponse:
    """Every route but TEI's: the detail under "error", and the message again where Cohere's clients
    ("message") and Jina's ("detail") read it."""

    error: ErrorDetail
    message: str
    detail: str


@dataclass(frozen=True)
class TeiErrorResponse:
    """POST /rerank and GET /info, as text-embeddings-inference answers."""

    __pydantic_config__ = DOCUMENTED

    error: str
    error_type: str
    """Validation, Tokenizer, Overloaded, Backend, Unhealthy, Unauthorized or NotFound"""


@dataclass(frozen=True)
class Info:
    """GET /info: text-embeddings-inference's fields."""

    __pydantic_config__ = DOCUMENTED

    model_id: str
    model_sha: str | None
    model_dtype: str
    model_type: dict[str, Any]
    max_concurrent_requests: int
    max_input_length: int
    """the model's length limit in force: tokens per sequence, special tokens included"""
    max_batch_tokens: int
    max_batch_requests: int | None
    max_client_batch_size: int
    auto_truncate: bool
    tokenization_workers: int | None
    version: str
    sha: str | None
    docker_label: str | None


@dataclass(frozen=True)
class Health:
    __pydantic_config__ = DOCUMENTED

    status: str
    """"ok", or why the server no longer answers reranks (then with status 503)"""
    model: str


@dataclass(frozen=True)
class ModelCard:
    id: str
    object: str
    owned_by: str
    max_length: int


@dataclass(frozen=True)
class ModelList:
    """GET /v1/models, OpenAI-style."""

    object: str
    data: list[ModelCard]


def rerank_response(
    model: str,
    scores: DocumentScores,
    documents: Sequence[dict] | None,
    top_n: int | None = None,
    version: int = 1,
) -> RerankResponse:
    """The /v1 (version 1) or /v2 answer for scored documents. documents: what each result echoes
    ({"text": ...} per string document, an object document whole), or None for no echo."""
    results = [
        RerankResult(
            index=r["index"],
            relevance_score=r["relevance_score"],
            truncated=r["truncated"],
            windows=r["windows"],
            document=None if documents is None else documents[r["index"]],
        )
        for r in scores.ranked(None, top_n=top_n, return_documents=False)
    ]
    return RerankResponse(
        id=str(uuid.uuid4()),
        model=model,
        results=results,
        usage=Usage(total_tokens=scores.total_tokens),
        meta=Meta(
            api_version=ApiVersion(version=str(version)),
            billed_units=BilledUnits(search_units=math.ceil(len(scores.logits) / 100)),
        ),
    )


def tei_ranks(scores: DocumentScores, texts: Sequence[str], return_text: bool) -> list[TeiRank]:
    """POST /rerank's answer: every text, best first."""
    return [
        TeiRank(index=r["index"], score=r["relevance_score"], text=texts[r["index"]] if return_text else None)
        for r in scores.ranked(None, return_documents=False)
    ]


def wire(value):
    """A response (dataclasses, lists of them, plain JSON values) as the JSON value it is sent as; fields
    whose default is None are left out while None."""
    if is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: wire(getattr(value, f.name))
            for f in fields(value)
            if not (f.default is None and getattr(value, f.name) is None)
        }
    if isinstance(value, list):
        return [wire(item) for item in value]
    return value


def encode(value) -> bytes:
    """JSON bytes of `wire(value)`. A NaN or infinity raises ValueError instead of producing invalid JSON, a
    lone surrogate UnicodeEncodeError (a ValueError too) instead of invalid UTF-8."""
    return json.dumps(wire(value), ensure_ascii=False, allow_nan=False).encode("utf-8")
