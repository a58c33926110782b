"""The guard: what may reach a route at all, and the bookkeeping every request gets.

`Guard` is pure ASGI middleware around the app. For each request it sets the deadline's start (the request's
first byte, as the connection stamped it), opens the request's Ticket on the admission budgets (given back
once the answer is sent, so an answer waiting for a slow reader still counts), refuses what `refusal`
refuses, and counts every answer by route and status (unknown paths as "other").
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import time

from .admission import ARRIVED, Service, Ticket
from .errors import ApiError, busy, send_error
from .settings import ServerSettings

PUBLIC_PATHS = ("/health", "/info", "/metrics")  # reachable without the key unless --private-health
RERANK_PATHS = ("/v1/rerank", "/v2/rerank", "/rerank")
ROUTES = (*RERANK_PATHS, "/info", "/health", "/metrics", "/v1/models", "/openapi.json", "/docs")
OVERFLOW = "xlmr_np.overflow"  # set in a request's scope state by the connection when over --max-connections


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


def header(scope, name: bytes) -> str | None:
    """One request header as text (HTTP headers are Latin-1 on the wire), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def refusal(settings: ServerSettings, scope) -> ApiError | None:
    """Why a request may not reach a route, or None.

    Without a key the server trusts whoever can connect, so it refuses what only a web page would send: an
    Origin (a cross-site POST of text/plain needs no preflight) that is neither this server's own (its /docs
    page) nor allowed by --cors-allow-origin, and a Host that is a name other than localhost or an
    --allowed-host (DNS rebinding points a page's own name at this address; IP literals cannot be rebound).
    With a key, every route but the public ones needs it."""
    path = scope["path"]
    if settings.api_key is None:
        host = header(scope, b"host") or "localhost"
        name = host_name(host).lower()
        if not (is_ip(name) or name == "localhost" or name in settings.allowed_hosts):
            return ApiError(
                403,
                f"Host {name!r} is not accepted by a server without an API key (it could be a "
                "rebound DNS name); address it by IP or localhost, or start it with "
                "--allowed-host NAME or an API key",
                "Host",
                kind="forbidden",
            )
        origin = header(scope, b"origin")
        own = f"{scope.get('scheme', 'http')}://{host}"
        if origin is not None and origin != own and origin not in settings.cors_origins:
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
    scheme, _, token = (header(scope, b"authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode("latin-1"), settings.api_key.encode("ascii")
    ):
        return ApiError(
            401,
            "missing or wrong API key: send 'Authorization: Bearer <key>'",
            "Authorization",
            kind="authentication_error",
        )
    return None


def overflow() -> ApiError:
    return busy(
        "this server has as many connections open as it takes (xlmr-np serve --max-connections); retry shortly",
        status=503,
    )


class Guard:
    def __init__(self, app, service: Service):
        self.app = app
        self.service = service

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["method"] == "HEAD":  # as GET; the connection sends no body for HEAD
            scope = dict(scope, method="GET")
        state = scope.setdefault("state", {})
        started = state.setdefault(ARRIVED, time.monotonic())
        ticket = state["ticket"] = Ticket(self.service.admission)
        path = scope["path"]
        status = None

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            refused = overflow() if state.get(OVERFLOW) else refusal(self.service.settings, scope)
            if refused is None and path in RERANK_PATHS and self.service.check_model() is not None:
                refused = busy(self.service.failure or "", status=503, kind="model_changed")
            if refused is not None:
                if refused.status == 503:
                    refused.headers["Connection"] = "close"
                await send_error(send_status, path, refused)
            else:
                await self.app(scope, receive, send_status)
        except asyncio.CancelledError:  # the graceful stop's time ran out: say so, in JSON, and end quietly
            if status is None:
                stopping = busy("the server is stopping; retry shortly", status=503, kind="shutting_down")
                stopping.headers["Connection"] = "close"
                await send_error(send_status, path, stopping)
        finally:
            ticket.release()
            route = path if path in ROUTES else "other"
            self.service.metrics.requests.labels(route, str(status or 500)).inc()
            self.service.metrics.request_seconds.labels(route).observe(time.monotonic() - started)
