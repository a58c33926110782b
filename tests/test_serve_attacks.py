"""The server under attack over real sockets: slow, idle and dripping clients, clients that never read their
answer or leave mid-upload, abandoned requests, more requests and connections than it takes, too few file
descriptors, signals mid-request, a model file overwritten under it, a port already taken, a document as
large as the body limit, and bodies generated from the request schema itself (hypothesis).

Most tests run the app on uvicorn in a thread of this process, with the server's own connection protocol, so
they can hold the engine at a gate (a Reranker whose logits_of waits for an Event) and look at the budgets;
the signal, file-descriptor, overwrite and large-document tests run the real `xlmr-np serve` command.
All are integration tests; XLMR_NP_ATTACKS=long adds the floods (nox -s attacks): 1,024 connections, 30
clients that never read 8 MB answers, three 7 MiB documents at once.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import threading
import time
from contextlib import contextmanager

import httpx
import pytest
from processes import ServerProcess, offline_hub, xlmr_np_command

pytest.importorskip("fastapi")
pytestmark = pytest.mark.integration
LONG = os.environ.get("XLMR_NP_ATTACKS") == "long"
long_only = pytest.mark.skipif(not LONG, reason="a flood: XLMR_NP_ATTACKS=long (nox -s attacks)")
import uvicorn  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from xlmr_np import Reranker, api  # noqa: E402
from xlmr_np.serve import schema  # noqa: E402
from xlmr_np.serve.batcher import Job, next_batch  # noqa: E402
from xlmr_np.serve.routes import create_app  # noqa: E402
from xlmr_np.serve.runner import connection_protocol  # noqa: E402
from xlmr_np.serve.settings import ServerSettings  # noqa: E402
from xlmr_np.testing import build_model  # noqa: E402
from xlmr_np.tokenizer import EncodedPair, EncodeOptions  # noqa: E402

QUERY = "capital of France"
DOCS = ["Paris is the capital of France.", "Bananas are yellow.", "Berlin is the capital of Germany."]


@pytest.fixture(scope="module")
def reranker(tiny_reranker):
    return tiny_reranker


class GatedReranker(Reranker):
    """The tiny model, but every forward pass waits at a gate; records the size of each batch."""

    def __init__(self, base: Reranker):
        super().__init__(base.params, base.config, base.tokenizer)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.batches: list[int] = []

    def logits_of(self, encoded, batch_size=32, progress=None):
        self.batches.append(len(encoded))
        self.entered.set()
        assert self.gate.wait(30), "the gate was never opened"
        return super().logits_of(encoded, batch_size, progress)


@contextmanager
def running(app):
    """uvicorn on a free port in a thread, with the server's own connection protocol; yields the base URL."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        http=connection_protocol(app.service),
        lifespan="on",
        log_level="warning",
        log_config=None,  # uvicorn's loggers propagate, so caplog sees them
        timeout_keep_alive=5,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def post_async(url, path, body, results, key):
    def send():
        results[key] = httpx.post(url + path, json=body, timeout=60)

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def wait_for(condition, what, seconds=20):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.mark.integration  # uvicorn on a socket
def test_beyond_max_concurrent_requests_is_429_with_retry_after(reranker):
    gated = GatedReranker(reranker)
    app = create_app(gated, ServerSettings(model_name="tiny", max_concurrent_requests=2))
    results = {}
    with running(app) as url:
        first = post_async(url, "/v1/rerank", {"query": QUERY, "documents": DOCS}, results, "first")
        assert gated.entered.wait(20)
        second = post_async(url, "/v1/rerank", {"query": QUERY, "documents": DOCS[:1]}, results, "second")
        wait_for(lambda: app.service.admission.requests == 2, "the second request to be in flight")
        refused = httpx.post(url + "/v1/rerank", json={"query": QUERY, "documents": DOCS}, timeout=30)
        tei = httpx.post(url + "/rerank", json={"query": QUERY, "texts": DOCS}, timeout=30)
        gated.gate.set()
        first.join(30)
        second.join(30)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["type"] == "overloaded"
    assert tei.status_code == 429 and tei.json()["error_type"] == "Overloaded"
    assert results["first"].status_code == results["second"].status_code == 200


