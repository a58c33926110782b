"""POST /v1/rerank (Cohere v1, Jina) and /v2/rerank (Cohere v2): request -> EncodeOptions -> scores ->
xlmr_np.api.RerankResponse.

A new per-request option touches schema.CohereRequest (its field) and `options` below (what it means).
"""

from __future__ import annotations

import json

from fastapi import Request

from ..api import RerankResponse, rerank_response
from ..tokenizer import EncodeOptions
from . import schema
from .admission import Scored, Service, Ticket, read_json, score
from .errors import ApiError


def options(service: Service, body: schema.CohereRequest) -> EncodeOptions:
    """The request's long-document options: max_chunks_per_doc 1 truncates (as --truncation says), n > 1
    scores the best of a document's first n windows, absent follows --windows (unlimited windows) or
    truncates; max_tokens_per_doc cuts the document first and keeps the query whole."""
    chunks = body.max_chunks_per_doc
    windows = service.settings.windows if chunks is None else chunks > 1
    return service.reranker.call_options(
        windows=windows,
        max_windows=chunks if windows and chunks is not None else None,
        max_document_tokens=body.max_tokens_per_doc,
        window_overlap=service.settings.window_overlap,
    )


def document_text(document, index: int, rank_fields: list[str]) -> str:
    """What is scored of one document: a string itself; of an object, its one rank field's value, or
    "name: value" lines for several."""
    if isinstance(document, str):
        return document
    values = []
    for name in rank_fields:
        value = document.get(name)
        if not isinstance(value, str):
            got = "missing" if name not in document else f"{schema.json_type(value)}"
            raise ApiError(
                400,
                f"documents[{index}].{name} must be a string (rank_fields: {rank_fields}), got {got}",
                f"documents[{index}].{name}",
            )
        values.append(value)
    return values[0] if len(values) == 1 else "\n".join(f"{n}: {v}" for n, v in zip(rank_fields, values))


def check_model(service: Service, model: str | None) -> None:
    if model is not None and model != service.settings.model_name:
        raise ApiError(
            404,
            f"model {json.dumps(model)[:80]} is not served here; this server serves "
            f"{json.dumps(service.settings.model_name)}",
            "model",
            kind="model_not_found",
        )


def check_count(service: Service, n: int, field: str) -> None:
    if n > service.settings.max_documents:
        raise ApiError(
            413,
            f"{field} has {n} entries; this server accepts at most {service.settings.max_documents} "
            "per request (xlmr-np serve --max-documents)",
            field,
        )


async def rerank(service: Service, request: Request, ticket: Ticket, version: int) -> tuple[RerankResponse, Scored]:
    ticket.enter()
    body = schema.validate(schema.CohereRequest, await read_json(request, service, ticket))
    check_model(service, body.model)
    check_count(service, len(body.documents), "documents")
    rank_fields = body.rank_fields or ["text"]
    texts = [document_text(d, i, rank_fields) for i, d in enumerate(body.documents)]
    scored = await score(service, request, ticket, body.query, texts, options(service, body), bool(body.raw_scores))
    return_documents = body.return_documents if body.return_documents is not None else version == 1
    echoed = [{"text": d} if isinstance(d, str) else d for d in body.documents] if return_documents else None
    response = rerank_response(service.settings.model_name, scored.scores, echoed, top_n=body.top_n, version=version)
    return response, scored
