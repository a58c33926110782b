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
# # A small C-MTEB-style reranking evaluation
#
# C-MTEB's reranking tasks (T2Reranking, MMarcoReranking, CMedQAv1/v2) are tables with the columns
# `query`, `positive` (relevant documents) and `negative` (irrelevant ones). The evaluation scores every
# `(query, document)` pair with the cross-encoder, ranks each query's documents by score, and reports
#
# * **MAP**: the mean over queries of the average precision,
#   $\mathrm{AP} = \sum_t (R_t - R_{t-1})\,P_t$ over the distinct score thresholds $t$;
# * **MRR@10**: the mean over queries of $1/\text{rank}$ of the first relevant document in the top 10 (else 0);
#
# both as percentages, computed by `xlmr_np.cmteb.metrics` exactly as the published numbers were, after
# `xlmr_np.cmteb.apply_protocol` drops the queries without a positive or a negative (as mteb does).
#
# Here the data is `data/reranking_sample.jsonl`: 8 queries (Chinese and English) written for this
# notebook in the C-MTEB layout, not a C-MTEB dataset (the hub is not reachable from CI). The model is
# `$XLMR_NP_MODEL` if set (point it at bge-reranker-base to see a trained reranker's numbers); otherwise a
# tiny *random* model built locally, which should land near the random-ranking baseline.

# %%
# %matplotlib inline
import json

import matplotlib.pyplot as plt
import numpy as np

from xlmr_np import Reranker
from xlmr_np.cmteb import Query, apply_protocol
from xlmr_np.cmteb.metrics import bootstrap_interval, per_query_metrics
from xlmr_np.testing import notebook_model
from xlmr_np.tracing import format_table

reranker = Reranker.from_pretrained(notebook_model(seed=0))
with open("data/reranking_sample.jsonl", encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
queries = apply_protocol([Query(i, r["query"], r["positive"], r["negative"]) for i, r in enumerate(rows)])
print(f"{len(queries)} queries, {sum(len(q.documents) for q in queries)} pairs")

# %% [markdown]
# ## Score every pair
#
# Per query, the positives first and then the negatives (`Query.documents`), as C-MTEB lists them;
# raw logits (`normalize=False`), since the sigmoid does not change any ranking.

# %%
labels = [np.arange(len(q.documents)) < len(q.positives) for q in queries]  # True for the positives
logits = [np.array(reranker.compute_score([(q.text, d) for d in q.documents], batch_size=32)) for q in queries]
ap, rr = per_query_metrics(zip(labels, logits), k=10)
per_query = [
    dict(q=i, query=q.text[:28], docs=len(q.documents), relevant=len(q.positives), AP=100 * a, **{"RR@10": 100 * r})
    for i, (q, a, r) in enumerate(zip(queries, ap, rr))
]
print(format_table(per_query))

# %% [markdown]
# ## The table
#
# Two baselines frame the model's numbers: random scores (the mean over 1,000 seeded draws) and an
# oracle that scores every relevant document above every irrelevant one (100 by construction).

# %%
rng = np.random.default_rng(0)
random_draws = [per_query_metrics([(rel, rng.random(len(rel))) for rel in labels]) for _ in range(1000)]
random_ap = np.mean([draw_ap for draw_ap, _ in random_draws], axis=0)  # [queries]
oracle_ap, oracle_rr = per_query_metrics([(rel, rel.astype(float)) for rel in labels])
low, high = bootstrap_interval(100 * ap, seed=0)
table = [
    {"system": "xlmr_np (this model)", "MAP": 100 * ap.mean(), "MRR@10": 100 * rr.mean()},
    {
        "system": "random scores",
        "MAP": 100 * random_ap.mean(),
        "MRR@10": 100 * float(np.mean([draw_rr.mean() for _, draw_rr in random_draws])),
    },
    {"system": "oracle", "MAP": 100 * oracle_ap.mean(), "MRR@10": 100 * oracle_rr.mean()},
]
print(format_table(table))
print(f"\nMAP 95% bootstrap interval over these {len(queries)} queries: {low:.1f} .. {high:.1f}")

# %% [markdown]
# ## Per query
#
# Average precision of each query next to its random-ranking expectation (queries by number; see the
# per-query table above for the text).

# %%
x = np.arange(len(queries))
fig, ax = plt.subplots(figsize=(8, 3.8), layout="constrained")
ax.bar(x - 0.2, 100 * ap, width=0.4, label="xlmr_np")
ax.bar(x + 0.2, 100 * random_ap, width=0.4, label="random scores (mean of 1,000 draws)")
ax.set_xticks(x, [f"q{i}" for i in x])
ax.set_xlabel("query")
ax.set_ylabel("average precision (%)")
ax.set_ylim(0, 105)
ax.set_title("Average precision per query")
ax.legend()
plt.show()
