"""End to end: `xlmr-np serve` in real processes on free loopback ports, driven by a real HTTP client.

Two servers start once for the module: one with an API key (from the environment), small limits and a
local model directory served under the hub name; one without a key, loading the hub id offline from a
hub cache built on disk. Expected answers come from the Python API in this process.
"""

from __future__ import annotations

import http.client
import json
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import numpy as np
import pytest
from processes import HUB_REPO, ServerProcess, offline_hub, reranker_in_process

from xlmr_np import Reranker
from xlmr_np.api import encode
from xlmr_np.server import RerankServer, ServerSettings

KEY = "test-key-5b0f6c1e"
MAX_DOCUMENTS = 5
MAX_BODY_BYTES = 20_000
QUERY = "capital of France"
DOCS = ["Paris is the capital of France.", "Bananas are yellow.", "Berlin is the capital of Germany."]
ISSUE_BODY = ('{"model": "BAAI/bge-reranker-base","query":"capital of France","documents":["Paris is the '
              'capital of France.", "Bananas are yellow."]}')  # the issue's curl example, byte for byte


@pytest.fixture(scope="module")
def servers(tiny_model, tmp_path_factory):
    """(with_key, without_key): started together, stopped after the module; logs kept for inspection."""
    logs = tmp_path_factory.mktemp("server-logs")
    env = offline_hub(tiny_model[0], tmp_path_factory.mktemp("hub-cache"))
    with_key = ServerProcess(["--model", str(tiny_model[0]), "--served-model-name", HUB_REPO,
                              "--max-documents", str(MAX_DOCUMENTS), "--max-body-bytes", str(MAX_BODY_BYTES)],
                             dict(env, XLMR_NP_API_KEY=KEY), logs / "with-key.log")
    without_key = ServerProcess([], env, logs / "without-key.log")  # --model defaults to the hub id
    try:
        with_key.wait_ready()
        without_key.wait_ready()
        yield with_key, without_key
    finally:
        for server in (with_key, without_key):
            server.stop()


@pytest.fixture(scope="module")
def secured(servers):
    return servers[0]


@pytest.fixture(scope="module")
def reranker(tiny_model):
    return reranker_in_process(tiny_model[0])


