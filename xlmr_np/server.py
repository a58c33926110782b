"""A local rerank server on the standard library: POST /v1/rerank, GET /health, GET /v1/models,
GET /openapi.json.

http.server's ThreadingHTTPServer answers each connection in its own thread, so health checks and bad
requests are answered while a rerank runs; the model itself runs one request at a time (a lock), since
numpy's BLAS already uses every core for one batch and parallel requests would only compete for them.

Security: binds to 127.0.0.1 unless told otherwise. With an API key every request must carry
`Authorization: Bearer <key>`, compared in constant time (hmac.compare_digest). The key is never logged:
the access log holds the request line and status only, and request headers are never logged.
"""

from __future__ import annotations

import hmac
import ipaddress
import sys
import threading
import traceback
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import __version__
from .api import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_DOCUMENTS, ApiError, encode, parse_rerank_request, rerank_response
from .reranker import Reranker

API_KEY_ENV = "XLMR_NP_API_KEY"


@dataclass(frozen=True)
class ServerSettings:
    model_name: str  # what clients send as "model" and what /v1/models lists
    api_key: str | None = None
    max_documents: int = DEFAULT_MAX_DOCUMENTS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    batch_size: int = 32
    windows: bool = False  # score long documents by their best window instead of truncating them
    window_overlap: int = 64


def openapi_schema(settings: ServerSettings) -> dict:
    """The OpenAPI 3.1 description served at /openapi.json."""
    document = {"oneOf": [{"type": "string"},
                          {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}]}
    error = {"description": "error",
             "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "xlmr-np rerank server", "version": __version__},
        "security": [{"bearer": []}] if settings.api_key else [],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "RerankRequest": {
                    "type": "object", "required": ["query", "documents"],
                    "properties": {
                        "model": {"type": "string", "enum": [settings.model_name]},
                        "query": {"type": "string", "minLength": 1},
                        "documents": {"type": "array", "items": document, "minItems": 1,
                                      "maxItems": settings.max_documents},
                        "top_n": {"type": ["integer", "null"], "minimum": 1},
                        "return_documents": {"type": ["boolean", "null"], "default": True},
                        "raw_scores": {"type": ["boolean", "null"], "default": False,
                                       "description": "relevance_score as the raw logit instead of its sigmoid"},
                    },
                },
                "RerankResponse": {
                    "type": "object", "required": ["model", "results", "usage"],
                    "properties": {
                        "model": {"type": "string"},
                        "results": {"type": "array", "items": {
                            "type": "object", "required": ["index", "relevance_score", "truncated"],
                            "properties": {
                                "index": {"type": "integer"},
                                "relevance_score": {"type": "number",
                                                    "description": "float64 sigmoid of the logit, in (0, 1)"},
                                "truncated": {"type": "boolean"},
                                "document": {"type": "object", "properties": {"text": {"type": "string"}}},
                            }}},
                        "usage": {"type": "object", "properties": {"total_tokens": {"type": "integer"}}},
                    },
                },
                "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                    "type": {"type": "string"}, "message": {"type": "string"},
                    "field": {"type": ["string", "null"]}}}}},
            },
        },
        "paths": {
            "/v1/rerank": {"post": {
                "summary": "Rank documents by relevance to a query (Cohere/Jina-compatible)",
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/RerankRequest"}}}},
                "responses": {
                    "200": {"description": "results, best first", "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/RerankResponse"}}}},
                    **{code: error for code in ("400", "401", "404", "411", "413", "500")},
                },
            }},
            "/health": {"get": {"summary": "liveness", "responses": {"200": {"description": "ok"}}}},
            "/v1/models": {"get": {"summary": "the served model", "responses": {"200": {"description": "ok"}}}},
            "/openapi.json": {"get": {"summary": "this document", "responses": {"200": {"description": "ok"}}}},
        },
    }


