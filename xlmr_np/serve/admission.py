"""Admission and the scoring path: what a rerank request may cost, checked before each step's work starts.

Every rerank request holds a Ticket on three budgets from its arrival until its answer has been handed to
the connection (guard.py gives it back):

  count   --max-concurrent-requests   checked before the body is read                    429
  bytes   --max-inflight-bytes        the body's Content-Length before it is read, then the   429, or 413 alone
                                      parsed body's estimate (body_estimate) before parsing,
                                      then the answer's bytes once built
  tokens  --max-inflight-tokens       before tokenizing (no room at all: 429); the tokenizer  429, or 413 alone
                                      stops once one request passes the whole budget; the
                                      exact count before anything is queued for the engine

So the memory of all admitted requests is bounded by the bytes budget plus about 40 bytes per token of
the tokens budget, plus what the tokenization workers hold (TOKENIZATION_WORKERS texts' pieces at a time),
and the engine's backlog by the tokens budget. A request that cannot finish by its deadline (its first
byte + --request-timeout) is answered 408 (body) or 503 (scoring), its queued work dropped.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np
from starlette.requests import ClientDisconnect, Request

from ..errors import InputError
from ..ranking import DocumentScores
from ..reranker import Reranker, document_scores
from ..tokenizer import EncodedPair, EncodeOptions, TooManyTokens
from .batcher import Batcher, Job, ModelChanged
from .errors import ApiError, busy, log
from .metrics import Metrics
from .settings import ServerSettings

ARRIVED = "xlmr_np.arrived"  # scope state: time.monotonic() of the request's first byte (set by the connection)
INLINE_CHARACTERS = 16_384  # requests this small are tokenized on the event loop, larger ones on a worker thread
TOKENIZATION_WORKERS = min(4, os.cpu_count() or 1)  # threads tokenizing large requests, one request each
# The parsed JSON body, measured with tracemalloc for bodies of 8 MiB: at most 8x its bytes while parsing (one
# astral character makes a str 4 bytes per character, and the decoder holds a copy), plus up to ~70 bytes per
# element (an empty object or list, a small number, a key); elements are counted by "{", "[" and ",".
PARSED_BYTES_PER_BYTE = 8
PARSED_BYTES_PER_ELEMENT = 96
PARSED_BYTES_FIXED = 64 * 1024  # the decoder's own buffers


def body_estimate(raw: bytes) -> int:
    """An upper bound on the memory json.loads(raw) holds (see PARSED_BYTES_PER_BYTE)."""
    elements = raw.count(b"{") + raw.count(b"[") + raw.count(b",")
    return PARSED_BYTES_FIXED + PARSED_BYTES_PER_BYTE * len(raw) + PARSED_BYTES_PER_ELEMENT * elements


class Admission:
    """The budgets in flight (all on the event loop's thread, so no lock is needed)."""

    def __init__(self, settings: ServerSettings, metrics: Metrics):
        self.settings = settings
        self.metrics = metrics
        self.requests = 0
        self.bytes = 0
        self.tokens = 0

    def observe(self) -> None:
        self.metrics.in_flight.set(self.requests)
        self.metrics.inflight_bytes.set(self.bytes)
        self.metrics.inflight_tokens.set(self.tokens)


class Ticket:
    """What one request holds of the budgets; `release` gives it all back (idempotent)."""

    def __init__(self, admission: Admission):
        self.admission = admission
        self.counted = False
        self.bytes = 0
        self.tokens = 0

    def enter(self) -> None:
        """Count the request among those in flight, or 429."""
        a = self.admission
        if a.requests >= a.settings.max_concurrent_requests:
            raise busy(
                f"{a.requests} requests are in flight, the most this server takes "
                "(xlmr-np serve --max-concurrent-requests); retry shortly"
            )
        a.requests += 1
        self.counted = True
        a.observe()

    def hold_bytes(self, n: int, what: str, force: bool = False) -> None:
        """Hold n bytes in all (more or fewer than before): 413 if no request could, 429 if there is no room
        now. force: hold them anyway (an answer already computed is sent, never dropped)."""
        a = self.admission
        limit = a.settings.max_inflight_bytes
        if not force and n > limit:
            raise ApiError(
                413,
                f"{what} needs about {n / 2**20:.1f} MiB in memory; this server holds at most "
                f"{limit / 2**20:.1f} MiB of requests at once (xlmr-np serve --max-inflight-bytes)",
                "body",
            )
        if not force and n > self.bytes and a.bytes + n - self.bytes > limit:
            raise busy(
                f"{what} needs about {n / 2**20:.1f} MiB and the requests in flight hold "
                f"{a.bytes / 2**20:.1f} of {limit / 2**20:.1f} MiB (xlmr-np serve --max-inflight-bytes); "
                "retry shortly"
            )
        a.bytes += n - self.bytes
        self.bytes = n
        a.observe()

    def hold_tokens(self, n: int) -> None:
        a = self.admission
        limit = a.settings.max_inflight_tokens or 0
        if n > limit:
            raise ApiError(413, too_many_tokens(limit), "documents")
        if a.tokens + n - self.tokens > limit:
            raise busy(
                f"this request has {n} tokens to score and the requests in flight hold {a.tokens} of "
                f"{limit} (xlmr-np serve --max-inflight-tokens); retry shortly"
            )
        a.tokens += n - self.tokens
        self.tokens = n
        a.observe()

    def release(self) -> None:
        a = self.admission
        a.requests -= self.counted
        a.bytes -= self.bytes
        a.tokens -= self.tokens
        self.counted, self.bytes, self.tokens = False, 0, 0
        a.observe()


def too_many_tokens(limit: int) -> str:
    return (
        f"this request has more than {limit} tokens to score, the most this server holds at once "
        "(xlmr-np serve --max-inflight-tokens); send fewer or shorter documents, or limit them "
        "(max_tokens_per_doc, max_chunks_per_doc)"
    )


class Service:
    """What the routes share: the model, the settings (budgets resolved for the model), the admission
    budgets, the batcher, the tokenization threads, the metrics, and whether the model can still be
    trusted (`failure`: why not)."""

    def __init__(self, reranker: Reranker, settings: ServerSettings):
        self.reranker = reranker
        self.settings = settings.for_model(reranker.max_length)
        self.metrics = Metrics()
        self.admission = Admission(self.settings, self.metrics)
        self.batcher = Batcher(reranker.logits_of, self.settings.max_batch_tokens or 0, self.metrics, self.check_model)
        self.tokenizing = ThreadPoolExecutor(TOKENIZATION_WORKERS, thread_name_prefix="xlmr-np-tokenize")
        self.failure: str | None = None

    def check_model(self) -> str | None:
        """Why the model may no longer be the one loaded (its mapped file changed in place), or None. Once
        set it stays: every later rerank is a 503 and the process stops (runner.py)."""
        if self.failure is None:
            change = self.reranker.weights_changed()
            if change is not None:
                self.failure = f"the model file changed on disk after loading: {change}; restart the server"
                log.error("%s; refusing every request from now on", self.failure)
        return self.failure

    def refuse_if_failed(self) -> None:
        if self.check_model() is not None:
            raise busy(self.failure or "", status=503, kind="model_changed")


# ---------------------------------------------------------------------------------------------- bodies


def remaining(request: Request, settings: ServerSettings) -> float:
    """Seconds left until the request's deadline: its first byte + --request-timeout."""
    return max(0.0, request.scope["state"][ARRIVED] + settings.request_timeout - time.monotonic())


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]} is too large for a float")
    return value


