"""Look inside one (query, document) pair: every named intermediate, attention per head, token attribution.

Everything here runs the reference forward pass (xlmr_np.model) and reads what it records (`Trace`), so
the names are the transformers module names (`encoder.layer.3.attention.self.probs`) and nothing is
recomputed on the side.

    >>> from xlmr_np import Reranker
    >>> from xlmr_np.tracing import inspect_pair, attribute
    >>> r = Reranker.from_pretrained("path/to/bge-reranker-base")
    >>> seen = inspect_pair(r, "capital of France", "Paris is the capital of France.")
    >>> seen.tokens[:4], seen.tensors["embeddings"].shape        # (['<s>', '▁capital', '▁of', '▁France'], (T, D))
    >>> seen.attention(layer=11, head=0)                         # [T, T]: row i = how token i spreads its attention
    >>> seen.attends_to(layer=11, head=0, token=0, k=3)          # [('</s>', 0.4), ...]: where <s> looks, as tokens
    >>> print(format_table(stats(seen)))                         # every intermediate: shape, mean, std, min, max
    >>> print(render_terminal(attribute(r, "capital of France", "Paris is the capital of France.")))
"""

from __future__ import annotations

import fnmatch
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from . import engine, model
from .arrays import to_numpy
from .errors import InputError
from .tokenizer import EncodedPair, check_pairs

# ----------------------------------------------------------------------------------------------------
# Recording the reference forward pass


class Trace(dict):
    """A `record` callback for xlmr_np.model.forward that keeps intermediates by name.

    names: exact names or shell patterns (`encoder.layer.*.output`); None keeps everything. The tensors are
    the reference's own: [B, T, ...] for tokens (padding positions hold whatever the computation gave
    them), [B, H, T, T] for attention probabilities, [B, ...] for the head.

    >>> trace = Trace(["embeddings", "encoder.layer.*.output"])
    >>> logits = model.forward(params, config, input_ids, attention_mask, record=trace)
    >>> trace["encoder.layer.3.output"].shape        # (B, T, D)
    """

    def __init__(self, names: Iterable[str] | str | None = None):
        super().__init__()
        self.names = [names] if isinstance(names, str) else None if names is None else list(names)

    def wants(self, name: str) -> bool:
        return self.names is None or any(fnmatch.fnmatchcase(name, p) for p in self.names)

    def __call__(self, name: str, x) -> None:
        if self.wants(name):
            self[name] = to_numpy(x)  # a GPU's arrays are copied to the host


# ----------------------------------------------------------------------------------------------------
# One pair through the model, with its trace and token metadata


@dataclass
class Inspection:
    """One pair's forward pass: token metadata and every traced intermediate without the batch axis.

    tensors holds [T, ...] for token tensors, [H, T, T] for attention probabilities, [...] for the head.
    """

    query: str
    document: str
    tokens: list[str]  # [T] token strings, e.g. '<s>', '▁Paris'
    input_ids: np.ndarray  # [T]
    positions: np.ndarray  # [T] position ids (XLM-R: 2, 3, ...)
    segments: list[int | None]  # [T] 0 query, 1 document, None for <s> and </s>
    words: list[int | None]  # [T] index of the word within its segment
    offsets: list[tuple[int, int]]  # [T] character span in the query or document text
    truncated: bool
    logits: np.ndarray  # [L]
    tensors: dict[str, np.ndarray]
    num_layers: int

    def attention(self, layer: int, head: int | None = None) -> np.ndarray:
        """Attention probabilities of one layer: [H, T, T], or [T, T] for one head (rows sum to 1)."""
        if not 0 <= layer < self.num_layers:
            raise InputError(f"layer must be in [0, {self.num_layers}), got {layer}")
        probs = self.tensors[f"encoder.layer.{layer}.attention.self.probs"]  # [H, T, T]
        if head is None:
            return probs
        if not 0 <= head < probs.shape[0]:
            raise InputError(f"head must be in [0, {probs.shape[0]}), got {head}")
        return probs[head]  # [T, T]

    def attends_to(self, layer: int, head: int | None, token: int = 0, k: int = 5) -> list[tuple[str, float]]:
        """The k tokens that token `token` attends to most, as (token string, probability), strongest first.

        head None averages the heads. Example: seen.attends_to(11, None) -> [('</s>', 0.41), ('▁Paris', 0.12), ...]
        """
        probs = self.attention(layer, head)  # [T, T] or [H, T, T]
        row = (probs if head is not None else probs.mean(axis=0))[token]  # [T]
        return [(self.tokens[j], float(row[j])) for j in np.argsort(-row, kind="stable")[:k]]


