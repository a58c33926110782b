"""uvicorn, configured for a server anyone may reach: a deadline on every connection, bounded connections,
keep-alive, JSON for the errors uvicorn answers itself, and a graceful shutdown on SIGTERM/SIGINT.

uvicorn times out idle keep-alive connections but not a connection that never finishes its request line
and headers (one byte a minute would hold it forever); DeadlineProtocol closes such a connection with a 408
once --request-timeout has passed. A request whose headers are complete is the app's to time out (a slow
body is a 408 from read_json, slow scoring a 503).
"""

from __future__ import annotations

import asyncio
import copy
import signal
import sys

import h11
import uvicorn
import uvicorn.config
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..api import encode


def error_payload(status: int, message: str) -> bytes:
    return encode(
        {
            "error": {"type": "invalid_request_error", "message": message, "field": None},
            "message": message,
            "detail": message,
        }
    )


def deadline_protocol(seconds: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a deadline from a connection's start (or its previous answer) to complete
    request headers, and its own 400s (bad Content-Length, malformed request line) in JSON."""

    class DeadlineProtocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self):
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc):
            if self._deadline is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

        def _arm(self):
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(seconds, self._expired)

        def _expired(self):
            waiting_for_headers = self.cycle is None or self.cycle.response_complete
            if waiting_for_headers and not self.transport.is_closing():
                self._send_json(408, f"the request headers did not arrive within {seconds:g} s")

        def send_400_response(self, msg: str) -> None:
            self._send_json(400, f"malformed HTTP request ({msg})")

        def _send_json(self, status: int, message: str) -> None:
            payload = error_payload(status, message)
            headers = [
                (b"content-type", b"application/json; charset=utf-8"),
                (b"connection", b"close"),
                (b"content-length", str(len(payload)).encode()),
            ]
            try:
                output = self.conn.send(h11.Response(status_code=status, headers=headers))
                output += self.conn.send(h11.Data(data=payload)) + self.conn.send(h11.EndOfMessage())
                self.transport.write(output)  # one write: headers and body in the same segment
            except h11.LocalProtocolError:  # a response was already under way: just close
                pass
            self.transport.close()

    return DeadlineProtocol


class Server(uvicorn.Server):
    """uvicorn.Server that prints the address it really listens on (port 0 picks one) once it is ready."""

    def __init__(self, config, banner):
        super().__init__(config)
        self.banner = banner

    async def startup(self, sockets=None):
        await super().startup(sockets)
        if self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            print(self.banner(host, port), flush=True)


def log_config() -> dict:
    """uvicorn's logging with its access log on stderr beside the rest (stdout carries only the banner). The
    access log holds the request line and status; uvicorn never logs headers, so never the key."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    return config


def serve(
    app,
    host: str,
    port: int,
    *,
    request_timeout: float,
    max_connections: int,
    graceful_seconds: float,
    keep_alive_seconds: float,
    banner,
) -> int:
    """Run until SIGTERM or SIGINT; then stop accepting, finish in-flight requests for up to graceful_seconds,
    and return 0."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="asyncio",
        http=deadline_protocol(request_timeout),
        lifespan="on",
        # uvicorn annotates these two as int but uses them as asyncio timeouts, where fractions of a second work
        timeout_keep_alive=keep_alive_seconds,  # type: ignore[arg-type]
        limit_concurrency=max_connections,
        backlog=2048,
        timeout_graceful_shutdown=graceful_seconds,  # type: ignore[arg-type]
        server_header=False,
        proxy_headers=False,
        h11_max_incomplete_event_size=64 * 1024,
        log_level="info",
        access_log=True,
        log_config=log_config(),
    )
    server = Server(config, banner)
    # uvicorn handles SIGTERM/SIGINT while it runs, then raises the signal again for the handlers it found:
    # no-ops here, so a graceful shutdown ends with status 0 rather than death by the signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)
    try:
        server.run()
    except (OSError, SystemExit) as e:  # uvicorn logs a failed bind and exits
        print(
            f"xlmr-np serve: error: cannot listen on {host}:{port} ({getattr(e, 'strerror', None) or e})",
            file=sys.stderr,
        )
        return 1
    return 0 if server.started else 1
