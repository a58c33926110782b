"""The server's limits and refusals, in process (the ASGI app through starlette's TestClient, no socket), on a
random model held in memory (numpy only): bodies whose echo could not be encoded, the token and byte
budgets, documents far beyond them, a model file changed in place, the length of a long-context model,
and the small things (HEAD, a trailing slash, the /docs page's own Origin).

Transport attacks (slow readers, dripped requests, connection floods, signals) need real sockets: see
tests/test_serve_attacks.py.
"""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
from safetensors.numpy import save_file  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from xlmr_np import Reranker, api  # noqa: E402
from xlmr_np.config import XLMRobertaConfig  # noqa: E402
from xlmr_np.serve import schema  # noqa: E402
from xlmr_np.serve.admission import body_estimate  # noqa: E402
from xlmr_np.serve.batcher import Batcher, ModelChanged  # noqa: E402
from xlmr_np.serve.routes import create_app  # noqa: E402
from xlmr_np.serve.settings import ServerSettings, default_max_batch_tokens  # noqa: E402
from xlmr_np.testing import TINY, xlmr_tokenizer_json  # noqa: E402
from xlmr_np.tokenizer import EncodedPair, EncodeOptions, PairTokenizer  # noqa: E402
from xlmr_np.weights import expected_shapes  # noqa: E402

QUERY = "capital of France"
DOCS = ["Paris is the capital of France.", "Bananas are yellow.", "Berlin is the capital of Germany."]