def inspect_pair(reranker, query: str, document: str) -> Inspection:
    """Run one pair through the reference forward pass recording everything; keep its tokens' strings,
    segments, words and offsets."""
    ((query, document),) = check_pairs([(query, document)])
    encoding = reranker.tokenizer.encodings([(query, document)])[0]
    ids = np.array([encoding.ids], dtype=np.int64)  # [1, T]
    trace = Trace()
    logits = model.forward(reranker.params, reranker.config, ids, np.ones_like(ids), trace)  # [1, L]
    truncated = reranker.tokenizer.encode([(query, document)])[0].truncated
    return Inspection(
        query=query,
        document=document,
        tokens=list(encoding.tokens),
        input_ids=ids[0],
        positions=model.position_ids(ids, reranker.config.pad_token_id)[0],
        segments=list(encoding.sequence_ids),
        words=list(encoding.word_ids),
        offsets=[tuple(o) for o in encoding.offsets],
        truncated=truncated,
        logits=logits[0],
        tensors={name: t[0] for name, t in trace.items()},
        num_layers=reranker.config.num_hidden_layers,
    )


# ----------------------------------------------------------------------------------------------------
# Summary statistics


@dataclass
class TensorStats:
    name: str
    shape: tuple[int, ...]
    mean: float
    std: float
    min: float
    max: float
    abs_mean: float


def stats(inspection: Inspection) -> list[TensorStats]:
    """Shape and summary statistics of every traced intermediate, in the order data flows."""
    out = []
    for name, t in inspection.tensors.items():
        x = t.astype(np.float64)
        out.append(
            TensorStats(
                name, t.shape, float(x.mean()), float(x.std()), float(x.min()), float(x.max()), float(np.abs(x).mean())
            )
        )
    return out


