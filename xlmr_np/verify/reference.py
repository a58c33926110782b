"""Local scores of the probes: the reference, and the same model with one known fault planted.

Each variant is a hypothesis about what an endpoint does differently ("joins the texts with </s><s>",
"truncates to 256 tokens", "float16 weights"...). Variants are built from the public API only: token
ids built by hand and run through Reranker.logits_of, the classifier's input read from a trace, or the
weights rounded into a second Reranker that shares the tokenizer. Only pairs whose token ids differ
from the reference are run again, so a truncation variant costs the long probes, not the whole set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from ..model import gelu, linear
from ..reranker import Reranker
from ..tokenizer import EncodedPair, PairTokenizer
from .probes import Probe, VerifyError

BOS, EOS = 0, 2  # <s>, </s> in XLM-R's vocabulary (see the pair template in tokenizer.py)
TRUNCATION_LENGTHS = (128, 256, 384, 500, 510)  # common limits, and 512 less the special tokens


@dataclass(frozen=True)
class Variant:
    key: str
    cause: str  # the diagnosis line's name for it


def variants() -> list[Variant]:
    out = [
        Variant("separator-bos", "the pair template joins query and document with </s><s> instead of </s></s>"),
        Variant("separator-single", "the pair template joins query and document with a single </s>"),
        Variant("gelu-head", "the classification head applies GELU where the model has tanh"),
        Variant("float16", "the weights are rounded to float16"),
        Variant("bfloat16", "the weights are rounded to bfloat16"),
        Variant("int8", "the linear weights are quantised to int8 (per output row)"),
        Variant(
            "only_second-512",
            "the query is kept whole and only the document is cut (only_second truncation at 512 tokens)",
        ),
    ]
    for length in TRUNCATION_LENGTHS:
        out.append(Variant(f"longest_first-{length}", f"pairs are truncated to {length} tokens (longest_first)"))
        out.append(
            Variant(f"only_second-{length}", f"pairs are truncated to {length} tokens, only the document (only_second)")
        )
    return out


def round_float16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).astype(x.dtype)


def round_bfloat16(x: np.ndarray) -> np.ndarray:
    """Round to nearest even on the top 16 bits of float32 (what torch's .bfloat16() does)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & np.uint32(0xFFFF0000)
    return rounded.view(np.float32).astype(x.dtype)


def round_int8_rows(x: np.ndarray) -> np.ndarray:
    """Symmetric int8 per output row ([out, in] weights), as weight-only dynamic quantisation does."""
    if x.ndim != 2:
        return x
    scale = np.abs(x).max(axis=1, keepdims=True) / 127.0  # [out, 1]
    scale[scale == 0] = 1.0
    return (np.clip(np.round(x / scale), -127, 127) * scale).astype(x.dtype)


class RoundedRows:
    """A lazily read embedding table (weights.RowTable) whose rows are rounded as they are read."""

    def __init__(self, table, rounding: Callable[[np.ndarray], np.ndarray]):
        self.table, self.rounding = table, rounding

    def __getitem__(self, ids):
        return self.rounding(np.asarray(self.table[ids]))


def rounded_reranker(
    reranker: Reranker, rounding: Callable[[np.ndarray], np.ndarray], linear_only: bool = False
) -> Reranker:
    """The same model with every weight (or, linear_only, every 2-D linear weight) rounded."""
    params = {}
    for key, value in reranker.params.items():
        embedding = key.endswith("word_embeddings.weight")
        if linear_only and (embedding or "embeddings" in key or not key.endswith(".weight")):
            params[key] = value
        elif embedding and not isinstance(value, np.ndarray):
            params[key] = RoundedRows(value, rounding)
        else:
            params[key] = rounding(np.asarray(value))
    return Reranker(params, reranker.config, reranker.tokenizer, dtype=reranker.dtype, model_dir=reranker.model_dir)


def model_dir_of(reranker: Reranker) -> Path:
    """The directory a Reranker was loaded from: verify reads its tokenizer.json and weights again."""
    if reranker.model_dir is None:
        raise VerifyError("verify needs a Reranker loaded with from_pretrained (its model_dir is not set)")
    return Path(reranker.model_dir)


def open_tokenizer(reranker: Reranker) -> Tokenizer:
    """A second copy of the model's tokenizer.json, free to be reconfigured (the Reranker's is shared)."""
    return Tokenizer.from_file(str(model_dir_of(reranker) / "tokenizer.json"))


class LocalScores:
    """The probes scored by the local model, and by each variant on demand (cached)."""

    def __init__(
        self, reranker: Reranker, probes: tuple[Probe, ...], batch_size: int = 16, tokenizer: Tokenizer | None = None
    ):
        self.reranker = reranker
        self.batch_size = batch_size
        self.probes = probes
        self.pairs = [(p.query, d) for p in probes for d in p.documents]
        self.starts = np.cumsum([0] + [len(p.documents) for p in probes])  # probe i: [starts[i], starts[i+1])
        self.encoded = reranker.tokenizer.encode(self.pairs)
        self.logits = reranker.logits_of(self.encoded, batch_size)[:, 0].astype(np.float64)  # [N]
        self._cache: dict[str, np.ndarray] = {}
        self._tokenizer = tokenizer

    def probe_slice(self, i: int) -> slice:
        return slice(int(self.starts[i]), int(self.starts[i + 1]))

    @property
    def truncated(self) -> list[bool]:
        return [e.truncated for e in self.encoded]

    def private_tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = open_tokenizer(self.reranker)
        return self._tokenizer

    def variant(self, key: str) -> np.ndarray:
        """Logits [N] of the probes under a variant (see variants())."""
        if key not in self._cache:
            self._cache[key] = self._compute(key)
        return self._cache[key]

    def _rerun(self, encoded: list[EncodedPair], model: Reranker | None = None) -> np.ndarray:
        """Logits of sequences, running only those whose ids differ from the reference's."""
        out = self.logits.copy()
        todo = [i for i, (e, ref) in enumerate(zip(encoded, self.encoded)) if e.ids != ref.ids]
        if todo:
            out[todo] = (model or self.reranker).logits_of([encoded[i] for i in todo], self.batch_size)[:, 0]
        return out

    def _compute(self, key: str) -> np.ndarray:
        if key.startswith("separator-"):
            sep = [EOS, BOS] if key == "separator-bos" else [EOS]
            encoded = []
            for e in self.reranker.tokenizer.encodings(self.pairs):
                query = [t for t, s in zip(e.ids, e.sequence_ids) if s == 0]
                document = [t for t, s in zip(e.ids, e.sequence_ids) if s == 1]
                encoded.append(EncodedPair([BOS, *query, *sep, *document, EOS], False))
            return self._rerun(encoded)
        if key == "gelu-head":
            return self._gelu_head()
        if key in ("float16", "bfloat16", "int8"):
            rounding = {"float16": round_float16, "bfloat16": round_bfloat16, "int8": round_int8_rows}[key]
            model = rounded_reranker(self.reranker, rounding, linear_only=key == "int8")
            return model.logits_of(self.encoded, self.batch_size)[:, 0].astype(np.float64)
        strategy, length = key.rsplit("-", 1)
        tokenizer = PairTokenizer(
            self.private_tokenizer(),
            max_length=int(length),
            truncation=strategy,
            pad_token_id=self.reranker.config.pad_token_id,
        )
        return self._rerun(tokenizer.encode(self.pairs))

    def _gelu_head(self) -> np.ndarray:
        """classifier.out_proj(gelu(classifier.dense(x))): the head with candle's one-time mistake."""
        params = self.reranker.params
        out = np.empty(len(self.pairs))
        for start in range(0, len(self.pairs), self.batch_size):
            batch = self.reranker.tokenizer.pad(self.encoded[start : start + self.batch_size])
            traced = self.reranker.forward(batch.input_ids, batch.attention_mask, trace=["classifier.dense"])
            h = (traced.trace or {})["classifier.dense"]  # [B, D], before the activation
            logits = linear(gelu(h), params["classifier.out_proj.weight"], params["classifier.out_proj.bias"])
            out[start : start + len(h)] = logits[:, 0]  # [B, D] -> [B, L] -> [B]
        return out