def first_unencodable(value, path: str = "body") -> str | None:
    """The JSON path of the first string (key or value) holding a lone surrogate, which no UTF-8 answer can
    carry (JSON's "\\ud800" escape makes one), or None. Every echoed field is checked here, before any
    validation message or answer could quote it."""
    stack = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return where
        elif isinstance(item, dict):
            for key, child in item.items():
                if not key.isascii():
                    try:
                        key.encode("utf-8")
                    except UnicodeEncodeError:
                        return f"{where} (a key)"
                stack.append((f"{where}.{key}" if where != "body" else key, child))
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", child) for i, child in enumerate(item))
    return None


async def read_json(request: Request, service: Service, ticket: Ticket):
    """The body parsed as JSON, whatever the Content-Type (`curl -d` sends a form type), within the request's
    deadline, the body limit and the bytes budget; NaN, infinities and lone surrogates are refused."""
    settings = service.settings
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
    try:
        ticket.hold_bytes(int(length) if length is not None else settings.max_body_bytes, "the body")
    except ApiError as e:  # refused before the body is read: the connection cannot carry another request
        e.headers["Connection"] = "close"
        raise

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
            f"the body did not arrive within {settings.request_timeout:g} s of the request's first byte "
            "(xlmr-np serve --request-timeout)",
            "body",
            headers={"Connection": "close"},
        ) from None
    except ClientDisconnect:
        raise ApiError(499, "the client closed the connection before sending the whole body", "body") from None
    ticket.hold_bytes(len(raw) + body_estimate(raw), "the body, parsed")
    try:
        body = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite)
    except RecursionError:
        raise ApiError(400, "the request body is nested too deeply to be a rerank request", "body") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError (not UTF-8/16/32), NaN, 1e999, huge ints
        raise ApiError(400, f"the request body is not valid JSON ({e})", "body") from None
    del raw
    where = first_unencodable(body)
    if where is not None:
        raise ApiError(400, f"{where} holds a lone surrogate (an escape such as \\ud800), which is not text", where)
    return body