class RerankHandler(BaseHTTPRequestHandler):
    """One connection. The server object carries `reranker`, `settings` and `model_lock`."""

    protocol_version = "HTTP/1.1"  # keep-alive; every response carries Content-Length
    server_version = f"xlmr-np/{__version__}"
    timeout = 60  # seconds a client may stall mid-request before its connection is dropped

    def do_GET(self):
        self._answer(self._get)

    def do_POST(self):
        self._answer(self._post)

    def do_PUT(self):
        self._answer(self._not_allowed)

    do_DELETE = do_PATCH = do_PUT

    def _answer(self, route) -> None:
        """Authenticate, route, and turn every failure into a JSON error; nothing a client sends can
        escape this method."""
        try:
            self._authenticate()
            status, body = route()
        except ApiError as e:
            status, body = e.status, e.body()
            self.close_connection = True  # the body may be unread: do not parse it as the next request
        except FloatingPointError as e:  # non-finite logits: broken weights, never a score
            error = ApiError(500, f"the model produced a non-finite score ({e})", kind="server_error")
            status, body = 500, error.body()
        except Exception:
            traceback.print_exc(file=sys.stderr)
            status, body = 500, ApiError(500, "internal error", kind="server_error").body()
        try:
            payload = encode(body)
        except ValueError:  # NaN or infinity in a response: an error, never sent as a number
            status, payload = 500, encode(ApiError(500, "the model produced a non-finite score",
                                                   kind="server_error").body())
        self.send_response(status)
        if status == 401:
            self.send_header("WWW-Authenticate", "Bearer")
        if status == 405:
            self.send_header("Allow", "GET" if self.path.split("?")[0] in self._GET_ROUTES else "POST")
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _authenticate(self) -> None:
        key = self.server.settings.api_key
        if key is None:
            return
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'", "Authorization",
                           kind="authentication_error")

    _GET_ROUTES = ("/health", "/v1/models", "/openapi.json")

    def _get(self):
        path = self.path.split("?")[0]
        settings = self.server.settings
        if path == "/health":
            return 200, {"status": "ok", "model": settings.model_name}
        if path == "/v1/models":
            return 200, {"object": "list", "data": [{
                "id": settings.model_name, "object": "model", "owned_by": "xlmr-np",
                "max_length": self.server.reranker.max_length}]}
        if path == "/openapi.json":
            return 200, openapi_schema(settings)
        if path == "/v1/rerank":
            return self._not_allowed()
        raise ApiError(404, f"no route {path}; try POST /v1/rerank, GET /health, /v1/models, /openapi.json",
                       kind="not_found")

    def _post(self):
        path = self.path.split("?")[0]
        if path != "/v1/rerank":
            if path in self._GET_ROUTES:
                return self._not_allowed()
            raise ApiError(404, f"no route {path}; POST /v1/rerank", kind="not_found")
        settings = self.server.settings
        request = parse_rerank_request(self._read_body(), settings.model_name, settings.max_documents)
        with self.server.model_lock:
            scores = self.server.reranker.score_documents(
                request.query, request.documents, batch_size=settings.batch_size, raw_scores=request.raw_scores,
                windows=settings.windows, window_overlap=settings.window_overlap, progress=False)
        return 200, rerank_response(settings.model_name, request, scores)

    def _not_allowed(self):
        raise ApiError(405, f"{self.command} is not allowed on {self.path.split('?')[0]}", kind="method_not_allowed")

    def _read_body(self) -> bytes:
        limit = self.server.settings.max_body_bytes
        length = self.headers.get("Content-Length")
        if length is None:
            raise ApiError(411, "a Content-Length header is required", "Content-Length")
        if not length.isdigit():
            raise ApiError(400, f"Content-Length must be a number of bytes, got {length[:40]!r}", "Content-Length")
        if int(length) > limit:
            raise ApiError(413, f"the body has {length} bytes; this server accepts at most {limit} "
                                f"(xlmr-np serve --max-body-bytes)", "body")
        return self.rfile.read(int(length))

    def send_error(self, code, message=None, explain=None):
        """http.server's own errors (malformed request line, oversized headers) as JSON too."""
        self.close_connection = True
        payload = encode(ApiError(code, message or self.responses.get(code, ("error",))[0]).body())
        self.send_response(code, message)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(payload)


class RerankServer(ThreadingHTTPServer):
    daemon_threads = True  # a stalled client never keeps the process alive
    request_queue_size = 128  # connections waiting to be accepted (the stdlib default is 5)

    def __init__(self, address, reranker: Reranker, settings: ServerSettings):
        self.reranker = reranker
        self.settings = settings
        self.model_lock = threading.Lock()
        super().__init__(address, RerankHandler)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
