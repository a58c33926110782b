"""Local scores of the probes: the reference, and the same model with one known fault planted (or two).

Each variant is a hypothesis about what an endpoint does differently ("joins the texts with </s><s>",
"truncates to 256 tokens", "computes in float16"...), of one of four kinds:
- "tokens": other token ids (template, truncation, text stripped, another tokenizer pipeline), run
  through the reference model. Only pairs whose ids differ from the reference's are run again, so a
  truncation variant costs the long probes, not the whole set.
- "head": another classification head, on the reference's last hidden states.
- "weights": the weights rounded (float16, bfloat16, int8 per row), computing in the reference's dtype.
- "compute": a reduced-precision engine (xlmr_np.verify.precision), emulated with each probe's documents
  as one padded batch, as an engine scores one request. These reproduce a scheme up to the order of its
  roundings, not bit for bit: each has flavours (fused or eager attention, the batch an int8 input is
  quantised over) whose spread says how far two faithful implementations of the scheme lie apart.
A combination "a+b" plants a token variant a and a weights or compute variant b together: b's model on
a's token ids.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from ..model import gelu, linear
from ..reranker import Reranker
from ..tokenizer import EncodedPair, PairTokenizer
from . import precision
from .precision import PRECISIONS, RoundedRows, round_bfloat16, round_float16
from .probes import Probe, VerifyError

BOS, EOS = 0, 2  # <s>, </s> in XLM-R's vocabulary (see the pair template in tokenizer.py)
# Limits engines are configured with: common round numbers, 512 (bge-reranker-base's, which engines
# apply to longer models too) and its powers of two up to the longest models'.
COMMON_LENGTHS = (128, 256, 384, 500, 512, 1024, 2048, 4096)


# Padded tokens per batch when the reference scores the probes: 16 pairs of 512, and a long pair alone
# rather than padded against 15 others.
BATCH_TOKENS = 16 * 512


def token_batches(encoded: list[EncodedPair], budget: int = BATCH_TOKENS) -> list[list[int]]:
    """Indices of the sequences in batches, longest first, each holding at most `budget` padded tokens (or
    one sequence). Example: lengths [8000, 10, 600, 20] -> [[0], [2, 3, 1]] with budget 8192."""
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i].ids))
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * len(encoded[batches[-1][0]].ids) <= budget:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def logits_by_length(model: Reranker, encoded: list[EncodedPair]) -> np.ndarray:
    """Logits [N] (float64) of sequences, in their order, scored in token_batches."""
    out = np.empty(len(encoded))
    for batch in token_batches(encoded):
        out[batch] = model.logits_of([encoded[i] for i in batch], len(batch))[:, 0]
    return out


@dataclass(frozen=True)
class Variant:
    key: str
    cause: str  # the diagnosis line's name for it
    kind: str  # tokens, head, weights, compute (see the module docstring)


def truncation_lengths(max_length: int) -> list[int]:
    """The truncation limits tried below the model's own: the common ones, and its limit less 2 (an engine
    that leaves room for two special tokens where the pair template has four)."""
    return sorted({n for n in COMMON_LENGTHS if n < max_length} | {max_length - 2})


# FlagEmbedding's FlagReranker cuts pairs at its own max_length, 512 unless its caller sets another, whatever
# the model takes (capped here by the model's limit); the query alone at 3/4 of it.
FLAG_MAX_LENGTH = 512


def flag_length(max_length: int) -> int:
    return min(FLAG_MAX_LENGTH, max_length)


def variants(max_length: int = 512) -> list[Variant]:
    """Every single fault tried against a model whose limit is max_length tokens."""
    flag = flag_length(max_length)
    out = [
        Variant(
            "separator-bos", "the pair template joins query and document with </s><s> instead of </s></s>", "tokens"
        ),
        Variant("separator-single", "the pair template joins query and document with a single </s>", "tokens"),
        Variant(
            "strip-whitespace",
            "the query and the documents are stripped of leading and trailing whitespace before tokenization",
            "tokens",
        ),
        Variant(
            "transformers5-tokenizer",
            "the tokenizer is transformers >= 5's XLMRobertaTokenizer, which rebuilds the pipeline instead of "
            "running tokenizer.json (no Replace of repeated spaces, WhitespaceSplit before Metaspace: the piece "
            "for a text's trailing whitespace, a tab, CR LF or a direction mark, is dropped)",
            "tokens",
        ),
        Variant(
            "transformers5-tokenizer-empty",
            "the tokenizer is transformers >= 5's XLMRobertaTokenizer called one pair at a time (the pipeline "
            "rebuilt without tokenizer.json's Replace and with WhitespaceSplit, so the piece for a text's trailing "
            'whitespace is dropped; and tokenizer(q, "") encodes an empty document as the single sequence <s> q </s>)',
            "tokens",
        ),
        Variant(
            "flagembedding-transformers5",
            f"FlagEmbedding's FlagReranker under transformers >= 5 (max_length {flag}): query and document "
            "tokenized apart by the rebuilt XLMRobertaTokenizer (trailing whitespace pieces dropped), cut to "
            f"{flag * 3 // 4} and {flag} tokens, decoded back to text and "
            "tokenized again as a pair (only_second truncation; an empty document as the single sequence <s> q </s>)",
            "tokens",
        ),
        Variant("gelu-head", "the classification head applies GELU where the model has tanh", "head"),
        Variant("float16", "the weights are rounded to float16 (computing in float32)", "weights"),
        Variant("bfloat16", "the weights are rounded to bfloat16 (computing in float32)", "weights"),
        Variant("int8-weights", "the linear weights are quantised to int8 per output row (weight-only)", "weights"),
        Variant(
            "float16-compute",
            "the model computes in float16 (weights and every layer's output rounded to float16, as "
            "model.half() or torch_dtype=float16 do)",
            "compute",
        ),
        Variant(
            "bfloat16-compute",
            "the model computes in bfloat16 (weights and every layer's output rounded to bfloat16)",
            "compute",
        ),
        Variant(
            "int8-dynamic",
            "the linear layers are dynamically quantised to int8 as torch's quantize_dynamic does (weights "
            "per tensor, each input quantised to 7 bits over its own range)",
            "compute",
        ),
        Variant(
            "int8-dynamic-onnx",
            "the model is dynamically quantised to int8 as onnxruntime's quantize_dynamic does (weights and "
            "embedding tables per tensor, each MatMul input quantised to uint8 over its own range)",
            "compute",
        ),
        Variant(
            f"only_second-{max_length}",
            f"the query is kept whole and only the document is cut (only_second truncation at {max_length} tokens)",
            "tokens",
        ),
    ]
    for length in truncation_lengths(max_length):
        beside = f" although the model takes {max_length}" if length in (512, 1024, 2048, 4096) else ""
        out.append(
            Variant(
                f"longest_first-{length}", f"pairs are truncated to {length} tokens{beside} (longest_first)", "tokens"
            )
        )
        out.append(
            Variant(
                f"only_second-{length}",
                f"pairs are truncated to {length} tokens{beside}, only the document (only_second)",
                "tokens",
            )
        )
    return out


def combined(a: Variant, b: Variant) -> Variant:
    """Two faults planted together: a token variant a and a weights or compute variant b."""
    return Variant(f"{a.key}+{b.key}", f"two faults together: {a.cause}; and {b.cause}", b.kind)


def round_int8_rows(x: np.ndarray) -> np.ndarray:
    """Symmetric int8 per output row ([out, in] weights), as weight-only quantisation does."""
    if x.ndim != 2:
        return x
    scale = np.abs(x).max(axis=1, keepdims=True) / 127.0  # [out, 1]
    scale[scale == 0] = 1.0
    return (np.clip(np.round(x / scale), -127, 127) * scale).astype(x.dtype)


WEIGHT_ROUNDINGS = {"float16": round_float16, "bfloat16": round_bfloat16, "int8-weights": round_int8_rows}


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


def transformers5_pipeline(tokenizer: Tokenizer) -> Tokenizer:
    """tokenizer.json's pipeline as transformers >= 5's XLMRobertaTokenizer rebuilds it from the same file:
    the Precompiled normalizer alone (no Replace(" {2,}", " ")), and WhitespaceSplit before the file's
    Metaspace. Measured with transformers 5.25 on a model directory whose tokenizer_config.json names
    XLMRobertaTokenizer (docs/verify.md)."""
    spec = json.loads(tokenizer.to_str())
    normalizer = spec.get("normalizer") or {}
    if normalizer.get("type") == "Sequence":
        precompiled = [n for n in normalizer["normalizers"] if n.get("type") == "Precompiled"]
        spec["normalizer"] = precompiled[0] if precompiled else None
    spec["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"}, spec["pre_tokenizer"]]}
    return Tokenizer.from_str(json.dumps(spec))


def empty_as_single(
    pipeline: Tokenizer, max_length: int, pairs: list[tuple[str, str]], encoded: list[EncodedPair]
) -> list[EncodedPair]:
    """transformers >= 5's tokenizer(q, "") drops the empty second text: each pair with an empty document
    becomes the single sequence <s> q </s> (in place, and returned)."""
    pipeline.enable_truncation(max_length)
    for i, (query, document) in enumerate(pairs):
        if document == "":
            single = pipeline.encode(query)
            encoded[i] = EncodedPair(single.ids, bool(single.overflowing))
    return encoded


def model_dir_of(reranker: Reranker) -> Path:
    """The directory a Reranker was loaded from: verify reads its tokenizer.json and weights again."""
    if reranker.model_dir is None:
        raise VerifyError("verify needs a Reranker loaded with from_pretrained (its model_dir is not set)")
    return Path(reranker.model_dir)


def open_tokenizer(reranker: Reranker) -> Tokenizer:
    """A second copy of the model's tokenizer.json, free to be reconfigured (the Reranker's is shared)."""
    return Tokenizer.from_file(str(model_dir_of(reranker) / "tokenizer.json"))


# A compute variant's flavours: the implementations of its scheme that engines ship (flavour name -> the
# Precision run, and whether each pair is its own batch); the closest to the endpoint is the one named.
# Eager and fused attention differ only in the order of their roundings, so the gap between them is how
# far two faithful float16 (bfloat16) engines lie apart; int8's flavours are distinct schemes, each
# reproduced exactly but for a value that lands on the other side of a rounding step.
FLAVOURS: dict[str, dict[str, tuple[precision.Precision, bool]]] = {}
for key, p in PRECISIONS.items():
    if p.int8_levels:
        FLAVOURS[key] = {
            "per tensor": (p, False),
            "per output channel": (replace(p, per_channel=True), False),
            "one pair per batch": (p, True),
        }
    else:
        FLAVOURS[key] = {"eager attention": (p, False), "fused attention": (replace(p, fused_attention=True), False)}
FLAVOURS["int8-dynamic-onnx"]["7-bit weights"] = (replace(PRECISIONS["int8-dynamic-onnx"], reduce_range=True), False)
ROUNDING_ORDER_FLAVOURS = ("float16-compute", "bfloat16-compute")
TWIN = " (float64 between roundings)"


class LocalScores:
    """The probes scored by the local model, and by each variant on demand (cached)."""

    def __init__(self, reranker: Reranker, probes: tuple[Probe, ...], tokenizer: Tokenizer | None = None):
        self.reranker = reranker
        self.probes = probes
        self.pairs = [(p.query, d) for p in probes for d in p.documents]
        self.starts = np.cumsum([0] + [len(p.documents) for p in probes])  # probe i: [starts[i], starts[i+1])
        self.encoded = reranker.tokenizer.encode(self.pairs)
        self.logits = logits_by_length(reranker, self.encoded)  # [N]
        self.max_length = reranker.max_length
        self._cache: dict[str, np.ndarray] = {}
        self._tokens: dict[str, list[EncodedPair]] = {}
        self._params: dict[tuple[str, bool, bool, bool], dict] = {}
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
        """Logits [N] of the probes under a variant (see variants()), or two ("a+b"); for a compute
        variant, its first flavour's."""
        return self.flavours(key)[0]

    def flavours(self, key: str) -> list[np.ndarray]:
        """Logits [N] under each flavour of a variant: one for all but the compute variants."""
        names = FLAVOURS.get(key.split("+")[-1], {"": None})
        return [self._cached(key, name) for name in names]

    def twin(self, key: str, flavour: str) -> np.ndarray:
        """Logits [N] of a compute variant's flavour with float64 arithmetic between its roundings: another
        order of roundings of the same scheme, whose distance from the flavour is that order's effect."""
        return self._cached(key, flavour + TWIN)

    def _cached(self, key: str, flavour: str) -> np.ndarray:
        name = f"{key}/{flavour}"
        if name not in self._cache:
            self._cache[name] = self._compute(key, flavour)
        return self._cache[name]

    def _compute(self, key: str, flavour: str) -> np.ndarray:
        tokens, _, model = key.rpartition("+")
        if not tokens and (model in FLAVOURS or model in WEIGHT_ROUNDINGS):
            return self._model_run(model, flavour, self.encoded)
        if tokens:  # b's model on a's ids: only the probes whose ids differ run again
            return self._model_run(model, flavour, self.tokens(tokens), base=self._cached(model, flavour))
        if key == "gelu-head":
            return self._gelu_head()
        return self._rerun(self.tokens(key))

    def _model_run(self, key: str, flavour: str, encoded: list[EncodedPair], base=None) -> np.ndarray:
        """Logits [N] of a weights or compute variant on these token ids; with base, only the probes
        holding a pair whose ids differ from the reference's run again (an int8 input's range spans its
        whole batch), the rest are base's."""
        out = np.empty(len(encoded)) if base is None else base.copy()
        changed = [i for i, (e, ref) in enumerate(zip(encoded, self.encoded)) if e.ids != ref.ids]
        probes = list(range(len(self.probes)))
        if base is not None:
            probes = sorted({int(np.searchsorted(self.starts, i, side="right")) - 1 for i in changed})
        if key in WEIGHT_ROUNDINGS:
            todo = list(range(len(encoded))) if base is None else changed
            if todo:
                model = rounded_reranker(self.reranker, WEIGHT_ROUNDINGS[key], linear_only=key == "int8-weights")
                out[todo] = logits_by_length(model, [encoded[i] for i in todo])
            return out
        run, alone = FLAVOURS[key][flavour.removesuffix(TWIN)]
        run = replace(run, float64=flavour.endswith(TWIN))
        params = self._precision_params(run)
        for i in probes:
            s = self.probe_slice(i)
            batches = [[e] for e in encoded[s]] if alone else [encoded[s]]
            logits = [self._emulate(params, run, batch) for batch in batches]
            out[s] = np.concatenate(logits)
        return out

    def _precision_params(self, run: precision.Precision) -> dict:
        """The weights as an engine in this precision holds them (cached: flavours share them)."""
        key = (run.key, run.per_channel, run.reduce_range, run.float64)
        if key not in self._params:
            self._params[key] = precision.precision_params(self.reranker.params, run)
        return self._params[key]

    def _emulate(self, params: dict, run: precision.Precision, encoded: list[EncodedPair]) -> np.ndarray:
        batch = self.reranker.tokenizer.pad(encoded)
        logits = precision.forward(params, self.reranker.config, batch.input_ids, batch.attention_mask, run)
        return logits[:, 0].astype(np.float64)  # [B, L] -> [B]

    def tokens(self, key: str) -> list[EncodedPair]:
        """The probes' token ids under a token variant (cached)."""
        if key not in self._tokens:
            self._tokens[key] = self._encode(key)
        return self._tokens[key]

    def _pair_tokenizer(self, tokenizer: Tokenizer, max_length: int, truncation: str) -> PairTokenizer:
        return PairTokenizer(
            tokenizer, max_length=max_length, truncation=truncation, pad_token_id=self.reranker.config.pad_token_id
        )

    def _encode(self, key: str) -> list[EncodedPair]:
        truncation = self.reranker.tokenizer.truncation
        if key.startswith("separator-"):
            # the pair as an engine with this template builds it: one special token fewer for a single
            # </s>, so its truncation keeps one more token of the texts
            longer = self.max_length + (key == "separator-single")
            tokenizer = self._pair_tokenizer(self.private_tokenizer(), longer, truncation)
            sep = [EOS, BOS] if key == "separator-bos" else [EOS]
            encoded = []
            for e in tokenizer.encodings(self.pairs):
                query = [t for t, s in zip(e.ids, e.sequence_ids) if s == 0]
                document = [t for t, s in zip(e.ids, e.sequence_ids) if s == 1]
                encoded.append(EncodedPair([BOS, *query, *sep, *document, EOS], bool(e.overflowing)))
            return encoded
        if key == "strip-whitespace":
            return self.reranker.tokenizer.encode([(q.strip(), d.strip()) for q, d in self.pairs])
        if key.startswith("transformers5-tokenizer"):
            pipeline = transformers5_pipeline(self.private_tokenizer())
            encoded = self._pair_tokenizer(pipeline, self.max_length, truncation).encode(self.pairs)
            if key.endswith("-empty"):
                empty_as_single(pipeline, self.max_length, self.pairs, encoded)
            return encoded
        if key == "flagembedding-transformers5":
            return self._flagembedding_transformers5()
        strategy, length = key.rsplit("-", 1)
        return self._pair_tokenizer(self.private_tokenizer(), int(length), strategy).encode(self.pairs)

    def _flagembedding_transformers5(self) -> list[EncodedPair]:
        """FlagReranker.compute_score's ids under transformers >= 5: each text tokenized alone without
        specials and cut (the query at 3/4 of the limit), then, since transformers 5 has no id-level
        prepare_for_model, decoded back to text with its specials kept and tokenized again as a pair."""
        length = flag_length(self.max_length)
        pipeline = transformers5_pipeline(self.private_tokenizer())
        pipeline.no_truncation()
        pipeline.no_padding()

        def round_trip(text: str, tokens: int) -> str:
            ids = pipeline.encode(text, add_special_tokens=False).ids[:tokens]
            return pipeline.decode(ids, skip_special_tokens=False)

        texts = [(round_trip(q, length * 3 // 4), round_trip(d, length)) for q, d in self.pairs]
        encoded = self._pair_tokenizer(pipeline, length, "only_second").encode(texts)
        return empty_as_single(pipeline, length, texts, encoded)

    def _rerun(self, encoded: list[EncodedPair]) -> np.ndarray:
        """Logits of sequences, running only those whose ids differ from the reference's."""
        out = self.logits.copy()
        todo = [i for i, (e, ref) in enumerate(zip(encoded, self.encoded)) if e.ids != ref.ids]
        if todo:
            out[todo] = logits_by_length(self.reranker, [encoded[i] for i in todo])
        return out

    def _gelu_head(self) -> np.ndarray:
        """classifier.out_proj(gelu(classifier.dense(x))): the head with candle's one-time mistake, on the
        <s> row of the reference's last hidden states."""
        params = self.reranker.params
        out = np.empty(len(self.pairs))
        for rows in token_batches(self.encoded):
            batch = self.reranker.tokenizer.pad([self.encoded[i] for i in rows])
            states = self.reranker.forward(batch.input_ids, batch.attention_mask, output_hidden_states=True)
            first = (states.hidden_states or ())[-1][:, 0]  # [B, T, D] -> [B, D]
            h = linear(first, params["classifier.dense.weight"], params["classifier.dense.bias"])  # [B, D]
            logits = linear(gelu(h), params["classifier.out_proj.weight"], params["classifier.out_proj.bias"])
            out[rows] = logits[:, 0]  # [B, D] -> [B, L] -> [B]
        return out
