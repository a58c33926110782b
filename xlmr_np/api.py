"""The /v1/rerank wire format (Cohere/Jina-compatible): request validation and response building.

Request:  {"model": str?, "query": str, "documents": [str | {"text": str}], "top_n": int?,
           "return_documents": bool? (default true), "raw_scores": bool? (default false)}
Response: {"model": str, "results": [{"index", "relevance_score", "truncated", "document": {"text"}}],
           "usage": {"total_tokens": int}}
relevance_score is the float64 sigmoid of the model's logit, in (0, 1), as the hosted APIs return;
"raw_scores": true (the name TEI uses) returns the logit instead. Unknown fields are ignored, so
clients that send provider-specific options still work.

Every invalid request raises ApiError with an HTTP status and the JSON path of the offending field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .errors import InputError
from .ranking import DocumentScores, check_documents, check_query

DEFAULT_MAX_DOCUMENTS = 1000  # per request: bounds the work (and memory) one request can ask for
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024  # 1000 documents of ~8 KB each


class ApiError(Exception):
    """A request the server refuses: HTTP status, message, and the field it concerns (None: the request)."""

    def __init__(self, status: int, message: str, field: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.kind = kind

    def body(self) -> dict:
        return {"error": {"type": self.kind, "message": self.message, "field": self.field}}


@dataclass(frozen=True)
class RerankRequest:
    query: str
    documents: list[str]
    top_n: int | None
    return_documents: bool
    raw_scores: bool


def _json_type(value) -> str:
    """The JSON name of a parsed value's type, for messages ("got number")."""
    names = {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _optional(body: dict, field: str, kind, default, check=lambda v: True, wanted: str = ""):
    value = body.get(field)
    if value is None:
        return default
    if isinstance(value, bool) is not (kind is bool) or not isinstance(value, kind) or not check(value):
        raise ApiError(400, f"{field} must be {wanted}, got {_json_type(value)} {json.dumps(value)[:40]}", field)
    return value


def _document_text(i: int, document) -> str:
    if isinstance(document, dict):
        if not isinstance(document.get("text"), str):
            raise ApiError(400, f"documents[{i}].text must be a string, got {_json_type(document.get('text'))}",
                           f"documents[{i}].text")
        return document["text"]
    if not isinstance(document, str):
        raise ApiError(400, f'documents[{i}] must be a string or {{"text": string}}, got {_json_type(document)}',
                       f"documents[{i}]")
    return document


def _shared_rule(check, *values) -> None:
    """Apply an input check of the Python API (the same rules as the CLI) and answer 400 if it fails."""
    try:
        check(*values)
    except InputError as e:
        raise ApiError(400, e.what, e.where or "query") from None


def parse_rerank_request(raw: bytes, served_model: str, max_documents: int = DEFAULT_MAX_DOCUMENTS) -> RerankRequest:
    """Validate a request body (JSON whatever the Content-Type: `curl -d` sends a form type)."""
    try:
        body = json.loads(raw)
    except ValueError as e:  # JSONDecodeError, or UnicodeDecodeError for bytes that are not UTF-8/16/32
        raise ApiError(400, f"the request body is not valid JSON ({e})", "body") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {_json_type(body)}", "body")
    model = body.get("model")
    if model is not None and model != served_model:
        raise ApiError(404, f"model {json.dumps(model)[:80]} is not served here; this server serves "
                            f"{json.dumps(served_model)}", "model", kind="model_not_found")
    if "query" not in body or body["query"] is None:
        raise ApiError(400, "query is required", "query")
    query = body["query"]
    if not isinstance(query, str):
        raise ApiError(400, f"query must be a non-empty string, got {_json_type(query)}", "query")
    _shared_rule(check_query, query)
    if "documents" not in body or body["documents"] is None:
        raise ApiError(400, "documents is required", "documents")
    documents = body["documents"]
    if not isinstance(documents, list) or not documents:
        raise ApiError(400, f"documents must be a non-empty array, got {_json_type(documents)}", "documents")
    if len(documents) > max_documents:
        raise ApiError(413, f"documents has {len(documents)} entries; this server accepts at most {max_documents} "
                            f"per request (xlmr-np serve --max-documents)", "documents")
    texts = [_document_text(i, d) for i, d in enumerate(documents)]
    _shared_rule(check_documents, query, texts)
    return RerankRequest(
        query=query,
        documents=texts,
        top_n=_optional(body, "top_n", int, None, lambda v: v >= 1, "a positive integer"),
        return_documents=_optional(body, "return_documents", bool, True, wanted="a boolean"),
        raw_scores=_optional(body, "raw_scores", bool, False, wanted="a boolean"),
    )


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
