"""The client libraries people already use, pointed at `xlmr-np serve` by their base URL and key alone.

One server (a tiny random model served under the hub name BAAI/bge-reranker-base, API key required) runs
for the module. Each client's ranking and scores are checked against the Python API in this process:
the Cohere SDK (v1 and v2, sync and async), rerankers' cohere, jina and text-embeddings-inference
providers, and huggingface_hub's InferenceClient (health and endpoint info; it has no rerank call).
LangChain and LlamaIndex, heavier, are in tests/test_clients_frameworks.py (`nox -s clients_frameworks`).
"""

from __future__ import annotations

import asyncio

import pytest
from helpers import ATOL, DOCS, KEY, QUERY, check_ranking
from processes import HUB_REPO, reranker_in_process, serve_with_key

from xlmr_np.reranker import document_scores
from xlmr_np.testing import require
from xlmr_np.tokenizer import EncodeOptions

pytestmark = pytest.mark.integration

LONG_DOC = "Paris is the capital of France. " + " ".join(f"Sentence {i} is about something else." for i in range(12))


def library(name: str):
    return require(name, f"the {name} client against xlmr-np serve")


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    yield from serve_with_key(tiny_model[0], tmp_path_factory, KEY)


@pytest.fixture(scope="module")
def private_server(tiny_model, tmp_path_factory):
    """With --private-health: /health and /info need the key too."""
    yield from serve_with_key(tiny_model[0], tmp_path_factory, KEY, "--private-health")


@pytest.fixture(scope="module")
def reranker(tiny_model):
    return reranker_in_process(tiny_model[0])


# --- cohere -------------------------------------------------------------------------------------------


def check_cohere(name: str, response, want: list[dict]) -> None:
    check_ranking(name, [r.index for r in response.results], [r.relevance_score for r in response.results], want)


def check_cohere_meta(response, version: str) -> None:
    assert isinstance(response.id, str) and response.id, f"id {response.id!r}"
    assert response.meta.api_version.version == version, response.meta
    assert response.meta.billed_units.search_units == 1, response.meta


def test_cohere_v1_client(server, reranker):
    cohere = library("cohere")
    client = cohere.Client(KEY, base_url=server)
    response = client.rerank(model=HUB_REPO, query=QUERY, documents=DOCS, top_n=3, return_documents=True)
    want = reranker.rerank(QUERY, DOCS, top_n=3)
    check_cohere("cohere.Client.rerank", response, want)
    assert [r.document.text for r in response.results] == [r["document"] for r in want]
    check_cohere_meta(response, "1")


def test_cohere_v1_async_client_without_model(server, reranker):
    cohere = library("cohere")

    async def rerank():
        return await cohere.AsyncClient(KEY, base_url=server).rerank(
            query=QUERY, documents=DOCS, return_documents=False
        )

    response = asyncio.run(rerank())
    check_cohere("cohere.AsyncClient.rerank", response, reranker.rerank(QUERY, DOCS))
    assert all(r.document is None for r in response.results)
    check_cohere_meta(response, "1")


def test_cohere_v1_structured_documents_echoed_whole(server, reranker):
    cohere = library("cohere")
    documents = [{"id": f"doc-{i}", "title": f"title {i}", "text": text} for i, text in enumerate(DOCS)]
    client = cohere.Client(KEY, base_url=server)
    response = client.rerank(model=HUB_REPO, query=QUERY, documents=documents, return_documents=True)
    check_cohere("cohere.Client.rerank, objects scored on text", response, reranker.rerank(QUERY, DOCS))
    assert [r.document.model_dump() for r in response.results] == [documents[r.index] for r in response.results]


def test_cohere_v1_rank_fields(server, reranker):
    cohere = library("cohere")
    titles = ["The capital of France", "Yellow fruit", "German cities", "Famous towers"]
    documents = [{"title": title, "text": text} for title, text in zip(titles, DOCS)]
    client = cohere.Client(KEY, base_url=server)
    response = client.rerank(model=HUB_REPO, query=QUERY, documents=documents, rank_fields=["title"])
    check_cohere("cohere.Client.rerank, rank_fields=['title']", response, reranker.rerank(QUERY, titles))


def test_cohere_v2_client(server, reranker):
    cohere = library("cohere")
    response = cohere.ClientV2(KEY, base_url=server).rerank(model=HUB_REPO, query=QUERY, documents=DOCS, top_n=2)
    check_cohere("cohere.ClientV2.rerank", response, reranker.rerank(QUERY, DOCS, top_n=2))
    check_cohere_meta(response, "2")