def request(url, path, body=None, key=KEY, method=None, content_type="application/json", headers=()):
    """(status, parsed JSON, response headers) through urllib, errors included."""
    data = body if isinstance(body, bytes) or body is None else (
        body.encode() if isinstance(body, str) else json.dumps(body).encode())
    req = urllib.request.Request(url + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", content_type)
    if key is not None:
        req.add_header("Authorization", f"Bearer {key}")
    for name, value in headers:
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers


def expected(reranker, query, documents, top_n=None, return_documents=True, raw_scores=False):
    results = reranker.rerank(query, documents, top_n=top_n, return_documents=return_documents,
                              raw_scores=raw_scores)
    return [(r["index"], r["relevance_score"]) for r in results]


def got(body):
    return [(r["index"], r["relevance_score"]) for r in body["results"]]


def assert_same_ranking(body, want):
    assert [i for i, _ in got(body)] == [i for i, _ in want]
    np.testing.assert_allclose([s for _, s in got(body)], [s for _, s in want], rtol=1e-6)


def test_curl_shaped_request_with_form_content_type(secured, reranker):
    status, body, headers = request(secured.url, "/v1/rerank", ISSUE_BODY,
                                     content_type="application/x-www-form-urlencoded")
    assert status == 200 and headers["Content-Type"] == "application/json; charset=utf-8"
    assert body["model"] == HUB_REPO
    assert_same_ranking(body, expected(reranker, QUERY, DOCS[:2]))
    for r in body["results"]:
        assert r["document"] == {"text": DOCS[r["index"]]} and r["truncated"] is False
        assert 0 < r["relevance_score"] < 1
    pairs = reranker.tokenize([(QUERY, d) for d in DOCS[:2]])
    assert body["usage"] == {"total_tokens": int(pairs.attention_mask.sum())}


def test_documents_as_text_objects_top_n_and_return_documents(secured, reranker):
    objects = [{"text": d} for d in DOCS]
    status, body, _ = request(secured.url, "/v1/rerank", {"query": QUERY, "documents": objects, "top_n": 2,
                                                          "return_documents": False})
    assert status == 200
    assert_same_ranking(body, expected(reranker, QUERY, DOCS, top_n=2))
    assert all("document" not in r for r in body["results"])
    _, everything, _ = request(secured.url, "/v1/rerank", {"query": QUERY, "documents": DOCS, "top_n": 99})
    assert len(everything["results"]) == len(DOCS)


def test_raw_scores_are_logits(secured, reranker):
    _, body, _ = request(secured.url, "/v1/rerank", {"query": QUERY, "documents": DOCS, "raw_scores": True})
    assert_same_ranking(body, expected(reranker, QUERY, DOCS, raw_scores=True))


@pytest.mark.parametrize("key", [None, "wrong-key", KEY + "x", KEY[:-1]])
def test_requests_without_the_right_key_get_401(secured, key):
    for method, path, body in [("POST", "/v1/rerank", {"query": QUERY, "documents": DOCS}),
                               ("GET", "/health", None), ("GET", "/v1/models", None)]:
        status, error, headers = request(secured.url, path, body, key=key, method=method)
        assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
        assert error["error"]["field"] == "Authorization"


def test_no_key_configured_means_open_and_hub_id_served_by_default(servers, reranker):
    open_server = servers[1]
    status, body, _ = request(open_server.url, "/v1/rerank", ISSUE_BODY, key=None)
    assert status == 200 and body["model"] == HUB_REPO
    assert_same_ranking(body, expected(reranker, QUERY, DOCS[:2]))


BAD_REQUESTS = [
    # (body, status, field, words in the message)
    (b'{"query": "q", "documents": ["a"', 400, "body", "not valid JSON"),
    (b"\xff\xfe\xfa not utf-8", 400, "body", "not valid JSON"),
    (b"", 400, "body", "not valid JSON"),
    ([QUERY, DOCS], 400, "body", "must be a JSON object, got array"),
    ({"documents": DOCS}, 400, "query", "query is required"),
    ({"query": 42, "documents": DOCS}, 400, "query", "non-empty string, got number"),
    ({"query": "  ", "documents": DOCS}, 400, "query", "non-empty string"),
    ({"query": QUERY}, 400, "documents", "documents is required"),
    ({"query": QUERY, "documents": "Paris"}, 400, "documents", "non-empty array, got string"),
    ({"query": QUERY, "documents": []}, 400, "documents", "non-empty array"),
    ({"query": QUERY, "documents": ["a", 7]}, 400, "documents[1]", "got number"),
    ({"query": QUERY, "documents": ["a", {"txt": "b"}]}, 400, "documents[1].text", "must be a string, got null"),
    ({"query": QUERY, "documents": DOCS, "top_n": 0}, 400, "top_n", "positive integer"),
    ({"query": QUERY, "documents": DOCS, "top_n": "2"}, 400, "top_n", "got string"),
    ({"query": QUERY, "documents": DOCS, "top_n": True}, 400, "top_n", "got boolean"),
    ({"query": QUERY, "documents": DOCS, "top_n": 1.5}, 400, "top_n", "got number"),
    ({"query": QUERY, "documents": DOCS, "return_documents": "yes"}, 400, "return_documents", "a boolean"),
    ({"query": QUERY, "documents": DOCS, "raw_scores": 1}, 400, "raw_scores", "a boolean"),
    ({"model": "BAAI/bge-reranker-large", "query": QUERY, "documents": DOCS}, 404, "model", "not served here"),
    ({"model": 3, "query": QUERY, "documents": DOCS}, 404, "model", "not served here"),
    ({"query": QUERY, "documents": ["d"] * (MAX_DOCUMENTS + 1)}, 413, "documents", f"at most {MAX_DOCUMENTS}"),
    ({"query": QUERY, "documents": ["x" * MAX_BODY_BYTES]}, 413, "body", f"at most {MAX_BODY_BYTES}"),
]


@pytest.mark.parametrize("body, status, field, words", BAD_REQUESTS,
                         ids=[f"{s}-{f}-{i}" for i, (_, s, f, _) in enumerate(BAD_REQUESTS)])
def test_bad_request_gets_json_error_naming_the_field(secured, body, status, field, words):
    got_status, error, headers = request(secured.url, "/v1/rerank", body)
    assert (got_status, error["error"]["field"]) == (status, field)
    assert words in error["error"]["message"]
    assert headers["Content-Type"] == "application/json; charset=utf-8"


def raw_http(url, lines: list[str], body: bytes = b"") -> tuple[int, dict]:
    """Send a hand-written request (headers urllib would fix for us) and parse the JSON answer."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    connection.putrequest("POST", "/v1/rerank", skip_accept_encoding=True)
    for line in lines:
        name, _, value = line.partition(": ")
        connection.putheader(name, value)
    connection.endheaders(body)
    response = connection.getresponse()
    status, data = response.status, json.loads(response.read())
    connection.close()
    return status, data


@pytest.mark.parametrize("headers, status, field", [
    ([f"Authorization: Bearer {KEY}"], 411, "Content-Length"),
    ([f"Authorization: Bearer {KEY}", "Content-Length: ten"], 400, "Content-Length"),
])
def test_missing_or_bad_content_length(secured, headers, status, field):
    got_status, error = raw_http(secured.url, headers)
    assert (got_status, error["error"]["field"]) == (status, field)


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/v1/rerank", 405), ("POST", "/health", 405), ("GET", "/v2/nothing", 404), ("DELETE", "/v1/rerank", 405),
])
def test_wrong_routes_and_methods(secured, method, path, status):
    got_status, error, _ = request(secured.url, path, {} if method == "POST" else None, method=method)
    assert got_status == status and "error" in error


def test_health_models_and_openapi(secured, reranker):
    assert request(secured.url, "/health")[:2] == (200, {"status": "ok", "model": HUB_REPO})
    status, models, _ = request(secured.url, "/v1/models")
    assert status == 200 and [m["id"] for m in models["data"]] == [HUB_REPO]
    assert models["data"][0]["max_length"] == reranker.max_length
    status, schema, _ = request(secured.url, "/openapi.json")
    assert status == 200 and schema["openapi"].startswith("3.")
    rerank_request = schema["components"]["schemas"]["RerankRequest"]
    assert rerank_request["properties"]["documents"]["maxItems"] == MAX_DOCUMENTS
    assert set(rerank_request["required"]) == {"query", "documents"} and "post" in schema["paths"]["/v1/rerank"]


def test_fifty_concurrent_requests_get_their_own_answers(secured, reranker):
    """Each request has its own query, document order and top_n; all are released at once."""
    jobs = []
    for i in range(50):
        documents = [f"{d} ({i})" for d in np.roll(DOCS + [f"document number {i}"], i).tolist()]
        jobs.append(({"query": f"{QUERY} {i}", "documents": documents, "top_n": 1 + i % 4}, documents))
    start = threading.Barrier(len(jobs))

    def send(job):
        start.wait()
        return request(secured.url, "/v1/rerank", job[0])

    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(send, jobs))
    for (body, documents), (status, answer, _) in zip(jobs, answers):
        assert status == 200
        assert_same_ranking(answer, expected(reranker, body["query"], documents, top_n=body["top_n"]))
        assert [r["document"]["text"] for r in answer["results"]] == [documents[i] for i, _ in got(answer)]


def test_server_survives_and_never_logs_the_key(servers):
    secured = servers[0]
    assert request(secured.url, "/health")[0] == 200
    assert secured.proc.poll() is None
    log = secured.log()
    assert KEY not in log and "wrong-key" not in log and "Authorization" not in log
    assert '"POST /v1/rerank HTTP/1.1" 400' in log  # the access log is there, just without secrets


def test_non_finite_score_is_an_error_not_a_number(reranker):
    """An in-process server on a model whose head outputs NaN: 500 with a JSON error, no score."""
    params = dict(reranker.params, **{"classifier.out_proj.bias": np.array([np.nan], dtype=np.float32)})
    broken = Reranker(params, reranker.config, reranker.tokenizer)
    server = RerankServer(("127.0.0.1", 0), broken, ServerSettings(model_name="broken"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        status, error, _ = request(url, "/v1/rerank", {"query": QUERY, "documents": DOCS}, key=None)
        assert status == 500 and "non-finite" in error["error"]["message"] and "results" not in error
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(ValueError):
        encode({"relevance_score": float("inf")})


def test_malformed_http_gets_a_json_error(secured):
    import socket

    parts = urlsplit(secured.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as connection:
        connection.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    # no parseable version, so http.server answers HTTP/0.9-style: the body alone
    assert "Bad request" in json.loads(answer)["error"]["message"]
    assert request(secured.url, "/health")[0] == 200
