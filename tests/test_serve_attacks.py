"""The server under the requests that hurt the standard-library one: slow and idle clients, abandoned
requests, more requests than it takes, SIGTERM mid-request, a document as large as the body limit, and
bodies generated from the request schema itself (hypothesis).

Most tests run the app on uvicorn in a thread of this process, so they can hold the engine at a gate (a
Reranker whose logits_of waits for an Event) and look at the queue; the SIGTERM and large-document tests
run the real `xlmr-np serve` command.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from contextlib import contextmanager

import httpx
import pytest
from processes import ServerProcess, offline_hub

pytest.importorskip("fastapi")
import uvicorn  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st
from starlette.testclient import TestClient  # noqa: E402

from xlmr_np import Reranker  # noqa: E402
from xlmr_np.serve import schema  # noqa: E402
from xlmr_np.serve.app import ServerSettings, create_app  # noqa: E402
from xlmr_np.serve.batcher import Job, next_batch  # noqa: E402
from xlmr_np.serve.runner import deadline_protocol  # noqa: E402
from xlmr_np.tokenizer import EncodedPair  # noqa: E402

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
def running(app, request_timeout=60.0):
    """uvicorn on a free port in a thread, with the server's own protocol; yields the base URL."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        http=deadline_protocol(request_timeout),
        lifespan="on",
        log_level="warning",
        timeout_keep_alive=5,
        limit_concurrency=1024,
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
        wait_for(lambda: app.server.in_flight == 2, "the second request to be in flight")
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
            wait_for(lambda: app.server.batcher.queued_sequences() == 7, "the request to be queued")
        wait_for(lambda: app.server.batcher.queued_sequences() == 0, "its work to be dropped")
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
    app = create_app(reranker, ServerSettings(model_name="tiny"))
    with running(app, request_timeout=1.5) as url:
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
    document = "word " * 30_000  # ~60 windows of 512 tokens: seconds on the tiny model
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
        encoded, _ = short.encode_documents("q", [document], windows=True, window_overlap=0)
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
@given(body=bodies(schema.RerankRequest), path=st.sampled_from(["/v1/rerank", "/v2/rerank"]))
def test_schema_fuzz_cohere_routes_answer_200_or_a_4xx_in_their_shape(fuzz_client, reranker, body, path):
    response = fuzz_client.post(path, content=json.dumps(body))
    assert response.status_code in (200, 400, 404, 413), response.text
    if response.status_code != 200:
        schema.ErrorResponse.model_validate(response.json())
        return
    answer = schema.RerankResponse.model_validate(response.json())
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
@given(body=bodies(schema.TeiRerankRequest))
def test_schema_fuzz_tei_route_answers_200_or_a_4xx_in_its_shape(fuzz_client, body):
    response = fuzz_client.post("/rerank", content=json.dumps(body))
    assert response.status_code in (200, 400, 413), response.text
    if response.status_code == 200:
        ranks = [schema.TeiRank.model_validate(r) for r in response.json()]
        assert sorted(r.index for r in ranks) == list(range(len(body["texts"])))
    else:
        schema.TeiErrorResponse.model_validate(response.json())
