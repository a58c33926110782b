"""Reduced-precision engines, emulated in numpy: float16 and bfloat16 compute, dynamic int8 linear layers.

verify's float16-weights variant rounds the weights and computes in float32; the engines people run in
reduced precision do more than that, and differ from the reference by more. This file mirrors
xlmr_np.model's forward pass with the rounding points of torch's CPU kernels and of onnxruntime's
quantised graph, so that verify can plant those engines in the local model too:

- "float16" / "bfloat16" compute (`model.half()`, `torch_dtype=torch.float16`, infinity's `--dtype`): every
  weight is stored in the dtype and every module's output is rounded to it; inside a module (a product's
  sums, layer norm's statistics, softmax, GELU) the work is done in float32, as torch's CPU kernels do.
  Attention rounds the scores and the probabilities (eager attention) or keeps the scores in float32 and
  rounds only exp(s - max) before the product with V (torch's fused CPU kernel, behind SDPA).
- dynamic int8 (`torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, torch.qint8)`): each Linear's
  weight is quantised to int8 per tensor, symmetrically; each Linear's input is quantised as it arrives,
  per tensor over its own range (which includes 0), to 7 bits (fbgemm's reduce_range); the integer
  product is scaled back to float32 before the bias is added.
- onnxruntime's `quantize_dynamic` (the default QInt8 weights): the same with 8-bit inputs, weights scaled
  by max|w| / 127 (per tensor, or per output channel), and the embedding tables quantised to uint8 per
  tensor too (its Gather quantisation); reduce_range keeps 7 bits of the Linear weights.
  The integer products are exact here as in both engines. Checked on the tests' random model: torch
  2.13's quantize_dynamic, every probe's logits within 1e-6; onnxruntime 1.32 without graph optimisations
  (MatMulInteger, Cast, Mul, Add), the same but for one probe with 7-bit weights; with its default fused
  kernels, every probe but one in two of its three weight schemes. On the probe off, float noise (in
  attention, or the fused kernel's) put one int8 input on the other side of a rounding step.

An emulation reproduces a scheme, not an engine's bits: the order of a product's sums, a fused kernel's
exp approximation and (for int8) the batch whose range an input is quantised over differ between engines,
and a value near a rounding step then moves by a whole step. verify's flavours of each scheme (see
reference.FLAVOURS) measure that spread.

Symbols as in xlmr_np.model: B pairs, T tokens, D hidden size, H heads, Dh head size, F feed-forward size.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from ..config import XLMRobertaConfig
from ..model import check_batch, gelu, layer_norm, linear, position_ids, softmax

Rounding = Callable[[np.ndarray], np.ndarray]
# Attention runs this many query rows at a time, so a long pair's scores never fill [H, T, T] at once
# (8,192 tokens: [H, 8192, 8192] would be 256 MB per head); every row's numbers are its own either way.
QUERY_ROWS = 1024


def round_float16(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    return x.astype(np.float16).astype(x.dtype)


def round_bfloat16(x: np.ndarray) -> np.ndarray:
    """Round to nearest even on the top 16 bits of float32 (what torch's .bfloat16() does)."""
    x = np.asarray(x)
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & np.uint32(0xFFFF0000)
    return rounded.view(np.float32).astype(x.dtype)


def keep(x: np.ndarray) -> np.ndarray:
    """No rounding: the module outputs of an engine computing in float32 (int8 linear layers)."""
    return x


@dataclass(frozen=True)
class Int8Weight:
    """A Linear weight as symmetric int8 holds it: integers q [out, in] (zero point 0) and their scale, one
    per tensor [] or per output channel [out, 1]; w is about q * scale."""

    q: np.ndarray  # [out, in] integers, as float64 so that products with the inputs' integers are exact
    scale: np.ndarray  # [] or [out, 1] float32


def quantise_weight_int8(w: np.ndarray, p: Precision) -> Int8Weight:
    """A Linear weight [out, in] as symmetric int8: torch's weight observer takes scale = max|w| / 127.5 and
    clamps to [-128, 127]; onnxruntime max|w| / 127 and [-127, 127], or with reduce_range max|w| / 64 and
    [-64, 64]."""
    low, high, top = (-128, 127, 127.5) if not p.onnx else (-64, 64, 64.0) if p.reduce_range else (-127, 127, 127.0)
    w = np.asarray(w, dtype=np.float32)
    extent = np.abs(w).max(axis=1, keepdims=True) if p.per_channel else np.abs(w).max()  # [out, 1] or []
    scale = np.maximum(extent / np.float32(top), np.finfo(np.float32).eps).astype(np.float32)
    # torch multiplies by the float32 reciprocal: the largest |w| lands on 127.5 exactly, and rounds to even
    q = np.round(w / scale) if p.onnx else np.round(w * (np.float32(1) / scale))
    return Int8Weight(np.clip(q, low, high).astype(np.float64), scale)


def quantise_uint8(x: np.ndarray, levels: int, extent: tuple[float, float] | None = None) -> np.ndarray:
    """x as per-tensor asymmetric uint8 quantisation gives it back (onnxruntime's embedding tables): see
    uint8_parts; extent is the whole table's (min, max) when x is some of its rows."""
    q, scale = uint8_parts(x, levels, extent)
    return (q * scale).astype(x.dtype)


def uint8_parts(x: np.ndarray, levels: int, extent: tuple[float, float] | None = None) -> tuple[np.ndarray, np.float32]:
    """x quantised per tensor, asymmetrically: the range [min(x, 0), max(x, 0)] mapped onto 0..levels-1
    with an integer zero point; returns (the integers less the zero point, as float64; the scale). A
    Linear's input as it arrives: fbgemm's ChooseQuantizationParams with reduce_range (levels 128),
    onnxruntime's DynamicQuantizeLinear (256)."""
    low, high = (float(x.min()), float(x.max())) if extent is None else extent
    low, high = min(low, 0.0), max(high, 0.0)
    if levels == 256 and extent is None:  # DynamicQuantizeLinear works in float32 (onnxruntime's qmath.h)
        low32, high32 = np.float32(low), np.float32(high)
        scale = (high32 - low32) / np.float32(levels - 1) if high32 > low32 else np.float32(1)
        zero_point = float(np.round(np.clip(np.float32(0) - low32 / scale, 0, levels - 1)))
    else:  # fbgemm's ChooseQuantizationParams, and the quantiser's tables: in float64
        scale = np.float32((high - low) / (levels - 1) if high > low else 0.1)
        zero_point = float(np.clip(np.round(-low / float(scale)), 0, levels - 1))
    x32 = np.asarray(x, dtype=np.float32)
    # fbgemm multiplies by the float32 reciprocal; onnxruntime divides
    scaled = x32 * (np.float32(1) / scale) if levels == 128 else x32 / scale
    q = np.clip(np.round(scaled) + zero_point, 0, levels - 1)  # [...] integers in 0..levels-1
    return q.astype(np.float64) - zero_point, scale


@dataclass(frozen=True)
class Precision:
    """How an engine rounds: `round` after every module (and on every weight), int8 linear layers or not."""

    key: str
    round: Rounding
    int8_levels: int = 0  # 0: float linear layers; 128: torch's dynamic int8 (7 bits); 256: onnxruntime's
    per_channel: bool = False  # int8 weights with one scale per output channel (optimum's per_channel)
    reduce_range: bool = False  # onnxruntime's reduce_range: 7-bit Linear weights
    fused_attention: bool = False  # torch's fused CPU kernel (SDPA): scores kept in float32
    float64: bool = False  # float64 arithmetic between the roundings: the same scheme, another rounding order

    def linear(self, x, weight, bias):
        """torch.nn.Linear in this precision: [..., in] -> [..., out]. int8: the integer product, exact,
        scaled back to float32 by the two scales' product before the bias is added (fbgemm's
        ReQuantizeForFloat; onnxruntime's MatMulInteger, Cast, Mul, Add)."""
        if not self.int8_levels:
            return self.round(linear(x, weight, bias))
        q, scale = uint8_parts(x, self.int8_levels)  # [..., in]
        acc = q @ weight.q.T  # [..., in] -> [..., out] integers, exact in float64
        scales = (scale * weight.scale).reshape(-1)  # [] or [out] float32
        return acc.astype(x.dtype) * scales.astype(x.dtype) + np.asarray(bias, dtype=x.dtype)

    @property
    def onnx(self) -> bool:
        return self.int8_levels == 256


PRECISIONS = {
    "float16-compute": Precision("float16-compute", round_float16),
    "bfloat16-compute": Precision("bfloat16-compute", round_bfloat16),
    "int8-dynamic": Precision("int8-dynamic", keep, int8_levels=128),
    "int8-dynamic-onnx": Precision("int8-dynamic-onnx", keep, int8_levels=256),
}


class RoundedRows:
    """A lazily read embedding table (weights.RowTable) whose rows are rounded as they are read."""

    def __init__(self, table, rounding: Rounding):
        self.table, self.rounding = table, rounding

    def __getitem__(self, ids):
        return self.rounding(np.asarray(self.table[ids]))


def table_extent(table) -> tuple[float, float]:
    """(min, max) of an embedding table (a RowTable reads itself whole, once; the forward pass never does)."""
    whole = np.asarray(table)  # [V, D]
    return float(whole.min()), float(whole.max())


def precision_params(params: dict, p: Precision) -> dict:
    """The weights as the engine holds them: rounded to its dtype; for int8, the Linear weights quantised
    and, for onnxruntime, the embedding tables too (as float64 arrays when p.float64). The word table
    stays lazy: its rows are rounded as they are read."""
    if p.float64:
        rounded = precision_params(params, replace(p, float64=False))
        return {
            k: RoundedRows(v, lambda rows: np.asarray(rows, dtype=np.float64))
            if isinstance(v, RoundedRows)
            else v
            if isinstance(v, Int8Weight)  # its product with an input is exact in either dtype
            else np.asarray(v, dtype=np.float64)
            for k, v in rounded.items()
        }
    out: dict[str, RoundedRows | Int8Weight | np.ndarray] = {}
    for key, value in params.items():
        if p.onnx and "embeddings" in key and getattr(value, "ndim", 0) == 2:
            rounding = functools.partial(quantise_uint8, levels=256, extent=table_extent(value))
            out[key] = RoundedRows(value, rounding) if key.endswith("word_embeddings.weight") else rounding(value)
        elif key.endswith("word_embeddings.weight"):
            out[key] = RoundedRows(value, p.round)
        elif p.int8_levels and value.ndim == 2 and "embeddings" not in key:
            out[key] = quantise_weight_int8(np.asarray(value), p)
        else:
            out[key] = p.round(np.asarray(value))
    return out


def embeddings(input_ids, params, config: XLMRobertaConfig, p: Precision):
    """XLMRobertaEmbeddings with a rounding after each addition, as torch adds them: [B, T] -> [B, T, D]."""
    e = "roberta.embeddings."
    word = params[e + "word_embeddings.weight"][input_ids]  # [B, T] -> [B, T, D]
    position = params[e + "position_embeddings.weight"][position_ids(input_ids, config.pad_token_id)]  # [B, T, D]
    x = p.round(word + params[e + "token_type_embeddings.weight"][0])
    x = p.round(x + position)
    return p.round(layer_norm(x, params[e + "LayerNorm.weight"], params[e + "LayerNorm.bias"], config.layer_norm_eps))


def attention_rows(q, kt, v, keys, scale: float, p: Precision):
    """One block of query rows: q [B, H, R, Dh], kt [B, H, Dh, T], v [B, H, T, Dh], keys [B, 1, 1, T] ->
    [B, H, R, Dh]."""
    scores = q @ kt  # [B, H, R, Dh] -> [B, H, R, T]
    if p.fused_attention:  # float32 scores; exp(s - max) rounded for the product with V, divided by the sum after
        scores = np.where(keys, scores * scale, -np.inf)
        e = np.exp(scores - scores.max(axis=-1, keepdims=True))  # [B, H, R, T]
        return p.round((p.round(e) @ v) / e.sum(axis=-1, keepdims=True))
    scores = np.where(keys, p.round(p.round(scores) * scale), -np.inf)  # eager: rounded, then scaled and rounded
    return p.round(p.round(softmax(scores)) @ v)  # [B, H, R, T] -> [B, H, R, Dh]


def self_attention(x, mask, params, prefix: str, config: XLMRobertaConfig, p: Precision):
    """XLMRobertaSelfAttention with the rounding points of `p`'s attention: [B, T, D] -> [B, T, D]."""
    w = prefix + "attention.self."
    B, T, D = x.shape
    H = config.num_attention_heads

    def heads(t, order=(0, 2, 1, 3)):  # contiguous, so that the stacked products go to BLAS
        return np.ascontiguousarray(
            t.reshape(B, T, H, D // H).transpose(order)
        )  # [B, T, D] -> [B, H, T, Dh] or [B, H, Dh, T]

    q, kt, v = (
        heads(p.linear(x, params[w + n + ".weight"], params[w + n + ".bias"]), order)
        for n, order in (("query", (0, 2, 1, 3)), ("key", (0, 2, 3, 1)), ("value", (0, 2, 1, 3)))
    )  # [B, H, T, Dh], [B, H, Dh, T], [B, H, T, Dh]
    keys = mask[:, None, None, :]  # [B, 1, 1, T]
    scale = (D // H) ** -0.5
    context = np.concatenate(
        [attention_rows(q[:, :, r : r + QUERY_ROWS], kt, v, keys, scale, p) for r in range(0, T, QUERY_ROWS)], axis=2
    )  # [B, H, T, Dh]
    return context.transpose(0, 2, 1, 3).reshape(B, T, D)  # [B, H, T, Dh] -> [B, T, D]


def layer(x, mask, params, i: int, config: XLMRobertaConfig, p: Precision):
    """XLMRobertaLayer i (post-LN), each module's output rounded: [B, T, D] -> [B, T, D]."""
    w = f"roberta.encoder.layer.{i}."
    eps = config.layer_norm_eps
    context = self_attention(x, mask, params, w, config, p)  # [B, T, D]
    h = p.linear(context, params[w + "attention.output.dense.weight"], params[w + "attention.output.dense.bias"])
    n = w + "attention.output.LayerNorm."
    a = p.round(layer_norm(p.round(h + x), params[n + "weight"], params[n + "bias"], eps))  # [B, T, D]
    f = p.round(gelu(p.linear(a, params[w + "intermediate.dense.weight"], params[w + "intermediate.dense.bias"])))
    y = p.linear(f, params[w + "output.dense.weight"], params[w + "output.dense.bias"])  # [B, T, F] -> [B, T, D]
    n = w + "output.LayerNorm."
    return p.round(layer_norm(p.round(y + a), params[n + "weight"], params[n + "bias"], eps))  # [B, T, D]


def forward(params, config: XLMRobertaConfig, input_ids, attention_mask, p: Precision):
    """Logits [B, L] of an engine computing in `p`, on a padded batch; params: precision_params' result."""
    input_ids, mask = check_batch(input_ids, attention_mask, config)
    x = embeddings(input_ids, params, config, p)  # [B, T] -> [B, T, D]
    for i in range(config.num_hidden_layers):
        x = layer(x, mask, params, i, config, p)  # [B, T, D]
    h = p.linear(x[:, 0], params["classifier.dense.weight"], params["classifier.dense.bias"])  # [B, T, D] -> [B, D]
    return p.linear(p.round(np.tanh(h)), params["classifier.out_proj.weight"], params["classifier.out_proj.bias"])
