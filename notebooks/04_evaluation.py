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
# both as percentages, computed by `xlmr_np.metrics` exactly as the published numbers were.
#
# Here the data is `data/reranking_sample.jsonl`: 8 queries (Chinese and English) written for this
# notebook in the C-MTEB layout, not a C-MTEB dataset (the hub is not reachable from CI). The model is
# `$XLMR_NP_MODEL` if set (point it at bge-reranker-base to see a trained reranker's numbers); otherwise a
# tiny *random* model built locally, which should land near the random-ranking baseline.

# %%
# %matplotlib inline
import json
import sys

import matplotlib.pyplot as plt
import numpy as np

sys.path.insert(0, "../tests")
from helpers import notebook_model  # noqa: E402

from xlmr_np import Reranker  # noqa: E402
from xlmr_np.inspect import format_table  # noqa: E402
from xlmr_np.metrics import average_precision, bootstrap_interval, mrr_at_k  # noqa: E402

reranker = Reranker.from_pretrained(notebook_model(seed=0))
with open("data/reranking_sample.jsonl", encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
rows = [r for r in rows if r["positive"] and r["negative"]]  # as mteb: a query needs both kinds
print(f"{len(rows)} queries, {sum(len(r['positive']) + len(r['negative']) for r in rows)} pairs")

# %% [markdown]
# ## Score every pair
#
# Per query, the positives first and then the negatives, as C-MTEB lists them; raw logits
# (`normalize=False`), since the sigmoid does not change any ranking.

# %%
runs = []
for r in rows:
    documents = r["positive"] + r["negative"]
    scores = reranker.compute_score([(r["query"], d) for d in documents], batch_size=32)
    runs.append((np.array([True] * len(r["positive"]) + [False] * len(r["negative"])), np.array(scores)))

per_query = [dict(q=i, query=r["query"][:28], docs=len(rel), relevant=int(rel.sum()),
                  AP=100 * average_precision(rel, s), **{"RR@10": 100 * mrr_at_k(rel, s, k=10)})
             for i, (r, (rel, s)) in enumerate(zip(rows, runs))]
print(format_table(per_query))

# %% [markdown]
# ## The table
#
# Two baselines frame the model's numbers: random scores (the mean over 1,000 seeded draws) and an
# oracle that scores every relevant document above every irrelevant one (100 by construction).

# %%
def map_and_mrr(score_lists):
    ap = [average_precision(rel, s) for (rel, _), s in zip(runs, score_lists)]
    rr = [mrr_at_k(rel, s, k=10) for (rel, _), s in zip(runs, score_lists)]
    return 100 * np.mean(ap), 100 * np.mean(rr), np.array(ap)


model_map, model_mrr, model_ap = map_and_mrr([s for _, s in runs])
rng = np.random.default_rng(0)
random_draws = [map_and_mrr([rng.random(len(rel)) for rel, _ in runs])[:2] for _ in range(1000)]
oracle_map, oracle_mrr, _ = map_and_mrr([rel.astype(float) for rel, _ in runs])
low, high = bootstrap_interval(100 * model_ap, seed=0)
table = [
    {"system": "xlmr_np (this model)", "MAP": model_map, "MRR@10": model_mrr},
    {"system": "random scores", "MAP": float(np.mean([d[0] for d in random_draws])),
     "MRR@10": float(np.mean([d[1] for d in random_draws]))},
    {"system": "oracle", "MAP": oracle_map, "MRR@10": oracle_mrr},
]
print(format_table(table))
print(f"\nMAP 95% bootstrap interval over these {len(rows)} queries: {low:.1f} .. {high:.1f}")

# %% [markdown]
# ## Per query
#
# Average precision of each query next to its random-ranking expectation (queries by number; see the
# per-query table above for the text).

# %%
random_ap = np.mean([[average_precision(rel, rng.random(len(rel))) for rel, _ in runs] for _ in range(300)], axis=0)
x = np.arange(len(rows))
fig, ax = plt.subplots(figsize=(8, 3.8), layout="constrained")
ax.bar(x - 0.2, 100 * model_ap, width=0.4, label="xlmr_np")
ax.bar(x + 0.2, 100 * random_ap, width=0.4, label="random scores (mean of 300)")
ax.set_xticks(x, [f"q{i}" for i in x])
ax.set_xlabel("query")
ax.set_ylabel("average precision (%)")
ax.set_ylim(0, 105)
ax.set_title("Average precision per query")
ax.legend()
plt.show()
