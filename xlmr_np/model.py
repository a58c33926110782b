"""XLMRobertaForSequenceClassification in plain numpy: the reference forward pass, to read and to inspect.

One function per transformers module (transformers/models/xlm_roberta/modeling_xlm_roberta.py), in the
order data flows, each reading that module's weights under the checkpoint's own key names. It runs on a
padded batch with its attention mask, in the weights' dtype (float32 or float64). The engine that serves
scores (xlmr_np.engine) computes the same thing faster and is tested against this file layer by layer.

`xp` is the array namespace of the weights (xlmr_np.arrays.ops_of): numpy itself, or CuPy's array API
namespace when the weights are on a GPU, under the array API standard's names (`xp.permute_dims` is
numpy's transpose). Token ids are checked and looked up on the host; everything else runs where the
weights are.

Every intermediate goes to `record(name, x)` under its transformers module name without "roberta."
(`record("encoder.layer.3.output", x)`); the default records nothing, and xlmr_np.tracing.Trace keeps them.

Symbols in the shape comments: B pairs, T tokens per pair (padded), D hidden size, H attention heads,
Dh head size (D / H), F feed-forward size, V vocabulary, L labels.
"""

from __future__ import annotations

import math

import numpy as np

from .arrays import ops_of, params_ops, to_numpy
from .config import XLMRobertaConfig
from .errors import InputError
from .numerics import erf


def no_record(name: str, x: np.ndarray) -> None:
    """The default record callback: keeps nothing."""


def linear(x, weight, bias):
    """torch.nn.Linear: weights are stored [out, in], so y = x W^T + b."""
    return x @ weight.T + bias  # [..., in] -> [..., out]


def layer_norm(x, weight, bias, eps):
    """torch.nn.LayerNorm over the last axis, with the biased variance torch uses."""
    xp = ops_of(x)
    mean = xp.mean(x, axis=-1, keepdims=True)  # [..., D] -> [..., 1]
    var = xp.mean((x - mean) ** 2, axis=-1, keepdims=True)  # [..., D] -> [..., 1]
    return (x - mean) / xp.sqrt(var + eps) * weight + bias


def gelu(x):
    """transformers' "gelu": the exact x Phi(x), not the tanh approximation (a classic porting mistake)."""
    return x / 2 * (1 + erf(x / math.sqrt(2)))


def softmax(x):
    """Softmax over the last axis, the row maximum subtracted first so exp never overflows."""
    xp = ops_of(x)
    e = xp.exp(x - xp.max(x, axis=-1, keepdims=True))
    return e / xp.sum(e, axis=-1, keepdims=True)


def _name(prefix: str) -> str:
    """Checkpoint key prefix -> record name: "roberta.encoder.layer.3.output." -> "encoder.layer.3.output"."""
    return prefix.removeprefix("roberta.").rstrip(".")


def position_ids(input_ids, padding_idx):
    """XLM-R quirk: positions count from padding_idx + 1 (= 2) and padding sits at padding_idx.

    Inherited from fairseq, which reserved the slots up to padding_idx; so 514 slots hold 512 tokens.
    transformers derives them from input_ids != padding_idx (not from the attention mask); so do we.

    >>> position_ids(np.array([[0, 9, 2, 1]]), padding_idx=1)   # -> [[2, 3, 4, 1]]
    """
    is_token = (input_ids != padding_idx).astype(np.int64)  # [B, T]
    return np.cumsum(is_token, axis=1) * is_token + padding_idx  # [B, T]


