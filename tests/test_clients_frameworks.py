"""LangChain and LlamaIndex rerankers pointed at `xlmr-np serve`, checked against the Python API.

These frameworks are heavy (and pin their own cohere release), so they are not in the test extra: run
`nox -s clients_frameworks`, which installs them in a separate environment. Without them installed,
every test here skips, in CI too; that session sets XLMR_NP_REQUIRE_FRAMEWORKS=1, which turns a missing
framework into a failure.
"""

from __future__ import annotations

import importlib
import os

import pytest
from helpers import DOCS, KEY, QUERY, check_ranking
from processes import HUB_REPO, reranker_in_process, serve_with_key

pytestmark = pytest.mark.integration


def library(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as e:
        if os.environ.get("XLMR_NP_REQUIRE_FRAMEWORKS") == "1":
            pytest.fail(f"{name} is required here (XLMR_NP_REQUIRE_FRAMEWORKS=1): {e}")
        pytest.skip(f"{name} not installed: run nox -s clients_frameworks")


FRAMEWORKS = ("langchain_cohere", "langchain_community", "llama_index.postprocessor.cohere_rerank")


@pytest.fixture(scope="module", autouse=True)
def frameworks():
    """Skip (or fail) the module before a model is built or a server started."""
    for name in FRAMEWORKS:
        library(name)


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    yield from serve_with_key(tiny_model[0], tmp_path_factory, KEY)


@pytest.fixture(scope="module")
def reranker(tiny_model):
    return reranker_in_process(tiny_model[0])


def langchain_documents():
    return [
        library("langchain_core.documents").Document(page_content=text, metadata={"n": i})
        for i, text in enumerate(DOCS)
    ]


def test_langchain_cohere_rerank(server, reranker):
    rerank = library("langchain_cohere").CohereRerank
    compressor = rerank(base_url=server, cohere_api_key=KEY, model=HUB_REPO)  # top_n defaults to 3
    ranked = compressor.compress_documents(langchain_documents(), QUERY)
    check_ranking(
        "langchain_cohere.CohereRerank",
        [d.metadata["n"] for d in ranked],
        [d.metadata["relevance_score"] for d in ranked],
        reranker.rerank(QUERY, DOCS, top_n=3),
    )
    assert [d.page_content for d in ranked] == [DOCS[d.metadata["n"]] for d in ranked]


def test_langchain_cohere_rerank_top_n_beyond_documents(server, reranker):
    rerank = library("langchain_cohere").CohereRerank
    results = rerank(base_url=server, cohere_api_key=KEY, model=HUB_REPO).rerank(DOCS[:2], QUERY)  # top_n=3
    check_ranking(
        "CohereRerank.rerank, 2 documents, top_n=3",
        [r["index"] for r in results],
        [r["relevance_score"] for r in results],
        reranker.rerank(QUERY, DOCS[:2]),
    )


@pytest.fixture
def jina_rerank(server, monkeypatch):
    """JinaRerank has no base_url: its endpoint is a module constant, patched here as a user would."""
    module = library("langchain_community.document_compressors.jina_rerank")
    monkeypatch.setattr(module, "JINA_API_URL", server + "/v1/rerank")
    return module.JinaRerank


def test_langchain_jina_rerank(jina_rerank, reranker):
    ranked = jina_rerank(jina_api_key=KEY, model=HUB_REPO, top_n=4).compress_documents(langchain_documents(), QUERY)
    check_ranking(
        "langchain_community JinaRerank",
        [d.metadata["n"] for d in ranked],
        [d.metadata["relevance_score"] for d in ranked],
        reranker.rerank(QUERY, DOCS),
    )


def test_langchain_jina_rerank_reads_the_servers_error(jina_rerank):
    with pytest.raises(RuntimeError, match="not served here"):  # JinaRerank raises RuntimeError(body["detail"])
        jina_rerank(jina_api_key=KEY, model="jina-reranker-v2-base-multilingual").rerank(DOCS, QUERY)
    with pytest.raises(RuntimeError, match="API key"):
        jina_rerank(jina_api_key="wrong-key", model=HUB_REPO).rerank(DOCS, QUERY)


def test_llama_index_cohere_rerank(server, reranker):
    rerank = library("llama_index.postprocessor.cohere_rerank").CohereRerank
    schema = library("llama_index.core.schema")
    nodes = [schema.NodeWithScore(node=schema.TextNode(text=text, id_=f"node-{i}")) for i, text in enumerate(DOCS)]
    postprocessor = rerank(model=HUB_REPO, api_key=KEY, base_url=server, top_n=2)
    ranked = postprocessor.postprocess_nodes(nodes, query_str=QUERY)
    check_ranking(
        "llama_index CohereRerank",
        [int(n.node.id_.split("-")[1]) for n in ranked],
        [n.score for n in ranked],
        reranker.rerank(QUERY, DOCS, top_n=2),
    )


def test_llama_index_cohere_rerank_wrong_key_is_not_retried(server):
    rerank = library("llama_index.postprocessor.cohere_rerank").CohereRerank
    schema = library("llama_index.core.schema")
    cohere = library("cohere")
    postprocessor = rerank(model=HUB_REPO, api_key="wrong-key", base_url=server, top_n=2)
    with pytest.raises(cohere.UnauthorizedError) as caught:  # a 401, not one of the 5xx it retries 10 times
        postprocessor.postprocess_nodes([schema.NodeWithScore(node=schema.TextNode(text=DOCS[0]))], query_str=QUERY)
    assert "API key" in caught.value.body["message"], caught.value.body
