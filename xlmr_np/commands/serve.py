"""`xlmr-np serve`: the rerank HTTP server (xlmr_np.serve; needs pip install 'xlmr-np[serve]')."""

from __future__ import annotations

import ipaddress
import math
import os
import sys
from dataclasses import replace
from pathlib import Path

from ..errors import InputError
from ..serve.settings import MIN_INFLIGHT_TOKENS, SEQUENCES_PER_BATCH, ServerSettings, default
from .common import add_device_argument, add_model_arguments, load_reranker, port_number, reports_errors

API_KEY_ENV = "XLMR_NP_API_KEY"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve the model over HTTP (Cohere, Jina and text-embeddings-inference rerank formats)",
        description="Serve the model over HTTP: POST /v1/rerank (Cohere v1, Jina), /v2/rerank (Cohere v2), "
        "/rerank (text-embeddings-inference); GET /info, /health, /metrics, /v1/models, "
        "/openapi.json, /docs. See docs/server.md.",
    )
    parser.add_argument(
        "--served-model-name",
        metavar="NAME",
        help="the model name clients send and /v1/models lists (default: --model if it is a hub "
        "id, else the directory's name)",
    )
    net = parser.add_argument_group("network and access")
    net.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, loopback)")
    net.add_argument("--port", type=port_number, default=8000, help="port (default: 8000; 0 picks a free one)")
    net.add_argument(
        "--api-key-file", metavar="PATH", help="require 'Authorization: Bearer KEY', KEY read from this file (one line)"
    )
    net.add_argument(
        "--api-key",
        help=f"the key itself; prefer ${API_KEY_ENV} or --api-key-file, since other users "
        "of the machine can read command lines (ps)",
    )
    net.add_argument(
        "--private-health",
        action="store_true",
        help="require the key on /health, /info and /metrics too (default: open, as TEI)",
    )
    net.add_argument(
        "--cors-allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a browser origin allowed to call the server (repeatable; default: none)",
    )
    net.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host name accepted without an API key besides IPs and localhost (repeatable)",
    )
    limits = parser.add_argument_group("limits (docs/server.md says what each costs)")
    limits.add_argument(
        "--max-documents",
        type=int,
        default=default("max_documents"),
        help=f"documents per request (default: {default('max_documents')})",
    )
    limits.add_argument(
        "--max-body-bytes",
        type=int,
        default=default("max_body_bytes"),
        help=f"request body size (default: {default('max_body_bytes')}, 8 MiB)",
    )
    limits.add_argument(
        "--max-batch-tokens",
        type=int,
        help=f"padded tokens per forward pass, across requests (default: {SEQUENCES_PER_BATCH} x the "
        "model's max length: 16384 at 512, 262144 at 8192)",
    )
    limits.add_argument(
        "--max-concurrent-requests",
        type=int,
        default=default("max_concurrent_requests"),
        help=f"rerank requests in flight; more get 429 with Retry-After "
        f"(default: {default('max_concurrent_requests')})",
    )
    limits.add_argument(
        "--max-inflight-tokens",
        type=int,
        help="tokens of the rerank requests in flight; more get 429, one request with more gets 413 "
        f"(default: {MIN_INFLIGHT_TOKENS}, or 4 x --max-batch-tokens if more)",
    )
    limits.add_argument(
        "--max-inflight-bytes",
        type=int,
        default=default("max_inflight_bytes"),
        help="estimated memory of the rerank requests' bodies and answers in flight; more get 429 "
        f"(default: {default('max_inflight_bytes')}, 1 GiB)",
    )
    limits.add_argument(
        "--max-connections",
        type=int,
        default=default("max_connections"),
        help=f"open connections; more are answered 503 and closed (default: {default('max_connections')}; "
        "fewer if the open-file limit cannot fit them)",
    )
    limits.add_argument(
        "--request-timeout",
        type=float,
        default=default("request_timeout"),
        help="seconds from a request's first byte to its answer; its answer must be taken within 1 s more "
        f"(default: {default('request_timeout'):g})",
    )
    limits.add_argument(
        "--keep-alive",
        type=float,
        default=default("keep_alive"),
        help=f"seconds an idle keep-alive connection stays open (default: {default('keep_alive'):g})",
    )
    limits.add_argument(
        "--graceful-timeout",
        type=float,
        default=default("graceful_timeout"),
        help="on SIGTERM, SIGINT or SIGHUP, seconds to finish in-flight requests before cancelling them "
        f"(default: {default('graceful_timeout'):g})",
    )
    docs = parser.add_argument_group("long documents (the default; requests may ask otherwise)")
    docs.add_argument(
        "--windows",
        action="store_true",
        help="score long documents by their best overlapping window instead of truncating them",
    )
    docs.add_argument(
        "--window-overlap",
        type=int,
        default=default("window_overlap"),
        help=f"tokens shared by adjacent windows ({default('window_overlap')})",
    )
    docs.add_argument(
        "--auto-truncate",
        action="store_true",
        help="POST /rerank (TEI): cut over-long pairs when a request does not say 'truncate' "
        "(default: such a pair is a 413, as TEI)",
    )
    add_device_argument(add_model_arguments(parser))
    parser.set_defaults(func=reports_errors(run))


