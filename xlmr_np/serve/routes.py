"""The ASGI application: the routes over the Service, errors in each client's shape, /openapi.json.

Routes (see docs/server.md):
    POST /v1/rerank   Cohere v1 and Jina (cohere.py)     POST /v2/rerank   Cohere v2 (cohere.py)
    POST /rerank      text-embeddings-inference (tei.py) GET  /info        text-embeddings-inference
    GET  /health, /metrics, /v1/models, /openapi.json, /docs (and HEAD on each: guard.py)

Every answer is one of xlmr_np.api's types, encoded by `JsonAnswer`; the same types give /openapi.json its
response schemas, and schema.py's request models its request bodies.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware

from .. import __version__
from ..api import (
    ErrorResponse,
    Health,
    Info,
    ModelCard,
    ModelList,
    RerankResponse,
    TeiErrorResponse,
    TeiRank,
)
from ..reranker import Reranker
from . import cohere, schema, tei
from .admission import TOKENIZATION_WORKERS, Service, Ticket
from .errors import ApiError, error_body, error_headers, payload, raw_headers, send_body
from .guard import Guard
from .settings import ServerSettings

NOT_FOUND = (
    "no route {path}; the routes are POST /v1/rerank, /v2/rerank, /rerank and GET /info, /health, /metrics, "
    "/v1/models, /openapi.json, /docs"
)


class JsonAnswer(Response):
    """One of xlmr_np.api's values as the answer; its bytes count in the request's Ticket until sent."""

    def __init__(self, request: Request, value, status: int = 200, headers: dict | None = None):
        failed, body = payload(value, request.url.path)
        ticket: Ticket | None = request.scope.get("state", {}).get("ticket")
        if ticket is not None:  # computed already: held even beyond the budget, never dropped
            ticket.hold_bytes(ticket.bytes + len(body), "the answer", force=True)
        super().__init__(body, status_code=failed or status, headers=headers)
        self.raw_headers = raw_headers(body, headers)

    async def __call__(self, scope, receive, send) -> None:
        await send_body(send, self.status_code, self.raw_headers, bytes(self.body))


class ServedApp:
    """The ASGI application, with the Service it serves (the runner reads its state)."""

    def __init__(self, asgi, service: Service):
        self.asgi = asgi
        self.service = service

    async def __call__(self, scope, receive, send):
        await self.asgi(scope, receive, send)


def info(service: Service) -> Info:
    config = service.reranker.config
    labels = {str(i): f"LABEL_{i}" for i in range(config.num_labels)}
    settings = service.settings
    return Info(
        model_id=settings.model_name,
        model_sha=settings.model_revision,
        model_dtype=str(service.reranker.dtype),
        model_type={"reranker": {"id2label": labels, "label2id": {v: int(k) for k, v in labels.items()}}},
        max_concurrent_requests=settings.max_concurrent_requests,
        max_input_length=service.reranker.max_length,
        max_batch_tokens=settings.max_batch_tokens or 0,
        max_batch_requests=None,
        max_client_batch_size=settings.max_documents,
        auto_truncate=settings.auto_truncate,
        tokenization_workers=TOKENIZATION_WORKERS,
        version=__version__,
        sha=None,
        docker_label=None,
    )


def _errors(*statuses: int, tei: bool = False) -> dict:
    model = TeiErrorResponse if tei else ErrorResponse
    return {status: {"model": model, "description": "error"} for status in statuses}


def _body(model) -> dict:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
        }
    }


def ticket_of(request: Request) -> Ticket:
    return request.scope["state"]["ticket"]


def create_app(reranker: Reranker, settings: ServerSettings) -> ServedApp:
    """The ASGI application: the Guard around FastAPI, and CORS around both when origins are allowed."""
    reranker.require_single_logit()
    service = Service(reranker, settings)
    settings = service.settings

    @asynccontextmanager
    async def lifespan(app):
        service.batcher.start()
        try:
            yield
        finally:
            service.batcher.stop()
            service.tokenizing.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="xlmr-np rerank server",
        version=__version__,
        lifespan=lifespan,
        redoc_url=None,
        redirect_slashes=False,  # /v1/rerank/ is a 404, not a redirect to whatever Host the client named
        description="Cohere v1/v2, Jina and text-embeddings-inference rerank formats over one model.",
    )
    rerank_errors = _errors(400, 401, 403, 404, 408, 411, 413, 429, 500, 503)

    @app.post(
        "/v1/rerank",
        summary="Rank documents for a query (Cohere v1, Jina)",
        openapi_extra=_body(schema.CohereRequest),
        responses={200: {"model": RerankResponse}, **rerank_errors},
    )
    async def rerank_v1(request: Request):
        response, scored = await cohere.rerank(service, request, ticket_of(request), 1)
        return JsonAnswer(request, response, headers=scored.headers(request))

    @app.post(
        "/v2/rerank",
        summary="Rank documents for a query (Cohere v2)",
        openapi_extra=_body(schema.CohereRequest),
        responses={200: {"model": RerankResponse}, **rerank_errors},
    )
    async def rerank_v2(request: Request):
        response, scored = await cohere.rerank(service, request, ticket_of(request), 2)
        return JsonAnswer(request, response, headers=scored.headers(request))

    @app.post(
        "/rerank",
        summary="Rank texts for a query (text-embeddings-inference)",
        openapi_extra=_body(schema.TeiRequest),
        responses={200: {"model": list[TeiRank]}, **_errors(400, 401, 403, 408, 411, 413, 429, 500, 503, tei=True)},
    )
    async def rerank_tei(request: Request):
        ranks, scored = await tei.rerank(service, request, ticket_of(request))
        return JsonAnswer(request, ranks, headers=scored.headers(request))

    @app.get(
        "/info",
        summary="The model and the server's limits (text-embeddings-inference)",
        responses={200: {"model": Info}},
    )
    async def get_info(request: Request):
        return JsonAnswer(request, info(service))

    @app.get(
        "/health",
        summary="200 while the server answers reranks; 503 once it cannot (its model file changed)",
        responses={200: {"model": Health}, 503: {"model": Health}},
    )
    async def health(request: Request):
        failure = service.check_model()
        status = "ok" if failure is None else failure
        return JsonAnswer(request, Health(status=status, model=settings.model_name), 200 if failure is None else 503)

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics():
        body, content_type = service.metrics.exposition()
        return Response(body, media_type=content_type)

    @app.get(
        "/v1/models",
        summary="The served model (OpenAI-style list)",
        responses={200: {"model": ModelList}},
    )
    async def models(request: Request):
        card = ModelCard(id=settings.model_name, object="model", owned_by="xlmr-np", max_length=reranker.max_length)
        return JsonAnswer(request, ModelList(object="list", data=[card]))

    def error_answer(request: Request, error: ApiError) -> JsonAnswer:
        return JsonAnswer(request, error_body(request.url.path, error), error.status, error_headers(error))

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        return error_answer(request, error)

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
            wrong = ApiError(error.status_code, NOT_FOUND.format(path=request.url.path), kind="not_found")
        return error_answer(request, wrong)

    @app.exception_handler(Exception)
    async def server_error(request: Request, error: Exception):  # a bug: uvicorn logs its traceback too
        return error_answer(request, ApiError(500, "internal error", kind="server_error"))

    def openapi():
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = document.setdefault("components", {}).setdefault("schemas", {})
            for model in (schema.CohereRequest, schema.TeiRequest):
                model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(model_schema.pop("$defs", {}))
                components[model.__name__] = model_schema
            if settings.api_key is not None:
                document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
                document["security"] = [{"bearer": []}]
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema
    asgi: Guard | CORSMiddleware = Guard(app, service)
    if settings.cors_origins:
        asgi = CORSMiddleware(
            asgi,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return ServedApp(asgi, service)