def format_table(rows: list, columns: list[str] | None = None) -> str:
    """Dataclass rows (or dicts) as an aligned plain-text table; floats in 4 significant digits."""
    dicts = [r if isinstance(r, dict) else vars(r) for r in rows]
    columns = columns or list(dicts[0])
    cells = [[_cell(d[c]) for c in columns] for d in dicts]
    widths = [max(_width(c), *(_width(row[i]) for row in cells)) for i, c in enumerate(columns)]

    def pad(v, w):
        fill = " " * (w - _width(v))
        return fill + v if _numeric(v) else v + fill

    lines = ["  ".join(c + " " * (w - _width(c)) for c, w in zip(columns, widths))]
    lines += ["  ".join(pad(v, w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def _width(text: str) -> int:
    """Terminal columns: CJK characters take two, so Chinese queries stay aligned."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, tuple):
        return "x".join(map(str, v))
    return str(v)


def _numeric(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def layer_table(inspection: Inspection) -> list[dict]:
    """One row per stage (embeddings, then each layer's output) of what a reader wants to see change.

    rms, max|x|: the size of the hidden states; change: ||out - in|| / ||in||, how much the layer rewrote
    its input; entropy: mean attention entropy over heads and tokens, in nats (log T is uniform);
    <s> looks at: the token <s> attends to most, averaged over heads (the head reads only <s>);
    <s> on doc: the share of <s>'s attention that lands on document tokens.
    """
    t = inspection.tensors
    doc = np.array([s == 1 for s in inspection.segments])  # [T]
    x = t["embeddings"].astype(np.float64)  # [T, D]
    rows = [
        {
            "stage": "embeddings",
            "rms": _rms(x),
            "max|x|": float(np.abs(x).max()),
            "change": "",
            "entropy": "",
            "<s> looks at": "",
            "<s> on doc": "",
        }
    ]  # no attention before the first layer
    for i in range(inspection.num_layers):
        y = t[f"encoder.layer.{i}.output"].astype(np.float64)  # [T, D]
        probs = inspection.attention(i).astype(np.float64)  # [H, T, T]
        from_s = probs[:, 0, :].mean(axis=0)  # [H, T] -> [T]: <s>'s row, averaged over heads
        rows.append(
            {
                "stage": f"layer {i}",
                "rms": _rms(y),
                "max|x|": float(np.abs(y).max()),
                "change": float(np.linalg.norm(y - x) / np.linalg.norm(x)),
                "entropy": float(-(probs * np.log(np.maximum(probs, 1e-30))).sum(axis=-1).mean()),
                "<s> looks at": inspection.tokens[int(from_s.argmax())],
                "<s> on doc": float(from_s[doc].sum()),
            }
        )
        x = y
    return rows


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x * x)))


# ----------------------------------------------------------------------------------------------------
# Gradient-free attribution: how the logit moves when a document token or word is taken away


@dataclass
class Attribution:
    """Each document unit's contribution to the logit: logit(pair) - logit(pair without the unit).

    Positive: the unit pushed the logit up (taking it away lowers the logit); negative: it pulled it down.
    Logits, not the sigmoid scores rerank reports: the sigmoid squashes changes near 0 and 1.
    """

    document: str
    unit: str  # "word" or "token"
    method: str  # "remove" (the tokens are deleted; later tokens shift position) or "mask" (<mask> in place)
    logit: float  # the logit of the full pair
    spans: list[tuple[int, int]]  # character span of each unit in the document
    contributions: np.ndarray  # [U] logit - logit without the unit

    @property
    def texts(self) -> list[str]:
        return [self.document[a:b] for a, b in self.spans]


UNITS = ("word", "token")
METHODS = ("remove", "mask")


def attribute(
    reranker,
    query: str,
    document: str,
    unit: str = "word",
    method: str = "remove",
    label: int = 0,
    batch_size: int = 32,
) -> Attribution:
    """Each document unit's contribution to the logit (see Attribution): the pair scored once per unit with
    that unit removed (or masked); no gradients needed.

    The logits come from the engine (xlmr_np.engine), as Reranker's do: many forward passes, all alike.

    Costs one forward pass per unit, batched. Units are the document's tokens, or its words (all tokens
    the tokenizer assigns to one word id, so '▁Par' + 'is' go together).
    """
    if unit not in UNITS:
        raise InputError(f"unit must be one of {UNITS}, got {unit!r}")
    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}, got {method!r}")
    if not 0 <= label < reranker.config.num_labels:
        raise InputError(f"label must be in [0, {reranker.config.num_labels}), got {label}")
    encoding = reranker.tokenizer.encodings([(query, document)])[0]
    groups = _document_units(encoding.sequence_ids, encoding.word_ids, unit)
    if not groups:
        raise InputError("the document has no tokens left to attribute (empty, or truncated away)")
    mask_id = reranker.tokenizer.token_to_id("<mask>") if method == "mask" else None
    if method == "mask" and mask_id is None:
        raise InputError("method 'mask' needs a '<mask>' token, and this tokenizer's vocabulary has none")
    variants = [list(encoding.ids)] + [_without(encoding.ids, g, mask_id) for g in groups]
    logits = _logits_of_ids(reranker, variants, label, batch_size)  # [1 + U]: the full pair, then each variant
    spans = [_strip_space(document, encoding.offsets[g[0]][0], encoding.offsets[g[-1]][1]) for g in groups]
    return Attribution(document, unit, method, float(logits[0]), spans, logits[0] - logits[1:])


def _strip_space(text: str, a: int, b: int) -> tuple[int, int]:
    """Leave the whitespace a '▁' token's offsets include outside the highlighted span."""
    return a + len(text[a:b]) - len(text[a:b].lstrip()), b


def _document_units(sequence_ids, word_ids, unit: str) -> list[list[int]]:
    """Token indices of each document unit, in order: [[5], [6, 7], ...] for words."""
    groups: dict[tuple, list[int]] = {}
    for i, (seq, word) in enumerate(zip(sequence_ids, word_ids)):
        if seq == 1:
            groups.setdefault((word,) if unit == "word" else (i,), []).append(i)
    return list(groups.values())


def _without(ids, group: list[int], mask_id: int | None) -> list[int]:
    """ids with the group's tokens deleted (mask_id None) or replaced by mask_id."""
    if mask_id is None:
        drop = set(group)
        return [t for i, t in enumerate(ids) if i not in drop]
    out = list(ids)
    for i in group:
        out[i] = mask_id
    return out


def _logits_of_ids(reranker, variants: list[list[int]], label: int, batch_size: int) -> np.ndarray:
    """Logit `label` for each token-id list, scored by the engine like any other batch (each pair attends
    only to itself, so batching is exact)."""
    out = np.empty(len(variants), dtype=np.float64)
    for start in range(0, len(variants), batch_size):
        batch = reranker.tokenizer.pad([EncodedPair(v, False) for v in variants[start : start + batch_size]])
        logits = engine.forward(reranker.params, reranker.config, batch.input_ids, batch.attention_mask)
        out[start : start + len(logits)] = logits[:, label]
    return out


def render_terminal(attribution: Attribution, color: bool = True) -> str:
    """The document with each unit highlighted: green pushed the logit up, red pulled it down.

    color=False writes each unit with its contribution, `text[+0.123]`, instead of ANSI 24-bit background
    colours.
    """
    scale = float(np.abs(attribution.contributions).max()) or 1.0
    parts, end = [], 0
    for (a, b), delta in zip(attribution.spans, attribution.contributions):
        parts.append(attribution.document[end:a])
        text = attribution.document[a:b]
        if color:
            r, g, bl = _rgb(delta / scale)
            parts.append(f"\x1b[48;2;{r};{g};{bl}m\x1b[30m{text}\x1b[0m")
        else:
            parts.append(f"{text}[{delta:+.3g}]")
        end = b
    parts.append(attribution.document[end:])
    legend = (
        f"logit {attribution.logit:.4g}; highlight = {contribution_label(attribution)} "
        f"(green: pushed the logit up; largest |contribution| {scale:.3g})"
    )
    return "".join(parts) + "\n" + legend


def contribution_label(attribution: Attribution) -> str:
    """What the numbers are, in words: "logit - logit with the word removed"."""
    verb = "removed" if attribution.method == "remove" else "masked"
    return f"logit - logit with the {attribution.unit} {verb}"


def _rgb(v: float) -> tuple[int, int, int]:
    """-1 -> red, 0 -> white, +1 -> green."""
    v = max(-1.0, min(1.0, v))
    fade = int(round(255 * (1 - abs(v))))
    return (255, fade, fade) if v < 0 else (fade, 255, fade)