@pytest.mark.integration  # uvicorn on a socket
def test_a_disconnected_clients_queued_work_is_dropped(reranker):
    gated = GatedReranker(reranker)
    app = create_app(gated, ServerSettings(model_name="tiny"))
    results = {}
    with running(app) as url:
        first = post_async(url, "/v1/rerank", {"query": QUERY, "documents": DOCS}, results, "first")
        assert gated.entered.wait(20)
        body = json.dumps({"query": QUERY, "documents": [f"abandoned {i}" for i in range(7)]}).encode()
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as leaving:
            leaving.sendall(
                b"POST /v1/rerank HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            wait_for(lambda: app.service.batcher.queued_sequences() == 7, "the request to be queued")
        wait_for(lambda: app.service.batcher.queued_sequences() == 0, "its work to be dropped")
        gated.gate.set()
        first.join(30)
        metrics = httpx.get(url + "/metrics").text
    assert results["first"].status_code == 200
    assert gated.batches == [len(DOCS)], f"batches scored: {gated.batches} (the 7 abandoned sequences ran)"
    assert "xlmr_np_abandoned_requests_total 1.0" in metrics


@pytest.mark.integration  # uvicorn on a socket
def test_slow_and_idle_clients_are_cut_off_at_the_deadline_and_never_lock_others_out(reranker):
    """300 connections that send nothing and one that sends its headers a byte at a time: each gets a 408
    and is closed once the deadline passes, and a real request is answered meanwhile."""
    app = create_app(reranker, ServerSettings(model_name="tiny", request_timeout=1.5))
    with running(app) as url:
        port = int(url.rsplit(":", 1)[1])
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(300)]
        slow = socket.create_connection(("127.0.0.1", port))
        started = time.monotonic()
        answered = httpx.post(url + "/v1/rerank", json={"query": QUERY, "documents": DOCS}, timeout=30)
        assert answered.status_code == 200 and time.monotonic() - started < 1.5
        request = b"POST /v1/rerank HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}"
        reply = b""
        slow.settimeout(0.1)
        for byte in request:  # one byte every 0.1 s: 6 s for the whole request, 4x the deadline
            try:
                slow.sendall(bytes([byte]))
                reply += slow.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            if reply:
                break
        seconds = time.monotonic() - started
        assert reply.startswith(b"HTTP/1.1 408"), reply[:80]
        assert 1.4 < seconds < 4, f"cut off after {seconds:.1f} s"
        for connection in idle:
            connection.settimeout(5)
            assert connection.recv(4096).startswith(b"HTTP/1.1 408")
            assert connection.recv(4096) == b""  # closed
            connection.close()
        slow.close()


@pytest.mark.integration  # xlmr-np serve in a subprocess
def test_sigterm_finishes_the_request_in_flight(tiny_dir, tmp_path):
    """A request that takes seconds (a long document scored window by window), SIGTERM while it runs:
    the client still gets its 200, new connections are refused, and the process exits 0."""
    env = offline_hub(tiny_dir, tmp_path / "hub")
    server = ServerProcess(
        ["--model", str(tiny_dir), "--windows", "--window-overlap", "0", "--max-batch-tokens", "2048"],
        env,
        tmp_path / "log",
    )
    server.wait_ready()
    document = "word " * 300_000  # ~600 windows of 512 tokens: seconds on the tiny model
    results = {}
    thread = post_async(server.url, "/v1/rerank", {"query": QUERY, "documents": [document, DOCS[0]]}, results, "r")
    wait_for(
        lambda: "xlmr_np_requests_in_flight 1.0" in httpx.get(server.url + "/metrics").text,
        "the request to be in flight",
    )
    server.proc.send_signal(signal.SIGTERM)
    thread.join(60)
    code = server.proc.wait(60)
    assert results["r"].status_code == 200 and len(results["r"].json()["results"]) == 2
    assert code == 0, server.log()
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/health")
    log = server.log()
    assert log.index("Shutting down") < log.index('"POST /v1/rerank HTTP/1.1" 200'), "answered before SIGTERM"