def embeddings(input_ids, params, config, record=no_record):
    """XLMRobertaEmbeddings: word + token type (type_vocab_size 1: all type 0) + position, then LayerNorm."""
    p, xp = "roberta.embeddings.", params_ops(params)
    word = xp.take_rows(params[p + "word_embeddings.weight"], input_ids)  # [B, T] -> [B, T, D]
    positions = position_ids(input_ids, config.pad_token_id)  # [B, T]
    position = xp.take_rows(params[p + "position_embeddings.weight"], positions)  # [B, T] -> [B, T, D]
    record("embeddings.word_embeddings", word)
    record("embeddings.position_embeddings", position)
    x = word + params[p + "token_type_embeddings.weight"][0, ...] + position  # torch's order of additions
    x = layer_norm(x, params[p + "LayerNorm.weight"], params[p + "LayerNorm.bias"], config.layer_norm_eps)
    record("embeddings", x)
    return x  # [B, T, D]


def self_attention(x, mask, params, prefix, config, record=no_record):
    """XLMRobertaSelfAttention: per head, softmax(Q K^T / sqrt(Dh)) V over the pair's real tokens.

    mask: [B, T] bool (in xp), True for real tokens. Padding keys get a score of -inf, so exactly zero weight.

    The plain formula holds every head's [T, T] scores at once, several times over (scores, masked, shifted,
    exponentiated): at 8,192 tokens (bge-reranker-v2-m3's limit) a head's scores take 268 MB in float32, and
    one head of 64 took 1.0 GB of peak memory and about 2 s of CPU time (measured with one and two heads on
    a 2-core AMD EPYC, numpy's OpenBLAS), so a 16-head layer needs about 17 GB and half a minute. The engine
    (xlmr_np.engine) computes the same thing in cache-sized blocks. Trained models' sharp heads also give
    subnormal probabilities here, which the engine rounds to 0 (engine.WEIGHT_FLOOR).
    """
    p, name, xp = prefix + "attention.self.", _name(prefix + "attention.self"), ops_of(x)
    B, T, D = x.shape
    H = config.num_attention_heads
    q = linear(x, params[p + "query.weight"], params[p + "query.bias"])  # [B, T, D]
    k = linear(x, params[p + "key.weight"], params[p + "key.bias"])  # [B, T, D]
    v = linear(x, params[p + "value.weight"], params[p + "value.bias"])  # [B, T, D]
    record(name + ".query", q)
    record(name + ".key", k)
    record(name + ".value", v)

    def heads(t):
        return xp.permute_dims(xp.reshape(t, (B, T, H, D // H)), (0, 2, 1, 3))  # [B, T, D] -> [B, H, T, Dh]

    scores = heads(q) @ xp.permute_dims(heads(k), (0, 1, 3, 2)) * (D // H) ** -0.5  # -> [B, H, T, T]
    probs = softmax(xp.where(mask[:, None, None, :], scores, -xp.inf))  # [B, H, T, T]
    record(name + ".probs", probs)
    context = xp.reshape(xp.permute_dims(probs @ heads(v), (0, 2, 1, 3)), (B, T, D))  # [B, H, T, Dh] -> [B, T, D]
    record(name, context)
    return context  # [B, T, D]


def attention_output(context, x, params, prefix, config, record=no_record):
    """XLMRobertaSelfOutput: dense, then LayerNorm of the sum with the layer's input."""
    p = prefix + "attention.output."
    h = linear(context, params[p + "dense.weight"], params[p + "dense.bias"])  # [B, T, D]
    # XLM-R quirk (as BERT): post-LN, the residual is added *before* the norm, not after as in GPT-2
    a = layer_norm(h + x, params[p + "LayerNorm.weight"], params[p + "LayerNorm.bias"], config.layer_norm_eps)
    record(_name(p), a)
    return a  # [B, T, D]


def intermediate(a, params, prefix, record=no_record):
    """XLMRobertaIntermediate: dense up to F, then the exact GELU."""
    p = prefix + "intermediate."
    h = gelu(linear(a, params[p + "dense.weight"], params[p + "dense.bias"]))  # [B, T, D] -> [B, T, F]
    record(_name(p), h)
    return h  # [B, T, F]


def output(h, a, params, prefix, config, record=no_record):
    """XLMRobertaOutput: dense back down to D, then post-LN as in attention_output."""
    p = prefix + "output."
    y = linear(h, params[p + "dense.weight"], params[p + "dense.bias"])  # [B, T, F] -> [B, T, D]
    y = layer_norm(y + a, params[p + "LayerNorm.weight"], params[p + "LayerNorm.bias"], config.layer_norm_eps)
    record(_name(p), y)
    return y  # [B, T, D]


def layer(x, mask, params, i, config, record=no_record):
    """XLMRobertaLayer i: the attention block, then the feed-forward block."""
    prefix = f"roberta.encoder.layer.{i}."
    context = self_attention(x, mask, params, prefix, config, record)  # [B, T, D]
    a = attention_output(context, x, params, prefix, config, record)  # [B, T, D]
    return output(intermediate(a, params, prefix, record), a, params, prefix, config, record)  # [B, T, D]


def encoder(x, mask, params, config, record=no_record):
    """XLMRobertaEncoder: the layers in turn."""
    for i in range(config.num_hidden_layers):
        x = layer(x, mask, params, i, config, record)  # [B, T, D]
    return x  # [B, T, D]


def classification_head(x, params, record=no_record):
    """XLMRobertaClassificationHead (dropout is off at inference).

    XLM-R quirk: it reads only the first token, <s>, then dense -> tanh -> out_proj (tanh, not GELU: a port
    that used GELU here shipped wrong scores).
    """
    xp = ops_of(x)
    h = linear(x[:, 0, :], params["classifier.dense.weight"], params["classifier.dense.bias"])  # [B, T, D] -> [B, D]
    record("classifier.dense", h)
    logits = linear(xp.tanh(h), params["classifier.out_proj.weight"], params["classifier.out_proj.bias"])  # -> [B, L]
    record("classifier.out_proj", logits)
    return logits  # [B, L]


def forward(params, config: XLMRobertaConfig, input_ids, attention_mask, record=no_record):
    """XLMRobertaForSequenceClassification: token ids [B, T] and their mask [B, T] -> logits [B, L].

    input_ids, attention_mask: as a tokenizer returns them (right-padded; mask 1 for real tokens).
    """
    input_ids, mask = check_batch(input_ids, attention_mask, config)  # on the host
    x = embeddings(input_ids, params, config, record)  # [B, T] -> [B, T, D]
    x = encoder(x, params_ops(params).asarray(mask), params, config, record)  # [B, T, D]
    return classification_head(x, params, record)  # [B, T, D] -> [B, L]


def check_batch(input_ids, attention_mask, config):
    """(input_ids, mask as bool) as host numpy arrays, or an InputError saying what is wrong with the batch."""
    input_ids, mask = to_numpy(input_ids), to_numpy(attention_mask).astype(bool)
    if input_ids.ndim != 2 or mask.shape != input_ids.shape:
        raise InputError(f"input_ids and attention_mask must both be [B, T]; got {input_ids.shape} and {mask.shape}")
    if input_ids.shape[0] == 0:
        raise InputError("the batch is empty")
    if not np.issubdtype(input_ids.dtype, np.integer):
        raise InputError(f"input_ids must be integers, got {input_ids.dtype}")
    if not mask[:, 0].all():  # the head reads the first token
        bad = np.flatnonzero(~mask[:, 0]).tolist()
        raise InputError(f"pairs {bad} do not start with a real token (left padding or an empty pair)")
    if input_ids.min() < 0 or input_ids.max() >= config.vocab_size:
        raise InputError(f"token ids must lie in [0, {config.vocab_size}); found {input_ids.min()}..{input_ids.max()}")
    longest = int(position_ids(input_ids, config.pad_token_id).max())
    if longest >= config.max_position_embeddings:
        raise InputError(
            f"a pair has {longest - config.pad_token_id} tokens but the model's position table holds "
            f"{config.max_tokens} (max_position_embeddings {config.max_position_embeddings}); truncate it"
        )
    return input_ids, mask
