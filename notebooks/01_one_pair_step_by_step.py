# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # One (query, document) pair through every step of the cross-encoder
#
# This notebook follows one pair from text to relevance score through
# `XLMRobertaForSequenceClassification`, calling the reference forward pass's functions one at a time
# (`xlmr_np.model.embeddings`, `self_attention`, ...: the file reads top to bottom in the same order),
# printing each result's shape and values, and checking at the end that the step-by-step run gives
# exactly what `model.forward` gives, and what the fast engine that `Reranker` scores with gives.
#
# Symbols: **B** pairs in the batch (here 1), **T** tokens of the pair, **D** hidden size, **H** attention
# heads, **Dh = D / H** head size, **F** feed-forward size. The model is `$XLMR_NP_MODEL` if set (e.g.
# bge-reranker-base); otherwise a tiny random model built locally (D = 32, H = 4, F = 37, 2 layers), so
# the *numbers* below mean nothing linguistically, but every *step* is the real one.

# %%
import numpy as np

from xlmr_np import Reranker, model
from xlmr_np.testing import notebook_model
from xlmr_np.tracing import Trace, format_table, inspect_pair, stats

np.set_printoptions(precision=4, suppress=True, linewidth=110)
reranker = Reranker.from_pretrained(notebook_model(seed=0))
config, params = reranker.config, reranker.params
print(config)

# %% [markdown]
# ## 1. Tokens
#
# The pair is written with XLM-R's template `<s> query </s></s> document </s>`. `inspect_pair` keeps
# each token's string, which text it came from (0 query, 1 document, None for the template's special
# tokens) and its position id.

# %%
QUERY = "what is the capital of France?"
DOCUMENT = "Paris is the capital and largest city of France."
seen = inspect_pair(reranker, QUERY, DOCUMENT)
print(
    format_table(
        [
            dict(i=i, token=t, id=int(n), segment=str(s), position=int(p))
            for i, (t, n, s, p) in enumerate(zip(seen.tokens, seen.input_ids, seen.segments, seen.positions))
        ]
    )
)

# %% [markdown]
# ## 2. Position ids
#
# XLM-R inherits fairseq's offset: with padding index $p = 1$,
#
# $$\text{pos}_t = p + \sum_{s \le t} m_s \quad\text{for real tokens } (m_t = 1),
# \qquad \text{pos}_t = p \text{ at padding},$$
#
# so the first real token sits at position 2, and a 514-slot table holds 512 tokens.

# %%
ids = seen.input_ids[None, :]  # [1, T]
positions = model.position_ids(ids, config.pad_token_id)  # [1, T]
print("positions:", positions[0])
padded = np.concatenate([ids, [[config.pad_token_id] * 3]], axis=1)  # the same pair with 3 pads
print("padded:   ", model.position_ids(padded, config.pad_token_id)[0])

# %% [markdown]
# ## 3. Embeddings
#
# $$e_t = \mathrm{LayerNorm}\big(W_\text{word}[\text{id}_t] + W_\text{type}[0] + W_\text{pos}[\text{pos}_t]\big),
# \qquad \mathrm{LayerNorm}(x) = \frac{x - \mu(x)}{\sqrt{\sigma^2(x) + \varepsilon}} \odot \gamma + \beta$$
#
# The reference works on a padded batch [B, T] with its attention mask (here B = 1 and no padding, so
# the mask is all ones).

# %%
mask = np.ones_like(ids, dtype=bool)  # [1, T]: every token is real
x = model.embeddings(ids, params, config)  # [1, T] -> [1, T, D]
print("embeddings", x.shape, "first token:", x[0, 0, :8], "...")
print(
    "after LayerNorm each token's mean and std are set by beta and gamma:", x[0].mean(axis=1)[:4], x[0].std(axis=1)[:4]
)

# %% [markdown]
# ## 4. Self-attention (layer 0)
#
# Per head $h$, with $X$ the [T, D] input and linear maps stored [out, in] as in the checkpoint:
#
# $$Q = X W_Q^\top + b_Q,\quad K = X W_K^\top + b_K,\quad V = X W_V^\top + b_V,$$
# $$A_h = \mathrm{softmax}\!\Big(\frac{Q_h K_h^\top}{\sqrt{D_h}}\Big) \in \mathbb{R}^{T \times T},
# \qquad \text{context}_h = A_h V_h .$$
#
# The heads' contexts are concatenated back to [T, D]. Padding keys (none here) would get the score
# $-\infty$, so zero weight. Every function hands its intermediates to a `record(name, x)` callback;
# a `Trace` is one that keeps them, here the probabilities $A$ and the queries.