@pytest.mark.integration  # xlmr-np serve in a subprocess
def test_windows_server_scores_a_document_as_large_as_the_body_limit(tiny_dir, tmp_path):
    """--windows with a 1 MB body limit and a 1 MB document (600 KB used to crash the server; the encoder's own
    test takes 2 MB): answered, every token scored, in bounded time."""
    env = offline_hub(tiny_dir, tmp_path / "hub")
    limit = 1_000_000
    server = ServerProcess(
        [
            "--model",
            str(tiny_dir),
            "--windows",
            "--window-overlap",
            "0",
            "--max-length",
            "128",
            "--max-body-bytes",
            str(limit),
            "--max-batch-tokens",
            "16384",
            "--request-timeout",
            "600",
        ],
        env,
        tmp_path / "log",
    )
    try:
        server.wait_ready()
        document = "word " * ((limit - 100) // 5)
        body = json.dumps({"query": "q", "documents": [document]})
        assert limit - 100 < len(body) <= limit
        started = time.monotonic()
        response = httpx.post(server.url + "/v1/rerank", content=body, timeout=300)
        seconds = time.monotonic() - started
        assert response.status_code == 200, response.text[:200]
        answer = response.json()
        short = Reranker.from_pretrained(tiny_dir, max_length=128)
        encoded, _ = short.encode_documents("q", [document], EncodeOptions(windows=True, window_overlap=0))
        assert answer["usage"]["total_tokens"] == sum(len(e.ids) for e in encoded) > 200_000
        assert answer["results"][0]["truncated"] is False and 0 < answer["results"][0]["relevance_score"] < 1
        assert seconds < 300, f"{seconds:.0f} s"
        too_big = httpx.post(server.url + "/v1/rerank", content=body + " " * (limit - len(body) + 1), timeout=60)
        assert too_big.status_code == 413
    finally:
        server.stop()


def test_next_batch_packs_oldest_first_within_the_token_budget():
    loop = object()

    def job(*lengths):
        return Job([EncodedPair([0] * n, False) for n in lengths], loop, None)

    a, b, c = job(200, 300), job(400), job(50, 50)
    jobs = __import__("collections").deque([a, b, c])
    assert [(j is a, i) for j, i in next_batch(jobs, 1000)] == [(True, 1), (True, 0)]  # longest first
    assert next_batch(jobs, 1000) == [(b, 0), (c, 0)]  # 2 x 400 fits, 3 x 400 does not
    c.cancelled = True
    assert next_batch(jobs, 1000) == [] and len(jobs) == 0  # a cancelled job is dropped, not scored
    big = job(5000)
    assert next_batch(__import__("collections").deque([big]), 1000) == [(big, 0)]  # too long: runs alone


def test_private_health_cors_and_allowed_hosts(reranker):
    app = create_app(reranker, ServerSettings(model_name="tiny", api_key="k", private_health=True))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        for path in ("/health", "/info", "/metrics"):
            assert client.get(path).status_code == 401
            assert client.get(path, headers={"Authorization": "Bearer k"}).status_code == 200
    app = create_app(
        reranker,
        ServerSettings(model_name="tiny", cors_origins=("https://app.example",), allowed_hosts=("reranker.internal",)),
    )
    with TestClient(app, base_url="http://reranker.internal") as client:
        allowed = client.post(
            "/v1/rerank", json={"query": QUERY, "documents": DOCS}, headers={"Origin": "https://app.example"}
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        preflight = client.options(
            "/v1/rerank", headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
        )
        assert preflight.status_code == 200
        other = client.post(
            "/v1/rerank", json={"query": QUERY, "documents": DOCS}, headers={"Origin": "https://evil.example"}
        )
        assert other.status_code == 403 and "access-control-allow-origin" not in other.headers


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 2000) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def field_values(model):
    """For each field of a request model: JSON values that fit its schema often, and anything else sometimes."""
    fitting = {
        "query": st.text(max_size=40),
        "documents": st.lists(
            st.text(max_size=40)
            | st.fixed_dictionaries({"text": st.text(max_size=40)}, optional={"title": st.text(max_size=10)}),
            max_size=6,
        ),
        "texts": st.lists(st.text(max_size=40), max_size=6),
        "top_n": st.integers(-1, 8),
        "return_documents": st.booleans(),
        "raw_scores": st.booleans(),
        "rank_fields": st.lists(st.sampled_from(["text", "title", "id"]), max_size=3),
        "max_chunks_per_doc": st.integers(0, 3),
        "max_tokens_per_doc": st.integers(0, 40),
        "truncate": st.booleans(),
        "truncation_direction": st.sampled_from(["Right", "Left", "right", "up"]),
        "model": st.just("tiny"),
        "return_text": st.booleans(),
    }
    return {name: fitting.get(name, JSON_VALUES) | JSON_VALUES for name in model.model_fields}


def bodies(model):
    return st.fixed_dictionaries({}, optional=field_values(model))


@pytest.fixture(scope="module")
def fuzz_client(reranker):
    app = create_app(reranker, ServerSettings(model_name="tiny", max_documents=5))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies(schema.CohereRequest), path=st.sampled_from(["/v1/rerank", "/v2/rerank"]))
