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
# # Numerics: float32 vs float64 vs transformers, layer by layer
#
# Two implementations of the same model never agree bit for bit in float32: a matrix product sums in
# a different order in numpy's BLAS and in torch, and each order rounds differently (float32 keeps 24
# bits, a relative spacing of $\varepsilon = 2^{-23} \approx 1.19 \times 10^{-7}$). What matters is that
# the disagreement stays at round-off size through all layers, and that a real mistake stands out.
#
# Runs of the same batch: xlmr_np's two forward passes (the reference `xlmr_np.model`, and the engine
# `xlmr_np.engine` that `Reranker` scores with) and transformers, in float32 and float64. The float64
# runs agree with each other to ~1e-15 and serve as the truth. The model is `$XLMR_NP_MODEL` if set;
# otherwise a random 12-layer model (D = 64, H = 4, F = 96) written locally. Running transformers
# beside xlmr_np needs it and torch: `pip install -e '.[notebooks,test]'`.

# %%
# %matplotlib inline
import copy
import math
from unittest import mock

import matplotlib.pyplot as plt
import numpy as np

import xlmr_np
from xlmr_np import Reranker, model
from xlmr_np.parity import diff_traces, load_reference, reference_trace, trace_of
from xlmr_np.testing import notebook_model

MODEL = notebook_model(seed=0, num_hidden_layers=12, hidden_size=64, num_attention_heads=4, intermediate_size=96)
ours32 = Reranker.from_pretrained(MODEL)
ours64 = Reranker.from_pretrained(MODEL, dtype=np.float64)
theirs32 = load_reference(MODEL)
theirs64 = copy.deepcopy(theirs32).double()
PAIRS = [
    ("who designed the Eiffel Tower?", "Gustave Eiffel's company designed and built the tower. " * 3),
    ("埃菲尔铁塔是谁设计的？", "埃菲尔铁塔由古斯塔夫·埃菲尔的公司设计建造。"),
    ("tallest building", "Bananas."),
]
batch = ours32.tokenize(PAIRS)
print("batch", batch.input_ids.shape, "lengths", batch.lengths)

# %% [markdown]
# ## The one-liner: every intermediate, xlmr_np float32 against transformers float32
#
# `compare` runs the reference forward pass, which records every intermediate; `forward="engine"`
# checks the engine at the layer boundaries it exposes (embeddings, every layer's output, the logits).

# %%
print(xlmr_np.compare(ours32, PAIRS, theirs32))
print()
print(xlmr_np.compare(ours32, PAIRS, theirs32, forward="engine"))

# %% [markdown]
# ## Error growth through the layers
#
# Every run traced, then each compared with the reference in float64 over the real (non-padding) tokens.

# %%
truth = trace_of(ours64, batch.input_ids, batch.attention_mask)
names = list(truth)
runs = {
    "xlmr_np reference float32": trace_of(ours32, batch.input_ids, batch.attention_mask),
    "xlmr_np engine float32": trace_of(ours32, batch.input_ids, batch.attention_mask, forward="engine"),
}
runs["transformers float32"] = reference_trace(theirs32, batch.input_ids, batch.attention_mask, names)
runs["transformers float64"] = reference_trace(theirs64, batch.input_ids, batch.attention_mask, names)
diffs = {
    label: {r.name: r for r in diff_traces(run, {n: truth[n] for n in run}, batch.attention_mask).rows}
    for label, run in runs.items()
}
between32 = {
    r.name: r
    for r in diff_traces(runs["xlmr_np reference float32"], runs["transformers float32"], batch.attention_mask).rows
}

layers = ours32.config.num_hidden_layers
stages = ["embeddings"] + [f"encoder.layer.{i}.output" for i in range(layers)] + ["classifier.out_proj"]
labels = ["emb"] + [str(i) for i in range(layers)] + ["logit"]
fig, ax = plt.subplots(figsize=(9, 4.5), layout="constrained")
for label, rows in diffs.items():
    ax.semilogy(
        labels, [max(rows[s].max_abs, 1e-18) for s in stages], marker="o", label=f"{label} vs reference float64"
    )
ax.semilogy(
    labels,
    [between32[s].max_abs for s in stages],
    marker="x",
    ls="--",
    label="reference float32 vs transformers float32",
)
ax.axhline(np.finfo(np.float32).eps, color="grey", lw=0.8, ls=":", label="float32 epsilon")
ax.set_xlabel("stage (embeddings, encoder layer output, logit)")
ax.set_ylabel("max |difference| over real tokens")
ax.set_title("Round-off through the layers")
ax.legend(fontsize=8)
plt.show()

print("float64 runs agree to", max(diffs["transformers float64"][s].max_abs for s in stages))

# %% [markdown]
# Reading the plot: the float32 runs sit at a few float32 epsilons from the float64 truth, and from each
# other, at every layer. On the random 12-layer model the error does not compound from layer to layer:
# each post-LN LayerNorm rescales the hidden states, so every layer adds round-off of the same size
# instead of amplifying what came before.

# %% [markdown]
# ## Which tokens carry the error?
#
# Per token of the first pair: the largest float32 error over the hidden dimension, at every layer.

# %%
tokens = ours32.tokenizer.encodings(PAIRS[:1])[0].tokens
T = len(tokens)
ref32 = runs["xlmr_np reference float32"]
per_token = np.stack(
    [np.abs(ref32[s][0, :T].astype(np.float64) - truth[s][0, :T]).max(axis=-1) for s in stages[:-1]]
)  # [stages, T]
fig, ax = plt.subplots(figsize=(11, 4.5), layout="constrained")
image = ax.imshow(per_token, aspect="auto", cmap="magma")
ax.set_xticks(range(T), tokens, rotation=90, fontsize=7)
ax.set_yticks(range(len(stages) - 1), labels[:-1])
ax.set_xlabel("token (first pair)")
ax.set_ylabel("stage")
ax.set_title("reference float32: max |error| per token against float64")
fig.colorbar(image, ax=ax, label="max |difference| over the hidden dimension")
plt.show()

# %% [markdown]
# ## What a real mistake looks like
#
# The tanh approximation of GELU planted in the reference's feed-forward (for this cell only).
# Round-off stays near 1e-6; the mistake is a hundred times larger, and `compare` names the first
# module it reaches: `encoder.layer.0.intermediate`.


# %%
def tanh_gelu(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


with mock.patch.object(model, "gelu", tanh_gelu):
    planted = xlmr_np.compare(ours32, PAIRS, theirs32)
print(planted.verdict())
fig, ax = plt.subplots(figsize=(9, 4), layout="constrained")
ax.semilogy([max(r.max_abs, 1e-12) for r in planted.rows], marker=".", label="with tanh-GELU planted")
ax.semilogy([r.tolerance for r in planted.rows], ls="--", color="grey", label="tolerance")
first = planted.rows.index(planted.first_divergence)
ax.axvline(first, color="red", lw=0.8)
ax.annotate(planted.first_divergence.name, (first, planted.first_divergence.max_abs), fontsize=8, color="red")
ax.set_xlabel("intermediate, in data-flow order")
ax.set_ylabel("max |difference| against transformers")
ax.set_title("xlmr_np.compare with a planted error (exact zeros drawn at 1e-12)")
ax.legend()
plt.show()
