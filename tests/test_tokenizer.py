"""Tokenization: ids and attention masks identical to transformers' XLMRobertaTokenizerFast, on the real
250,002-piece XLM-R tokenizer.json, over edge cases and both truncation strategies (parity tier); the rules
that hold for any vocabulary (input forms, padding, limits, errors) on the small tokenizer (unit tier)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import SMALL_TOKENIZER

from xlmr_np import InputError, PairTokenizer, TokenizerError
from xlmr_np.testing import require, xlmr_tokenizer_json

LONG_DOC = (
    "Der schnelle braune Fuchs springt über den faulen Hund. 敏捷的棕色狐狸跳过了懒狗。 "
    "Быстрая коричневая лиса прыгает через ленивую собаку. 🦊🐕 "
) * 200  # ~20,000 characters
assert len(LONG_DOC) >= 20_000

CASES = {
    "plain": ("what is the capital of France?", "Paris is the capital of France."),
    "empty document": ("capital of France", ""),
    "empty query": ("", "Paris is the capital of France."),
    "both empty": ("", ""),
    "cjk": ("北京是哪个国家的首都？", "北京是中华人民共和国的首都。東京は日本の首都です。서울은 한국의 수도입니다."),
    "emoji": ("🙂🙃 emoji?", "🎉🎉🎉 party 👩‍👩‍👧‍👦 family ❤️"),
    "mixed scripts": ("Ünïcödé ÅÉÎ", "русский العربية हिन्दी ไทย ελληνικά עברית 日本語 abc123"),
    "whitespace and controls": ("  spaced   query\t", "line one\nline two\r\n\u00a0nbsp\u200bzero-width"),
    "20,000-character document": ("fox and dog", LONG_DOC),
    "query longer than max_length": ("a very long query about foxes " * 150, "short document"),
    "both long": ("query words " * 400, LONG_DOC),
}


@pytest.fixture(scope="module")
def hf_tokenizer():
    require("transformers", "token ids against transformers")
    from transformers import XLMRobertaTokenizerFast

    return XLMRobertaTokenizerFast(tokenizer_file=str(xlmr_tokenizer_json()))


@pytest.fixture(scope="module")
def ours():
    """ours(max_length, truncation): the real tokenizer, parsed once per setting, the copies of one truncation
    strategy kept at a time (each holds about 270 MB; the tests take one strategy after the other)."""
    made: dict = {}

    def get(max_length=512, truncation="longest_first"):
        if any(strategy != truncation for _, strategy in made):
            made.clear()
        if (max_length, truncation) not in made:
            made[max_length, truncation] = PairTokenizer.from_file(
                xlmr_tokenizer_json(), max_length=max_length, truncation=truncation
            )
        return made[max_length, truncation]

    yield get
    made.clear()


def small(max_length=512, truncation="longest_first"):
    """The small tokenizer (tests/fixtures/small-tokenizer), for the rules that hold whatever the vocabulary."""
    return PairTokenizer.from_file(SMALL_TOKENIZER, max_length=max_length, truncation=truncation)


def hf_pair(hf, query, document, **kwargs):
    """transformers on a batch of one pair, as FlagEmbedding and mteb call it. (Called with two bare
    strings, transformers drops an empty document and encodes the query alone.)"""
    return hf([query], [document], **kwargs)["input_ids"][0]


@pytest.mark.parity
@pytest.mark.parametrize("max_length", [512, 32])
@pytest.mark.parametrize("name", list(CASES))
def test_longest_first_matches_transformers(hf_tokenizer, name, max_length, ours):
    query, document = CASES[name]
    if max_length == 32:
        # transformers cuts a pair into every combination of its texts' 32-token pieces: on "both long"
        # whole, 1.5 GB. The first 4,000 characters of each are still far beyond 32 tokens, and beyond the
        # prefix xlmr_np tokenizes a long text from (16 x max_length characters).
        query, document = query[:4000], document[:4000]
    ref = hf_pair(hf_tokenizer, query, document, truncation="longest_first", max_length=max_length)
    [got] = ours(max_length=max_length).encode([(query, document)])
    assert got.ids == ref, f"{name}: {len(got.ids)} ids vs transformers' {len(ref)}"
    untruncated = hf_pair(hf_tokenizer, query, document)
    assert got.truncated == (len(untruncated) > max_length)


def only_second_reference(hf, query, document, max_length):
    """FlagEmbedding's current recipe: the query capped at max_length * 3 // 4 tokens, then only_second."""
    q = hf(query, add_special_tokens=False)["input_ids"]
    d = hf(document, add_special_tokens=False)["input_ids"]
    query_max = max_length * 3 // 4
    if len(q) <= query_max:  # transformers can truncate this case itself: use it directly
        return hf_pair(hf, query, document, truncation="only_second", max_length=max_length)
    q = q[:query_max]
    room = max_length - 4 - len(q)
    return [hf.cls_token_id, *q, hf.sep_token_id, hf.sep_token_id, *d[:room], hf.sep_token_id]