def test_schema_fuzz_cohere_routes_answer_200_or_a_4xx_in_their_shape(fuzz_client, reranker, body, path):
    response = fuzz_client.post(path, content=json.dumps(body))
    assert response.status_code in (200, 400, 404, 413), response.text
    if response.status_code != 200:
        schema.parse_response(api.ErrorResponse, response.json())
        return
    answer = schema.parse_response(api.RerankResponse, response.json())
    texts = [d if isinstance(d, str) else d.get("text") for d in body["documents"]]
    if (
        body.get("rank_fields") in (None, ["text"])
        and body.get("max_chunks_per_doc") in (None, 1)
        and body.get("max_tokens_per_doc") is None
    ):
        want = reranker.rerank(body["query"], texts, top_n=body.get("top_n"), raw_scores=bool(body.get("raw_scores")))
        assert [(r.index, r.relevance_score) for r in answer.results] == [
            (r["index"], r["relevance_score"]) for r in want
        ]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies(schema.TeiRequest))
def test_schema_fuzz_tei_route_answers_200_or_a_4xx_in_its_shape(fuzz_client, body):
    response = fuzz_client.post("/rerank", content=json.dumps(body))
    assert response.status_code in (200, 400, 413), response.text
    if response.status_code == 200:
        ranks = [schema.parse_response(api.TeiRank, r) for r in response.json()]
        assert sorted(r.index for r in ranks) == list(range(len(body["texts"])))
    else:
        schema.parse_response(api.TeiErrorResponse, response.json())


# ---- the attacks that broke the server before, each reproduced ----


def raw_request(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
        % (path.encode(), len(body), extra, body)
    )


def sample(metrics: str, name: str) -> float:
    values = [float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith(name)]
    return sum(values)


def connect(url: str, receive_buffer: int | None = None) -> socket.socket:
    connection = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:  # a tiny window: the server's answer cannot hide in the kernel's buffers
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    connection.connect(("127.0.0.1", int(url.rsplit(":", 1)[1])))
    return connection


def read_all(connection: socket.socket, seconds: float = 10) -> bytes:
    connection.settimeout(seconds)
    answer = b""
    try:
        while chunk := connection.recv(65536):
            answer += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return answer


def test_clients_that_never_read_their_answer_hold_the_budget_until_cut_off(reranker):
    """Before: 30 clients posting an 8 MB return_documents request and never reading kept their answers for
    good (+251 MB RSS, still held 30 s later). Now an answer counts in the byte budget until it has left, so
    a third such client gets a 429, and one second past its deadline an unread answer's connection is cut
    and its memory given back."""
    app = create_app(reranker, ServerSettings(model_name="tiny", request_timeout=2, max_inflight_bytes=150 * 2**20))
    documents = ["word " * 200_000] * 6  # 6 MB, echoed back: more than the kernel's buffers take
    body = json.dumps({"query": QUERY, "documents": documents, "return_documents": True}).encode()
    with running(app) as url:
        admission = app.service.admission
        readers = []
        for _ in range(2):
            readers.append(connect(url, receive_buffer=4096))
            readers[-1].sendall(raw_request("/v1/rerank", body))
        wait_for(lambda: admission.requests == 2 and admission.bytes > 100 * 2**20, "two answers waiting")
        held = admission.bytes
        started = time.monotonic()
        third = httpx.post(url + "/v1/rerank", content=body, timeout=30)
        assert third.status_code == 429 and third.headers["retry-after"] == "1", third.text[:300]
        wait_for(lambda: admission.requests == 0, "the unread answers to be cut off", seconds=10)
        seconds = time.monotonic() - started
        assert admission.bytes == 0 and admission.tokens == 0
        for reader in readers:
            assert len(read_all(reader, 5)) < len(body), "a whole answer was read though the client never read"
            reader.close()
        assert httpx.post(url + "/v1/rerank", json={"query": QUERY, "documents": DOCS}).status_code == 200
    assert held > 2 * len(body) and seconds < 2 + 1 + 2, f"held {held} bytes, cut after {seconds:.1f} s"


