"""`xlmr-np serve`: the local /v1/rerank server (see xlmr_np.server)."""

from __future__ import annotations

import os
import signal
import sys

from ..api import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_DOCUMENTS
from ..errors import UsageError
from .common import add_model_arguments, load_reranker, port_number, reports_errors


def register(subparsers) -> None:
    from ..server import API_KEY_ENV

    parser = subparsers.add_parser(
        "serve", help="serve POST /v1/rerank (Cohere/Jina-compatible) over HTTP",
        description="Serve the model over HTTP: POST /v1/rerank, GET /health, GET /v1/models, GET /openapi.json.")
    parser.add_argument("--served-model-name", metavar="NAME",
                        help="the model name clients send and /v1/models lists (default: --model)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, loopback)")
    parser.add_argument("--port", type=port_number, default=8000, help="port (default: 8000; 0 picks a free one)")
    parser.add_argument("--api-key", help=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV} if set; "
                                          f"prefer the variable: other users can see arguments in ps)")
    parser.add_argument("--max-documents", type=int, default=DEFAULT_MAX_DOCUMENTS,
                        help=f"documents per request (default: {DEFAULT_MAX_DOCUMENTS})")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                        help=f"request body size (default: {DEFAULT_MAX_BODY_BYTES}, 8 MiB)")
    parser.add_argument("--windows", action="store_true",
                        help="score long documents by their best overlapping window instead of truncating them")
    parser.add_argument("--window-overlap", type=int, default=64, help="tokens shared by adjacent windows (64)")
    add_model_arguments(parser)
    parser.set_defaults(func=reports_errors(run))


def _stop(signum, frame):
    raise KeyboardInterrupt


def run(args) -> int:
    from ..server import API_KEY_ENV, RerankServer, ServerSettings, is_loopback

    for name, least in (("max_documents", 1), ("max_body_bytes", 1), ("batch_size", 1), ("window_overlap", 0)):
        if getattr(args, name) < least:
            raise UsageError(f"--{name.replace('_', '-')} must be at least {least}, got {getattr(args, name)}")
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    settings = ServerSettings(
        model_name=args.served_model_name or args.model, api_key=api_key, max_documents=args.max_documents,
        max_body_bytes=args.max_body_bytes, batch_size=args.batch_size, windows=args.windows,
        window_overlap=args.window_overlap)
    reranker = load_reranker(args)
    try:
        server = RerankServer((args.host, args.port), reranker, settings)
    except OSError as e:
        print(f"xlmr-np serve: error: cannot listen on {args.host}:{args.port} ({e.strerror or e})", file=sys.stderr)
        return 1
    if not is_loopback(args.host) and api_key is None:
        print(f"xlmr-np serve: warning: listening on {args.host} without an API key; anyone who can reach "
              f"this port can use the model (--api-key or ${API_KEY_ENV})", file=sys.stderr)
    host, port = server.server_address[:2]
    auth = "API key required" if api_key else "no API key"
    print(f"xlmr-np serve: serving {settings.model_name!r} on http://{host}:{port} ({auth})", flush=True)
    signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
