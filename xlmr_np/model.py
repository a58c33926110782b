"""XLMRobertaForSequenceClassification in numpy: one pure function per transformers module.

Read top to bottom, in the order data flows: primitives -> embeddings -> attention -> feed-forward ->
layer -> encoder -> classification head. Each function names the transformers module it mirrors
(transformers/models/xlm_roberta/modeling_xlm_roberta.py) and takes that module's weights under the
checkpoint's own key names.

Symbols, used in every shape comment:
    B batch (pairs)      T padded tokens per pair      N real tokens in the batch (sum of lengths)
    D hidden size        H attention heads             Dh head size (D / H)
    F feed-forward size  V vocabulary                  P position slots     L labels

The batch is *packed*: the real tokens of all pairs are stacked into one [N, D] matrix, so padding costs
nothing in the dense layers, and attention runs per pair over that pair's own tokens. A padded batch
with an attention mask gives exactly the same numbers (transformers adds a large negative number to the
masked scores, which softmax turns into zero weight; here masked tokens are simply absent).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from .config import XLMRobertaConfig
from .errors import InputError

# ----------------------------------------------------------------------------------------------------
# Primitives


# BLAS picks its kernel, and with it the order of summation, by the matrix sizes: one row alone (gemv)
# or a few rows (a small-matrix kernel) round differently than many. Running every product on a multiple
# of GEMM_ROWS rows (the tail zero-padded to a block of its own) makes each pair's numbers, bit for bit,
# independent of how many other pairs share its batch. The bulk goes to BLAS as one call, not one call
# per block: each call costs a thread synchronisation, and the rows' sums do not depend on how many
# blocks share a call (checked bit for bit at 128 vs 1024 vs 4096 rows for the model's three weight
# shapes on OpenBLAS; tests/test_parity.py checks it end to end).
GEMM_ROWS = 128


def matmul_wt(x, weight):
    """x W^T for a torch [out, in] weight, on multiples of GEMM_ROWS rows (see above)."""
    n = x.shape[0]
    bulk = n - n % GEMM_ROWS
    y = np.empty((n, weight.shape[0]), dtype=x.dtype)  # [N, in] -> [N, out]
    if bulk:
        np.matmul(x[:bulk], weight.T, out=y[:bulk])
    if bulk < n:
        padded = np.zeros((GEMM_ROWS, x.shape[1]), dtype=x.dtype)  # [GEMM_ROWS, in]
        padded[: n - bulk] = x[bulk:]
        y[bulk:] = (padded @ weight.T)[: n - bulk]  # [GEMM_ROWS, out] -> [R, out]
    return y


def linear(x, weight, bias):
    """torch.nn.Linear: weights are stored [out, in], so y = x W^T + b."""
    y = matmul_wt(x, weight)  # [N, in] -> [N, out]
    y += bias
    return y


# Elementwise work (GELU, layer norm) walks its rows in blocks of about BLOCK_ELEMENTS values, so that the
# several passes an op makes over a block (and the block's temporaries) stay in the L2 cache. (Attention's
# softmax is the exception: one pair's scores are a few MB, and 6 calls over them beat 6 per block.)
# It runs on the calling thread only. numpy's ufuncs do release the GIL, but each pass over a block lasts
# 1-3 us, and re-taking the GIL after every pass costs more than that: spreading the blocks over two
# threads made GELU on a [4096, 3072] matrix *slower* on a 2-core machine (52 ms on one thread, 66 ms on
# two; bench/test_ops_speed.py has both). The matrix products, which BLAS runs on every core, are most of
# the time anyway. Blocking never changes a value: every op here is elementwise or reduces along one row.
BLOCK_ELEMENTS = 32768


def block_rows(row_size):
    """Rows of row_size values in one cache-sized block."""
    return max(1, BLOCK_ELEMENTS // max(1, row_size))


def blockwise(kernel, n, row_size):
    """kernel(start, stop) over row blocks of an [n, row_size] array, about BLOCK_ELEMENTS values each."""
    rows = block_rows(row_size)
    for start in range(0, n, rows):
        kernel(start, min(start + rows, n))


def layer_norm(x, weight, bias, eps, out=None, add=()):
    """torch.nn.LayerNorm over the last axis, with the biased variance torch uses.

    out: where to write (may be x itself: the norm is then done in place). add: arrays added to x first,
    in order, within the same cache-sized block (a dense layer's bias [D], then the residual [N, D]).
    """
    out = np.empty_like(x) if out is None else out
    eps = x.dtype.type(eps)

    def kernel(start, stop):  # rows start:stop, [R, D] -> [R, D]
        xb, ob = x[start:stop], out[start:stop]
        for a in add:
            np.add(xb, a if a.ndim == 1 else a[start:stop], out=ob)
            xb = ob
        mean = xb.mean(axis=-1, keepdims=True)  # [R, D] -> [R, 1]
        np.subtract(xb, mean, out=ob)  # centered
        var = np.mean(ob * ob, axis=-1, keepdims=True)  # [R, D] -> [R, 1]
        ob /= np.sqrt(var + eps)
        ob *= weight
        ob += bias

    blockwise(kernel, x.shape[0], x[:1].size)
    return out


# erf(x) ~= x * P(x^2) / Q(x^2) on |x| <= 3.92 (beyond it erf rounds to +-1 in float32). Coefficients
# fitted for this project by tools/fit_erf.py; max abs error 1.6e-8 in float64 arithmetic.
_ERF_P = (1.1283790229052877, 0.19275430546134809, 0.053059188835358755, 0.0038679028709637953,
          0.0002874687126989401, 2.034798547538262e-06)
_ERF_Q = (1.0, 0.5041557264764025, 0.11508058163382621, 0.015171455139374668, 0.0011880096011616798,
          3.8070733794207105e-05)
_ERF_CLIP = 3.92


def _erf_rational(x):
    """erf in float64 arithmetic, accurate to float32: max abs error 1.6e-8 (5e-8 once rounded to float32).

    Evaluated in float64: in float32 arithmetic the rational's own rounding reaches 4e-7 near |x| = 3.6.
    x: a float64 array the caller owns, overwritten (clipped) here: every pass runs in place.
    """
    x = np.clip(x, -_ERF_CLIP, _ERF_CLIP, out=x)
    t = x * x
    p = t * _ERF_P[-1]
    q = t * _ERF_Q[-1]
    p += _ERF_P[-2]
    q += _ERF_Q[-2]
    for cp, cq in zip(_ERF_P[-3::-1], _ERF_Q[-3::-1]):
        p *= t
        p += cp
        q *= t
        q += cq
    p *= x
    p /= q
    return p


def _erf_series(x):
    """erf to float64 accuracy (max abs error 2.8e-15 against math.erf), for the float64 reference mode.

    erf(x) = 2/sqrt(pi) * exp(-x^2) * sum_n x (2x^2)^n / (1*3*...*(2n+1)): every term is positive, so
    nothing cancels; it is summed until the last term is below 1e-17 of the sum (~100 terms at |x| = 6,
    beyond which erf is +-1 in float64).
    """
    x = np.clip(x, -6.0, 6.0)
    x2 = x * x
    term = x.copy()
    total = x.copy()
    n = 0
    while True:
        n += 1
        term *= x2 * (2.0 / (2 * n + 1))
        total += term
        if n % 8 == 0 and np.all(np.abs(term) <= 1e-17 * np.abs(total)):
            break
    return (2.0 / math.sqrt(math.pi)) * np.exp(-x2) * total


def erf(x):
    """The error function, elementwise, accurate to the rounding of x's dtype (float32: the rational;
    float64: the series). Both run on a float64 copy of x."""
    x64 = x.astype(np.float64)
    return (_erf_series(x64) if x.dtype == np.float64 else _erf_rational(x64)).astype(x.dtype)


# The normal upper tail Q(a) = erfc(a / sqrt 2) / 2 = exp(-a^2 / 2) * R(a) for a >= 0, with R(a) ~= P(a) /
# Q(a) fitted on 0 <= a <= 20 (beyond it exp(-a^2 / 2) is 0 in float32) by `tools/fit_erf.py --tail`: max
# *relative* error 1.0e-8. Every coefficient is positive, so Horner's rule in float32 never cancels.
_TAIL_P = (0.5000000050391333, 0.4468741480745188, 0.1896655903669911, 0.04282084103367643,
           0.004446058620554033)
_TAIL_Q = (1.0, 1.6916335472693207, 1.2290519186781215, 0.48646037846002005, 0.10733989679998267,
           0.011144553775259856)
_TAIL_CAP = 20.0


def _gelu32(x, out, zeros, cap):
    """x Phi(x) in float32 arithmetic, into out (may be x): off by at most 1 ulp + 2^-23 |x| (checked by
    tests/test_ops.py); torch's own float32 GELU is off by 3e-7 |x| at x = -3.47 (tests/test_ops.py).

    With a = |x|: x Phi(x) = max(x, 0) - a Q(a), a form in which nothing cancels: for x < 0 the result
    -a Q(a) keeps a few ulps of relative accuracy however small it is. zeros, cap: arrays of x's shape
    filled with 0 and _TAIL_CAP (numpy's maximum/minimum against a scalar run 3x slower than against an
    array, so the caller fills them once for every block).
    """
    f32 = x.dtype.type
    a = np.abs(x)  # [R, F]
    np.maximum(x, zeros, out=out)  # max(x, 0); out may be x, which is not needed after this
    np.minimum(a, cap, out=a)  # the tail term is 0 beyond the cap anyway
    g = np.square(a)
    g *= f32(-0.5)
    np.exp(g, out=g)  # exp(-a^2 / 2)
    p = a * f32(_TAIL_P[-1])
    p += f32(_TAIL_P[-2])
    for c in _TAIL_P[-3::-1]:
        p *= a
        p += f32(c)
    q = a * f32(_TAIL_Q[-1])
    q += f32(_TAIL_Q[-2])
    for c in _TAIL_Q[-3::-1]:
        q *= a
        q += f32(c)
    p /= q
    p *= g
    p *= a  # a Q(a)
    out -= p
    return out


def _gelu64(x, out, *_):
    """x Phi(x) formed in float64 from the series erf: the float64 reference mode."""
    phi = _erf_series(x * (1 / math.sqrt(2)))  # erf(x / sqrt 2)
    phi += 1.0
    phi *= 0.5
    np.multiply(phi, x, out=out)
    return out


def gelu(x, bias=None, out=None):
    """transformers ACT2FN["gelu"]: the exact form x Phi(x) = x/2 (1 + erf(x / sqrt 2)), not tanh.

    bias: a dense layer's bias [F], added first in the same cache-sized block, so the [N, F] matrix is
    walked once. out: where to write (may be x: GELU in place). Runs blockwise on the calling thread.
    """
    out = np.empty_like(x) if out is None else out
    kernel_for_dtype = _gelu64 if x.dtype == np.float64 else _gelu32
    block = min(x.shape[0], block_rows(x[:1].size)) * x[:1].size  # values in the largest block
    zeros, cap = np.zeros(block, dtype=x.dtype), np.full(block, _TAIL_CAP, dtype=x.dtype)

    def kernel(start, stop):  # rows start:stop, [R, F] -> [R, F]
        xb = x[start:stop]
        if bias is not None:
            xb = np.add(xb, bias, out=out[start:stop])
        size = xb.size
        kernel_for_dtype(xb, out[start:stop], zeros[:size].reshape(xb.shape), cap[:size].reshape(xb.shape))

    blockwise(kernel, x.shape[0], x[:1].size)
    return out


def softmax(x, axis=-1, out=None, scale=None):
    """Softmax with the row maximum subtracted first, so exp never overflows.

    out may be x itself; scale multiplies x first (attention's 1/sqrt(Dh)), as transformers' eager
    attention scales the scores.
    """
    if scale is not None:
        x = np.multiply(x, scale, out=out)
    out = np.subtract(x, x.max(axis=axis, keepdims=True), out=out)
    np.exp(out, out=out)
    out /= out.sum(axis=axis, keepdims=True)
    return out


# ----------------------------------------------------------------------------------------------------
# Tracing: record named intermediates (names are transformers' module names without "roberta.")


@dataclass
class Trace:
    """Collects intermediates by name during a forward pass.

    `names` selects what to keep: exact names or shell patterns (`encoder.layer.*.output`); None keeps
    everything. Token-level tensors are stored unpacked as [B, T, ...] (zeros at padding), attention
    probabilities as [B, H, T, T], head tensors as [B, ...].

    >>> trace = Trace(["embeddings", "encoder.layer.*.output"])
    """

    names: Iterable[str] | None = None
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    keep: np.ndarray | None = None  # [B, T] bool: where each packed token sits in the padded batch

    def __post_init__(self):
        if isinstance(self.names, str):
            self.names = [self.names]
        self.names = None if self.names is None else list(self.names)

    def wants(self, name: str) -> bool:
        return self.names is None or any(fnmatch.fnmatchcase(name, p) for p in self.names)

    def tokens(self, name: str, x: np.ndarray) -> None:
        """Record a packed token tensor [N, ...] as [B, T, ...]."""
        if self.wants(name):
            out = np.zeros(self.keep.shape + x.shape[1:], dtype=x.dtype)  # [B, T, ...]
            out[self.keep] = x
            self.tensors[name] = out

    def pairs(self, name: str, x: np.ndarray) -> None:
        """Record a per-pair tensor [B, ...] as it is."""
        if self.wants(name):
            self.tensors[name] = np.array(x)


def _module(key_prefix: str) -> str:
    """Checkpoint key prefix -> trace name: "roberta.encoder.layer.3.output." -> "encoder.layer.3.output"."""
    return key_prefix.removeprefix("roberta.").rstrip(".")


# ----------------------------------------------------------------------------------------------------
# Embeddings (XLMRobertaEmbeddings)


def position_ids(input_ids, padding_idx):
    """XLM-R quirk: positions count from padding_idx + 1 (= 2), and padding sits at padding_idx.

    Inherited from fairseq, which reserved the slots below padding_idx; so 514 slots hold 512 tokens.
    transformers derives them from input_ids != padding_idx (not from the attention mask); so do we.

    >>> position_ids(np.array([[0, 9, 2, 1]]), padding_idx=1)   # -> [[2, 3, 4, 1]]
    """
    is_token = (input_ids != padding_idx).astype(np.int64)  # [B, T]
    return np.cumsum(is_token, axis=1) * is_token + padding_idx  # [B, T]


def embeddings(ids, positions, params, config, trace=None):
    """XLMRobertaEmbeddings: word + position + token type (all type 0), then LayerNorm.

    ids, positions: [N] packed token ids and their position ids.
    """
    p = "roberta.embeddings."
    word = params[p + "word_embeddings.weight"][ids]  # [N] -> [N, D]  (rows read on demand)
    position = params[p + "position_embeddings.weight"][positions]  # [N] -> [N, D]
    token_type = params[p + "token_type_embeddings.weight"][0]  # [D]: type_vocab_size 1, every token is 0
    x = word + token_type + position  # transformers' order of additions, for identical rounding
    layer_norm(x, params[p + "LayerNorm.weight"], params[p + "LayerNorm.bias"], config.layer_norm_eps, out=x)
    if trace is not None:
        trace.tokens("embeddings.word_embeddings", word)
        trace.tokens("embeddings.position_embeddings", position)
        trace.tokens("embeddings", x)
    return x  # [N, D]


# ----------------------------------------------------------------------------------------------------
# Attention (XLMRobertaSelfAttention + XLMRobertaSelfOutput)


def self_attention(x, offsets, params, prefix, config, trace=None):
    """XLMRobertaSelfAttention: softmax(Q K^T / sqrt(Dh)) V per head, each pair over its own tokens.

    offsets: [B + 1] start of each pair's tokens in the packed x (pair b is x[offsets[b]:offsets[b+1]]).
    Per pair, all H heads go to BLAS as one stacked product (numpy loops over the heads in C, and BLAS
    runs each on every core); the heads are strided views of the packed Q, K, V, never copied. Returns
    the per-head contexts concatenated back to [N, D].
    """
    p = prefix + "attention.self."
    H, Dh = config.num_attention_heads, config.head_size
    q = linear(x, params[p + "query.weight"], params[p + "query.bias"])  # [N, D] -> [N, D]
    k = linear(x, params[p + "key.weight"], params[p + "key.bias"])  # [N, D] -> [N, D]
    v = linear(x, params[p + "value.weight"], params[p + "value.bias"])  # [N, D] -> [N, D]
    scale = x.dtype.type(Dh**-0.5)
    # A pair's context overwrites its own rows of q, which its scores no longer need: one [N, D] less at
    # the layer's peak memory (kept apart when tracing, which records q afterwards).
    context = q if trace is None else np.empty_like(q)  # [N, D]
    lengths = np.diff(offsets)  # [B]
    keep = trace is not None and trace.wants(_module(p) + ".probs")
    probs_all = []
    scores_buffer = np.empty(H * int(lengths.max()) ** 2, dtype=x.dtype)  # room for the longest pair's [H, n, n]
    for b, n in enumerate(lengths):
        rows = slice(offsets[b], offsets[b + 1])
        qh = q[rows].reshape(n, H, Dh).transpose(1, 0, 2)  # [n, D] -> [H, n, Dh]
        kt = k[rows].reshape(n, H, Dh).transpose(1, 2, 0)  # [n, D] -> [H, Dh, n]
        vh = v[rows].reshape(n, H, Dh).transpose(1, 0, 2)  # [n, D] -> [H, n, Dh]
        scores = np.matmul(qh, kt, out=scores_buffer[: H * n * n].reshape(H, n, n))  # -> [H, n, n]
        softmax(scores, out=scores, scale=scale)  # in one go: 6 calls beat cache-sized blocks here
        np.matmul(scores, vh, out=context[rows].reshape(n, H, Dh).transpose(1, 0, 2))  # -> [H, n, Dh]
        if keep:
            probs_all.append(scores.copy())  # [H, n, n]
    if trace is not None:
        name = _module(p)
        trace.tokens(name + ".query", q)
        trace.tokens(name + ".key", k)
        trace.tokens(name + ".value", v)
        if keep:
            trace.tensors[name + ".probs"] = _pad_probs(probs_all, trace.keep)  # [B, H, T, T]
        trace.tokens(name, context)
    return context  # [N, D]


def _pad_probs(probs_per_pair, keep):
    """[H, n_b, n_b] per pair -> [B, H, T, T], zero where either token is padding."""
    B, T = keep.shape
    H = probs_per_pair[0].shape[0]
    out = np.zeros((B, H, T, T), dtype=probs_per_pair[0].dtype)
    for b, probs in enumerate(probs_per_pair):
        idx = np.flatnonzero(keep[b])
        out[b][:, idx[:, None], idx[None, :]] = probs
    return out


def attention_output(context, residual, params, prefix, config, trace=None):
    """XLMRobertaSelfOutput: dense, then post-LN: LayerNorm(residual + dense(context))."""
    p = prefix + "attention.output."
    h = matmul_wt(context, params[p + "dense.weight"])  # [N, D] -> [N, D]
    # post-LN: bias and residual are added *before* the norm (in that order, as torch rounds)
    layer_norm(h, params[p + "LayerNorm.weight"], params[p + "LayerNorm.bias"], config.layer_norm_eps, out=h,
               add=(params[p + "dense.bias"], residual))
    if trace is not None:
        trace.tokens(_module(p), h)
    return h  # [N, D]


# ----------------------------------------------------------------------------------------------------
# Feed-forward (XLMRobertaIntermediate + XLMRobertaOutput)


def intermediate(x, params, prefix, trace=None):
    """XLMRobertaIntermediate: dense up to F, then exact erf GELU."""
    p = prefix + "intermediate.dense."
    h = matmul_wt(x, params[p + "weight"])  # [N, D] -> [N, F]
    gelu(h, bias=params[p + "bias"], out=h)  # bias and GELU in one pass, in place
    if trace is not None:
        trace.tokens(_module(prefix + "intermediate"), h)
    return h  # [N, F]


def output(h, residual, params, prefix, config, trace=None):
    """XLMRobertaOutput: dense back down to D, then post-LN: LayerNorm(residual + dense(h))."""
    p = prefix + "output."
    y = matmul_wt(h, params[p + "dense.weight"])  # [N, F] -> [N, D]
    layer_norm(y, params[p + "LayerNorm.weight"], params[p + "LayerNorm.bias"], config.layer_norm_eps, out=y,
               add=(params[p + "dense.bias"], residual))
    if trace is not None:
        trace.tokens(_module(p), y)
    return y  # [N, D]


# The [N, F] intermediate is 4x the size of everything else in a layer (100 MB for 16 pairs x 512 tokens), so
# the feed-forward block runs FFN_ROWS rows at a time: the intermediate is sized to the chunk, and is still
# in cache when the second product reads it. A multiple of GEMM_ROWS, so every row is computed exactly as
# it would be in one call (see GEMM_ROWS).
FFN_ROWS = 8 * GEMM_ROWS


def feed_forward(a, params, prefix, config, trace=None):
    """XLMRobertaIntermediate then XLMRobertaOutput, FFN_ROWS rows at a time (whole when tracing)."""
    if trace is not None:
        return output(intermediate(a, params, prefix, trace), a, params, prefix, config, trace)  # [N, D]
    y = np.empty_like(a)  # [N, D]
    for start in range(0, a.shape[0], FFN_ROWS):
        rows = slice(start, start + FFN_ROWS)
        y[rows] = output(intermediate(a[rows], params, prefix), a[rows], params, prefix, config)  # [R, D]
    return y  # [N, D]


# ----------------------------------------------------------------------------------------------------
# Layer, encoder, head


def encoder_layer(x, offsets, params, i, config, trace=None):
    """XLMRobertaLayer i: attention block then feed-forward block, each post-LN."""
    prefix = f"roberta.encoder.layer.{i}."
    context = self_attention(x, offsets, params, prefix, config, trace)  # [N, D]
    a = attention_output(context, x, params, prefix, config, trace)  # [N, D]
    return feed_forward(a, params, prefix, config, trace)  # [N, D] -> [N, F] -> [N, D]


def classification_head(first_tokens, params, trace=None):
    """XLMRobertaClassificationHead: the <s> state -> dense -> tanh -> out_proj (dropout is off).

    Its activation is tanh, not GELU (a known port once used GELU here and shipped wrong scores).
    """
    h = linear(first_tokens, params["classifier.dense.weight"], params["classifier.dense.bias"])  # [B, D]
    if trace is not None:
        trace.pairs("classifier.dense", h)
    logits = linear(np.tanh(h), params["classifier.out_proj.weight"],
                    params["classifier.out_proj.bias"])  # [B, D] -> [B, L]
    if trace is not None:
        trace.pairs("classifier.out_proj", logits)
    return logits  # [B, L]


def forward(params, config: XLMRobertaConfig, input_ids, attention_mask, trace: Trace | None = None):
    """XLMRobertaForSequenceClassification.forward: token ids -> logits [B, L].

    input_ids, attention_mask: [B, T] integer arrays as a tokenizer returns them (right-padded; mask 1
    for real tokens). Every pair must start with a real token, the <s> the head reads.
    """
    input_ids = np.asarray(input_ids)
    keep = np.asarray(attention_mask).astype(bool)  # [B, T]
    _check_batch(input_ids, keep, config)
    lengths = keep.sum(axis=1)  # [B]
    offsets = np.concatenate([[0], np.cumsum(lengths)])  # [B + 1]
    ids = input_ids[keep]  # [B, T] -> [N]
    positions = position_ids(input_ids, config.pad_token_id)[keep]  # [B, T] -> [N]
    if trace is not None:
        trace.keep = keep

    x = embeddings(ids, positions, params, config, trace)  # [N] -> [N, D]
    for i in range(config.num_hidden_layers):
        x = encoder_layer(x, offsets, params, i, config, trace)  # [N, D] -> [N, D]
    return classification_head(x[offsets[:-1]], params, trace)  # [N, D] -> [B, D] -> [B, L]


def _check_batch(input_ids, keep, config):
    if input_ids.ndim != 2 or keep.shape != input_ids.shape:
        raise InputError(
            f"input_ids and attention_mask must both be [B, T]; got {input_ids.shape} and {keep.shape}"
        )
    if input_ids.shape[0] == 0:
        raise InputError("the batch is empty")
    if not np.issubdtype(input_ids.dtype, np.integer):
        raise InputError(f"input_ids must be integers, got {input_ids.dtype}")
    if not keep[:, 0].all():
        bad = np.flatnonzero(~keep[:, 0]).tolist()
        raise InputError(f"pairs {bad} do not start with a real token (left padding or an empty pair)")
    if input_ids.size and (input_ids.min() < 0 or input_ids.max() >= config.vocab_size):
        raise InputError(f"token ids must lie in [0, {config.vocab_size}); found {input_ids.min()}..{input_ids.max()}")
    longest = int(position_ids(input_ids, config.pad_token_id).max())
    if longest >= config.max_position_embeddings:
        raise InputError(
            f"a pair has {longest - config.pad_token_id} tokens but the model's position table holds "
            f"{config.max_tokens} (max_position_embeddings {config.max_position_embeddings}); truncate it"
        )