def test_a_client_leaving_mid_upload_is_a_499_without_a_traceback(reranker, caplog):
    """Before: a 500 and an "Exception in ASGI application" traceback per client (ClientDisconnect escaped)."""
    app = create_app(reranker, ServerSettings(model_name="tiny"))
    with running(app) as url:
        for _ in range(5):
            with connect(url) as leaving:
                leaving.sendall(raw_request("/v1/rerank", b'{"query": "q", "documents": ["' + b"x" * 100)[:-50])
                leaving.sendall(b"")
        wait_for(lambda: "499" in httpx.get(url + "/metrics").text, "the 499s to be counted")
        time.sleep(0.2)
        metrics = httpx.get(url + "/metrics").text
    assert sample(metrics, 'xlmr_np_requests_total{route="/v1/rerank",status="499"}') == 5
    assert sample(metrics, 'xlmr_np_requests_total{route="/v1/rerank",status="500"}') == 0
    assert "Exception in ASGI application" not in caplog.text and "Traceback" not in caplog.text


def test_a_dripped_request_gets_its_408_at_its_deadline_from_the_first_byte(reranker):
    """Before: headers dripped, then the body dripped, gave a 408 at 7.8 s with --request-timeout 4 (the
    body's deadline ran from the end of the headers). Now 4 s from the first byte: here 2 s."""
    app = create_app(reranker, ServerSettings(model_name="tiny", request_timeout=2))
    request = raw_request("/v1/rerank", b'{"query": "q", "documents": ["' + b"x" * 200 + b'"]}')
    head, body = request.split(b"\r\n\r\n", 1)
    with running(app) as url, connect(url) as dripping:
        started = time.monotonic()
        for i in range(0, len(head), 4):  # the headers over about 1.5 s
            dripping.sendall(head[i : i + 4])
            time.sleep(1.5 / (len(head) / 4))
        dripping.sendall(b"\r\n\r\n")
        dripping.settimeout(0.05)
        answer = b""
        for byte in body:  # then the body, a byte every 50 ms: it would take 12 s
            try:
                dripping.sendall(bytes([byte]))
                answer += dripping.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            if answer:
                break
        seconds = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert b"of the request's first byte" in answer
    assert 1.9 < seconds < 2.8, f"408 after {seconds:.2f} s"


def test_connections_beyond_the_limit_get_a_json_503_with_retry_after(reranker):
    """Before: uvicorn's plain-text 503 without Retry-After, and only once the request arrived (an idle
    connection beyond the limit held its descriptor for the whole deadline)."""
    app = create_app(reranker, ServerSettings(model_name="tiny", max_connections=4))
    with running(app) as url:
        held = [connect(url) for _ in range(4)]
        wait_for(lambda: True, "")
        for path, shape in (("/health", api.ErrorResponse), ("/rerank", api.TeiErrorResponse)):
            with connect(url) as extra:
                extra.sendall(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % path.encode())
                answer = read_all(extra)
            head, _, payload = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in head.lower(), head
            schema.parse_response(shape, json.loads(payload))
        with connect(url) as silent:  # sends nothing: answered and closed after a second
            started = time.monotonic()
            answer = read_all(silent)
            assert answer.startswith(b"HTTP/1.1 503") and time.monotonic() - started < 2.5, answer[:80]
        for connection in held:
            connection.close()
        wait_for(lambda: httpx.get(url + "/health").status_code == 200, "room again")
        metrics = httpx.get(url + "/metrics").text
    assert sample(metrics, 'xlmr_np_requests_total{route="/health",status="503"}') == 1
    assert sample(metrics, 'xlmr_np_requests_total{route="other",status="503"}') == 1  # the silent one


def test_the_connections_own_errors_are_json_and_counted(reranker):
    """Before: uvicorn's own 400, 408 and 503 were not in requests_total."""
    app = create_app(reranker, ServerSettings(model_name="tiny", request_timeout=1))
    with running(app) as url:
        with connect(url) as bad:
            bad.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            assert read_all(bad).startswith(b"HTTP/1.1 400")
        with connect(url) as idle:
            assert read_all(idle).startswith(b"HTTP/1.1 408")
        metrics = httpx.get(url + "/metrics").text
    assert sample(metrics, 'xlmr_np_requests_total{route="other",status="400"}') == 1
    assert sample(metrics, 'xlmr_np_requests_total{route="other",status="408"}') == 1


