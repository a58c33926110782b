"""The ASGI app: routes, the key and origin guard, errors in each client's shape, metrics.

Routes (see docs/server.md):
    POST /v1/rerank   Cohere v1 and Jina          POST /v2/rerank   Cohere v2
    POST /rerank      text-embeddings-inference   GET /info         text-embeddings-inference
    GET  /health, /metrics, /v1/models, /openapi.json, /docs

Requests are validated by the models in schema.py, tokenized on a worker thread, and scored by the shared
Batcher; each answer carries x-queue-time, x-inference-time and x-total-time (milliseconds) as TEI's do.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import math
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware

from .. import __version__
from ..api import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_DOCUMENTS, ApiError, encode
from ..ranking import DocumentScores
from ..reranker import Reranker, document_scores
from . import schema
from .batcher import Batcher, Job
from .metrics import Metrics

TEI_PATHS = ("/rerank", "/info")
PUBLIC_PATHS = ("/health", "/info", "/metrics")  # reachable without the key unless --private-health
ROUTES = ("/v1/rerank", "/v2/rerank", "/rerank", "/info", "/health", "/metrics", "/v1/models", "/openapi.json", "/docs")
JSON = "application/json; charset=utf-8"
INLINE_CHARACTERS = 16_384  # requests this small are tokenized on the event loop, larger ones on a worker thread


@dataclass(frozen=True)
class ServerSettings:
    model_name: str  # what clients send as "model" and what /v1/models and /info list
    api_key: str | None = None
    max_documents: int = DEFAULT_MAX_DOCUMENTS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_batch_tokens: int = 16384  # padded tokens per forward pass: 32 sequences of 512
    max_concurrent_requests: int = 512  # rerank requests queued or running; beyond: 429
    request_timeout: float = 60.0  # seconds from the request's arrival to its answer
    windows: bool = False  # default for long documents: score the best window instead of truncating
    window_overlap: int = 64
    private_health: bool = False  # /health, /info and /metrics need the key too
    cors_origins: tuple[str, ...] = ()  # browser origins allowed (CORS); none by default
    allowed_hosts: tuple[str, ...] = ()  # Host names accepted without a key, besides IPs and localhost
    model_revision: str | None = None


class Server:
    """What the routes share: the model, the settings, the batcher, the metrics, the in-flight count."""

    def __init__(self, reranker: Reranker, settings: ServerSettings):
        self.reranker = reranker
        self.settings = settings
        self.metrics = Metrics()
        self.batcher = Batcher(reranker.logits_of, settings.max_batch_tokens, self.metrics)
        self.in_flight = 0


# ---------------------------------------------------------------------------------------------- errors


TEI_ERROR_TYPES = {
    400: "Validation",
    401: "Unauthorized",
    403: "Unauthorized",
    404: "NotFound",
    408: "Validation",
    411: "Validation",
    413: "Validation",
    429: "Overloaded",
    503: "Overloaded",
}


def error_body(path: str, error: ApiError) -> dict:
    """The error in the shape the route's clients read: TEI's {error, error_type} on TEI routes; elsewhere
    {"error": {type, message, field}} plus "message" (Cohere) and "detail" (Jina)."""
    if path in TEI_PATHS:
        return {"error": error.message, "error_type": TEI_ERROR_TYPES.get(error.status, "Backend")}
    return {**error.body(), "message": error.message, "detail": error.message}


def json_response(body, status: int = 200, headers: dict | None = None) -> Response:
    try:
        payload = encode(body)
    except ValueError:  # NaN or infinity: an error, never sent as a number
        status, payload = (
            500,
            encode(
                {"error": {"type": "server_error", "field": None, "message": "the model produced a non-finite score"}}
            ),
        )
    return Response(payload, status_code=status, headers=headers, media_type=JSON)


def error_response(path: str, error: ApiError) -> Response:
    headers = dict(error.headers)
    if error.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return json_response(error_body(path, error), error.status, headers)


# ---------------------------------------------------------------------------------------------- the guard


def host_name(host: str) -> str:
    """The name of a Host header without its port: "[::1]:8000" -> "::1", "localhost:80" -> "localhost"."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def refusal(settings: ServerSettings, path: str, headers: Headers) -> ApiError | None:
    """Why a request may not reach a route, or None.

    Without a key the server trusts whoever can connect, so it refuses what only a web page would send: an
    Origin (a cross-site POST of text/plain needs no preflight) not allowed by --cors-allow-origin, and a Host
    that is a name other than localhost or an --allowed-host (DNS rebinding points a page's own name at this
    address; IP literals cannot be rebound). With a key, every route but the public ones needs it."""
    if settings.api_key is None:
        name = host_name(headers.get("host", "localhost")).lower()
        if not (is_ip(name) or name == "localhost" or name in settings.allowed_hosts):
            return ApiError(
                403,
                f"Host {name!r} is not accepted by a server without an API key (it could be a "
                "rebound DNS name); address it by IP or localhost, or start it with "
                "--allowed-host NAME or an API key",
                "Host",
                kind="forbidden",
            )
        origin = headers.get("origin")
        if origin is not None and origin not in settings.cors_origins:
            return ApiError(
                403,
                f"requests from web pages (Origin {origin[:80]!r}) are refused by a server without "
                "an API key; see --cors-allow-origin",
                "Origin",
                kind="forbidden",
            )
        return None
    if path in PUBLIC_PATHS and not settings.private_health:
        return None
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.api_key.encode()):
        return ApiError(
            401,
            "missing or wrong API key: send 'Authorization: Bearer <key>'",
            "Authorization",
            kind="authentication_error",
        )
    return None


