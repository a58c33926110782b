"""How far each float32 implementation sits from the float64 truth, per layer and on the logits.

Three float32 implementations of bge-reranker-base's architecture: xlmr_np's reference forward pass
(xlmr_np.model), xlmr_np's engine (xlmr_np.engine, what Reranker scores with) and transformers (eager
attention). The truth is transformers in float64; xlmr_np's engine in float64 is printed beside it to
show that the truth does not depend on whose float64 it is.

Part 1: one padded batch (xlmr_np.testing.LONG_PAIRS: 4 pairs, 812 tokens, up to 512 per pair), max
|float32 - truth| over real tokens at the embeddings, every layer's output and the logits.
Part 2: the logits of --pairs more pairs (5 to 120 words each, cut from the same texts), because the
largest of 4 logit errors is a noisy statistic: RMS, mean and max |float32 - truth| per implementation.
Part 3: the classification head's own share: the truth's last hidden state, rounded to float32, through
the reference's float32 head and through the engine's (which computes in float64).

Run from the repository root:  python tools/numerics_report.py [--model DIR] [--pairs 64]
Without --model it builds a random model with bge-reranker-base's config (head scaled so logits span
about -10..10) in a temporary directory; needs the test extra (torch, transformers).
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile

import numpy as np
import torch

from xlmr_np import Reranker, engine, model
from xlmr_np.parity import load_reference
from xlmr_np.testing import BGE_RERANKER_BASE, LONG_PAIRS, build_model
from xlmr_np.tracing import Trace


def stage_names(layers: int) -> list[str]:
    return ["embeddings"] + [f"encoder.layer.{i}.output" for i in range(layers)]


def run_all(reranker32, reranker64, torch32, torch64, pairs):
    """{implementation: (logits [B], hidden states per stage [B, T, D])} and the batch's mask."""
    batch = reranker32.tokenize(pairs)
    ids, mask = batch.input_ids, batch.attention_mask
    names = stage_names(reranker32.config.num_hidden_layers)
    out = {}
    for label, m in (("transformers float64", torch64), ("transformers float32", torch32)):
        with torch.inference_mode():
            o = m(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), output_hidden_states=True)
        out[label] = (o.logits.numpy()[:, 0], [h.numpy() for h in o.hidden_states])
    trace = Trace(names)
    logits = model.forward(reranker32.params, reranker32.config, ids, mask, trace)
    out["xlmr_np reference float32"] = (logits[:, 0], [trace[n] for n in names])
    for label, r in (("xlmr_np engine float32", reranker32), ("xlmr_np engine float64", reranker64)):
        if r is None:
            continue
        states: list[np.ndarray] = []
        logits = engine.forward(r.params, r.config, ids, mask, states)
        out[label] = (logits[:, 0], states)
    return out, mask.astype(bool)


def sample_pairs(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """count (query, document) pairs cut from LONG_PAIRS' texts: 6-word queries, 5-120-word documents."""
    rng = np.random.default_rng(seed)
    words = " ".join(document for _, document in LONG_PAIRS).split()
    pairs = []
    for _ in range(count):
        n = int(rng.integers(5, 120))
        start = int(rng.integers(0, len(words) - n))
        pairs.append((" ".join(words[start : start + 6]), " ".join(words[start : start + n])))
    return pairs


IMPLEMENTATIONS = [
    "xlmr_np reference float32",
    "xlmr_np engine float32",
    "transformers float32",
    "xlmr_np engine float64",
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a model directory (default: a random full-size model, built here)")
    parser.add_argument("--pairs", type=int, default=64, help="pairs for the logit statistics (part 2)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        directory = args.model or scratch
        if not args.model:
            build_model(directory, seed=0, head_scale=120.0, **BGE_RERANKER_BASE)
        reranker32 = Reranker.from_pretrained(directory)
        reranker64 = Reranker.from_pretrained(directory, dtype=np.float64)
        torch32 = load_reference(directory)
        torch64 = copy.deepcopy(torch32).double()
        print(
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}; "
            f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}\n"
        )

        out, real = run_all(reranker32, reranker64, torch32, torch64, LONG_PAIRS)
        truth_logits, truth_states = out["transformers float64"]
        names = stage_names(reranker32.config.num_hidden_layers)
        print(
            f"Part 1: max |x - transformers float64| over {int(real.sum())} real tokens "
            f"(logits span {truth_logits.min():.2f}..{truth_logits.max():.2f})\n"
        )
        print("| stage | " + " | ".join(IMPLEMENTATIONS) + " |")
        print("|---|" + "---|" * len(IMPLEMENTATIONS))
        for i, name in enumerate(names):
            cells = [
                np.abs(out[k][1][i][real].astype(np.float64) - truth_states[i][real]).max() for k in IMPLEMENTATIONS
            ]
            print(f"| {name} | " + " | ".join(f"{c:.2e}" for c in cells) + " |")
        cells = [np.abs(out[k][0].astype(np.float64) - truth_logits).max() for k in IMPLEMENTATIONS]
        print("| logits | " + " | ".join(f"{c:.2e}" for c in cells) + " |", flush=True)

        last = truth_states[-1].astype(np.float32)  # [B, T, D]: exact up to one float32 rounding
        heads = {
            "reference (float32)": model.classification_head(last, reranker32.params)[:, 0],
            "engine (float64)": engine.classification_head(last[:, 0], reranker32.params)[:, 0],
        }
        print(
            "\nPart 3: the truth's last hidden state in float32 through each head, max |logit - truth|: "
            + ", ".join(f"{k} {np.abs(v.astype(np.float64) - truth_logits).max():.2e}" for k, v in heads.items()),
            flush=True,
        )

        del reranker64, out  # part 2 needs no float64 engine: room for the two torch models
        implementations = IMPLEMENTATIONS[:3]
        errors: dict[str, list[float]] = {k: [] for k in implementations}
        pairs = sample_pairs(args.pairs)
        for start in range(0, len(pairs), 16):
            out, _ = run_all(reranker32, None, torch32, torch64, pairs[start : start + 16])
            for k in implementations:
                errors[k].extend(out[k][0].astype(np.float64) - out["transformers float64"][0])
        print(f"\nPart 2: logits of {len(pairs)} more pairs, |x - transformers float64|\n")
        print("| implementation | RMS | mean | max |")
        print("|---|---|---|---|")
        for k in implementations:
            e = np.abs(np.array(errors[k]))
            print(f"| {k} | {np.sqrt(np.mean(e**2)):.2e} | {e.mean():.2e} | {e.max():.2e} |")


if __name__ == "__main__":
    main()
