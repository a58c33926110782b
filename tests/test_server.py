"""End to end: `xlmr-np serve` in real processes on free loopback ports, driven by real HTTP clients.

Two servers start once for the module: one with an API key (from the environment), small limits and a
local model directory served under the hub name; one without a key, loading the hub id offline from a hub
cache built on disk. Expected answers come from the Python API in this process, compared exactly: the
server batches requests together, and the engine's scores do not depend on the batch.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from processes import HUB_REPO, ServerProcess, offline_hub

from xlmr_np import api
from xlmr_np.reranker import document_scores
from xlmr_np.serve import schema
from xlmr_np.tokenizer import EncodeOptions

pytestmark = pytest.mark.integration

KEY = "test-key-5b0f6c1e"
MAX_DOCUMENTS = 5
MAX_BODY_BYTES = 20_000
REQUEST_TIMEOUT = 3
QUERY = "capital of France"
DOCS = ["Paris is the capital of France.", "Bananas are yellow.", "Berlin is the capital of Germany."]
LONG_DOC = " ".join(f"sentence {i} is about something else entirely." for i in range(80))  # ~800 tokens
ISSUE_BODY = (
    '{"model": "BAAI/bge-reranker-base","query":"capital of France","documents":["Paris is the '
    'capital of France.", "Bananas are yellow."]}'
)  # the hosted API's curl example, byte for byte


@pytest.fixture(scope="module")
def servers(tiny_model, tmp_path_factory):
    """(with_key, without_key): started together, stopped after the module; logs kept for inspection."""
    logs = tmp_path_factory.mktemp("server-logs")
    env = offline_hub(tiny_model[0], tmp_path_factory.mktemp("hub-cache"))
    with_key = ServerProcess(
        [
            "--model",
            str(tiny_model[0]),
            "--served-model-name",
            HUB_REPO,
            "--max-documents",
            str(MAX_DOCUMENTS),
            "--max-body-bytes",
            str(MAX_BODY_BYTES),
            "--request-timeout",
            str(REQUEST_TIMEOUT),
            "--max-length",
            "64",
        ],
        dict(env, XLMR_NP_API_KEY=KEY),
        logs / "with-key.log",
    )
    without_key = ServerProcess(
        ["--windows", "--max-batch-tokens", "1024", "--max-length", "64"], env, logs / "without-key.log"
    )
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
def open_server(servers):
    return servers[1]


@pytest.fixture(scope="module")
def short(tiny_model):
    """The Python API as both servers run it (--max-length 64)."""
    from xlmr_np import Reranker

    return Reranker.from_pretrained(tiny_model[0], max_length=64)


HTTP = httpx.Client(timeout=60)  # one client: httpx.post would build an SSL context per call


def post(url, path, body, key=KEY, headers=None, client=None):
    """(status, parsed JSON, headers); body: a dict/list (JSON), str or bytes (sent as is)."""
    content = body if isinstance(body, bytes) else body.encode() if isinstance(body, str) else json.dumps(body).encode()
    sent = {
        "Content-Type": "application/json",
        **({"Authorization": f"Bearer {key}"} if key else {}),
        **(headers or {}),
    }
    response = (client or HTTP).post(url + path, content=content, headers=sent)
    return response.status_code, response.json(), response.headers


def get(url, path, key=KEY, headers=None):
    sent = {**({"Authorization": f"Bearer {key}"} if key else {}), **(headers or {})}
    response = HTTP.get(url + path, headers=sent)
    return (
        response.status_code,
        response.json() if "json" in response.headers.get("content-type", "") else response.text,
        response.headers,
    )


def expected(reranker, query, documents, top_n=None, raw_scores=False, windows=False):
    """[(index, relevance_score)] best first, from the Python API."""
    results = reranker.rerank(query, documents, top_n=top_n, raw_scores=raw_scores, windows=windows)
    return [(r["index"], r["relevance_score"]) for r in results]


def got(body):
    results = body if isinstance(body, list) else body["results"]
    return [(r["index"], r.get("relevance_score", r.get("score"))) for r in results]


def test_curl_shaped_request_with_form_content_type(secured, short):
    status, body, headers = post(
        secured.url, "/v1/rerank", ISSUE_BODY, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert status == 200 and headers["content-type"] == "application/json; charset=utf-8"
    schema.parse_response(api.RerankResponse, body)
    assert body["model"] == HUB_REPO and got(body) == expected(short, QUERY, DOCS[:2])
    for r in body["results"]:
        assert r["document"] == {"text": DOCS[r["index"]]} and r["truncated"] is False
        assert 0 < r["relevance_score"] < 1
    pairs = short.tokenize([(QUERY, d) for d in DOCS[:2]])
    assert body["usage"] == {"total_tokens": int(pairs.attention_mask.sum())}
    assert body["meta"] == {"api_version": {"version": "1"}, "billed_units": {"search_units": 1}}
    for name in ("x-queue-time", "x-inference-time", "x-total-time"):
        assert float(headers[name]) >= 0, name
    assert float(headers["x-total-time"]) >= float(headers["x-inference-time"])


def test_documents_as_text_objects_top_n_and_return_documents(secured, short):
    objects = [{"text": d} for d in DOCS]
    status, body, _ = post(
        secured.url, "/v1/rerank", {"query": QUERY, "documents": objects, "top_n": 2, "return_documents": False}
    )
    assert status == 200 and got(body) == expected(short, QUERY, DOCS, top_n=2)
    assert all("document" not in r for r in body["results"])
    _, everything, _ = post(secured.url, "/v1/rerank", {"query": QUERY, "documents": DOCS, "top_n": 99})
    assert len(everything["results"]) == len(DOCS)


def test_raw_scores_are_logits(secured, short):
    _, body, _ = post(secured.url, "/v1/rerank", {"query": QUERY, "documents": DOCS, "raw_scores": True})
    assert got(body) == expected(short, QUERY, DOCS, raw_scores=True)


def test_structured_documents_scored_on_rank_fields_and_echoed_whole(secured, short):
    documents = [{"title": "France", "text": DOCS[0], "id": 7}, {"title": "Fruit", "text": DOCS[1], "id": "b"}]
    status, body, _ = post(secured.url, "/v1/rerank", {"query": QUERY, "documents": documents})
    assert status == 200 and got(body) == expected(short, QUERY, DOCS[:2])
    assert [r["document"] for r in body["results"]] == [documents[i] for i, _ in got(body)]
    _, titled, _ = post(
        secured.url, "/v1/rerank", {"query": QUERY, "documents": documents, "rank_fields": ["title", "text"]}
    )
    texts = [f"title: {d['title']}\ntext: {d['text']}" for d in documents]
    assert got(titled) == expected(short, QUERY, texts)
    status, error, _ = post(secured.url, "/v1/rerank", {"query": QUERY, "documents": documents, "rank_fields": ["id"]})
    assert (status, error["error"]["field"]) == (400, "documents[0].id") and "got number" in error["message"]


def test_v2_rerank_has_id_and_meta_and_no_documents_by_default(secured, short):
    status, body, _ = post(secured.url, "/v2/rerank", {"model": HUB_REPO, "query": QUERY, "documents": DOCS})
    assert status == 200 and got(body) == expected(short, QUERY, DOCS)
    assert body["meta"]["api_version"] == {"version": "2"} and len(body["id"]) == 36
    assert all("document" not in r for r in body["results"])
    schema.parse_response(api.RerankResponse, body)


def test_max_tokens_per_doc_and_max_chunks_per_doc(secured, short):
    documents = [LONG_DOC, DOCS[0]]
    for options, encoding in [
        ({"max_tokens_per_doc": 10}, EncodeOptions(max_document_tokens=10)),
        ({"max_chunks_per_doc": 3}, EncodeOptions(windows=True, max_windows=3)),
        ({"max_chunks_per_doc": 1}, EncodeOptions()),
    ]:
        status, body, _ = post(secured.url, "/v2/rerank", {"query": QUERY, "documents": documents, **options})
        encoded, owners = short.encode_documents(QUERY, documents, encoding)
        want = document_scores(2, encoded, owners, short.logits_of(encoded, progress=False)[:, 0])
        assert status == 200 and got(body) == [(r["index"], r["relevance_score"]) for r in want.ranked(documents)]
        assert [r["truncated"] for r in sorted(body["results"], key=lambda r: r["index"])] == [True, False]
        assert body["usage"]["total_tokens"] == want.total_tokens, options


@pytest.mark.parametrize("key", [None, "wrong-key", KEY + "x", KEY[:-1]])
def test_requests_without_the_right_key_get_401(secured, key):
    for path in ("/v1/rerank", "/v2/rerank", "/rerank"):
        status, error, headers = post(secured.url, path, {"query": QUERY, "documents": DOCS}, key=key)
        assert status == 401 and headers["www-authenticate"] == "Bearer"
    for path in ("/v1/models", "/openapi.json"):
        assert get(secured.url, path, key=key)[0] == 401
    for path in ("/health", "/info", "/metrics"):  # open, as TEI's (--private-health closes them)
        assert get(secured.url, path, key=key)[0] == 200


def test_no_key_configured_means_open_and_hub_id_served_by_default(open_server, short):
    status, body, _ = post(open_server.url, "/v1/rerank", ISSUE_BODY, key=None)
    assert status == 200 and body["model"] == HUB_REPO
    assert got(body) == expected(short, QUERY, DOCS[:2], windows=True)


@pytest.mark.parametrize(
    "headers, field",
    [
        ({"Origin": "https://example.com"}, "Origin"),
        ({"Origin": "null"}, "Origin"),
        ({"Host": "rebound.example.com:8000"}, "Host"),
        ({"Host": "localhost.example.com"}, "Host"),
    ],
)
def test_open_server_refuses_browser_origins_and_foreign_hosts(open_server, headers, field):
    status, error, _ = post(
        open_server.url, "/v1/rerank", {"query": QUERY, "documents": DOCS}, key=None, headers=headers
    )
    assert (status, error["error"]["field"]) == (403, field)
    assert get(open_server.url, "/health", key=None, headers=headers)[0] == 403
    port = open_server.url.rsplit(":", 1)[1]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "127.0.0.1"):
        assert get(open_server.url, "/health", key=None, headers={"Host": host})[0] == 200


BAD_REQUESTS = [
    # (body, status, field, words in the message)
    (b'{"query": "q", "documents": ["a"', 400, "body", "not valid JSON"),
    (b"\xff\xfe\xfa not utf-8", 400, "body", "not valid JSON"),
    (b"", 400, "body", "not valid JSON"),
    (b"[" * 9000 + b"]" * 9000, 400, "body", "nested too deeply"),
    (b'{"query": "q", "documents": [' + b"[" * 50 + b"]" * 50 + b"]}", 400, "documents[0]", "a string or an object"),
    ([QUERY, DOCS], 400, "body", "must be a JSON object, got array"),
    ({"documents": DOCS}, 400, "query", "query is required"),
    ({"query": 42, "documents": DOCS}, 400, "query", "must be a string, got number"),
    ({"query": "  ", "documents": DOCS}, 400, "query", "non-empty string"),
    ({"query": "\ud800", "documents": DOCS}, 400, "query", "lone surrogate"),
    ({"query": QUERY, "documents": ["a", "b\udfff"]}, 400, "documents[1]", "lone surrogate"),
    ({"query": QUERY, "documents": [{"text": "\ud800"}]}, 400, "documents[0].text", "lone surrogate"),
    ({"query": QUERY}, 400, "documents", "documents is required"),
    ({"query": QUERY, "documents": "Paris"}, 400, "documents", "must be an array, got string"),
    ({"query": QUERY, "documents": []}, 400, "documents", "documents is empty: give at least one document"),
    ({"query": QUERY, "documents": ["a", 7]}, 400, "documents[1]", "got number"),
    ({"query": QUERY, "documents": ["a", {"txt": "b"}]}, 400, "documents[1].text", "must be a string"),
    ({"query": QUERY, "documents": DOCS, "top_n": 0}, 400, "top_n", "at least 1"),
    ({"query": QUERY, "documents": DOCS, "top_n": "2"}, 400, "top_n", "got string"),
    ({"query": QUERY, "documents": DOCS, "top_n": True}, 400, "top_n", "got boolean"),
    ({"query": QUERY, "documents": DOCS, "top_n": 1.5}, 400, "top_n", "got number"),
    ({"query": QUERY, "documents": DOCS, "return_documents": "yes"}, 400, "return_documents", "a boolean"),
    ({"query": QUERY, "documents": DOCS, "raw_scores": 1}, 400, "raw_scores", "a boolean"),
    ({"query": QUERY, "documents": DOCS, "rank_fields": []}, 400, "rank_fields", "is empty"),
    ({"query": QUERY, "documents": DOCS, "max_chunks_per_doc": 0}, 400, "max_chunks_per_doc", "at least 1"),
    ({"model": "BAAI/bge-reranker-large", "query": QUERY, "documents": DOCS}, 404, "model", "not served here"),
    ({"model": 3, "query": QUERY, "documents": DOCS}, 400, "model", "must be a string"),
    ({"query": QUERY, "documents": ["d"] * (MAX_DOCUMENTS + 1)}, 413, "documents", f"at most {MAX_DOCUMENTS}"),
    ({"query": QUERY, "documents": ["x" * MAX_BODY_BYTES]}, 413, "body", f"at most {MAX_BODY_BYTES}"),
]


@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank"])
@pytest.mark.parametrize(
    "body, status, field, words", BAD_REQUESTS, ids=[f"{s}-{f}-{i}" for i, (_, s, f, _) in enumerate(BAD_REQUESTS)]
)
def test_bad_request_gets_json_error_naming_the_field(secured, path, body, status, field, words):
    got_status, error, headers = post(secured.url, path, body)
    assert (got_status, error["error"]["field"]) == (status, field), error
    assert words in error["error"]["message"] and error["message"] == error["detail"] == error["error"]["message"]
    assert headers["content-type"] == "application/json; charset=utf-8"
    schema.parse_response(api.ErrorResponse, error)


def test_tei_rerank_format(secured, short):
    body = {"query": QUERY, "texts": DOCS, "return_text": True}
    status, ranks, headers = post(secured.url, "/rerank", body)
    assert status == 200 and isinstance(ranks, list) and got(ranks) == expected(short, QUERY, DOCS)
    assert [r["text"] for r in ranks] == [DOCS[r["index"]] for r in ranks] and "x-inference-time" in headers
    _, raw, _ = post(secured.url, "/rerank", {"query": QUERY, "texts": DOCS, "raw_scores": True})
    assert got(raw) == expected(short, QUERY, DOCS, raw_scores=True) and all("text" not in r for r in raw)
    for r in ranks:
        schema.parse_response(api.TeiRank, r)


def test_tei_over_long_input_is_its_413_unless_truncate(secured, short, tiny_model):
    texts = [DOCS[0], LONG_DOC]
    before = sample(get(secured.url, "/metrics")[1], "xlmr_np_tokens_total")
    status, error, _ = post(secured.url, "/rerank", {"query": QUERY, "texts": texts})
    assert sample(get(secured.url, "/metrics")[1], "xlmr_np_tokens_total") == before  # refused before scoring
    assert status == 413 and error["error_type"] == "Validation" and set(error) == {"error", "error_type"}
    from tokenizers import Tokenizer

    n_tokens = len(Tokenizer.from_file(str(tiny_model[0] / "tokenizer.json")).encode(QUERY, LONG_DOC).ids)
    assert f"`inputs` must have less than 64 tokens. Given: {n_tokens} (texts[1])" in error["error"], error
    status, ranks, _ = post(secured.url, "/rerank", {"query": QUERY, "texts": texts, "truncate": True})
    assert status == 200 and got(ranks) == expected(short, QUERY, texts)
    status, left, _ = post(
        secured.url, "/rerank", {"query": QUERY, "texts": texts, "truncate": True, "truncation_direction": "Left"}
    )
    encoded, owners = short.tokenizer.encode_windows([(QUERY, t) for t in texts], 0, max_windows=1, from_end=True)
    want = document_scores(2, encoded, owners, short.logits_of(encoded, progress=False)[:, 0])
    assert status == 200 and got(left) == [(r["index"], r["relevance_score"]) for r in want.ranked(texts)]


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"query": QUERY, "texts": []}, 400, "texts is empty"),
        ({"query": QUERY, "texts": [DOCS[0], 3]}, 400, "texts[1] must be a string"),
        ({"query": QUERY, "texts": DOCS, "truncation_direction": "Up"}, 400, "truncation_direction"),
        ({"query": QUERY, "texts": ["d"] * (MAX_DOCUMENTS + 1)}, 413, f"at most {MAX_DOCUMENTS}"),
        (b"{", 400, "not valid JSON"),
    ],
)
def test_tei_errors_in_tei_shape(secured, body, status, words):
    got_status, error, _ = post(secured.url, "/rerank", body)
    assert got_status == status and words in error["error"], error
    schema.parse_response(api.TeiErrorResponse, error)


def test_tei_request_from_the_rerankers_library(secured, short):
    api_rankers = pytest.importorskip("rerankers.models.api_rankers")
    ranker = api_rankers.APIRanker(
        model=HUB_REPO, api_key=KEY, api_provider="text-embeddings-inference", url=secured.url + "/rerank", verbose=0
    )
    results = ranker.rank(QUERY, DOCS).results
    assert [(r.document.doc_id, r.score) for r in results] == expected(short, QUERY, DOCS)
    assert [r.document.text for r in results] == [DOCS[i] for i, _ in expected(short, QUERY, DOCS)]


def raw_http(url, data: bytes, read_timeout=30) -> bytes:
    """Send bytes as they are (headers no client library would send) and read until the server closes."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=read_timeout) as connection:
        connection.sendall(data)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def parse(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


AUTH = f"Authorization: Bearer {KEY}\r\n".encode()


@pytest.mark.parametrize(
    "request_bytes, status, words",
    [
        (b"POST /v1/rerank HTTP/1.1\r\nHost: a\r\n" + AUTH + b"Connection: close\r\n\r\n", 411, "Content-Length"),
        (b"POST /v1/rerank HTTP/1.1\r\nHost: a\r\n" + AUTH + b"Content-Length: \xc2\xb2\r\n\r\n", 400, "malformed"),
        (b"POST /v1/rerank HTTP/1.1\r\nHost: a\r\n" + AUTH + b"Content-Length: ten\r\n\r\n", 400, "malformed"),
        (
            b"POST /v1/rerank HTTP/1.1\r\nHost: a\r\n" + AUTH + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\n",
            400,
            "malformed",
        ),
        (b"NOT HTTP AT ALL\r\n\r\n", 400, "malformed"),
        (
            b"POST /v1/rerank HTTP/1.1\r\nHost: a\r\n" + AUTH + b'Content-Length: 100\r\n\r\n{"query"',
            408,
            "did not arrive",
        ),
    ],
)
def test_malformed_http_gets_a_json_error(secured, request_bytes, status, words):
    started = time.perf_counter()
    got_status, error = parse(raw_http(secured.url, request_bytes))
    assert got_status == status and words in error["error"]["message"], error
    assert time.perf_counter() - started < REQUEST_TIMEOUT + 5
    assert get(secured.url, "/health")[0] == 200


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("GET", "/v1/rerank", 405),
        ("POST", "/health", 405),
        ("GET", "/v2/nothing", 404),
        ("DELETE", "/v1/rerank", 405),
    ],
)
def test_wrong_routes_and_methods(secured, method, path, status):
    response = HTTP.request(method, secured.url + path, headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == status and "error" in response.json()


def test_health_models_info_and_openapi(secured, short):
    assert get(secured.url, "/health")[:2] == (200, {"status": "ok", "model": HUB_REPO})
    status, models, _ = get(secured.url, "/v1/models")
    assert status == 200 and [m["id"] for m in models["data"]] == [HUB_REPO]
    assert models["data"][0]["max_length"] == short.max_length
    status, info, _ = get(secured.url, "/info")
    schema.parse_response(api.Info, info)
    assert (info["model_id"], info["max_input_length"], info["max_client_batch_size"]) == (HUB_REPO, 64, MAX_DOCUMENTS)
    status, document, _ = get(secured.url, "/openapi.json")
    assert status == 200 and document["openapi"].startswith("3.")
    components = document["components"]["schemas"]
    for model in (schema.CohereRequest, schema.TeiRequest):  # one definition validates and documents
        generated = model.model_json_schema(ref_template="#/components/schemas/{model}")
        generated.pop("$defs", None)
        assert components[model.__name__] == generated
    assert set(document["paths"]) >= {"/v1/rerank", "/v2/rerank", "/rerank", "/info", "/health", "/metrics"}
    assert document["security"] == [{"bearer": []}]


def test_served_name_is_never_a_path(tiny_model, tmp_path):
    from xlmr_np.commands.serve import served_name

    class Args:
        served_model_name = None
        model = str(tiny_model[0])

    assert served_name(Args) == tiny_model[0].name and "/" not in served_name(Args)
    Args.model = HUB_REPO
    assert served_name(Args) == HUB_REPO


def test_two_hundred_concurrent_mixed_requests_get_their_own_answers(open_server, short):
    """Cohere v1/v2 and TEI requests with their own queries, document orders, top_n and long documents, all
    released at once over a few keep-alive connections; each answer equals the Python API's alone, bit for
    bit, although the server packed them into shared batches."""
    jobs = []
    for i in range(200):
        documents = [f"{d} ({i})" for d in np.roll(DOCS + [f"document number {i}"], i).tolist()]
        if i % 10 == 0:
            documents.append(LONG_DOC)  # several windows (the server runs --windows)
        path = ("/v1/rerank", "/v2/rerank", "/rerank")[i % 3]
        body = (
            {"query": f"{QUERY} {i}", "texts": documents, "truncate": True}
            if path == "/rerank"
            else {"query": f"{QUERY} {i}", "documents": documents, "top_n": 1 + i % 4}
        )
        jobs.append((path, body, documents))
    start = threading.Barrier(len(jobs))
    clients = [httpx.Client(timeout=60, limits=httpx.Limits(max_connections=50)) for _ in range(4)]

    def send(i):
        start.wait()
        path, body, _ = jobs[i]
        return post(open_server.url, path, body, key=None, client=clients[i % 4])

    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(send, range(len(jobs))))
    for client in clients:
        client.close()
    for (path, body, documents), (status, answer, _) in zip(jobs, answers):
        assert status == 200, answer
        top_n = body.get("top_n")
        windows = path != "/rerank"  # TEI's route truncates (or refuses), as TEI does, whatever --windows says
        assert got(answer) == expected(short, body["query"], documents, top_n=top_n, windows=windows), path
    _, metrics, _ = get(open_server.url, "/metrics", key=None)
    batches = sample(metrics, "xlmr_np_batch_tokens_count")
    assert batches < len(jobs), f"{batches:.0f} forward passes for {len(jobs)} requests: nothing was batched"


