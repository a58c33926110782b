"""Query/document pairs -> padded token-id batches, with the model's own tokenizer.json.

The `tokenizers` library does the work (the same Rust code transformers' XLMRobertaTokenizerFast runs),
so ids are identical to transformers'. The pair template comes from tokenizer.json's post-processor:
`<s> query </s></s> document </s>` for XLM-R.

Two truncation strategies, both to `max_length` tokens including the 4 special tokens:
- "longest_first" (default): trim one token at a time from whichever text is longer. This is what
  FlagEmbedding's 2023 reranker did, so the published C-MTEB scores used it.
- "only_second": keep the query (capped at max_length * 3 // 4 tokens, as FlagEmbedding's current
  reranker does, so a huge query cannot leave no room) and trim only the document.
Every pair reports whether anything was cut.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from .errors import InputError, TokenizerError

TRUNCATION_STRATEGIES = ("longest_first", "only_second")
# A truncated text is tokenized from a prefix of CLIP_CHARS_PER_TOKEN * max_length characters (more if that
# prefix is too short in tokens), so one huge line costs what a long document does, not gigabytes.
CLIP_CHARS_PER_TOKEN = 16
# The prefix must give this many tokens beyond max_length: only the tokens at its cut can differ from the
# whole text's, and these lie beyond every token truncation keeps.
CLIP_MARGIN = 8
# A word (a run without spaces) longer than this is cut inside when a prefix is taken; see PairTokenizer.clip.
CLIP_WORD_CHARS = 100_000


@dataclass
class Batch:
    """A padded batch, ready for model.forward."""

    input_ids: np.ndarray  # [B, T] int64, right-padded with pad_token_id
    attention_mask: np.ndarray  # [B, T] int64, 1 for real tokens
    truncated: list[bool]  # per pair: was any token of the query or document dropped?

    @property
    def lengths(self) -> np.ndarray:
        return self.attention_mask.sum(axis=1)  # [B, T] -> [B]


@dataclass
class EncodedPair:
    ids: list[int]
    truncated: bool


_SURROGATE = re.compile("[\ud800-\udfff]")


def unicode_problem(text: str) -> str | None:
    """Why `text` cannot be tokenized, or None. A lone surrogate is not a character: it comes from bytes that
    were not valid UTF-8 (Python decodes command-line arguments and file names with surrogateescape, so
    byte 0xff becomes U+DCFF) or from a broken JSON escape such as "\\ud800"; the Rust tokenizer refuses it.

    >>> unicode_problem("caf\udce9")
    'not valid UTF-8: undecodable byte 0xe9 at character 3'
    """
    found = _SURROGATE.search(text)
    if found is None:
        return None
    i, code = found.start(), ord(found.group())
    if 0xDC80 <= code <= 0xDCFF:
        return f"not valid UTF-8: undecodable byte 0x{code - 0xDC00:02x} at character {i}"
    return f"not valid Unicode: lone surrogate U+{code:04X} at character {i}"


def check_text(text, what: str, where: str | None = None) -> str:
    """A str holding only real characters, or InputError naming `what` and `where`."""
    if not isinstance(text, str):
        raise InputError(f"the {what} must be a str, got {type(text).__name__}", where=where)
    problem = unicode_problem(text)
    if problem:
        raise InputError(f"the {what} is {problem}", where=where)
    return text


def check_pairs(pairs) -> list[tuple[str, str]]:
    """Validate a list of (query, document) string pairs; raise InputError naming the first bad one."""
    if isinstance(pairs, (str, bytes, dict)) or not isinstance(pairs, Iterable):
        raise InputError(f"pairs must be a list of (query, document) pairs, got {type(pairs).__name__}")
    try:
        pairs = list(pairs)  # a generator or an array of pairs is fine too
    except TypeError:  # a 0-d array is Iterable but cannot be iterated
        raise InputError(f"pairs must be a list of (query, document) pairs, got {pairs!r:.80}") from None
    if len(pairs) == 0:
        raise InputError("pairs is empty: give at least one (query, document) pair")
    checked = []
    for i, pair in enumerate(pairs):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, (Sequence, np.ndarray)) or len(pair) != 2:
            raise InputError(f"expected a (query, document) pair of strings, got {pair!r:.80}", where=f"pairs[{i}]")
        checked.append((check_text(pair[0], "query", f"pairs[{i}]"), check_text(pair[1], "document", f"pairs[{i}]")))
    return checked


class PairTokenizer:
    """Tokenizes (query, document) pairs with XLM-R's template and a truncation strategy."""

    def __init__(self, tokenizer: Tokenizer, max_length: int, truncation: str = "longest_first", pad_token_id: int = 1):
        if truncation not in TRUNCATION_STRATEGIES:
            raise InputError(
                f"truncation must be one of {TRUNCATION_STRATEGIES}, got {truncation!r}", where="truncation"
            )
        self.special_tokens = tokenizer.num_special_tokens_to_add(is_pair=True)  # 4 for XLM-R
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < self.special_tokens + 2:
            raise InputError(
                f"max_length must be an int of at least {self.special_tokens + 2} (the pair template uses "
                f"{self.special_tokens} special tokens), got {max_length!r}",
                where="max_length",
            )
        self.max_length = max_length
        self.truncation = truncation
        self.pad_token_id = pad_token_id
        # Configured once here and never again, so concurrent callers cannot race. The tokenizer is
        # taken over, not copied: loading a second copy of the 17 MB tokenizer.json costs seconds.
        self._tokenizer = tokenizer
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length, strategy="longest_first")

    @classmethod
    def from_file(cls, path: str | Path, **kwargs) -> PairTokenizer:
        path = Path(path)
        if not path.is_file():
            raise TokenizerError(f"{path}: tokenizer.json not found")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as e:  # the Rust side raises a bare Exception on malformed files
            raise TokenizerError(f"{path}: cannot load tokenizer ({e})") from None
        return cls(tokenizer, **kwargs)

    def encode(self, pairs) -> list[EncodedPair]:
        """Token ids for each pair, truncated to max_length, with a flag for each pair that was cut."""
        return [EncodedPair(e.ids, cut) for e, cut in self._encode(pairs)]

    def encodings(self, pairs) -> list[Encoding]:
        """The tokenizers Encodings behind encode(), for inspection: token strings, character offsets,
        word ids and sequence ids (0 query, 1 document, None for the template's special tokens)."""
        return [e for e, _ in self._encode(pairs)]

    def token_to_id(self, token: str) -> int | None:
        """The id of a vocabulary entry such as "<mask>", or None if the vocabulary lacks it."""
        return self._tokenizer.token_to_id(token)

    def clip(self, text: str) -> str:
        """A prefix of `text` whose first max_length + CLIP_MARGIN tokens are those of the whole text, or
        the text itself if it is short: truncation keeps at most max_length tokens, so the encoding is the
        same, at a cost bounded by max_length rather than by the text.

        The cut is made before a space: the Metaspace pre-tokenizer tokenizes each space-separated word on
        its own, so every word before the cut tokenizes as in the whole text. Where the prefix ends inside
        a word (text without spaces, such as Chinese), the cut moves to the word's end. Only a word longer
        than CLIP_WORD_CHARS is cut inside, the one inexact case: a word's best segmentation can shift
        with its length ("0" * 513 and "0" * 512 share no token), so such a word's first tokens may differ
        from the whole word's. Example: max_length 512, a 5 MB line of words -> <= 8192 characters.
        """
        budget = CLIP_CHARS_PER_TOKEN * self.max_length
        need = self.max_length + CLIP_MARGIN
        while len(text) > budget:
            cut = text.rfind(" ", budget // 2, budget)
            if cut <= 0:  # inside a word: to its end, or CLIP_WORD_CHARS past the budget
                cut = text.find(" ", budget, budget + CLIP_WORD_CHARS)
                cut = cut if cut > 0 else budget + CLIP_WORD_CHARS
            if cut >= len(text):
                break
            if len(self._ids(text[:cut])) > need:
                return text[:cut]
            budget = 2 * cut  # mostly spaces or characters the normalizer drops: take more
        return text

    def _ids(self, text: str) -> list[int]:
        """All of a text's token ids (the shared tokenizer cuts them into max_length pieces: rejoin them)."""
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        return [i for piece in (encoding, *encoding.overflowing) for i in piece.ids]

    def _encode(self, pairs) -> list[tuple[Encoding, bool]]:
        pairs = [(self.clip(query), self.clip(document)) for query, document in check_pairs(pairs)]
        if self.truncation == "longest_first":
            return [(e, bool(e.overflowing)) for e in self._tokenizer.encode_batch(pairs)]
        return self._encode_only_second(pairs)

    def _cap_query(self, query: Encoding) -> bool:
        """Cut a query (no special tokens) to max_length * 3 // 4 tokens, as FlagEmbedding does, and always
        leave room for one document token; returns whether it was cut."""
        query_max = min(self.max_length * 3 // 4, self.max_length - self.special_tokens - 1)
        if len(query) <= query_max:
            return False
        query.truncate(query_max)
        return True

    def _encode_only_second(self, pairs):
        # Each text alone: the tokenizer's own truncation may already cut it to max_length, a prefix of
        # what is kept below, so the result is the same and the flag still sees the cut.
        texts = self._tokenizer.encode_batch([t for pair in pairs for t in pair], add_special_tokens=False)
        out = []
        for query, document in zip(texts[0::2], texts[1::2]):
            cut = self._cap_query(query)
            room = self.max_length - self.special_tokens - len(query)
            if len(document) > room:
                cut = True
                document.truncate(room)
            out.append((self._tokenizer.post_process(query, document), cut))
        return out

    def encode_windows(
        self,
        pairs,
        overlap: int = 64,
        max_windows: int | None = None,
        max_document_tokens: int | None = None,
        from_end: bool = False,
    ) -> tuple[list[EncodedPair], list[int]]:
        """Every pair as one or more sequences, each holding the query and a window of the document that
        fits beside it; returns the sequences and, for each, the index of its pair.

        Nothing of the document is dropped unless asked. The query is capped as for only_second (and so
        that a document token still fits), and a pair is flagged truncated only if its query was cut or a
        limit below dropped document tokens. Consecutive windows share `overlap` tokens (at most half a
        window), so text cut at one window's edge appears whole in the next. Example: a 30-token document
        with room for 10 and overlap 3 -> windows [0:10] [7:17] [14:24] [21:30].

        max_windows keeps a document's first windows only (1: the document truncated beside a whole
        query); max_document_tokens first cuts the document to that many tokens. from_end=True lays the
        windows from the document's end instead (the first window holds its last tokens), and keeps the
        last max_document_tokens.

        Linear in the document's length: the tokenizer's max_length chunks are joined as id lists and
        each window is wrapped in the pair template's special tokens directly, which gives the ids the
        post-processor gives (Encoding.merge, by contrast, copies the growing encoding at every chunk).
        """
        for name, value, least in (
            ("overlap", overlap, 0),
            ("max_windows", max_windows, 1),
            ("max_document_tokens", max_document_tokens, 1),
        ):
            optional = name != "overlap"
            if (value is not None or not optional) and (
                isinstance(value, bool) or not isinstance(value, int) or value < least
            ):
                raise InputError(f"{name} must be an int of at least {least}, got {value!r}")
        texts = self._tokenizer.encode_batch([t for pair in check_pairs(pairs) for t in pair], add_special_tokens=False)
        probe = self._tokenizer.encode("a", add_special_tokens=False)  # any non-empty second segment
        sequences, owners = [], []
        for i, (query, document) in enumerate(zip(texts[0::2], texts[1::2])):
            cut = self._cap_query(query)
            prefix, suffix = self._template_around_second(query, probe)
            # The shared tokenizer cut the document into consecutive max_length chunks (stride 0).
            ids = [t for chunk in (document, *document.overflowing) for t in chunk.ids]  # [n_document]
            if max_document_tokens is not None and len(ids) > max_document_tokens:
                ids, cut = (ids[-max_document_tokens:] if from_end else ids[:max_document_tokens]), True
            room = self.max_length - self.special_tokens - len(query)
            windows = _windows(len(ids), room, min(overlap, room // 2))
            if from_end:
                windows = [(len(ids) - stop, len(ids) - start) for start, stop in windows]
            if max_windows is not None and len(windows) > max_windows:
                windows, cut = windows[:max_windows], True
            for start, stop in windows:
                sequences.append(EncodedPair(prefix + ids[start:stop] + suffix, cut))
                owners.append(i)
        return sequences, owners

    def _template_around_second(self, query: Encoding, probe: Encoding) -> tuple[list[int], list[int]]:
        """The ids the post-processor puts before and after the second segment of a pair with this query:
        for XLM-R, `<s> query </s></s>` and `</s>`."""
        pair = self._tokenizer.post_process(query, probe)
        second = [t for t, s in enumerate(pair.sequence_ids) if s == 1]
        return pair.ids[: second[0]], pair.ids[second[-1] + 1 :]

    def pad(self, encoded: Sequence[EncodedPair]) -> Batch:
        """Right-pad to the longest pair of this batch (not to max_length)."""
        T = max(len(e.ids) for e in encoded)
        input_ids = np.full((len(encoded), T), self.pad_token_id, dtype=np.int64)  # [B, T]
        attention_mask = np.zeros((len(encoded), T), dtype=np.int64)  # [B, T]
        for b, e in enumerate(encoded):
            input_ids[b, : len(e.ids)] = e.ids
            attention_mask[b, : len(e.ids)] = 1
        return Batch(input_ids, attention_mask, [e.truncated for e in encoded])

    def __call__(self, pairs) -> Batch:
        """Tokenize and pad in one step: the batch for model.forward."""
        return self.pad(self.encode(pairs))


def _windows(n: int, room: int, stride: int) -> list[tuple[int, int]]:
    """[start, stop) of the windows of n tokens, as tokenizers' Encoding.truncate(room, stride) splits them:
    steps of room - stride until a window reaches the end; one (possibly empty) window if all fit.

        >>> _windows(30, 10, 3)
        [(0, 10), (7, 17), (14, 24), (21, 30)]
    """
    if n <= room:
        return [(0, n)]
    spans = []
    for start in range(0, n, room - stride):
        spans.append((start, min(start + room, n)))
        if start + room >= n:
            break
    return spans
