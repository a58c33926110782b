"""The rerank wire format's pieces that need no web framework: ApiError, and the Jina/Cohere-style response
`xlmr-np rerank --json` prints (the server, xlmr_np.serve, validates requests with the models in
xlmr_np.serve.schema and answers in this shape too).

Response: {"model": str, "results": [{"index", "relevance_score", "truncated", "document": {"text"}}],
           "usage": {"total_tokens": int}}
relevance_score is the float64 sigmoid of the model's logit, in (0, 1), as the hosted APIs return; raw
scores give the logit instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .ranking import DocumentScores

DEFAULT_MAX_DOCUMENTS = 1000  # per request: bounds the work (and memory) one request can ask for
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024  # 1000 documents of ~8 KB each


class ApiError(Exception):
    """A request the server refuses: HTTP status, message, and the field it concerns (None: the request)."""

    def __init__(
        self,
        status: int,
        message: str,
        field: str | None = None,
        kind: str = "invalid_request_error",
        headers: dict | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.kind = kind
        self.headers = headers or {}  # extra response headers (Retry-After, Allow)

    def body(self) -> dict:
        return {"error": {"type": self.kind, "message": self.message, "field": self.field}}


@dataclass(frozen=True)
class RerankRequest:
    query: str
    documents: list[str]
    top_n: int | None
    return_documents: bool
    raw_scores: bool


def rerank_response(model: str, request: RerankRequest, scores: DocumentScores) -> dict:
    results = []
    for r in scores.ranked(request.documents, top_n=request.top_n, return_documents=request.return_documents):
        result = {"index": r["index"], "relevance_score": r["relevance_score"], "truncated": r["truncated"]}
        if request.return_documents:
            result["document"] = {"text": r["document"]}
        results.append(result)
    return {"model": model, "results": results, "usage": {"total_tokens": scores.total_tokens}}


def encode(body: dict) -> bytes:
    """JSON bytes; a NaN or infinity anywhere raises ValueError instead of producing invalid JSON."""
    return json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