class Guard:
    """Pure ASGI middleware around the app: stamps the arrival time, refuses what `refusal` refuses, and
    counts every request by route and status (unknown paths as "other")."""

    def __init__(self, app, server: Server):
        self.app = app
        self.server = server

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        scope.setdefault("state", {})["started"] = started
        path = scope["path"]
        status = 500

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            refused = refusal(self.server.settings, path, Headers(scope=scope))
            if refused is not None:
                await error_response(path, refused)(scope, receive, send_status)
            else:
                await self.app(scope, receive, send_status)
        finally:
            route = path if path in ROUTES else "other"
            self.server.metrics.requests.labels(route, str(status)).inc()
            self.server.metrics.request_seconds.labels(route).observe(time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------- bodies


async def read_json(request: Request, settings: ServerSettings):
    """The body parsed as JSON, whatever the Content-Type (`curl -d` sends a form type), within the
    request's deadline and the body limit."""
    length = request.headers.get("content-length")
    if length is None and "chunked" not in request.headers.get("transfer-encoding", "").lower():
        raise ApiError(411, "a Content-Length header is required", "Content-Length")
    if length is not None and int(length) > settings.max_body_bytes:  # h11 has checked it is digits
        raise ApiError(
            413,
            f"the body has {length} bytes; this server accepts at most {settings.max_body_bytes} "
            "(xlmr-np serve --max-body-bytes)",
            "body",
            headers={"Connection": "close"},
        )

    async def read() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > settings.max_body_bytes:
                raise ApiError(
                    413,
                    f"the body has more than {settings.max_body_bytes} bytes (xlmr-np serve --max-body-bytes)",
                    "body",
                    headers={"Connection": "close"},
                )
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        raw = await asyncio.wait_for(read(), remaining(request, settings))
    except asyncio.TimeoutError:
        raise ApiError(
            408,
            f"the body did not arrive within {settings.request_timeout:g} s (xlmr-np serve --request-timeout)",
            "body",
            headers={"Connection": "close"},
        ) from None
    try:
        return json.loads(raw)
    except RecursionError:
        raise ApiError(400, "the request body is nested too deeply to be a rerank request", "body") from None
    except ValueError as e:  # JSONDecodeError, or UnicodeDecodeError for bytes that are not UTF-8/16/32
        raise ApiError(400, f"the request body is not valid JSON ({e})", "body") from None


def remaining(request: Request, settings: ServerSettings) -> float:
    return max(0.0, request.state.started + settings.request_timeout - time.perf_counter())


# ---------------------------------------------------------------------------------------------- scoring


@dataclass
class Scored:
    scores: DocumentScores
    job: Job

    def headers(self, request: Request) -> dict:
        total = time.perf_counter() - request.state.started
        return {
            "x-queue-time": f"{self.job.queue_seconds * 1e3:.3f}",
            "x-inference-time": f"{self.job.inference_seconds * 1e3:.3f}",
            "x-total-time": f"{total * 1e3:.3f}",
            "x-compute-tokens": str(self.scores.total_tokens),
        }


async def _disconnected(receive) -> None:
    """Returns when the client goes away (the body has been read, so the next message is the disconnect)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def score(
    server: Server, request: Request, query: str, texts: list[str], raw_scores: bool, encode, refuse=None, **encoding
) -> Scored:
    """Tokenize on a worker thread (encode: Reranker.encode_documents or alike), let `refuse(encoded)` raise
    before anything is scored, queue the sequences, wait for them (or the deadline, or the client leaving)."""
    if len(query) + sum(map(len, texts)) <= INLINE_CHARACTERS:  # under a millisecond: not worth two thread hops
        encoded, owners = encode(query, texts, **encoding)
    else:
        encoded, owners = await run_in_threadpool(encode, query, texts, **encoding)
    if refuse is not None:
        await refuse(encoded, owners)
    job = server.batcher.submit(encoded)
    watcher = asyncio.ensure_future(_disconnected(request.receive))
    try:
        done, _ = await asyncio.wait(
            {job.future, watcher}, timeout=remaining(request, server.settings), return_when=asyncio.FIRST_COMPLETED
        )
    except asyncio.CancelledError:  # shutdown's grace period ran out
        server.batcher.cancel(job)
        raise
    finally:
        watcher.cancel()
    if not job.future.done():
        server.batcher.cancel(job)
        if watcher in done:
            server.metrics.abandoned.inc()
            raise ApiError(499, "the client closed the connection", kind="client_closed_request")
        raise ApiError(
            503,
            f"the request did not finish within {server.settings.request_timeout:g} s "
            "(xlmr-np serve --request-timeout)",
            kind="timeout",
            headers={"Retry-After": "1"},
        )
    try:
        logits = job.future.result()  # [S]
    except FloatingPointError as e:
        raise ApiError(500, f"the model produced a non-finite score ({e})", kind="server_error") from None
    scores = document_scores(len(texts), encoded, owners, logits, raw_scores)
    m = server.metrics
    m.documents.inc(len(texts))
    m.tokens.inc(scores.total_tokens)
    m.truncated.inc(sum(scores.truncated))
    m.queue_seconds.observe(job.queue_seconds)
    m.inference_seconds.observe(job.inference_seconds)
    return Scored(scores, job)


def long_documents(settings: ServerSettings, max_chunks_per_doc: int | None, max_tokens_per_doc: int | None) -> dict:
    """A request's long-document options -> Reranker.encode_documents arguments.

    max_chunks_per_doc 1 truncates (as --truncation says), n > 1 scores the best of the first n windows,
    absent follows --windows (unlimited windows) or truncates; max_tokens_per_doc cuts the document first and
    keeps the query whole."""
    windows = settings.windows if max_chunks_per_doc is None else max_chunks_per_doc > 1
    encoding = {"windows": windows, "window_overlap": settings.window_overlap}
    if windows and max_chunks_per_doc is not None:
        encoding["max_windows"] = max_chunks_per_doc
    if max_tokens_per_doc is not None:
        encoding["max_document_tokens"] = max_tokens_per_doc
        if not windows:
            encoding["max_windows"] = 1
    return encoding


class Admission:
    """Counts a rerank request in flight for its whole life; beyond --max-concurrent-requests: 429."""

    def __init__(self, server: Server):
        self.server = server

    def __enter__(self):
        if self.server.in_flight >= self.server.settings.max_concurrent_requests:
            raise ApiError(
                429,
                f"{self.server.in_flight} requests are in flight, the most this server takes "
                "(xlmr-np serve --max-concurrent-requests); retry shortly",
                kind="overloaded",
                headers={"Retry-After": "1"},
            )
        self.server.in_flight += 1
        self.server.metrics.in_flight.set(self.server.in_flight)

    def __exit__(self, *exc):
        self.server.in_flight -= 1
        self.server.metrics.in_flight.set(self.server.in_flight)


# ---------------------------------------------------------------------------------------------- formats


def document_text(document, index: int, rank_fields: list[str]) -> str:
    """What is scored of one Cohere/Jina document: a string itself; of an object, its one rank field's
    value, or "name: value" lines for several."""
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
        try:
            schema._text(value)
        except ValueError as e:
            raise ApiError(400, f"documents[{index}].{name} {e}", f"documents[{index}].{name}") from None
        values.append(value)
    return values[0] if len(values) == 1 else "\n".join(f"{n}: {v}" for n, v in zip(rank_fields, values))


def pair_length(reranker: Reranker, query: str, text: str) -> int:
    """Tokens of the whole (query, text) pair, special tokens included: its windows without overlap, less
    the template and query each window repeats (the query as capped for windows)."""
    overhead = len(reranker.tokenizer.encode_windows([(query, "")], 0)[0][0].ids)  # <s> query </s></s> </s>
    windows, _ = reranker.tokenizer.encode_windows([(query, text)], 0)
    return overhead + sum(len(w.ids) - overhead for w in windows)


def check_model(server: Server, model: str | None) -> None:
    if model is not None and model != server.settings.model_name:
        raise ApiError(
            404,
            f"model {json.dumps(model)[:80]} is not served here; this server serves "
            f"{json.dumps(server.settings.model_name)}",
            "model",
            kind="model_not_found",
        )


def check_count(server: Server, n: int, field: str) -> None:
    if n > server.settings.max_documents:
        raise ApiError(
            413,
            f"{field} has {n} entries; this server accepts at most {server.settings.max_documents} "
            "per request (xlmr-np serve --max-documents)",
            field,
        )


async def cohere_rerank(server: Server, request: Request, version: int) -> Response:
    with Admission(server):
        body = schema.validate(schema.RerankRequest, await read_json(request, server.settings))
        check_model(server, body.model)
        check_count(server, len(body.documents), "documents")
        rank_fields = body.rank_fields or ["text"]
        texts = [document_text(d, i, rank_fields) for i, d in enumerate(body.documents)]
        encoding = long_documents(server.settings, body.max_chunks_per_doc, body.max_tokens_per_doc)
        scored = await score(
            server, request, body.query, texts, bool(body.raw_scores), server.reranker.encode_documents, **encoding
        )
    return_documents = body.return_documents if body.return_documents is not None else version == 1
    results = []
    for r in scored.scores.ranked(texts, top_n=body.top_n, return_documents=False):
        result = {"index": r["index"], "relevance_score": r["relevance_score"], "truncated": r["truncated"]}
        if return_documents:
            document = body.documents[r["index"]]
            result["document"] = {"text": document} if isinstance(document, str) else document
        results.append(result)
    return json_response(
        {
            "id": str(uuid.uuid4()),
            "model": server.settings.model_name,
            "results": results,
            "usage": {"total_tokens": scored.scores.total_tokens},
            "meta": {
                "api_version": {"version": str(version)},
                "billed_units": {"search_units": math.ceil(len(texts) / 100)},
            },
        },
        headers=scored.headers(request),
    )


async def tei_rerank(server: Server, request: Request) -> Response:
    with Admission(server):
        body = schema.validate(schema.TeiRerankRequest, await read_json(request, server.settings))
        check_count(server, len(body.texts), "texts")
        if body.truncation_direction.lower() == "left":  # keep the document's end, and the query whole

            def encode(query, texts):
                pairs = [(query, text) for text in texts]
                return server.reranker.tokenizer.encode_windows(pairs, 0, max_windows=1, from_end=True)
        else:  # as --truncation says (longest_first: TEI's own strategy)
            encode = server.reranker.encode_documents

        async def refuse_long(encoded, owners):
            if body.truncate:
                return
            cut = [owner for owner, e in zip(owners, encoded) if e.truncated]
            if cut:
                given = await run_in_threadpool(pair_length, server.reranker, body.query, body.texts[cut[0]])
                raise ApiError(
                    413,
                    f"Input validation error: `inputs` must have less than "
                    f"{server.reranker.max_length} tokens. Given: {given} (texts[{cut[0]}]); send "
                    '"truncate": true to cut it',
                    f"texts[{cut[0]}]",
                )

        scored = await score(server, request, body.query, body.texts, body.raw_scores, encode, refuse_long)
    results = []
    for r in scored.scores.ranked(body.texts, return_documents=False):
        rank = {"index": r["index"], "score": r["relevance_score"]}
        if body.return_text:
            rank["text"] = body.texts[r["index"]]
        results.append(rank)
    return json_response(results, headers=scored.headers(request))


# ---------------------------------------------------------------------------------------------- the app


def info(server: Server) -> dict:
    config = server.reranker.config
    labels = {str(i): f"LABEL_{i}" for i in range(config.num_labels)}
    return {
        "model_id": server.settings.model_name,
        "model_sha": server.settings.model_revision,
        "model_dtype": str(server.reranker.dtype),
        "model_type": {"reranker": {"id2label": labels, "label2id": {v: int(k) for k, v in labels.items()}}},
        "max_concurrent_requests": server.settings.max_concurrent_requests,
        "max_input_length": server.reranker.max_length,
        "max_batch_tokens": server.settings.max_batch_tokens,
        "max_batch_requests": None,
        "max_client_batch_size": server.settings.max_documents,
        "auto_truncate": False,
        "tokenization_workers": None,
        "version": __version__,
        "sha": None,
        "docker_label": None,
    }


def _errors(*statuses: int, tei: bool = False) -> dict:
    model = schema.TeiErrorResponse if tei else schema.ErrorResponse
    return {status: {"model": model, "description": "error"} for status in statuses}


def _body(model) -> dict:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
        }
    }


def create_app(reranker: Reranker, settings: ServerSettings):
    """The ASGI application (the Guard around FastAPI, and CORS around both when origins are allowed)."""
    reranker.require_single_logit()
    server = Server(reranker, settings)

    @asynccontextmanager
    async def lifespan(app):
        server.batcher.start()
        try:
            yield
        finally:
            server.batcher.stop()

    app = FastAPI(
        title="xlmr-np rerank server",
        version=__version__,
        lifespan=lifespan,
        redoc_url=None,
        description="Cohere v1/v2, Jina and text-embeddings-inference rerank formats over one model.",
    )
    app.state.server = server
    rerank_errors = _errors(400, 401, 403, 404, 408, 411, 413, 429, 500, 503)

    @app.post(
        "/v1/rerank",
        summary="Rank documents for a query (Cohere v1, Jina)",
        openapi_extra=_body(schema.RerankRequest),
        responses={200: {"model": schema.RerankResponse}, **rerank_errors},
    )
    async def rerank_v1(request: Request):
        return await cohere_rerank(server, request, 1)

    @app.post(
        "/v2/rerank",
        summary="Rank documents for a query (Cohere v2)",
        openapi_extra=_body(schema.RerankRequest),
        responses={200: {"model": schema.RerankResponse}, **rerank_errors},
    )
    async def rerank_v2(request: Request):
        return await cohere_rerank(server, request, 2)

    @app.post(
        "/rerank",
        summary="Rank texts for a query (text-embeddings-inference)",
        openapi_extra=_body(schema.TeiRerankRequest),
        responses={
            200: {"model": list[schema.TeiRank]},
            **_errors(400, 401, 403, 408, 411, 413, 429, 500, 503, tei=True),
        },
    )
    async def rerank_tei(request: Request):
        return await tei_rerank(server, request)

    @app.get(
        "/info",
        summary="The model and the server's limits (text-embeddings-inference)",
        responses={200: {"model": schema.Info}},
    )
    async def get_info():
        return json_response(info(server))

    @app.get("/health", summary="Liveness: 200 while the server runs")
    async def health():
        return json_response({"status": "ok", "model": settings.model_name})

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics():
        body, content_type = server.metrics.exposition()
        return Response(body, media_type=content_type)

    @app.get("/v1/models", summary="The served model (OpenAI-style list)")
    async def models():
        return json_response(
            {
                "object": "list",
                "data": [
                    {
                        "id": settings.model_name,
                        "object": "model",
                        "owned_by": "xlmr-np",
                        "max_length": reranker.max_length,
                    }
                ],
            }
        )

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        return error_response(request.url.path, error)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        if error.status_code == 405:
            wrong = ApiError(
                405,
                f"{request.method} is not allowed on {request.url.path}",
                kind="method_not_allowed",
                headers=dict(error.headers or {}),
            )
        else:
            wrong = ApiError(
                error.status_code,
                f"no route {request.url.path}; the routes are POST /v1/rerank, "
                "/v2/rerank, /rerank and GET /info, /health, /metrics, /v1/models, "
                "/openapi.json, /docs",
                kind="not_found",
            )
        return error_response(request.url.path, wrong)

    @app.exception_handler(Exception)
    async def server_error(request: Request, error: Exception):
        return error_response(request.url.path, ApiError(500, "internal error", kind="server_error"))

    def openapi():
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = document.setdefault("components", {}).setdefault("schemas", {})
            for model in (schema.RerankRequest, schema.TeiRerankRequest):
                model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(model_schema.pop("$defs", {}))
                components[model.__name__] = model_schema
            if settings.api_key is not None:
                document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
                document["security"] = [{"bearer": []}]
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema
    guarded = Guard(app, server)
    if settings.cors_origins:
        return CORSMiddleware(
            guarded,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return guarded
