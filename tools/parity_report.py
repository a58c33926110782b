"""Measure xlmr_np against transformers on random models and print the README's agreement table.

For each model (tiny odd-sized ones and a full-size one with bge-reranker-base's config), one padded
batch of mixed-length multilingual pairs goes through both implementations in float32 and in float64;
the table gives max and mean absolute differences of the logits and of every hidden state (real tokens).

Run from the repository root:  python tools/parity_report.py [--skip-full]
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import torch

from xlmr_np import Reranker
from xlmr_np.testing import BGE_RERANKER_BASE, LONG_PAIRS, SAMPLE_PAIRS, build_model

TINY_PAIRS, FULL_PAIRS = SAMPLE_PAIRS, LONG_PAIRS

MODELS = [
    ("tiny h32 l2 heads4 ff37, 1 label", dict(seed=0, init_std=0.2), TINY_PAIRS),
    ("tiny h32 l2 heads4 ff37, 2 labels", dict(seed=1, init_std=0.2, num_labels=2), TINY_PAIRS),
    (
        "tiny h48 l3 heads6 ff53, 1 label",
        dict(seed=2, init_std=0.2, hidden_size=48, num_attention_heads=6, intermediate_size=53, num_hidden_layers=3),
        TINY_PAIRS,
    ),
    ("full size (bge-reranker-base config)", dict(seed=0, head_scale=120.0, **BGE_RERANKER_BASE), FULL_PAIRS),
]


def measure(directory, torch_model, pairs, dtype):
    reranker = Reranker.from_pretrained(directory, dtype=dtype)
    batch = reranker.tokenize(pairs)
    ours = reranker.forward(batch.input_ids, batch.attention_mask, output_hidden_states=True)
    ref_model = torch_model.to(torch.float64 if dtype == np.float64 else torch.float32)
    with torch.inference_mode():
        ref = ref_model(
            input_ids=torch.from_numpy(batch.input_ids),
            attention_mask=torch.from_numpy(batch.attention_mask),
            output_hidden_states=True,
        )
    torch_model.float()
    real = batch.attention_mask.astype(bool)
    logit_diff = np.abs(ours.logits.astype(np.float64) - ref.logits.numpy())
    hidden_diff = np.concatenate(
        [
            np.abs(a[real].astype(np.float64) - b.numpy()[real]).ravel()
            for a, b in zip(ours.hidden_states, ref.hidden_states)
        ]
    )
    span = f"{ref.logits.numpy().min():.2f}..{ref.logits.numpy().max():.2f}"
    stats = (logit_diff.max(), logit_diff.mean(), hidden_diff.max(), hidden_diff.mean(), span, int(real.sum()))
    return stats, ours.logits.astype(np.float64), ref.logits.numpy().astype(np.float64)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-full", action="store_true", help="only the tiny models")
    args = parser.parse_args()
    print(f"transformers vs xlmr_np; torch {torch.__version__}, numpy {np.__version__}\n")
    print(
        "| model | dtype | tokens | logits span | logits max / mean abs diff | hidden states max / mean abs diff |"
        " float32 logits off float64 truth: xlmr_np / transformers |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, settings, pairs in MODELS:
        if args.skip_full and "full" in name:
            continue
        with tempfile.TemporaryDirectory() as directory:
            torch_model = build_model(directory, **settings)
            rows = {dtype: measure(directory, torch_model, pairs, dtype) for dtype in (np.float64, np.float32)}
            truth = rows[np.float64][2]  # transformers in float64
            for dtype in (np.float32, np.float64):
                (lmax, lmean, hmax, hmean, span, n), ours, ref = rows[dtype]
                off = (
                    f"{np.abs(ours - truth).max():.1e} / {np.abs(ref - truth).max():.1e}" if dtype == np.float32 else ""
                )
                print(
                    f"| {name} | {np.dtype(dtype).name} | {n} | {span} | {lmax:.1e} / {lmean:.1e} | "
                    f"{hmax:.1e} / {hmean:.1e} | {off} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