# ---------------------------------------------------------------------------------------------- scoring


@dataclass
class Scored:
    scores: DocumentScores
    job: Job

    def headers(self, request: Request) -> dict:
        total = time.monotonic() - request.scope["state"][ARRIVED]
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


async def tokenize(service: Service, request: Request, query: str, texts: list[str], options: EncodeOptions):
    """(sequences, owners): small requests on the event loop, larger ones on a tokenization thread, within
    the deadline and the tokens budget (TooManyTokens: 413 naming the document)."""
    settings = service.settings
    encode = partial(service.reranker.encode_documents, query, texts, options, settings.max_inflight_tokens)
    try:
        if len(query) + sum(map(len, texts)) <= INLINE_CHARACTERS:  # under a millisecond: not worth two thread hops
            return encode()
        work = asyncio.get_running_loop().run_in_executor(service.tokenizing, encode)
        return await asyncio.wait_for(work, remaining(request, settings))
    except TooManyTokens as e:
        field = (e.where or "").replace("pairs", "documents")
        raise ApiError(413, too_many_tokens(e.limit), field) from None
    except InputError as e:  # what validation lets through and the tokenizer still refuses: a bug, said plainly
        raise ApiError(400, e.what, e.where) from None
    except asyncio.TimeoutError:
        raise deadline_passed(settings) from None


def deadline_passed(settings: ServerSettings) -> ApiError:
    return busy(
        f"the request did not finish within {settings.request_timeout:g} s of its first byte "
        "(xlmr-np serve --request-timeout)",
        status=503,
        kind="timeout",
    )


async def score(
    service: Service,
    request: Request,
    ticket: Ticket,
    query: str,
    texts: list[str],
    options: EncodeOptions,
    raw_scores: bool,
    refuse=None,
) -> Scored:
    """Tokenize, hold the tokens, let `refuse(sequences, owners)` raise before anything is queued, queue the
    sequences and wait for their scores (or the deadline, or the client leaving)."""
    service.refuse_if_failed()
    a = service.admission
    if a.tokens >= (a.settings.max_inflight_tokens or 0):
        ticket.hold_tokens(1)  # the 429 before any tokenizing
    encoded, owners = await tokenize(service, request, query, texts, options)
    ticket.hold_tokens(sum(len(e.ids) for e in encoded))
    if refuse is not None:
        await refuse(encoded, owners)
    logits, job = await run(service, request, encoded)
    scores = document_scores(len(texts), encoded, owners, logits, raw_scores)
    m = service.metrics
    m.documents.inc(len(texts))
    m.tokens.inc(scores.total_tokens)
    m.truncated.inc(sum(scores.truncated))
    m.queue_seconds.observe(job.queue_seconds)
    m.inference_seconds.observe(job.inference_seconds)
    return Scored(scores, job)


async def run(service: Service, request: Request, encoded: list[EncodedPair]) -> tuple[np.ndarray, Job]:
    """Queue the sequences and wait for their logits [S], the deadline or the client leaving."""
    job = service.batcher.submit(encoded)
    watcher = asyncio.ensure_future(_disconnected(request.receive))
    try:
        done, _ = await asyncio.wait(
            {job.future, watcher}, timeout=remaining(request, service.settings), return_when=asyncio.FIRST_COMPLETED
        )
    except asyncio.CancelledError:  # shutdown's grace period ran out
        service.batcher.cancel(job)
        raise
    finally:
        watcher.cancel()
    if not job.future.done():
        service.batcher.cancel(job)
        if watcher in done:
            service.metrics.abandoned.inc()
            raise ApiError(499, "the client closed the connection", kind="client_closed_request")
        raise deadline_passed(service.settings)
    try:
        return job.future.result(), job  # [S]
    except ModelChanged as e:
        raise busy(str(e), status=503, kind="model_changed") from None
    except FloatingPointError as e:
        raise ApiError(500, f"the model produced a non-finite score ({e})", kind="server_error") from None