def read_api_key(args, environ=os.environ) -> str | None:
    """The key from --api-key-file, --api-key or $XLMR_NP_API_KEY (in that order); an empty one is an error,
    never an open server. A key file's UTF-8 byte order mark and surrounding whitespace are not part of the
    key. The key must be printable ASCII: headers are bytes on the wire (Latin-1), so a client sending a
    non-ASCII key in UTF-8 would never match it."""
    if args.api_key_file is not None:
        try:
            text = Path(args.api_key_file).read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"--api-key-file {args.api_key_file}: cannot read ({e})") from None
        key, source = text.strip(), args.api_key_file
    elif args.api_key is not None:
        key, source = args.api_key, "--api-key"
    elif API_KEY_ENV in environ:
        key, source = environ[API_KEY_ENV], f"${API_KEY_ENV}"
    else:
        return None
    if not key.strip():
        raise InputError(
            f"{source} is empty; give a key, or none of --api-key, --api-key-file, ${API_KEY_ENV} for an open server"
        )
    key = key.strip()
    if any(c.isspace() for c in key):
        raise InputError(f"{source}: the key must not contain whitespace")
    if not all("!" <= c <= "~" for c in key):
        bad = next(c for c in key if not "!" <= c <= "~")
        raise InputError(
            f"{source}: the key must be printable ASCII (found {ascii(bad)}): HTTP headers carry bytes, and "
            "a client sending it in UTF-8 would never match"
        )
    return key


def served_name(args) -> str:
    """--served-model-name, else --model when it is a hub id, else the model directory's name (never a path)."""
    if args.served_model_name:
        return args.served_model_name
    return Path(args.model).resolve().name if os.path.isdir(args.model) else args.model


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_limits(args) -> None:
    for name, least in (
        ("max_documents", 1),
        ("max_body_bytes", 1),
        ("batch_size", 1),
        ("window_overlap", 0),
        ("max_batch_tokens", 1),
        ("max_concurrent_requests", 1),
        ("max_inflight_tokens", 1),
        ("max_inflight_bytes", 1),
        ("max_connections", 1),
        ("request_timeout", 0.001),
        ("keep_alive", 0.001),
        ("graceful_timeout", 0),
    ):
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value >= least):  # nan compares false
            raise InputError(f"--{name.replace('_', '-')} must be at least {least:g}, got {value:g}")


def settings_of(args, api_key: str | None) -> ServerSettings:
    return ServerSettings(
        model_name=served_name(args),
        api_key=api_key,
        max_documents=args.max_documents,
        max_body_bytes=args.max_body_bytes,
        max_concurrent_requests=args.max_concurrent_requests,
        max_inflight_tokens=args.max_inflight_tokens,
        max_inflight_bytes=args.max_inflight_bytes,
        max_batch_tokens=args.max_batch_tokens,
        request_timeout=args.request_timeout,
        windows=args.windows,
        window_overlap=args.window_overlap,
        auto_truncate=args.auto_truncate,
        private_health=args.private_health,
        cors_origins=tuple(args.cors_allow_origin),
        allowed_hosts=tuple(h.lower() for h in args.allowed_host),
        model_revision=args.revision,
        max_connections=args.max_connections,
        keep_alive=args.keep_alive,
        graceful_timeout=args.graceful_timeout,
    )


def run(args) -> int:
    check_limits(args)
    api_key = read_api_key(args)
    try:
        from ..serve import routes, runner
    except ModuleNotFoundError as e:
        raise InputError(f"the server needs its extra: pip install 'xlmr-np[serve]' ({e.name} is missing)") from None
    try:  # before the model is loaded: a port in use fails at once
        sock, max_connections = runner.open_listener(args.host, args.port, args.max_connections)
    except runner.ListenError as e:
        print(f"xlmr-np serve: error: {e}", file=sys.stderr)
        return 1
    with sock:
        settings = replace(settings_of(args, api_key), max_connections=max_connections)
        app = routes.create_app(load_reranker(args), settings)
        if api_key is None and not is_loopback(args.host):
            print(
                f"xlmr-np serve: warning: listening on {args.host} without an API key; anyone who can reach "
                f"this port can use the model (--api-key-file or ${API_KEY_ENV})",
                file=sys.stderr,
            )
        auth = "API key required" if api_key else "no API key"

        def banner(host, port):
            return f"xlmr-np serve: serving {settings.model_name!r} on http://{host}:{port} ({auth})"

        return runner.serve(app, sock, banner=banner)