# %%
prefix = "roberta.encoder.layer.0."
trace = Trace(["*probs", "*query"])
context = model.self_attention(x, mask, params, prefix, config, trace)  # [1, T, D] -> [1, T, D]
probs = trace["encoder.layer.0.attention.self.probs"][0]  # [H, T, T]
print(
    "query", trace["encoder.layer.0.attention.self.query"].shape[1:], "probs", probs.shape, "context", context.shape[1:]
)
print("every row of every head sums to 1:", np.allclose(probs.sum(axis=-1), 1))
print("layer 0, head 0, where <s> looks (top 3):", seen.attends_to(layer=0, head=0, token=0, k=3))

# %% [markdown]
# ## 5. Attention output: dense, residual, LayerNorm (post-LN)
#
# $$a = \mathrm{LayerNorm}\big(X + \text{context}\, W_O^\top + b_O\big)$$
#
# The residual is added *before* the norm (post-LN), unlike pre-LN models such as GPT-2.

# %%
a = model.attention_output(context, x, params, prefix, config)  # [1, T, D]
print(
    "attention.output",
    a.shape,
    "change from the input ||a - x|| / ||x|| =",
    round(float(np.linalg.norm(a - x) / np.linalg.norm(x)), 4),
)

# %% [markdown]
# ## 6. Feed-forward with the exact GELU
#
# $$h = \mathrm{GELU}(a W_1^\top + b_1) \in \mathbb{R}^{T \times F}, \qquad
# \mathrm{GELU}(z) = z\,\Phi(z) = \tfrac{z}{2}\big(1 + \mathrm{erf}(z/\sqrt{2})\big),$$
# $$y = \mathrm{LayerNorm}\big(a + h W_2^\top + b_2\big).$$
#
# transformers' `"gelu"` is this exact erf form, not the tanh approximation; the difference is small
# (below 1e-3) but far above float32 round-off, and `xlmr_np.compare` catches it (notebook 3). numpy
# has no erf: `xlmr_np.numerics.erf` supplies one accurate to the rounding of its dtype.

# %%
h = model.intermediate(a, params, prefix)  # [1, T, D] -> [1, T, F]
y = model.output(h, a, params, prefix, config)  # [1, T, F] -> [1, T, D]
print("intermediate", h.shape[1:], "min:", float(h.min()), "(GELU never goes below -0.17, its value at z = -0.75)")
print("layer 0 output", y.shape[1:])
z = np.linspace(-4, 4, 9)
print("GELU(z) for z =", z, "\n ->", model.gelu(z))

# %% [markdown]
# ## 7. The remaining layers, then the classification head
#
# `layer` is steps 4-6 in one call. The head reads only the first token, `<s>`:
#
# $$\text{logit} = \tanh\!\big(y_{\langle s\rangle} W_d^\top + b_d\big)\, W_o^\top + b_o ,
# \qquad \text{score} = \sigma(\text{logit}) = \frac{1}{1 + e^{-\text{logit}}} \text{ if normalize=True}.$$

# %%
for i in range(1, config.num_hidden_layers):
    y = model.layer(y, mask, params, i, config)  # [1, T, D] -> [1, T, D]
logits = model.classification_head(y, params)  # [1, T, D] -> [1, L]
print("logit:", logits[0])

# %% [markdown]
# ## 8. Check: the step-by-step run is the forward pass
#
# `model.forward` runs the same functions; what it records (kept per pair by `inspect_pair`) must
# match the values computed above bit for bit.
#
# `Reranker` scores with a second implementation of the same model, the engine (`xlmr_np.engine`):
# tokens of all pairs packed into one matrix, row blocks that make every pair's score independent of
# its batch, cache-sized passes. It sums in a different order, so in float32 it agrees with the
# reference to round-off rather than bit for bit (the tests hold the two within 1e-12 in float64).

# %%
assert np.array_equal(seen.tensors["embeddings"], x[0])
assert np.array_equal(seen.tensors["encoder.layer.0.attention.self.probs"], probs)
assert np.array_equal(seen.tensors[f"encoder.layer.{config.num_hidden_layers - 1}.output"], y[0])
assert np.array_equal(seen.logits, logits[0])
print("identical: embeddings, layer-0 attention, last hidden state and logit")
served, plain = reranker.compute_score((QUERY, DOCUMENT)), float(logits[0, 0])
print(f"engine's logit {served:.7g}, reference's {plain:.7g}: |difference| {abs(served - plain):.1e}")
print("score (sigmoid):", reranker.compute_score((QUERY, DOCUMENT), normalize=True))

# %% [markdown]
# ## 9. Every named intermediate at a glance
#
# The names are transformers' module names (without `roberta.`); the same names serve
# `xlmr_np.compare` (notebook 3) and `xlmr-np inspect --all`.

# %%
print(format_table(stats(seen)))