def random_params(config: XLMRobertaConfig, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {key: rng.normal(0, 0.2, shape).astype(np.float32) for key, shape in expected_shapes(config).items()}


def tiny_config(**overrides) -> XLMRobertaConfig:
    fields = {**TINY, "model_type": "xlm-roberta", "architectures": ["XLMRobertaForSequenceClassification"]}
    return XLMRobertaConfig.from_dict({**fields, **overrides})


@pytest.fixture(scope="module")
def tokenizer_file():
    return xlmr_tokenizer_json()


@pytest.fixture(scope="module")
def reranker(tokenizer_file):
    config = tiny_config()
    return Reranker(random_params(config, 0), config, PairTokenizer.from_file(tokenizer_file, max_length=64))


def client(reranker, **settings) -> TestClient:
    return TestClient(create_app(reranker, ServerSettings(model_name="tiny", **settings)), base_url="http://127.0.0.1")


def shape_of(path: str, body) -> None:
    """The error is in the shape the route's clients read."""
    schema.parse_response(api.TeiErrorResponse if path == "/rerank" else api.ErrorResponse, body)


# ---- input that no answer could echo: 400 naming the field, never a mislabelled 500 ----


UNECHOABLE = [
    # (body text, the field named, words in the message); NaN, Infinity and 1e999 are what json.loads accepts
    ('{"query": "q", "documents": [{"text": "d", "meta": NaN}]}', "body", "NaN is not a JSON number"),
    ('{"query": "q", "documents": [{"text": "d", "meta": -Infinity}]}', "body", "-Infinity is not a JSON number"),
    ('{"query": "q", "documents": [{"text": "d", "meta": 1e999}]}', "body", "too large for a float"),
    ('{"query": "q", "documents": [{"text": "d", "meta": "\\ud800"}]}', "documents[0].meta", "lone surrogate"),
    ('{"query": "q", "documents": [{"text": "d", "\\udfff": 1}]}', "documents[0] (a key)", "lone surrogate"),
    ('{"query": "q", "documents": ["d"], "rank_fields": ["\\ud800"]}', "rank_fields[0]", "lone surrogate"),
    ('{"query": "q", "documents": ["d"], "top_n": "\\ud800"}', "top_n", "lone surrogate"),
    ('{"query": "q", "documents": ["d"], "raw_scores": NaN}', "body", "NaN is not a JSON number"),
]


@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank"])
@pytest.mark.parametrize("text, field, words", UNECHOABLE, ids=[f"{i}-{f}" for i, (_, f, _) in enumerate(UNECHOABLE)])
def test_input_no_answer_could_echo_is_a_400_naming_it(reranker, path, text, field, words):
    """Before: 500 "the model produced a non-finite score", in the Cohere shape even on the TEI route."""
    with client(reranker) as c:
        response = c.post(path, content=text)
    body = response.json()
    assert (response.status_code, body["error"]["field"]) == (400, field), body
    assert words in body["error"]["message"] and "non-finite" not in body["error"]["message"]
    shape_of(path, body)


def test_tei_route_refuses_them_in_its_own_shape(reranker):
    with client(reranker) as c:
        for text in ('{"query": "q", "texts": ["d"], "x": NaN}', '{"query": "q", "texts": ["d"], "x": ["\\ud800"]}'):
            response = c.post("/rerank", content=text)
            assert response.status_code == 400 and response.json()["error_type"] == "Validation", response.text
            shape_of("/rerank", response.json())


def test_what_can_be_echoed_is_echoed_whole(reranker):
    document = {"text": "Paris.", "meta": {"n": [1, 2.5, None, True], "emoji": "🙂", "key \u00e9": "x"}}
    with client(reranker) as c:  # ensure_ascii: the emoji travels as the escaped pair "\ud83d\ude42"
        response = c.post("/v1/rerank", content=json.dumps({"query": QUERY, "documents": [document]}))
    assert response.status_code == 200 and response.json()["results"][0]["document"] == document


# ---- the budgets: 413 for one request beyond them, 429 with Retry-After when others hold them ----


def test_the_token_budget(reranker):
    documents = [f"document {i} " + "word " * 30 for i in range(8)]  # about 8 x 35 tokens
    with client(reranker, max_inflight_tokens=200) as c:
        admission = c.app.service.admission
        for path, body in (("/v1/rerank", {"documents": documents}), ("/rerank", {"texts": documents})):
            response = c.post(path, json={"query": QUERY, **body})
            assert response.status_code == 413, response.text
            shape_of(path, response.json())
            assert "--max-inflight-tokens" in response.text
        assert c.post("/v1/rerank", json={"query": QUERY, "documents": DOCS}).status_code == 200
        admission.tokens = 195  # what other requests in flight hold
        busy = c.post("/v1/rerank", json={"query": QUERY, "documents": DOCS})
        assert busy.status_code == 429 and busy.headers["retry-after"] == "1", busy.text
        assert "hold 195 of 200" in busy.json()["error"]["message"]
        admission.tokens = 0
        assert c.post("/rerank", json={"query": QUERY, "texts": DOCS}).status_code == 200
        assert (admission.requests, admission.bytes, admission.tokens) == (0, 0, 0)


def test_the_byte_budget_is_checked_before_the_body_is_read(reranker):
    with client(reranker, max_inflight_bytes=100_000) as c:
        admission = c.app.service.admission
        big = {"query": QUERY, "documents": ["word " * 4000]}  # 20 KB: about 160 KB once parsed
        response = c.post("/v1/rerank", json=big)
        assert response.status_code == 413 and "--max-inflight-bytes" in response.text, response.text
        admission.bytes = 99_000
        read = []

        def body():
            read.append(True)
            yield json.dumps({"query": QUERY, "documents": DOCS}).encode()

        response = c.post("/v1/rerank", content=body(), headers={"Content-Length": "80"})
        assert response.status_code == 429 and response.headers["retry-after"] == "1", response.text
        admission.bytes = 0
        assert c.post("/v1/rerank", json={"query": QUERY, "documents": DOCS}).status_code == 200


def test_body_estimate_bounds_what_parsing_holds():
    """body_estimate >= what json.loads holds at its peak (tracemalloc), for the bodies that cost the most per
    byte: empty objects, one astral character in a long string, many keys."""
    import tracemalloc

    bodies = [
        b"[" + b",".join([b"{}"] * 50_000) + b"]",
        json.dumps(["a" * 200_000 + "\U0001f600"], ensure_ascii=False).encode(),
        json.dumps({str(i): 0 for i in range(20_000)}).encode(),
        json.dumps({"query": "q", "documents": ["word " * 100] * 500}).encode(),
    ]
    for raw in bodies:
        tracemalloc.start()
        parsed = json.loads(raw)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        del parsed
        assert peak <= body_estimate(raw), f"{raw[:20]!r}: peak {peak} > estimate {body_estimate(raw)}"


def test_a_document_beyond_the_budget_is_refused_before_it_is_read_whole(reranker):
    """Under --windows a document is read whole: a 7 MiB one used to cost ~730 MB of RSS and seconds before
    anything was refused. The tokenizer now stops at the budget, and the refusal names the document."""
    document = "word " * (7 * 2**20 // 5)
    with client(reranker, windows=True, max_inflight_tokens=20_000) as c:
        started = time.perf_counter()
        response = c.post("/v1/rerank", json={"query": QUERY, "documents": ["short", document]})
        seconds = time.perf_counter() - started
    assert response.status_code == 413 and response.json()["error"]["field"] == "documents[1]", response.text
    assert seconds < 2, f"{seconds:.2f} s to refuse"


def test_tei_refuses_or_cuts_a_7mib_text_at_bounded_cost(reranker):
    """Before: 413 after 5.4 s of CPU (the whole text tokenized to say how long it is), Left truncation 4.9 s."""
    text = "word " * (7 * 2**20 // 5)
    with client(reranker) as c:
        started = time.perf_counter()
        refused = c.post("/rerank", json={"query": QUERY, "texts": [text]})
        refused_seconds = time.perf_counter() - started
        started = time.perf_counter()
        left = {"query": QUERY, "texts": [text], "truncate": True, "truncation_direction": "Left"}
        cut = c.post("/rerank", json=left)
        cut_seconds = time.perf_counter() - started
    assert refused.status_code == 413 and "Given: more than 65536 (texts[0])" in refused.json()["error"]
    assert cut.status_code == 200, cut.text
    scores = reranker.score_documents(QUERY, [text], raw_scores=False, options=EncodeOptions(direction="left"))
    assert cut.json()[0]["score"] == scores.relevance[0]
    assert refused_seconds < 1.5 and cut_seconds < 1.5, (refused_seconds, cut_seconds)


def test_auto_truncate_is_the_tei_routes_default_for_requests_that_do_not_say(reranker):
    long = {"query": QUERY, "texts": ["word " * 200]}
    with client(reranker) as c:
        assert c.post("/rerank", json=long).status_code == 413
        assert c.get("/info").json()["auto_truncate"] is False
    with client(reranker, auto_truncate=True) as c:
        assert c.post("/rerank", json=long).status_code == 200
        assert c.post("/rerank", json={**long, "truncate": False}).status_code == 413
        assert c.get("/info").json()["auto_truncate"] is True


# ---- the model the server answers with is the model it loaded ----


def write_model(directory, tokenizer_file, seed: int) -> None:
    config = tiny_config()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps({**TINY, "model_type": "xlm-roberta"}))
    save_file(random_params(config, seed), str(directory / "model.safetensors"))
    shutil.copy(tokenizer_file, directory / "tokenizer.json")


def test_a_model_file_overwritten_in_place_is_never_served(tokenizer_file, tmp_path):
    """`cp other/model.safetensors served/model.safetensors` under a running server used to leave it
    answering 200 with the other model's scores. Now every rerank after it is a 503 saying so, and /health
    is a 503; a new file renamed over the old one (the safe way) changes nothing."""
    served, other = tmp_path / "served", tmp_path / "other"
    write_model(served, tokenizer_file, seed=0)
    write_model(other, tokenizer_file, seed=1)
    reranker = Reranker.from_pretrained(served)
    with client(reranker) as c:
        before = c.post("/v1/rerank", json={"query": QUERY, "documents": DOCS})
        assert before.status_code == 200
        replaced = served / "model.safetensors.new"
        shutil.copyfile(served / "model.safetensors", replaced)
        replaced.replace(served / "model.safetensors")  # a rename: the mapping keeps the old file
        assert c.post("/v1/rerank", json={"query": QUERY, "documents": DOCS}).json() | {"id": None} == before.json() | {
            "id": None
        }
        reranker.mapped_files[0] = type(reranker.mapped_files[0]).of(served / "model.safetensors")  # serve the new one
        shutil.copyfile(other / "model.safetensors", served / "model.safetensors")  # in place, as cp does
        after = c.post("/v1/rerank", json={"query": QUERY, "documents": DOCS})
        tei = c.post("/rerank", json={"query": QUERY, "texts": DOCS})
        health = c.get("/health")
    assert after.status_code == 503 and after.json()["error"]["type"] == "model_changed", after.text
    message = after.json()["error"]["message"]
    assert "model.safetensors was changed in place" in message and "restart the server" in message, message
    assert tei.status_code == 503 and tei.json()["error_type"] == "Overloaded"
    assert health.status_code == 503 and "changed on disk" in health.json()["status"]


def test_a_batch_scored_while_the_file_changed_is_discarded():
    """The batcher asks after each forward pass: logits computed while the bytes changed never reach a
    request, and the jobs queued behind them fail too."""
    import asyncio

    changed = []

    def logits_of(sequences, batch_size, progress):
        changed.append("during the pass")  # the file changes while the pass reads it
        return np.zeros((len(sequences), 1))

    batcher = Batcher(logits_of, 1000, check=lambda: "model.safetensors was changed" if changed else None)

    async def main():
        batcher.start()
        try:
            first = batcher.submit([EncodedPair([0, 5, 2], False)])
            with pytest.raises(ModelChanged, match="was changed"):
                await asyncio.wait_for(first.future, 10)
            second = batcher.submit([EncodedPair([0, 6, 2], False)])
            with pytest.raises(ModelChanged):
                await asyncio.wait_for(second.future, 10)
        finally:
            batcher.stop()

    asyncio.run(main())
    assert changed == ["during the pass"], "the second job must fail without a forward pass"


# ---- the server follows the model's own length ----


def test_settings_scale_with_the_models_length():
    assert default_max_batch_tokens(512) == 16_384 and default_max_batch_tokens(8192) == 262_144
    short, long = ServerSettings("m").for_model(512), ServerSettings("m").for_model(8192)
    assert (short.max_batch_tokens, short.max_inflight_tokens) == (16_384, 1 << 20)
    assert (long.max_batch_tokens, long.max_inflight_tokens) == (262_144, 1 << 20)
    given = ServerSettings("m", max_batch_tokens=4096, max_inflight_tokens=9999).for_model(8192)
    assert (given.max_batch_tokens, given.max_inflight_tokens) == (4096, 9999)


def test_a_long_context_model_is_served_at_its_own_length(tokenizer_file):
    """An 8194-position model: /info and /v1/models say 8192, and a 2,000-token document is one sequence,
    not truncated, truncating or in windows (a 514-position model would cut or split it)."""
    config = tiny_config(max_position_embeddings=8194)
    long = Reranker(random_params(config, 0), config, PairTokenizer.from_file(tokenizer_file, max_length=8192))
    document = " ".join(f"w{i % 900}" for i in range(850))  # about 2,000 tokens
    with client(long) as c:
        info = c.get("/info").json()
        assert (info["max_input_length"], info["max_batch_tokens"]) == (8192, 262_144)
        assert c.get("/v1/models").json()["data"][0]["max_length"] == 8192
        for chunks in (1, 3):  # truncation, and windows of the model's own length
            body = {"query": QUERY, "documents": [document], "max_chunks_per_doc": chunks}
            answer = c.post("/v1/rerank", json=body).json()
            (result,) = answer["results"]
            assert (result["windows"], result["truncated"]) == (1, False), answer
            assert 1500 < answer["usage"]["total_tokens"] <= 8192


# ---- small things ----


def test_head_trailing_slash_and_the_docs_pages_own_origin(reranker):
    with client(reranker) as c:
        for path in ("/health", "/info", "/metrics", "/v1/models"):
            head = c.head(path)
            assert head.status_code == 200 and head.content == b"", path  # was 405 on /health
        same = c.post("/v1/rerank", json={"query": QUERY, "documents": DOCS}, headers={"Origin": "http://127.0.0.1"})
        assert same.status_code == 200, same.text  # /docs "Try it out" on a keyless server
        other = c.post("/v1/rerank", json={"query": QUERY, "documents": DOCS}, headers={"Origin": "http://evil"})
        assert other.status_code == 403
    with client(reranker, api_key="k") as c:
        slash = c.post("/v1/rerank/", json={"query": QUERY, "documents": DOCS}, headers={"Authorization": "Bearer k"})
        assert slash.status_code == 404 and "location" not in slash.headers, slash.headers  # was a 307


def test_openapi_response_schemas_are_the_api_types(reranker):
    """One definition: /openapi.json's response schemas are derived from xlmr_np.api's dataclasses."""
    with client(reranker) as c:
        document = c.get("/openapi.json").json()
    components = document["components"]["schemas"]
    for response_type in (api.RerankResponse, api.RerankResult, api.TeiRank, api.ErrorResponse, api.Info):
        generated = schema.response_schema(response_type)
        generated.pop("$defs", None)
        assert components[response_type.__name__]["properties"].keys() == generated["properties"].keys()
        assert components[response_type.__name__]["required"] == generated["required"]
    results = components["RerankResult"]["properties"]
    assert results["windows"]["description"].startswith("sequences this document was scored as")