def sample(exposition: str, name: str) -> float:
    """The value of one Prometheus sample (the sum over its label sets)."""
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in exposition.splitlines()
        if line.startswith(name + " ") or line.startswith(name + "{")
    ]
    assert values, f"{name} is not in /metrics"
    return sum(values)


def test_metrics_count_requests_documents_and_truncation(secured):
    _, before, _ = get(secured.url, "/metrics", key=None)
    post(secured.url, "/v1/rerank", {"query": QUERY, "documents": [DOCS[0], LONG_DOC]})
    post(secured.url, "/v1/rerank", {"query": QUERY, "documents": []})
    status, after, headers = get(secured.url, "/metrics", key=None)
    assert status == 200 and headers["content-type"].startswith("text/plain")
    for name, grown in [
        ("xlmr_np_documents_total", 2),
        ("xlmr_np_truncated_documents_total", 1),
        ('xlmr_np_requests_total{route="/v1/rerank",status="200"}', 1),
        ('xlmr_np_requests_total{route="/v1/rerank",status="400"}', 1),
    ]:
        assert sample(after, name) - sample(before, name) == grown, name
    for name in (
        "xlmr_np_queue_duration_seconds_count",
        "xlmr_np_inference_duration_seconds_count",
        "xlmr_np_request_duration_seconds_count",
        "xlmr_np_queue_sequences",
        "xlmr_np_requests_in_flight",
        "xlmr_np_tokens_total",
    ):
        sample(after, name)


def test_keep_alive_connection_serves_many_requests_quickly(secured):
    with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}) as client:
        client.get(secured.url + "/health")
        started = time.perf_counter()
        for _ in range(20):
            assert client.get(secured.url + "/health").status_code == 200
        per_request = (time.perf_counter() - started) / 20
    assert per_request < 0.03, f"{per_request * 1e3:.1f} ms per keep-alive request (Nagle would give ~40 ms)"


def test_server_survives_and_never_logs_the_key(servers):
    secured = servers[0]
    assert get(secured.url, "/health")[0] == 200 and secured.proc.poll() is None
    log = secured.log()
    assert KEY not in log and "wrong-key" not in log and "Authorization" not in log
    assert '"POST /v1/rerank HTTP/1.1" 400' in log  # the access log is there, just without secrets
