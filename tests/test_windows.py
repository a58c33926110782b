"""PairTokenizer.encode_windows: the same ids as the Encoding.merge construction it replaced, linear time
and memory on long documents, and its document limits; on the small tokenizer (the real one's segmentation
of these texts, parsed in milliseconds)."""

from __future__ import annotations

import resource
import time

import pytest
from helpers import SMALL_TOKENIZER
from tokenizers import Encoding

from xlmr_np.errors import InputError
from xlmr_np.tokenizer import PairTokenizer, _windows

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
