"""Reranker.rerank: ranking, top_n, return_documents, truncation reports, long-document windows, progress."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from tokenizers import Tokenizer

from xlmr_np import InputError, PairTokenizer, Reranker, sigmoid64
from xlmr_np.errors import ConfigError
from xlmr_np.ranking import PROGRESS_MIN_SEQUENCES, progress_bar

QUERY = "capital of France"
DOCS = [
    "Paris is the capital of France.",
    "Bananas are yellow.",
    "Berlin is the capital of Germany.",
    "",
    "France borders Spain, Italy and Germany. " * 3,
    "北京是中国的首都。",
]
LONG_DOC = " ".join(f"sentence {i} is about something else." for i in range(12)) + " Paris is the capital."


@pytest.fixture(scope="module")
def reranker(tiny_reranker):
    return tiny_reranker


@pytest.fixture(scope="module")
def short(reranker, tiny_dir):
    """The same model with room for only 24 tokens per sequence, so LONG_DOC needs several windows."""
    tokenizer = PairTokenizer.from_file(tiny_dir / "tokenizer.json", max_length=24)
    return Reranker(reranker.params, reranker.config, tokenizer)


@pytest.fixture(scope="module")
def plain(tiny_dir):
    """The tokenizer without truncation: the reference for building windows by hand."""
    tokenizer = Tokenizer.from_file(str(tiny_dir / "tokenizer.json"))
    tokenizer.no_truncation()
    return tokenizer


def test_results_sorted_with_indices_into_input(reranker):
    logits = np.array(reranker.compute_score([(QUERY, d) for d in DOCS]))
    results = reranker.rerank(QUERY, DOCS)
    assert [r["index"] for r in results] == np.argsort(-logits, kind="stable").tolist()
    for r in results:
        assert r["document"] == DOCS[r["index"]]
        assert r["relevance_score"] == sigmoid64(logits[r["index"]])
        assert r["truncated"] is False and r["windows"] == 1
    raw = reranker.rerank(QUERY, DOCS, raw_scores=True)
    assert [r["relevance_score"] for r in raw] == sorted(logits.tolist(), reverse=True)


def test_top_n_and_return_documents(reranker):
    full = reranker.rerank(QUERY, DOCS)
    top = reranker.rerank(QUERY, DOCS, top_n=2, return_documents=False)
    assert top == [{k: v for k, v in r.items() if k != "document"} for r in full[:2]]
    assert reranker.rerank(QUERY, DOCS, top_n=100) == full


def test_scores_do_not_depend_on_batch_size(reranker):
    one = [r["relevance_score"] for r in reranker.rerank(QUERY, DOCS, batch_size=1)]
    np.testing.assert_allclose(one, [r["relevance_score"] for r in reranker.rerank(QUERY, DOCS)], rtol=1e-6)


@pytest.mark.parametrize(
    "query, documents, top_n, message",
    [
        (None, DOCS, None, "query must be a str, got NoneType"),
        (QUERY, "one document", None, "documents must be a list of str, got str"),
        (QUERY, [], None, "documents is empty"),
        (QUERY, ["ok", {"text": "x"}], None, r"documents\[1\] must be a str, got dict"),
        (QUERY, DOCS, 0, "top_n must be a positive int or None, got 0"),
        (QUERY, DOCS, True, "top_n must be a positive int or None, got True"),
        (QUERY, DOCS, 1.5, "top_n must be a positive int or None, got 1.5"),
    ],
)
def test_bad_input(reranker, query, documents, top_n, message):
    with pytest.raises(InputError, match=message):
        reranker.rerank(query, documents, top_n=top_n)


def test_truncation_is_reported_per_document(short):
    results = {r["index"]: r for r in short.rerank(QUERY, ["Paris.", LONG_DOC])}
    assert (results[0]["truncated"], results[1]["truncated"]) == (False, True)


def test_windows_cover_the_document_and_score_the_best_window(short, plain):
    """Rebuild the windows by hand (template <s> q </s></s> w </s>) and score them with engine.forward."""
    from xlmr_np import engine

    overlap = 4
    q = plain.encode(QUERY, add_special_tokens=False).ids
    d = plain.encode(LONG_DOC, add_special_tokens=False).ids
    room = 24 - 4 - len(q)
    starts = range(0, len(d) - overlap, room - overlap)
    windows = [d[s : s + room] for s in starts]
    assert len(windows) > 2 and windows[-1][-1] == d[-1]
    logits = []
    for w in windows:
        ids = np.array([[0, *q, 2, 2, *w, 2]])
        logits.append(engine.forward(short.params, short.config, ids, np.ones_like(ids))[0, 0])

    scores = short.score_documents(QUERY, ["Paris.", LONG_DOC], windows=True, window_overlap=overlap, raw_scores=True)
    assert scores.windows == [1, len(windows)] and scores.truncated == [False, False]
    np.testing.assert_allclose(scores.logits[1], max(logits), rtol=1e-5, atol=1e-6)
    paris = plain.encode("Paris.", add_special_tokens=False).ids
    assert scores.total_tokens == sum(len(q) + 4 + len(w) for w in [paris, *windows])
    # a document that fits is one window, scored as without windows
    np.testing.assert_allclose(scores.logits[0], short.score_documents(QUERY, ["Paris."]).logits[0], rtol=1e-5)


def test_windows_report_a_cut_query(short):
    scores = short.score_documents("very long query " * 20, [LONG_DOC], windows=True)
    assert scores.truncated == [True] and scores.windows[0] > 1


def test_non_finite_scores_are_errors(reranker):
    params = dict(reranker.params, **{"classifier.out_proj.bias": np.array([np.nan], dtype=np.float32)})
    broken = Reranker(params, reranker.config, reranker.tokenizer)
    with pytest.raises(FloatingPointError, match="non-finite logits"):
        broken.rerank(QUERY, DOCS)


def test_multi_label_model_cannot_rerank(reranker):
    two = Reranker(reranker.params, dataclasses.replace(reranker.config, num_labels=2), reranker.tokenizer)
    with pytest.raises(ConfigError, match="one relevance logit; this model has 2 labels"):
        two.rerank(QUERY, DOCS)
    with pytest.raises(ConfigError, match="one relevance logit; this model has 2 labels"):
        two.require_single_logit()
    reranker.require_single_logit()  # one label: no error


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_only_on_a_terminal_for_large_jobs(monkeypatch):
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert progress_bar(10**6, None).disable
    monkeypatch.setattr("sys.stderr", Terminal())
    assert progress_bar(PROGRESS_MIN_SEQUENCES - 1, None).disable
    assert not progress_bar(PROGRESS_MIN_SEQUENCES, None).disable
    assert progress_bar(10**6, False).disable


def test_progress_bar_counts_sequences(reranker, monkeypatch):
    monkeypatch.setattr("sys.stderr", terminal := Terminal())
    reranker.rerank(QUERY, DOCS, progress=True, batch_size=4)
    assert f"{len(DOCS)}/{len(DOCS)}" in terminal.getvalue()