def test_cohere_v2_max_tokens_per_doc(server, reranker):
    cohere = library("cohere")
    documents = [LONG_DOC, DOCS[0]]
    response = cohere.ClientV2(KEY, base_url=server).rerank(
        model=HUB_REPO, query=QUERY, documents=documents, max_tokens_per_doc=8
    )
    # the Python API's equivalent: each document cut to its first 8 tokens, the query kept whole
    encoded, owners = reranker.encode_documents(QUERY, documents, EncodeOptions(max_document_tokens=8))
    scores = document_scores(len(documents), encoded, owners, reranker.logits_of(encoded)[:, 0])
    want = scores.ranked(documents)
    check_cohere("cohere.ClientV2.rerank max_tokens_per_doc=8", response, want)
    assert [r.truncated for r in response.results] == [r["index"] == 0 for r in want]
    whole = reranker.rerank(QUERY, documents[:1])[0]["relevance_score"]
    cut = scores.relevance[0]
    assert abs(whole - cut) > 100 * ATOL, f"cutting the long document changed its score by only {abs(whole - cut):.2e}"


def test_cohere_v2_async_client_top_n_beyond_documents(server, reranker):
    cohere = library("cohere")

    async def rerank():
        return await cohere.AsyncClientV2(KEY, base_url=server).rerank(
            model=HUB_REPO, query=QUERY, documents=DOCS, top_n=10
        )

    response = asyncio.run(rerank())  # LangChain's CohereRerank sends top_n=3 whatever the documents
    check_cohere("cohere.AsyncClientV2.rerank top_n=10", response, reranker.rerank(QUERY, DOCS))
    check_cohere_meta(response, "2")


def test_cohere_errors_carry_the_servers_message(server):
    cohere = library("cohere")
    with pytest.raises(cohere.UnauthorizedError) as caught:
        cohere.ClientV2("wrong-key", base_url=server).rerank(model=HUB_REPO, query=QUERY, documents=DOCS)
    assert "API key" in caught.value.body["message"], caught.value.body
    with pytest.raises(cohere.NotFoundError) as caught:
        cohere.Client(KEY, base_url=server).rerank(model="rerank-v3.5", query=QUERY, documents=DOCS)
    assert HUB_REPO in caught.value.body["message"], caught.value.body
    with pytest.raises(cohere.BadRequestError) as caught:
        cohere.ClientV2(KEY, base_url=server).rerank(model=HUB_REPO, query=QUERY, documents=[])
    assert "documents is empty" in caught.value.body["message"], caught.value.body


# --- rerankers (AnswerDotAI) --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "provider, path", [("cohere", "/v1/rerank"), ("jina", "/v1/rerank"), ("text-embeddings-inference", "/rerank")]
)
def test_rerankers_api_providers(server, reranker, provider, path):
    rerankers = library("rerankers")
    ranker = rerankers.Reranker(HUB_REPO, model_type=provider, api_key=KEY, url=server + path, verbose=0)
    results = ranker.rank(QUERY, DOCS)
    want = reranker.rerank(QUERY, DOCS)
    check_ranking(f"rerankers {provider}", [r.document.doc_id for r in results], [r.score for r in results], want)
    assert [r.rank for r in results] == list(range(1, len(DOCS) + 1))
    assert [r.document.text for r in results] == [r["document"] for r in want]


# --- huggingface_hub ----------------------------------------------------------------------------------


def test_inference_client_health_and_endpoint_info(server, reranker):
    hub = library("huggingface_hub")
    # provider="hf-inference": with the default provider these calls refuse to run ("not supported on None")
    client = hub.InferenceClient(model=server, provider="hf-inference", token=KEY)
    assert client.health_check() is True
    info = client.get_endpoint_info()
    assert info["model_id"] == HUB_REPO, info
    assert list(info["model_type"]) == ["reranker"], info
    assert info["max_input_length"] == reranker.max_length, info


def test_inference_client_without_the_key_on_public_routes(server):
    hub = library("huggingface_hub")
    client = hub.InferenceClient(model=server, provider="hf-inference", token="not-the-key")
    assert client.health_check() is True  # /health and /info are public unless --private-health
    assert client.get_endpoint_info()["model_id"] == HUB_REPO


def test_inference_client_reads_the_servers_error(private_server):
    hub = library("huggingface_hub")
    client = hub.InferenceClient(model=private_server, provider="hf-inference", token="wrong-key")
    assert client.health_check() is False
    with pytest.raises(hub.errors.HfHubHTTPError) as caught:
        client.get_endpoint_info()
    assert caught.value.response.status_code == 401
    assert "missing or wrong API key" in str(caught.value), str(caught.value)  # TEI's {"error": ...}
    assert hub.InferenceClient(model=private_server, provider="hf-inference", token=KEY).health_check() is True