def serve_process(tiny_dir, tmp_path, *args, preexec_fn=None) -> ServerProcess:
    tmp_path.mkdir(exist_ok=True)
    env = offline_hub(tiny_dir, tmp_path / "hub")
    return ServerProcess(["--model", str(tiny_dir), *args], env, tmp_path / "log", preexec_fn=preexec_fn)


def test_too_few_file_descriptors_means_fewer_connections_not_silence(tiny_dir, tmp_path):
    """Before: with `ulimit -n 64`, 104k EMFILE tracebacks (42 MB of log in 10 s); with the common soft limit
    1024 and --max-connections 1024, /health went silent. Now the server fits --max-connections to the limit
    (raising the soft limit where the hard one allows), says so, and answers the connections beyond with
    503; a limit that fits no connection at all stops it before the model is loaded."""

    def limit(n):
        return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

    server = serve_process(tiny_dir, tmp_path, preexec_fn=limit(128))
    try:
        server.wait_ready()
        fitted = int(re.search(r"fits (\d+) connections", server.log()).group(1))
        assert 10 < fitted < 128, server.log()
        flood = []
        for _ in range(fitted + 40):
            try:
                flood.append(connect(server.url))
            except OSError:
                break
        refused = [read_all(c, 3)[:12] for c in flood[fitted:]]
        assert refused and all(r.startswith(b"HTTP/1.1 503") or r == b"" for r in refused), refused[:3]
        assert any(r.startswith(b"HTTP/1.1 503") for r in refused)
        for connection in flood:
            connection.close()
        wait_for(lambda: httpx.get(server.url + "/health").status_code == 200, "/health")
    finally:
        assert server.stop() == 0
    log = server.log()
    assert "Traceback" not in log and log.count("Too many open files") <= 2, log[-2000:]
    tiny = serve_process(tiny_dir, tmp_path / "tiny", preexec_fn=limit(32))
    code = tiny.proc.wait(60)
    assert code == 1 and "leaves no room for connections" in tiny.log(), tiny.log()


@pytest.mark.parametrize("sig", [signal.SIGHUP, pytest.param(signal.SIGINT, marks=long_only)])
def test_sighup_and_sigint_stop_gracefully_and_say_so_in_json(tiny_dir, tmp_path, sig):
    """Before: SIGHUP killed the server at once (20 of 20 requests in flight lost, nothing logged), and
    requests cancelled when --graceful-timeout ran out got a plain-text 500. Now SIGHUP and SIGINT stop it
    as SIGTERM does: no new connections, in-flight requests finish for --graceful-timeout, and those still
    running then get a JSON 503 with Retry-After; exit status 0."""
    server = serve_process(
        tiny_dir,
        tmp_path,
        "--windows",
        "--window-overlap",
        "0",
        "--max-batch-tokens",
        "2048",
        "--graceful-timeout",
        "0.5",
    )
    server.wait_ready()
    document = "word " * 300_000  # ~600 windows: seconds on the tiny model
    results = {}
    thread = post_async(server.url, "/v1/rerank", {"query": QUERY, "documents": [document]}, results, "r")
    wait_for(
        lambda: "xlmr_np_requests_in_flight 1.0" in httpx.get(server.url + "/metrics").text,
        "the request to be in flight",
    )
    server.proc.send_signal(sig)
    thread.join(60)
    code = server.proc.wait(60)
    answer = results["r"]
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1", (answer.text[:300], server.log()[-3000:])
    assert answer.json()["error"]["type"] == "shutting_down"
    assert code == 0, server.log()
    assert "Shutting down" in server.log() and "Traceback" not in server.log()


