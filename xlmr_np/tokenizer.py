"""Query/document pairs -> padded token-id batches, with the model's own tokenizer.json.

The `tokenizers` library does the work (the same Rust code transformers' XLMRobertaTokenizerFast runs),
so ids are identical to transformers'. The pair template comes from tokenizer.json's post-processor:
`<s> query </s></s> document </s>` for XLM-R.

Two truncation strategies, both to `max_length` tokens including the 4 special tokens:
- "longest_first" (default): trim one token at a time from whichever text is longer. This is what
  FlagEmbedding's 2023 reranker did, so the published C-MTEB scores used it.
- "only_second": keep the query (capped at max_length * 3 // 4 tokens, as FlagEmbedding's current
  reranker does, so a huge query cannot leave no room) and trim only the document.
Every pair reports whether anything was cut. A call may choose otherwise with EncodeOptions (direction,
a per-document token limit, windows): the typed options a request carries from the HTTP schema, the CLI or
Python to `PairTokenizer.sequences`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from .errors import InputError, TokenizerError

TRUNCATION_STRATEGIES = ("longest_first", "only_second")
TRUNCATION_DIRECTIONS = ("right", "left")  # the end of the document that loses tokens, as tokenizers names it
DEFAULT_WINDOW_OVERLAP = 64  # tokens shared by adjacent windows of a long document
# A truncated text is tokenized from a prefix of CLIP_CHARS_PER_TOKEN * max_length characters (more if that
# prefix is too short in tokens), so one huge line costs what a long document does, not gigabytes.
CLIP_CHARS_PER_TOKEN = 16
# The prefix must give this many tokens beyond max_length: only the tokens at its cut can differ from the
# whole text's, and these lie beyond every token truncation keeps.
CLIP_MARGIN = 8
# A word (a run without spaces) longer than this is cut inside when a prefix is taken; see PairTokenizer.clip.
CLIP_WORD_CHARS = 100_000
# Truncated pairs are tokenized this many at a time, the running total checked against a call's max_tokens.
SEQUENCES_PER_CHECK = 64
# A document read whole (windows) is tokenized in pieces of about this many characters, cut between words, so
# tokenizing it holds one piece's encodings at a time (about 330 bytes per token) besides its ids.
PIECE_CHARS = 16_384


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


@dataclass(frozen=True)
class EncodeOptions:
    """How one call turns (query, document) pairs into sequences when a pair is longer than max_length.

    The defaults truncate as the published scores did, one sequence per pair. Every other choice uses the
    window encoder (PairTokenizer.encode_windows), which keeps the query whole (capped at max_length * 3 // 4
    tokens) and cuts or splits the document only:

        EncodeOptions()                               longest_first truncation
        EncodeOptions(direction="left")               the document's last tokens beside the query
        EncodeOptions(max_document_tokens=256)        the document's first 256 tokens, then as above
        EncodeOptions(windows=True, max_windows=3)    the document's first 3 windows, scored by the best
    """

    strategy: str = "longest_first"  # TRUNCATION_STRATEGIES: which text loses tokens, one sequence per pair
    direction: str = "right"  # TRUNCATION_DIRECTIONS: "left" cuts the document's start (keeps its end)
    max_document_tokens: int | None = None  # cut each document to this many tokens first
    windows: bool = False  # split a long document into overlapping windows instead of cutting it
    max_windows: int | None = None  # with windows: keep a document's first n windows only
    window_overlap: int = DEFAULT_WINDOW_OVERLAP  # tokens shared by adjacent windows (at most half a window)

    def __post_init__(self):
        for name, allowed in (("strategy", TRUNCATION_STRATEGIES), ("direction", TRUNCATION_DIRECTIONS)):
            if getattr(self, name) not in allowed:
                raise InputError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}", where=name)
        if not isinstance(self.windows, bool):
            raise InputError(f"windows must be a bool, got {self.windows!r}", where="windows")
        for name, least in (("max_document_tokens", 1), ("max_windows", 1), ("window_overlap", 0)):
            value = getattr(self, name)
            optional = name != "window_overlap"
            if (value is not None or not optional) and (
                isinstance(value, bool) or not isinstance(value, int) or value < least
            ):
                raise InputError(f"{name} must be an int of at least {least}, got {value!r}", where=name)
        if self.max_windows is not None and not self.windows:
            raise InputError("max_windows applies to windows=True only", where="max_windows")

    @property
    def truncates(self) -> bool:
        """Whether pairs are simply truncated by `strategy` (else the window encoder runs)."""
        return not self.windows and self.direction == "right" and self.max_document_tokens is None

    def describe(self) -> str:
        """The options that differ from the defaults, for messages: "windows=True, max_windows=3"."""
        changed = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if getattr(self, f.name) != f.default]
        return ", ".join(changed) or "the defaults"


class TooManyTokens(InputError):
    """A call's sequences would hold more tokens than its max_tokens allows (raised before the rest is
    tokenized: a server's bound on what one request may cost)."""

    def __init__(self, limit: int, where: str):
        super().__init__(f"more than {limit} tokens to score", where=where)
        self.limit = limit


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
        self.options = EncodeOptions(strategy=truncation)  # what a call without its own options gets
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

    def sequences(
        self, pairs, options: EncodeOptions | None = None, max_tokens: int | None = None
    ) -> tuple[list[EncodedPair], list[int]]:
        """The sequences `options` (default: self.options) make of the pairs, and for each the index of its
        pair: one per pair when truncating, one or more per pair with windows (see encode_windows).

        max_tokens: raise TooManyTokens once the sequences would hold more tokens than this in all, before
        the remaining pairs are tokenized (the cost of one call stays bounded whatever the texts' length).
        """
        options = options or self.options
        if not options.truncates:
            return self.encode_windows(
                pairs,
                options.window_overlap,
                max_windows=options.max_windows if options.windows else 1,
                max_document_tokens=options.max_document_tokens,
                from_end=options.direction == "left",
                max_tokens=max_tokens,
            )
        pairs = check_pairs(pairs)
        encoded: list[EncodedPair] = []
        total = 0
        for start in range(0, len(pairs), SEQUENCES_PER_CHECK):
            chunk = pairs[start : start + SEQUENCES_PER_CHECK]
            for e, cut in self._encode(chunk, options.strategy):
                encoded.append(EncodedPair(e.ids, cut))
                total += len(e.ids)
            if max_tokens is not None and total > max_tokens:
                raise TooManyTokens(max_tokens, where=f"pairs[{start}:{start + len(chunk)}]")
        return encoded, list(range(len(encoded)))

    def encodings(self, pairs) -> list[Encoding]:
        """The tokenizers Encodings behind encode(), for inspection: token strings, character offsets,
        word ids and sequence ids (0 query, 1 document, None for the template's special tokens)."""
        return [e for e, _ in self._encode(pairs)]

    def token_to_id(self, token: str) -> int | None:
        """The id of a vocabulary entry such as "<mask>", or None if the vocabulary lacks it."""
        return self._tokenizer.token_to_id(token)

    def clip(self, text: str, tokens: int | None = None, from_end: bool = False) -> str:
        """A prefix of `text` whose first `tokens` + CLIP_MARGIN tokens (default tokens: max_length) are those
        of the whole text, or the text itself if it is short: truncation keeps at most max_length tokens, so
        the encoding is the same, at a cost bounded by max_length rather than by the text. from_end=True
        gives a suffix whose last tokens are the whole text's instead (for cutting from the start).

        The cut is made before a space: the Metaspace pre-tokenizer tokenizes each space-separated word on
        its own, so every word before the cut tokenizes as in the whole text. Where the prefix ends inside
        a word (text without spaces, such as Chinese), the cut moves to the word's end. Only a word longer
        than CLIP_WORD_CHARS is cut inside, the one inexact case: a word's best segmentation can shift
        with its length ("0" * 513 and "0" * 512 share no token), so such a word's first tokens may differ
        from the whole word's. Example: max_length 512, a 5 MB line of words -> <= 8192 characters.
        """
        tokens = self.max_length if tokens is None else tokens
        budget = CLIP_CHARS_PER_TOKEN * tokens
        need = tokens + CLIP_MARGIN
        while len(text) > budget:
            cut = _cut_near(text[::-1] if from_end else text, budget)
            if cut >= len(text):
                break
            part = text[len(text) - cut :] if from_end else text[:cut]
            if len(self._ids(part)) > need:
                return part
            budget = 2 * cut  # mostly spaces or characters the normalizer drops: take more
        return text

    def _ids(self, text: str) -> list[int]:
        """All of a text's token ids (the shared tokenizer cuts them into max_length pieces: rejoin them)."""
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        return [i for piece in (encoding, *encoding.overflowing) for i in piece.ids]

    def _document_ids(self, text: str, limit: int | None) -> list[int]:
        """All of a text's token ids, tokenized piece by piece (see _pieces); TooManyTokens (where is filled
        in by the caller) once they number more than `limit`."""
        ids: list[int] = []
        for piece in _pieces(text, PIECE_CHARS):
            ids += self._ids(piece)
            if limit is not None and len(ids) > limit:
                raise TooManyTokens(limit, where="")
        return ids

    def _encode(self, pairs, strategy: str | None = None) -> list[tuple[Encoding, bool]]:
        pairs = [(self.clip(query), self.clip(document)) for query, document in check_pairs(pairs)]
        if (strategy or self.truncation) == "longest_first":
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
        overlap: int = DEFAULT_WINDOW_OVERLAP,
        max_windows: int | None = None,
        max_document_tokens: int | None = None,
        from_end: bool = False,
        max_tokens: int | None = None,
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
        last max_document_tokens. max_tokens: see sequences.

        Linear in the document's length: a document is tokenized from the prefix (or suffix) that the limits
        need (see clip), or whole in pieces of PIECE_CHARS cut between words, its ids joined as lists; each
        window is wrapped in the pair template's special tokens directly, which gives the ids the
        post-processor gives (Encoding.merge, by contrast, copies the growing encoding at every chunk).
        """
        for name, value, least in (
            ("overlap", overlap, 0),
            ("max_windows", max_windows, 1),
            ("max_document_tokens", max_document_tokens, 1),
            ("max_tokens", max_tokens, 1),
        ):
            optional = name != "overlap"
            if (value is not None or not optional) and (
                isinstance(value, bool) or not isinstance(value, int) or value < least
            ):
                raise InputError(f"{name} must be an int of at least {least}, got {value!r}")
        probe = self._tokenizer.encode("a", add_special_tokens=False)  # any non-empty second segment
        sequences, owners = [], []
        total = 0
        for i, (query_text, document_text) in enumerate(check_pairs(pairs)):
            query = self._tokenizer.encode(self.clip(query_text), add_special_tokens=False)
            cut = self._cap_query(query)
            prefix, suffix = self._template_around_second(query, probe)
            room = self.max_length - self.special_tokens - len(query)
            stride = min(overlap, room // 2)
            needed = _tokens_needed(room, stride, max_windows, max_document_tokens)  # None: all of them
            try:
                if needed is None:
                    ids = self._document_ids(document_text, None if max_tokens is None else max_tokens - total)
                else:
                    ids = self._ids(self.clip(document_text, needed, from_end))  # [n_document], exact to `needed`
            except TooManyTokens as e:
                raise TooManyTokens(e.limit + total, where=f"pairs[{i}]") from None
            if max_document_tokens is not None and len(ids) > max_document_tokens:
                ids, cut = (ids[-max_document_tokens:] if from_end else ids[:max_document_tokens]), True
            windows = _windows(len(ids), room, stride)
            if from_end:
                windows = [(len(ids) - stop, len(ids) - start) for start, stop in windows]
            if max_windows is not None and len(windows) > max_windows:
                windows, cut = windows[:max_windows], True
            for start, stop in windows:
                sequences.append(EncodedPair(prefix + ids[start:stop] + suffix, cut))
                owners.append(i)
                total += len(sequences[-1].ids)
            if max_tokens is not None and total > max_tokens:
                raise TooManyTokens(max_tokens, where=f"pairs[{i}]")
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


def _tokens_needed(room: int, stride: int, max_windows: int | None, max_document_tokens: int | None) -> int | None:
    """How many of a document's tokens (from the end it is read from) its windows can hold under the limits,
    or None when all of them: max_windows windows of `room` tokens overlapping by `stride`, or
    max_document_tokens.

        >>> _tokens_needed(10, 3, 4, None)    # windows [0:10] [7:17] [14:24] [21:31]
        31
    """
    limits = [max_document_tokens] if max_document_tokens is not None else []
    if max_windows is not None:
        limits.append(room + (max_windows - 1) * (room - stride))
    return min(limits) if limits else None


def _cut_near(text: str, budget: int) -> int:
    """Where to cut `text` near `budget` characters so that the part before tokenizes as in the whole text:
    before the last space in budget // 2..budget, else at the end of the word there (at most CLIP_WORD_CHARS
    further); see PairTokenizer.clip."""
    cut = text.rfind(" ", budget // 2, budget)
    if cut <= 0:  # inside a word: to its end, or CLIP_WORD_CHARS past the budget
        cut = text.find(" ", budget, budget + CLIP_WORD_CHARS)
        cut = cut if cut > 0 else budget + CLIP_WORD_CHARS
    return cut


def _pieces(text: str, size: int) -> Iterator[str]:
    """`text` in consecutive pieces of about `size` characters whose tokens, joined, are the whole text's.

    Each cut is made before a space that follows a letter, digit, punctuation or symbol: the space starts the
    next piece's first word as it starts that word in the whole text, and a piece never ends in whitespace,
    an invisible character or a combining mark (which the normalizer may turn into a final "▁" token). Where no such
    space lies in the last half of a piece, the piece runs on to the next one, at most CLIP_WORD_CHARS
    further (the inexact case of clip).

        >>> list(_pieces("aa bb  cc dd", 5))
        ['aa', ' bb', '  cc', ' dd']
    """
    start = 0
    while len(text) - start > size:
        end = start + size
        cut = _clean_space(text, max(start + 1, start + size // 2), end, last=True)
        if cut < 0:
            cut = _clean_space(text, end, end + CLIP_WORD_CHARS, last=False)
            cut = cut if cut >= 0 else end + CLIP_WORD_CHARS
        if cut >= len(text):
            break
        yield text[start:cut]
        start = cut
    yield text[start:]


def _clean_space(text: str, low: int, high: int, last: bool) -> int:
    """The last (or first) index in [low, high) holding a space after a letter, digit, punctuation or symbol
    (not a combining mark, which may sit on a space, nor whitespace or a control character), or -1."""
    cut = text.rfind(" ", low, high) if last else text.find(" ", low, high)
    while cut >= low and unicodedata.category(text[cut - 1])[0] not in "LNPS":  # not a mark, space or control
        cut = text.rfind(" ", low, cut) if last else text.find(" ", cut + 1, high)
    return cut if cut >= low else -1
