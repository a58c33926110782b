"""uvicorn, configured for a server anyone may reach: one deadline per request from its first byte to the
last byte of its answer, bounded connections and file descriptors, JSON for the errors the connection
answers itself, and a graceful stop on SIGTERM, SIGINT or SIGHUP.

uvicorn times out idle keep-alive connections, but not a connection that never finishes its request, nor
one whose client never reads its answer (its bytes wait in the connection's buffer). ConnectionProtocol
stamps each request's first byte (the app's deadlines count from it) and enforces the deadline itself:
headers not complete by then are a 408; an answer not taken by the client one second after it (SEND_GRACE)
has its connection cut and its buffer dropped. Connections beyond --max-connections are answered 503 with
Retry-After (in the route's shape if their request arrives within OVERFLOW_WAIT, in Cohere's otherwise)
and closed, so a flood of connections holds file descriptors for a second at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import resource
import signal
import socket
import sys
import threading
import time

import h11
import uvicorn
import uvicorn.config
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..api import ErrorDetail, ErrorResponse, encode
from .admission import ARRIVED, Service
from .guard import OVERFLOW, overflow

log = logging.getLogger("xlmr_np.serve")

SEND_GRACE = 1.0  # seconds past a request's deadline for its answer to leave before the connection is cut
OVERFLOW_WAIT = 1.0  # seconds a connection over --max-connections may take to send its request
FD_SLACK = 32  # descriptors kept free beyond the connections: the model's files, logs, connections being refused
ACCEPT_LOG_SECONDS = 10.0  # "out of file descriptors" is logged at most once per this many seconds
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def error_payload(status: int, message: str, kind: str = "invalid_request_error") -> bytes:
    detail = ErrorDetail(type=kind, message=message, field=None)
    return encode(ErrorResponse(error=detail, message=message, detail=message))


def connection_protocol(service: Service) -> type[H11Protocol]:
    """uvicorn's h11 protocol with the request deadline, the connection limit and JSON errors."""
    timeout = service.settings.request_timeout
    metrics = service.metrics

    class ConnectionProtocol(H11Protocol):
        _timer: asyncio.TimerHandle | None = None
        _arrived: float | None = None  # time.monotonic() of the first byte of the request being received
        _overflow = False

        def connection_made(self, transport):
            super().connection_made(transport)
            self._overflow = len(self.connections) > service.settings.max_connections
            self._arm(OVERFLOW_WAIT if self._overflow else timeout)

        def connection_lost(self, exc):
            if self._timer is not None:
                self._timer.cancel()
            super().connection_lost(exc)

        def data_received(self, data):
            if self._arrived is None and self._between_requests():
                self._arrived = time.monotonic()
                if not self._overflow:
                    self._arm(timeout)
            super().data_received(data)

        def handle_events(self):
            super().handle_events()
            if self.cycle is not None and not self.cycle.response_complete:
                state = self.scope["state"]
                if ARRIVED not in state:  # a request whose headers just completed: the app runs from here
                    state[ARRIVED] = self._arrived or time.monotonic()
                    state[OVERFLOW] = self._overflow
                    self._arm(state[ARRIVED] + timeout + SEND_GRACE - time.monotonic())

        def on_response_complete(self):
            super().on_response_complete()
            self._arrived = None
            if self.transport.get_write_buffer_size() == 0 and not self._overflow:
                self._arm(timeout)  # the next request's headers; idle, uvicorn's keep-alive closes it sooner
            # else: the answer still waits for its reader, under the deadline armed above

        def _between_requests(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _arm(self, seconds: float) -> None:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_later(max(0.0, seconds), self._expired)

        def _expired(self):
            if self.transport.is_closing():
                return
            if not self._between_requests() or self.transport.get_write_buffer_size():
                self.transport.abort()  # an answer (or a request) past its deadline: drop it and its buffer
            elif self._overflow:
                error = overflow()
                self._send_json(503, error_payload(503, error.message, error.kind), retry=True)
            else:
                self._send_json(408, error_payload(408, f"the request headers did not arrive within {timeout:g} s"))

        def send_400_response(self, msg: str) -> None:
            self._send_json(400, error_payload(400, f"malformed HTTP request ({msg})"))

        def _send_json(self, status: int, payload: bytes, retry: bool = False) -> None:
            metrics.requests.labels("other", str(status)).inc()
            headers = [
                (b"content-type", b"application/json; charset=utf-8"),
                (b"connection", b"close"),
                (b"content-length", str(len(payload)).encode()),
            ]
            if retry:
                headers.append((b"retry-after", b"1"))
            try:
                output = self.conn.send(h11.Response(status_code=status, headers=headers))
                output += self.conn.send(h11.Data(data=payload)) + self.conn.send(h11.EndOfMessage())
                self.transport.write(output)  # one write: headers and body in the same segment
            except h11.LocalProtocolError:  # a response was already under way: just close
                pass
            self.transport.close()

    return ConnectionProtocol


def fit_open_files(max_connections: int) -> int:
    """--max-connections as the process's open-file limit allows: the soft limit is raised toward the hard
    one to fit the connections, the descriptors already open and FD_SLACK; if it cannot be, fewer
    connections are taken (with a warning), so that accepting never fails for want of descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 32
    needed = max_connections + in_use + FD_SLACK
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return max_connections
    fitting = soft - in_use - FD_SLACK
    if fitting < 1:
        raise OSError(
            f"the open-file limit ({soft}) leaves no room for connections: {in_use} files are open and "
            f"{FD_SLACK} are kept free; raise it (ulimit -n {needed})"
        )
    print(
        f"xlmr-np serve: warning: the open-file limit ({soft}, hard {hard}) fits {fitting} connections, "
        f"not --max-connections {max_connections}; more are answered 503 (ulimit -n {needed} fits them all)",
        file=sys.stderr,
    )
    return fitting


def accept_errors(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """The event loop's error handler: asyncio logs a traceback for every failed accept() (hundreds a
    second once descriptors run out); one line per ACCEPT_LOG_SECONDS says it instead."""
    if context.get("message") != "socket.accept() out of system resource":
        loop.default_exception_handler(context)
        return
    now = time.monotonic()
    if now - getattr(loop, "_xlmr_np_accept_logged", -ACCEPT_LOG_SECONDS) >= ACCEPT_LOG_SECONDS:
        loop._xlmr_np_accept_logged = now  # type: ignore[attr-defined]
        log.error("cannot accept connections (%s); new ones wait in the backlog", context.get("exception"))


class UvicornServer(uvicorn.Server):
    """uvicorn.Server that prints the address it listens on once ready, stops gracefully on SIGHUP as on
    SIGTERM and SIGINT, and stops (status 1) when the service fails (its model file changed)."""

    def __init__(self, config, service: Service, banner):
        super().__init__(config)
        self.service = service
        self.banner = banner

    async def startup(self, sockets=None):
        asyncio.get_running_loop().set_exception_handler(accept_errors)
        await super().startup(sockets)
        if self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            print(self.banner(host, port), flush=True)

    async def on_tick(self, counter: int) -> bool:
        if counter % 10 == 0 and self.service.check_model() is not None:
            self.should_exit = True  # the failure is logged; in-flight requests get their 503s first
        return await super().on_tick(counter)

    def capture_signals(self):
        """SIGTERM, SIGINT and SIGHUP: stop gracefully; a second SIGINT stops at once (uvicorn's own rule).
        The signals are handled, never raised again after the stop, so a graceful stop exits 0."""
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                signal.signal(sig, self.handle_exit)
        return contextlib.nullcontext()


def log_config() -> dict:
    """uvicorn's logging with its access log on stderr beside the rest (stdout carries only the banner). The
    access log holds the request line and status; uvicorn never logs headers, so never the key."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    config["loggers"]["xlmr_np.serve"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a failure is the system's own message. Its protocol is
    named (IPPROTO_TCP): asyncio sets TCP_NODELAY only on sockets that say so, and without it every small
    answer on a keep-alive connection waits ~40 ms (Nagle's algorithm against delayed ACKs)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def open_listener(host: str, port: int, max_connections: int) -> tuple[socket.socket, int]:
    """The listening socket and the connections the open-file limit fits (fit_open_files), before the model
    is loaded: a port in use or a limit too low fails at once, with the system's own message."""
    try:
        fitting = fit_open_files(max_connections)
        return listen(host, port), fitting
    except OSError as e:
        raise ListenError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None


class ListenError(OSError):
    """The server cannot listen: the address is taken or not ours, or no file descriptors are left."""


def serve(app, sock: socket.socket, *, banner) -> int:
    """Run on `sock` until SIGTERM, SIGINT or SIGHUP; then stop accepting, finish in-flight requests for up to
    --graceful-timeout, and return 0 (1 if the model file changed under the server)."""
    service: Service = app.service
    settings = service.settings
    config = uvicorn.Config(
        app,
        loop="asyncio",
        http=connection_protocol(service),
        lifespan="on",
        # uvicorn annotates these two as int but uses them as asyncio timeouts, where fractions of a second work
        timeout_keep_alive=settings.keep_alive,  # type: ignore[arg-type]
        limit_concurrency=None,  # ConnectionProtocol answers beyond --max-connections, in JSON
        backlog=2048,
        timeout_graceful_shutdown=settings.graceful_timeout,  # type: ignore[arg-type]
        server_header=False,
        proxy_headers=False,
        h11_max_incomplete_event_size=64 * 1024,
        log_level="info",
        access_log=True,
        log_config=log_config(),
    )
    server = UvicornServer(config, service, banner)
    with sock:
        server.run(sockets=[sock])
    if service.failure is not None:
        print(f"xlmr-np serve: error: {service.failure}", file=sys.stderr)
        return 1
    return 0 if server.started else 1
