"""Errors in each client's shape, and answers sent over raw ASGI (no web framework is imported here).

Every refusal is an ApiError; `error_body` puts it in the shape the route's clients read: TEI's
{error, error_type} on /rerank and /info, elsewhere {"error": {type, message, field}} plus "message"
(Cohere) and "detail" (Jina). `send_answer` writes any answer in slices, so a large one is handed to the
connection as the client reads it rather than all at once (see admission.py: an answer's memory is
counted until it is sent).
"""

from __future__ import annotations

import logging

from ..api import ErrorDetail, ErrorResponse, TeiErrorResponse, encode

log = logging.getLogger("xlmr_np.serve")

JSON = "application/json; charset=utf-8"
TEI_PATHS = ("/rerank", "/info")
ANSWER_SLICE = 64 * 1024  # bytes per send: uvicorn waits for the client to read below this before the next
TEI_ERROR_TYPES = {
    400: "Validation",
    401: "Unauthorized",
    403: "Unauthorized",
    404: "NotFound",
    405: "Validation",
    408: "Validation",
    411: "Validation",
    413: "Validation",
    429: "Overloaded",
    499: "Validation",
    503: "Overloaded",
}


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
        self.headers = headers or {}  # extra response headers (Retry-After, Connection)


def busy(message: str, status: int = 429, kind: str = "overloaded") -> ApiError:
    """A refusal the client should retry shortly: 429 (this server is full now) or 503, with Retry-After."""
    return ApiError(status, message, kind=kind, headers={"Retry-After": "1"})


def error_body(path: str, error: ApiError) -> ErrorResponse | TeiErrorResponse:
    if path in TEI_PATHS:
        return TeiErrorResponse(error=error.message, error_type=TEI_ERROR_TYPES.get(error.status, "Backend"))
    detail = ErrorDetail(type=error.kind, message=error.message, field=error.field)
    return ErrorResponse(error=detail, message=error.message, detail=error.message)


def error_headers(error: ApiError) -> dict:
    headers = dict(error.headers)
    if error.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return headers


def payload(value, path: str) -> tuple[int | None, bytes]:
    """(None, the JSON bytes of a response), or (500, an error body in the route's shape) if it cannot be
    encoded. Requests are checked so that nothing echoed can fail (no NaN, no lone surrogate), and scores
    are checked finite before an answer is built: a failure here is a bug, and is logged as one."""
    try:
        return None, encode(value)
    except ValueError:
        log.exception("an answer could not be encoded as JSON")
        error = ApiError(500, "internal error: the answer is not valid JSON", kind="server_error")
        return 500, encode(error_body(path, error))


def raw_headers(body: bytes, headers: dict | None = None, content_type: str = JSON) -> list[tuple[bytes, bytes]]:
    raw = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    return raw + [(k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in (headers or {}).items()]


async def send_body(send, status: int, raw: list[tuple[bytes, bytes]], body: bytes) -> None:
    """One complete answer over ASGI, its body in slices of ANSWER_SLICE bytes: uvicorn waits until the
    client has read the previous slices (below its 64 KiB high-water mark) before taking the next, so the
    app, and the request's Ticket, live until the answer is nearly all sent."""
    await send({"type": "http.response.start", "status": status, "headers": raw})
    for start in range(0, max(len(body), 1), ANSWER_SLICE):
        last = start + ANSWER_SLICE >= len(body)
        await send({"type": "http.response.body", "body": body[start : start + ANSWER_SLICE], "more_body": not last})


async def send_error(send, path: str, error: ApiError) -> None:
    status, body = payload(error_body(path, error), path)
    await send_body(send, status or error.status, raw_headers(body, error_headers(error)), body)
