"""Workloads: lists of token-id sequences, each <s> query </s></s> document </s>, and how they are batched."""

from __future__ import annotations

import gettext
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import BenchmarkError


@dataclass
class Workload:
    name: str
    sequences: list[np.ndarray]  # one int64 array per pair, special tokens included
    about: str  # where the lengths come from, for the report
    batch_size: int | None = None  # every implementation runs it at this batch size (None: each implementation's best)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(s) for s in self.sequences])


def pair_ids(query_len: int, doc_len: int, rng: np.random.Generator, vocab_size: int) -> np.ndarray:
    """<s> q </s></s> d </s> with random piece ids: 4 + query_len + doc_len tokens."""
    q = rng.integers(5, vocab_size - 1, query_len)
    d = rng.integers(5, vocab_size - 1, doc_len)
    return np.concatenate([[0], q, [2, 2], d, [2]]).astype(np.int64)


def synthetic(name: str, lengths: Sequence[int], vocab_size: int, seed: int = 0, query_len: int = 16) -> Workload:
    """Pairs of the given total lengths (>= query_len + 5) with random ids."""
    rng = np.random.default_rng(seed)
    sequences = [pair_ids(query_len, n - 4 - query_len, rng, vocab_size) for n in lengths]
    return Workload(name, sequences, f"random ids, lengths {min(lengths)}..{max(lengths)}")


def uniform(length: int, pairs: int, vocab_size: int) -> Workload:
    return synthetic(f"uniform {length}", [length] * pairs, vocab_size)


def single_pair(vocab_size: int, count: int = 10, doc_len: int = 64, query_len: int = 16) -> Workload:
    """Latency: `count` pairs of one query and one doc_len-token document, each scored alone (batch size 1)."""
    w = synthetic(f"single pair {doc_len}", [query_len + doc_len + 4] * count, vocab_size, query_len=query_len)
    w.about = f"one query ({query_len} tokens) and one {doc_len}-token document per call, {count} calls"
    w.batch_size = 1
    return w


def documents(
    doc_len: int, count: int, vocab_size: int, query_len: int = 16, name: str = "", seed: int = 0
) -> Workload:
    """One query against `count` documents of doc_len tokens each (random ids), all in one batch."""
    rng = np.random.default_rng(seed)
    query = rng.integers(5, vocab_size - 1, query_len)
    sequences = [
        np.concatenate([[0], query, [2, 2], rng.integers(5, vocab_size - 1, doc_len), [2]]).astype(np.int64)
        for _ in range(count)
    ]
    about = f"one {query_len}-token query and {count} document{'s' * (count > 1)} of {doc_len} tokens, random ids"
    return Workload(name or f"1x{count} docs {doc_len}", sequences, about, batch_size=count)


def mixed(pairs: int, vocab_size: int, low: int = 32, high: int = 512, seed: int = 0) -> Workload:
    lengths = np.random.default_rng(seed).integers(low, high + 1, pairs).tolist()
    return synthetic(f"mixed {low}..{high}", lengths, vocab_size, seed=seed)


# The rerank query, a real question in German (the catalogs' documents answer questions about shell use).
RERANK_QUERY = "Wie ändere ich das Arbeitsverzeichnis der Shell und was passiert mit der Variable PWD?"
CATALOG_LANGUAGES = ("de", "fr", "es", "ru", "zh_CN", "ja", "ko", "pl", "pt_BR", "it", "vi", "uk", "tr")


def catalog_documents(
    count: int, domain: str = "bash", min_chars: int = 200, localedir: str = "/usr/share/locale"
) -> tuple[list[str], str]:
    """Real multilingual documents: the translated help texts in the system's gettext catalogs.

    Debian ships bash's builtin help (`help cd`, `help read`, ...) translated by people into dozens of
    languages as /usr/share/locale/<lang>/LC_MESSAGES/bash.mo: paragraphs of real prose (with option
    lists) from a few lines to a page, i.e. the lengths of typical rerank passages. Documents are taken
    round-robin over the languages in catalog order, so the selection is deterministic.
    """
    per_language = []
    for lang in CATALOG_LANGUAGES:
        path = Path(localedir) / lang / "LC_MESSAGES" / f"{domain}.mo"
        if path.is_file():
            with open(path, "rb") as f:
                catalog = gettext.GNUTranslations(f)._catalog  # msgid -> translated text
            per_language.append([t for k, t in catalog.items() if k and isinstance(t, str) and len(t) >= min_chars])
    documents = [doc for group in zip(*per_language) for doc in group][:count]
    if len(documents) < count:
        raise BenchmarkError(
            f"found {len(documents)} translated {domain} help texts under {localedir} "
            f"(languages {CATALOG_LANGUAGES}); the rerank workload needs {count}"
        )
    source = f"{domain}.mo help texts in {len(per_language)} languages from {localedir}"
    return documents, source


def rerank(tokenizer_json: Path, count: int = 100, max_length: int = 512) -> Workload:
    """1 query x `count` real multilingual documents, tokenized by the real XLM-R tokenizer."""
    from xlmr_np.tokenizer import PairTokenizer

    documents, source = catalog_documents(count)
    tokenizer = PairTokenizer.from_file(tokenizer_json, max_length=max_length)
    encoded = tokenizer.encode([(RERANK_QUERY, d) for d in documents])
    return Workload(
        f"rerank 1x{count}", [np.array(e.ids, dtype=np.int64) for e in encoded], f"real token ids: {source}"
    )


def batches(workload: Workload, batch_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Sort pairs longest first, cut into batches, right-pad each to its own longest pair."""
    order = np.argsort(-workload.lengths, kind="stable")
    out = []
    for start in range(0, len(order), batch_size):
        chunk = [workload.sequences[i] for i in order[start : start + batch_size]]
        T = len(chunk[0])
        ids = np.ones((len(chunk), T), dtype=np.int64)  # pad id 1
        mask = np.zeros((len(chunk), T), dtype=np.int64)
        for b, seq in enumerate(chunk):
            ids[b, : len(seq)] = seq
            mask[b, : len(seq)] = 1
        out.append((ids, mask))
    return out


def useful_flops(lengths: Sequence[int], config) -> float:
    """Multiply-adds x 2 of the forward pass on real tokens only.

    Per layer and pair of n tokens: Q, K, V and the attention output (4 n D^2), the feed-forward
    (2 n D F), the scores Q K^T and the context P V (2 n^2 D); then the head's dense (D^2) and out_proj
    (D L) on the <s> token. Elementwise work is not counted (it is not where FLOPs are).
    """
    D, F, L = config.hidden_size, config.intermediate_size, config.num_labels
    n = np.asarray(lengths, dtype=np.float64)
    per_layer = 4 * n * D * D + 2 * n * D * F + 2 * n * n * D
    return float(2 * (config.num_hidden_layers * per_layer + D * D + D * L).sum())
