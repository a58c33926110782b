"""PairTokenizer.encode_windows: the same ids as the Encoding.merge construction it replaced, linear time
and memory on long documents, and its document limits; the per-call EncodeOptions that choose it, and the
bounds on what reading a long document costs; on the small tokenizer where the real one's segmentation of
these texts is all a test needs (parsed in milliseconds)."""

from __future__ import annotations

import random
import resource
import time

import pytest
from helpers import SMALL_TOKENIZER
from tokenizers import Encoding

from xlmr_np import tokenizer as tokenizer_module
from xlmr_np.errors import InputError
from xlmr_np.testing import xlmr_tokenizer_json
from xlmr_np.tokenizer import DEFAULT_WINDOW_OVERLAP, EncodeOptions, PairTokenizer, TooManyTokens, _pieces, _windows

QUERY = "capital of France"
SENTENCE = "Paris is the capital and largest city of France, on the Seine. 東京は日本の首都です。🙂 "


@pytest.fixture(scope="module")
def tokenizer():
    return PairTokenizer.from_file(SMALL_TOKENIZER, max_length=48)


def merged_windows(tokenizer: PairTokenizer, pairs, overlap):
    """The construction encode_windows used before: rejoin the chunks with Encoding.merge (quadratic in the
    number of chunks), re-split with Encoding.truncate(room, stride), post-process each window."""
    inner = tokenizer._tokenizer
    texts = inner.encode_batch([t for pair in pairs for t in pair], add_special_tokens=False)
    sequences, owners = [], []
    for i, (query, document) in enumerate(zip(texts[0::2], texts[1::2])):
        cut = tokenizer._cap_query(query)
        document = Encoding.merge([document, *document.overflowing], growing_offsets=True)
        room = tokenizer.max_length - tokenizer.special_tokens - len(query)
        if len(document) > room:
            document.truncate(room, stride=min(overlap, room // 2))
        for window in [document, *document.overflowing]:
            sequences.append((inner.post_process(query, window).ids, cut))
            owners.append(i)
    return sequences, owners


DOCUMENTS = ["", "Paris.", SENTENCE, SENTENCE * 3, SENTENCE * 40, "word " * 997, "x" * 5000]


@pytest.mark.parametrize("overlap", [0, 3, 64])
@pytest.mark.parametrize("query", ["", QUERY, "long query " * 40])
def test_same_ids_as_the_merge_construction(tokenizer, overlap, query):
    pairs = [(query, d) for d in DOCUMENTS]
    sequences, owners = tokenizer.encode_windows(pairs, overlap)
    want, want_owners = merged_windows(tokenizer, pairs, overlap)
    assert owners == want_owners, f"{len(owners)} windows vs {len(want_owners)}"
    mismatched = [k for k, (s, w) in enumerate(zip(sequences, want)) if (s.ids, s.truncated) != w]
    assert mismatched == [], f"{len(mismatched)} of {len(want)} windows differ, first {mismatched[:5]}"


def test_window_spans_match_the_docstring_example():
    assert _windows(30, 10, 3) == [(0, 10), (7, 17), (14, 24), (21, 30)]
    assert _windows(10, 10, 3) == [(0, 10)] and _windows(0, 10, 0) == [(0, 0)]
    assert _windows(11, 10, 5) == [(0, 10), (5, 11)]


def test_limits_cut_the_document_and_flag_it(tokenizer):
    document = SENTENCE * 40
    everything, _ = tokenizer.encode_windows([(QUERY, document)], 8)
    first, _ = tokenizer.encode_windows([(QUERY, document)], 8, max_windows=2)
    assert [s.ids for s in first] == [s.ids for s in everything[:2]] and all(s.truncated for s in first)
    assert not any(s.truncated for s in everything) and len(everything) > 2
    short, _ = tokenizer.encode_windows([(QUERY, document)], 8, max_document_tokens=5)
    head = 1 + len(tokenizer._tokenizer.encode(QUERY, add_special_tokens=False).ids) + 2  # <s> query </s></s>
    assert [s.ids for s in short] == [everything[0].ids[: head + 5] + everything[0].ids[-1:]]
    assert short[0].truncated
    for bad in (dict(overlap=-1), dict(overlap=None), dict(max_windows=0), dict(max_document_tokens=True)):
        with pytest.raises(InputError):
            tokenizer.encode_windows([(QUERY, "d")], **{"overlap": 4, **bad})


def test_two_megabyte_document_in_bounded_time_and_memory():
    """2 MB of text (about 400k tokens) at the real max_length: seconds, and memory of the order of the ids
    (the Encoding.merge construction needed tens of GB here)."""
    tokenizer = PairTokenizer.from_file(SMALL_TOKENIZER, max_length=512)
    document = "word " * 400_000  # 2,000,000 bytes
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    start = time.perf_counter()
    sequences, owners = tokenizer.encode_windows([(QUERY, document)], 64)
    seconds = time.perf_counter() - start
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    n_tokens = sum(len(s.ids) for s in sequences)
    assert len(sequences) > 800 and set(owners) == {0}
    assert seconds < 30, f"{seconds:.1f} s for {len(sequences)} windows"
    assert grown_mb < 1500, f"peak RSS grew {grown_mb:.0f} MB for {n_tokens} tokens"


# ---- the per-call options (EncodeOptions) and bounded reading of long documents ----


@pytest.mark.parametrize(
    "options, windows_kwargs",
    [
        (EncodeOptions(direction="left"), dict(max_windows=1, from_end=True)),
        (EncodeOptions(max_document_tokens=7), dict(max_windows=1, max_document_tokens=7)),
        (EncodeOptions(windows=True, max_windows=3, window_overlap=4), dict(overlap=4, max_windows=3)),
        (EncodeOptions(windows=True, direction="left", window_overlap=0), dict(overlap=0, from_end=True)),
    ],
)
def test_options_choose_the_window_encoder(tokenizer, options, windows_kwargs):
    pairs = [(QUERY, d) for d in DOCUMENTS]
    got = tokenizer.sequences(pairs, options)
    want = tokenizer.encode_windows(pairs, **{"overlap": DEFAULT_WINDOW_OVERLAP, **windows_kwargs})
    assert [(s.ids, s.truncated) for s in got[0]] == [(s.ids, s.truncated) for s in want[0]] and got[1] == want[1]


def test_default_options_truncate_by_the_tokenizers_strategy(tokenizer):
    pairs = [(QUERY, d) for d in DOCUMENTS]
    sequences, owners = tokenizer.sequences(pairs)
    assert owners == list(range(len(pairs)))
    assert [(s.ids, s.truncated) for s in sequences] == [(e.ids, e.truncated) for e in tokenizer.encode(pairs)]
    only_second = PairTokenizer.from_file(xlmr_tokenizer_json(), max_length=48, truncation="only_second")
    assert [s.ids for s in tokenizer.sequences(pairs, EncodeOptions(strategy="only_second"))[0]] == [
        e.ids for e in only_second.encode(pairs)
    ]


@pytest.mark.parametrize(
    "changes, where",
    [
        (dict(strategy="middle"), "strategy"),
        (dict(direction="up"), "direction"),
        (dict(max_document_tokens=0), "max_document_tokens"),
        (dict(windows=1), "windows"),
        (dict(window_overlap=-1), "window_overlap"),
        (dict(max_windows=2), "max_windows"),  # without windows=True
        (dict(windows=True, max_windows=True), "max_windows"),
    ],
)
def test_bad_options_name_the_field(changes, where):
    with pytest.raises(InputError) as raised:
        EncodeOptions(**changes)
    assert raised.value.where == where


@pytest.mark.parametrize("size", [1, 3, 7, 40])
def test_pieces_tokenize_as_the_whole_text(tokenizer, size):
    """Pieces cut before spaces give the whole text's ids, whatever surrounds the cut: runs of spaces, tabs,
    no-break and ideographic spaces, direction marks, combining accents (alone or on a space), line
    separators, CJK, emoji and characters the normalizer expands."""
    alphabet = [" ", "  ", "a", "é", "e\u0301", "\u0301", "\t", "\xa0", "\u200e", "\u200b", "\ufeff", "\u3000"]
    alphabet += ["\u2028", "東京", "🙂", "\u331a", "\ufdfa", ".", ",", "\n", "\r\n", "word", "x" * 30]
    rng = random.Random(size)
    mismatched = []
    for _ in range(400):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        pieces = list(_pieces(text, size))
        joined = [i for p in pieces for i in tokenizer._ids(p)]
        if "".join(pieces) != text or joined != tokenizer._ids(text):
            mismatched.append((text, pieces))
    assert mismatched == [], f"{len(mismatched)} of 400 texts differ, first {mismatched[0]!r}"


def test_a_document_read_in_pieces_gives_the_same_windows(tokenizer, monkeypatch):
    pairs = [(QUERY, d) for d in DOCUMENTS]
    whole = tokenizer.encode_windows(pairs, 8)
    monkeypatch.setattr(tokenizer_module, "PIECE_CHARS", 50)
    pieces = tokenizer.encode_windows(pairs, 8)
    assert [s.ids for s in pieces[0]] == [s.ids for s in whole[0]] and pieces[1] == whole[1]


def test_limits_read_only_what_they_keep():
    """max_windows and max_document_tokens tokenize only the prefix (or, from the end, the suffix) they keep:
    the first windows of a 2 MB document in milliseconds, the same ids as from the whole document."""
    tokenizer = PairTokenizer.from_file(xlmr_tokenizer_json(), max_length=64)
    document = " ".join(f"sentence {i} says something." for i in range(5_000))  # 140 KB
    everything, _ = tokenizer.encode_windows([(QUERY, document)], 8)
    for kwargs, want in [
        (dict(max_windows=3), everything[:3]),
        (dict(max_windows=3, from_end=True), tokenizer.encode_windows([(QUERY, document)], 8, from_end=True)[0][:3]),
    ]:
        got, _ = tokenizer.encode_windows([(QUERY, document)], 8, **kwargs)
        assert [s.ids for s in got] == [s.ids for s in want] and all(s.truncated for s in got), kwargs
    huge = document * 15  # 2 MB
    start = time.perf_counter()
    first, _ = tokenizer.encode_windows([(QUERY, huge)], 8, max_windows=2)
    last, _ = tokenizer.encode_windows([(QUERY, huge)], 8, max_document_tokens=20, from_end=True)
    seconds = time.perf_counter() - start
    assert [s.ids for s in first] == [s.ids for s in everything[:2]]
    tail = tokenizer._ids(document[-400:])[-20:]
    assert last[0].ids[-21:-1] == tail and last[0].truncated
    assert seconds < 1, f"{seconds:.2f} s for the first windows of 2 MB"


def test_max_tokens_stops_before_the_rest_is_tokenized(tokenizer):
    """A call over its token bound raises TooManyTokens naming the pair, after tokenizing little more than
    the bound: a 2 MB document is refused in milliseconds."""
    with pytest.raises(TooManyTokens) as raised:
        tokenizer.sequences([(QUERY, "short"), (QUERY, "word " * 400_000)], EncodeOptions(windows=True), 1000)
    assert raised.value.where == "pairs[1]" and raised.value.limit == 1000
    start = time.perf_counter()
    with pytest.raises(TooManyTokens):
        tokenizer.sequences([(QUERY, "word " * 400_000)], EncodeOptions(windows=True), 5000)
    assert time.perf_counter() - start < 1
    with pytest.raises(TooManyTokens) as raised:
        tokenizer.sequences([(QUERY, SENTENCE)] * 100, max_tokens=1000)  # truncation: checked every 64 pairs
    assert raised.value.where == "pairs[0:64]"
    sequences, _ = tokenizer.sequences([(QUERY, SENTENCE)] * 3, EncodeOptions(windows=True), max_tokens=10_000)
    assert sum(len(s.ids) for s in sequences) <= 10_000