@pytest.mark.parity
@pytest.mark.parametrize("max_length", [512, 32])
@pytest.mark.parametrize("name", list(CASES))
def test_only_second_matches_transformers(hf_tokenizer, name, max_length, ours):
    query, document = CASES[name]
    ref = only_second_reference(hf_tokenizer, query, document, max_length)
    [got] = ours(max_length=max_length, truncation="only_second").encode([(query, document)])
    assert got.ids == ref, f"{name}: {len(got.ids)} ids vs reference {len(ref)}"
    assert len(got.ids) <= max_length
    untruncated = hf_pair(hf_tokenizer, query, document)
    assert got.truncated == (len(untruncated) > max_length or len(ref) < len(untruncated))


@pytest.mark.parity
def test_only_second_keeps_a_query_that_fits_whole(hf_tokenizer, ours):
    query, document = "a query of moderate length " * 10, LONG_DOC
    [got] = ours(truncation="only_second").encode([(query, document)])
    q = hf_tokenizer(query, add_special_tokens=False)["input_ids"]
    assert got.ids[1 : 1 + len(q)] == q and got.ids[1 + len(q) : 3 + len(q)] == [2, 2]
    assert len(got.ids) == 512 and got.truncated


@pytest.mark.parity
def test_padded_batch_matches_transformers(hf_tokenizer, ours):
    pairs = list(CASES.values())
    ref = hf_tokenizer(
        [q for q, _ in pairs],
        [d for _, d in pairs],
        padding=True,
        truncation="longest_first",
        max_length=512,
        return_tensors="np",
    )
    batch = ours()(pairs)
    assert np.array_equal(batch.input_ids, ref["input_ids"])
    assert np.array_equal(batch.attention_mask, ref["attention_mask"])
    assert batch.input_ids.dtype == np.int64


def test_pairs_may_come_as_tuples_lists_generators_or_arrays():
    pairs = [("a query", "a document"), ("another", "")]
    expected = [e.ids for e in small().encode(pairs)]
    for form in ([list(p) for p in pairs], (p for p in pairs), np.array(pairs)):
        assert [e.ids for e in small().encode(form)] == expected


def test_only_second_leaves_the_document_room_at_tiny_max_length():
    for max_length in range(6, 20):
        [got] = small(max_length=max_length, truncation="only_second").encode([("query " * 30, "document " * 30)])
        assert len(got.ids) == max_length and got.truncated
        assert got.ids[-2] not in (0, 2)  # at least one document token before the closing </s>


def test_padding_is_per_batch_not_to_max_length():
    batch = small()([("a", "b"), ("a", "b c d")])
    assert batch.input_ids.shape[1] == max(batch.lengths) < 512
    assert batch.input_ids[0, -1] == 1 and batch.attention_mask[0, -1] == 0


@pytest.mark.parametrize(
    "pairs, message",
    [
        ([], "empty"),
        ("query", "list of"),
        ({"q": "d"}, "list of"),
        (42, "list of"),
        ([("q", None)], "document must be a str"),
        ([(1, "d")], "query must be a str"),
        ([("q", "d", "extra")], r"pairs\[0\]"),
        ([("q", "d"), "qd"], r"pairs\[1\]"),
        ([("q", b"bytes")], "document must be a str"),
    ],
)
def test_bad_pairs_raise_input_error(pairs, message):
    with pytest.raises(InputError, match=message):
        small().encode(pairs)


def test_bad_settings_and_files(tmp_path):
    with pytest.raises(ValueError, match="truncation"):
        PairTokenizer.from_file(SMALL_TOKENIZER, max_length=512, truncation="only_first")
    with pytest.raises(ValueError, match="max_length"):
        PairTokenizer.from_file(SMALL_TOKENIZER, max_length=3)
    with pytest.raises(TokenizerError, match="not found"):
        PairTokenizer.from_file(tmp_path / "tokenizer.json")
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="cannot load"):
        PairTokenizer.from_file(tmp_path / "tokenizer.json")
