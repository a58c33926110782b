"""The probe set: hand-written (query, documents) requests designed to tell faults apart.

The set is package data (probes-v<N>.json) with a version, so a golden file or a report names exactly
which probes it was made with. Long texts are specified as {"passages": [...], "tokens": N}: the named
passages, cycled in order and joined by blank lines, cut at a token boundary so that the text is exactly
N tokens long with the model's own tokenizer (no special tokens). Example: {"passages": ["en-rivers"],
"tokens": 5} -> "The Rhine rises in" if those are the first five tokens.

Some probes depend on the model's length limit (max_length, the pair template included): a probe with
"beyond": 512 is left out for a model that takes no more than 512 tokens, and a document with
"up_to_limit": true is cut to fill the limit behind the probe's query when its stated length would not fit
(documents that come out the same length are kept once). Example: with max_length 2048 and a 9-token query,
documents of 1000, 4000 and 8000 tokens become 1000 and 2035 (2048 - 9 - 4 special tokens).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources

from ..errors import XlmrNpError

PROBE_SET_VERSION = "2"


class VerifyError(XlmrNpError, ValueError):
    """verify cannot run: an unreachable or unusable endpoint, a malformed probe or golden file."""


@dataclass(frozen=True)
class Probe:
    """One request: a query and its documents, and what a difference on it means."""

    id: str
    category: str  # model, template, precision, truncation, unicode, edge, consistency
    query: str
    documents: tuple[str, ...]
    meaning: str  # "what a difference here means", printed beside the probe's numbers
    ties: tuple[tuple[int, ...], ...] = ()  # groups of document indices that must score identically
    shuffle_of: str | None = None  # the probe whose documents these are, in another order
    order: tuple[int, ...] | None = None  # documents[i] is documents[order[i]] of shuffle_of
    tokens: tuple[int | None, ...] = ()  # [n] stated token count of each document built from passages


@dataclass(frozen=True)
class ProbeSet:
    name: str
    version: str
    provenance: str
    sha256: str  # of the data file, so that an edited copy cannot pass for the released version
    probes: tuple[Probe, ...] = field(default_factory=tuple)

    def by_id(self, probe_id: str) -> Probe:
        return next(p for p in self.probes if p.id == probe_id)


def probe_data(version: str = PROBE_SET_VERSION) -> tuple[dict, str]:
    """The parsed probe file of a version and its sha256."""
    try:
        raw = resources.files(__package__).joinpath(f"probes-v{version}.json").read_bytes()
    except FileNotFoundError:
        raise VerifyError(f"no probe set version {version!r} in this xlmr-np (it has {PROBE_SET_VERSION!r})") from None
    return json.loads(raw), hashlib.sha256(raw).hexdigest()


def text_of_tokens(spec: dict, passages: dict, tokenizer) -> str:
    """{"passages": [...], "tokens": N} -> the cycled passages cut to exactly N tokens.

    tokenizer: a `tokenizers.Tokenizer` without truncation. The cut is at the end of token N; should
    re-encoding that prefix give another count (a piece that merges differently once its right context
    is gone), the cut moves one token at a time until it is exact.
    """
    want = spec["tokens"]
    names = spec["passages"]
    text, i = "", 0
    while len(tokenizer.encode(text, add_special_tokens=False).ids) < want + 8:
        text += ("\n\n" if text else "") + passages[names[i % len(names)]]
        i += 1
    offsets = tokenizer.encode(text, add_special_tokens=False).offsets
    for k in [want, *(want + d for d in range(1, 8)), *(want - d for d in range(1, 8))]:
        cut = text[: offsets[k - 1][1]].rstrip()
        if len(tokenizer.encode(cut, add_special_tokens=False).ids) == want:
            return cut
    raise VerifyError(f"cannot cut passages {names} to exactly {want} tokens with this tokenizer")


def fitted_specs(documents: list, query: str, tokenizer, max_length: int) -> list:
    """A probe's document specs for a model of this limit: an up_to_limit document longer than fits behind
    the query cut to fill the limit exactly, and kept once."""
    special = tokenizer.num_special_tokens_to_add(is_pair=True)
    room = max_length - special - len(tokenizer.encode(query, add_special_tokens=False).ids)
    out: list = []
    for d in documents:
        if isinstance(d, dict) and d.get("up_to_limit") and d["tokens"] > room:
            d = dict(d, tokens=room)
            if d in out:
                continue
        out.append(d)
    return out


def load_probes(tokenizer, max_length: int, version: str = PROBE_SET_VERSION) -> ProbeSet:
    """The probe set for a model whose limit is max_length tokens, its long texts expanded with `tokenizer`
    (a tokenizers.Tokenizer)."""
    data, sha256 = probe_data(version)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    passages = data["passages"]

    def text(spec) -> str:
        return spec if isinstance(spec, str) else text_of_tokens(spec, passages, tokenizer)

    probes: list[Probe] = []
    for p in data["probes"]:
        if "shuffle_of" in p:
            source = next(q for q in probes if q.id == p["shuffle_of"])
            order = tuple(p["order"])
            if sorted(order) != list(range(len(source.documents))):
                raise VerifyError(f"probe {p['id']}: order {order} is not a permutation of {source.id}'s documents")
            probes.append(
                Probe(
                    p["id"],
                    p["category"],
                    source.query,
                    tuple(source.documents[i] for i in order),
                    p["meaning"],
                    shuffle_of=source.id,
                    order=order,
                )
            )
        elif max_length > p.get("beyond", 0):
            query = text(p["query"])
            documents = fitted_specs(p["documents"], query, tokenizer, max_length)
            probes.append(
                Probe(
                    p["id"],
                    p["category"],
                    query,
                    tuple(text(d) for d in documents),
                    p["meaning"],
                    ties=tuple(tuple(g) for g in p.get("ties", ())),
                    tokens=tuple(None if isinstance(d, str) else d["tokens"] for d in documents),
                )
            )
    return ProbeSet(data["name"], data["version"], data["provenance"], sha256, tuple(probes))


def probes_from_dicts(items: list[dict]) -> tuple[Probe, ...]:
    """Probes as a golden file stores them (texts already expanded)."""
    out = []
    for p in items:
        out.append(
            Probe(
                p["id"],
                p["category"],
                p["query"],
                tuple(d["text"] for d in p["documents"]),
                p["meaning"],
                ties=tuple(tuple(g) for g in p.get("ties", ())),
                shuffle_of=p.get("shuffle_of"),
                order=tuple(p["order"]) if p.get("order") is not None else None,
                tokens=tuple(d.get("tokens") for d in p["documents"]),
            )
        )
    return tuple(out)
