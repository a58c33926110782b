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
# # Attention maps and token attribution
#
# Two views of what a cross-encoder does with one pair:
#
# * **attention**: for every layer and head, how much each token draws from every other token
#   (`inspect_pair(...).attention(layer, head)`, rows sum to 1);
# * **attribution without gradients**: how much each document word (or token) adds to the logit, measured
#   by removing it or replacing it by `<mask>` (`xlmr_np.tracing.attribute`), one batched forward pass
#   per unit.
#
# The model is `$XLMR_NP_MODEL` if set; otherwise a tiny *random* model built locally, whose attention
# patterns and attributions carry no meaning: the point here is how to read the pictures.

# %%
# %matplotlib inline

import matplotlib.pyplot as plt
import numpy as np

from xlmr_np import Reranker
from xlmr_np.plot import attention_figure, attribution_figure
from xlmr_np.testing import notebook_model
from xlmr_np.tracing import attribute, format_table, inspect_pair, layer_table, render_terminal

reranker = Reranker.from_pretrained(notebook_model(seed=0))
QUERY = "who designed the Eiffel Tower?"
DOCUMENT = "The Eiffel Tower was designed by the engineering company of Gustave Eiffel. Bananas are rich in potassium."
seen = inspect_pair(reranker, QUERY, DOCUMENT)
print(f"{len(seen.tokens)} tokens, logit {float(seen.logits[0]):.4f}")

# %% [markdown]
# ## The per-layer table
#
# What `xlmr-np inspect` prints: the size of the hidden states, how much each layer rewrites its input,
# the mean attention entropy (uniform attention over T tokens would be log T), the token `<s>` attends
# to most (the classification head reads only `<s>`), and the share of `<s>`'s attention on the document.

# %%
print(format_table(layer_table(seen)))
print(f"log T = {np.log(len(seen.tokens)):.3f}")

# %% [markdown]
# ## Attention heatmaps, every layer and head
#
# Row *i* of a heatmap is the distribution token *i* attends with; column *j* is how much everyone
# draws from token *j*. All heatmaps share one colour scale.

# %%
attention_figure(seen)

# %% [markdown]
# ## Where `<s>` looks, layer by layer
#
# The row of `<s>` averaged over heads: in the last layer this is what feeds the logit.

# %%
layers = range(seen.num_layers)
from_s = np.stack([seen.attention(i)[:, 0, :].mean(axis=0) for i in layers])  # [layers, T]
fig, ax = plt.subplots(figsize=(10, 1.2 + 0.5 * seen.num_layers), layout="constrained")
image = ax.imshow(from_s, aspect="auto", cmap="viridis")
ax.set_xticks(range(len(seen.tokens)), seen.tokens, rotation=90)
ax.set_yticks(list(layers), [f"layer {i}" for i in layers])
ax.set_xlabel("attended-to token")
ax.set_ylabel("layer")
ax.set_title("Attention of <s> (mean over heads)")
fig.colorbar(image, ax=ax, label="attention probability")
plt.show()

# %% [markdown]
# ## Attribution by word removal
#
# For each document word $w$, its contribution $c_w = \text{logit}(q, d) - \text{logit}(q, d \setminus w)$
# (`Attribution.contributions`). Positive (green): the word pushed the logit up; negative (red): it pulled
# the logit down. Logits, not the sigmoid scores `rerank` prints, which squash changes near 0 and 1.
# Removing a word shifts the positions of the words after it; masking (below) keeps them.

# %%
by_word = attribute(reranker, QUERY, DOCUMENT, unit="word", method="remove")
print(render_terminal(by_word, color=False))
attribution_figure(by_word, title=f"Word removal: query {QUERY!r}")

# %% [markdown]
# ## Attribution by masking single tokens
#
# Each document token in turn replaced by `<mask>`, positions unchanged.

# %%
by_token = attribute(reranker, QUERY, DOCUMENT, unit="token", method="mask")
fig, ax = plt.subplots(figsize=(10, 3.2), layout="constrained")
doc_tokens = [t for t, s in zip(seen.tokens, seen.segments) if s == 1]
contributions = by_token.contributions
ax.bar(range(len(doc_tokens)), contributions, color=["tab:green" if c > 0 else "tab:red" for c in contributions])
ax.set_xticks(range(len(doc_tokens)), doc_tokens, rotation=90)
ax.set_xlabel("document token (masked)")
ax.set_ylabel("logit - logit with the token masked")
ax.set_title("Each document token's contribution to the logit, by masking")
plt.show()

# %% [markdown]
# ## Do the two attributions agree?
#
# Each word's removal against the sum of its tokens' masking effects.

# %%
word_of_token = [w for w, s in zip(seen.words, seen.segments) if s == 1]
summed = np.zeros(len(by_word.contributions))
np.add.at(summed, np.unique(word_of_token, return_inverse=True)[1], by_token.contributions)
fig, ax = plt.subplots(figsize=(5, 5), layout="constrained")
ax.scatter(by_word.contributions, summed)
for text, x, y in zip(by_word.texts, by_word.contributions, summed):
    ax.annotate(text, (x, y), fontsize=8)
ax.axhline(0, color="grey", lw=0.5)
ax.axvline(0, color="grey", lw=0.5)
ax.set_xlabel("logit - logit with the word removed")
ax.set_ylabel("sum over the word's tokens of logit - logit with the token masked")
ax.set_title("Removal vs masking, per word")
plt.show()
print(f"correlation: {np.corrcoef(by_word.contributions, summed)[0, 1]:.3f}")