def test_a_model_file_overwritten_under_the_server_stops_it(tiny_dir, tmp_path):
    """Before: `cp other/model.safetensors served/model.safetensors` left the server answering 200 with the
    other model's scores. Now the next rerank is a 503 that says so, and the process stops with status 1 and
    one line on stderr (a supervisor restarts it on the new file)."""
    served = tmp_path / "served"
    shutil.copytree(tiny_dir, served)
    other = tmp_path / "other"
    build_model(other, seed=1, init_std=0.2)
    server = ServerProcess(["--model", str(served)], dict(os.environ, HF_HUB_OFFLINE="1"), tmp_path / "log")
    server.wait_ready()
    assert httpx.post(server.url + "/v1/rerank", json={"query": QUERY, "documents": DOCS}).status_code == 200
    shutil.copyfile(other / "model.safetensors", served / "model.safetensors")  # in place, as cp does
    try:
        answer = httpx.post(server.url + "/v1/rerank", json={"query": QUERY, "documents": DOCS})
        assert answer.status_code == 503 and answer.json()["error"]["type"] == "model_changed", answer.text
    except httpx.TransportError:  # it may already have stopped
        pass
    code = server.proc.wait(30)
    assert code == 1 and "model file changed on disk after loading" in server.log(), server.log()[-1000:]


def test_a_port_in_use_is_one_line_before_the_model_loads(tiny_dir, tmp_path):
    """Before: "cannot listen on 127.0.0.1:PORT (3)", after the model had loaded."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        env = offline_hub(tiny_dir, tmp_path / "hub")
        started = time.monotonic()
        result = subprocess.run(
            [xlmr_np_command(), "serve", "--model", "/no/such/model", "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1 and time.monotonic() - started < 30
    assert result.stderr.strip() == f"xlmr-np serve: error: cannot listen on 127.0.0.1:{port} (Address already in use)"


# ---- the floods: XLMR_NP_ATTACKS=long ----


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS")).split()[1]) / 1024


@long_only
def test_long_1024_connections_at_the_common_soft_limit(tiny_dir, tmp_path):
    """1,024 idle connections against the defaults under a soft limit of 1,024: /health never goes silent."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    server = serve_process(
        tiny_dir, tmp_path, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    )
    server.wait_ready()
    try:
        flood = [connect(server.url) for _ in range(1024)]
        started = time.monotonic()
        health = httpx.get(server.url + "/health", timeout=10)
        assert health.status_code in (200, 503) and time.monotonic() - started < 5
        for connection in flood:
            connection.close()
    finally:
        assert server.stop() == 0


@long_only
def test_long_thirty_clients_never_reading_8mb_answers(tiny_dir, tmp_path):
    """30 clients post an 8 MB return_documents request and never read: the byte budget refuses most (429),
    and 30 s later the server holds none of their memory."""
    server = serve_process(tiny_dir, tmp_path, "--request-timeout", "10")
    server.wait_ready()
    body = json.dumps({"query": QUERY, "documents": ["word " * 160_000] * 10, "return_documents": True}).encode()
    before = rss_mb(server.proc.pid)
    readers = []
    for _ in range(30):
        readers.append(connect(server.url, receive_buffer=4096))
        readers[-1].sendall(raw_request("/v1/rerank", body))
    time.sleep(5)
    peak = rss_mb(server.proc.pid)
    time.sleep(10)
    metrics = httpx.get(server.url + "/metrics").text
    after = rss_mb(server.proc.pid)
    for reader in readers:
        reader.close()
    server.stop()
    print(f"RSS {before:.0f} MB -> {peak:.0f} MB with 30 unread 8 MB answers -> {after:.0f} MB after the deadline")
    assert sample(metrics, "xlmr_np_inflight_bytes") == 0
    assert peak - before < 1024 + 100, "more than the byte budget (1 GiB)"


@long_only
def test_long_three_7mib_documents_at_once_under_windows(tiny_dir, tmp_path):
    """Before: 3 concurrent 7 MiB documents under --windows took the server from 348 to 2,537 MB. Now each is
    refused (413) once the tokenizer passes the token budget, and RSS stays near where it was."""
    server = serve_process(tiny_dir, tmp_path, "--windows", "--request-timeout", "120")
    server.wait_ready()
    document = "word " * (7 * 2**20 // 5)
    before = rss_mb(server.proc.pid)
    results = {}
    threads = [
        post_async(server.url, "/v1/rerank", {"query": QUERY, "documents": [document]}, results, i) for i in range(3)
    ]
    for thread in threads:
        thread.join(120)
    after = rss_mb(server.proc.pid)
    server.stop()
    print(f"RSS {before:.0f} MB -> {after:.0f} MB for three 7 MiB documents at once")
    assert [results[i].status_code for i in range(3)] == [413] * 3
    assert after - before < 400
