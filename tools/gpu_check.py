"""The GPU check, run once by a person with an NVIDIA GPU: xlmr_np's engine on CuPy against the CPU engine,
float64 truth and torch on the same GPU; batch independence; docs/s against torch SDPA.

    PYTHONPATH=. python tools/gpu_check.py --out gpu-check

Needs only numpy, tokenizers, safetensors, torch (a CUDA build), cupy (cupy-cuda12x), threadpoolctl and
array-api-compat, with this checkout on PYTHONPATH; transformers, when installed, is compared too. Writes
gpu-check.json and gpu-check.md to --out and prints the markdown.

The model is random, built in memory with bge-reranker-base's shapes (--layers, --std; std 0.2 gives the
sharp attention of trained models); --model DIR scores a real model directory instead. The documents are
token ids of C-MTEB-like lengths (a query of --query-tokens, documents of about --tokens), batched longest
first as Reranker batches them; tokenization is left out of every timing (it is the same CPU work for all).

--dry-run runs every step on the CPU, array-api-strict standing in for CuPy and torch on the CPU, on a tiny
model: it checks this script, not a GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

from bench.gpu import (
    docs_per_s,
    engine_forward,
    float32_in_float32,
    gpu_engines,
    gpu_environment,
    gpu_sync,
    score,
)
from xlmr_np.arrays import to_namespace
from xlmr_np.config import XLMRobertaConfig
from xlmr_np.random_model import random_config, random_params


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("gpu-check"), help="where gpu-check.json and .md go")
    p.add_argument("--model", type=Path, help="a model directory (default: a random bge-reranker-base shape)")
    p.add_argument("--layers", type=int, default=12, help="layers of the random model (default 12)")
    p.add_argument("--std", type=float, default=0.2, help="weights' std of the random model (default 0.2: sharp)")
    p.add_argument("--documents", type=int, default=100, help="documents (default 100)")
    p.add_argument("--tokens", type=int, default=400, help="average tokens per pair (default 400)")
    p.add_argument("--query-tokens", type=int, default=12, help="tokens of the query (default 12)")
    p.add_argument("--batch-size", type=int, default=32, help="pairs per batch (default 32)")
    p.add_argument("--repeats", type=int, default=5, help="timed passes, median (default 5)")
    p.add_argument("--dry-run", action="store_true", help="on the CPU: array-api-strict for CuPy, a tiny model")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------------
# The model and the inputs


def load_model(args):
    """(float32 params, float64 params, config) on the host."""
    if args.model is not None:
        from xlmr_np.weights import load_params

        config = XLMRobertaConfig.from_file(args.model / "config.json")
        return load_params(args.model, config, np.float32), load_params(args.model, config, np.float64), config
    raw = random_config() if args.dry_run else random_config("BAAI/bge-reranker-base", num_hidden_layers=args.layers)
    config = XLMRobertaConfig.from_dict(raw, source="the check's random model")
    params = dict(random_params(config, args.std, seed=0))
    return params, {k: v.astype(np.float64) for k, v in params.items()}, config


def documents(args, config) -> list[np.ndarray]:
    """Token ids of (query, document) pairs: <s> query </s></s> document </s>, lengths about args.tokens."""
    rng = np.random.default_rng(0)
    limit = min(512, config.max_tokens)
    lengths = np.clip(rng.normal(args.tokens, args.tokens / 5, args.documents).astype(int), 16, limit)
    query = rng.integers(5, config.vocab_size, args.query_tokens)
    pairs = []
    for n in lengths:
        doc = rng.integers(5, config.vocab_size, max(1, n - args.query_tokens - 4))
        pairs.append(np.concatenate([[0], query, [2, 2], doc, [2]]).astype(np.int64))
    return pairs


# ----------------------------------------------------------------------------------------------------
# The engines (bench.gpu has xlmr_np's and torch's)


def transformers_forward(params, config, torch, device):
    """transformers' XLMRobertaForSequenceClassification (sdpa attention) with these weights, or None."""
    try:
        import transformers
    except ImportError:
        return None
    raw = {k: getattr(config, k) for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")}
    hf_config = transformers.XLMRobertaConfig(
        **raw,
        intermediate_size=config.intermediate_size,
        max_position_embeddings=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size,
        layer_norm_eps=config.layer_norm_eps,
        pad_token_id=config.pad_token_id,
        num_labels=config.num_labels,
        hidden_act="gelu",
    )
    hf_config._attn_implementation = "sdpa"
    net = transformers.XLMRobertaForSequenceClassification(hf_config)
    loaded = net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in params.items()}, strict=False)
    if loaded.missing_keys or loaded.unexpected_keys:
        raise SystemExit(f"transformers' model does not take these weights: {loaded}")
    net = net.eval().to(device)

    def forward(ids, mask):
        with torch.inference_mode():
            out = net(input_ids=torch.from_numpy(ids).to(device), attention_mask=torch.from_numpy(mask).to(device))
            return out.logits[:, 0].double().cpu().numpy()

    return forward


# ----------------------------------------------------------------------------------------------------
# The check


def environment(args, torch) -> dict:
    env = {"python": platform.python_version(), "numpy": np.__version__}
    if args.dry_run:
        return dict(
            env, device="DRY RUN: array-api-strict and torch on the CPU, no GPU figures", torch=torch.__version__
        )
    return dict(env, **gpu_environment(torch))


def check(args) -> dict:
    import torch

    if args.dry_run:
        from xlmr_np.testing import strict_array_api

        xp, where, device = strict_array_api(), None, "cpu"

        def sync():
            pass
    else:
        from xlmr_np.device import device_namespace

        xp, where = device_namespace("cuda")  # CuPy, the GPU, float32 products in float32
        device, sync = "cuda", gpu_sync(torch)
        float32_in_float32(torch)

    params32, params64, config = load_model(args)
    pad, size = config.pad_token_id, args.batch_size
    pairs = documents(args, config)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    report: dict = {"environment": environment(args, torch), "settings": dict(vars(args), model=str(args.model))}
    report["settings"].update(out=str(args.out), tokens_total=int(sum(len(p) for p in pairs)))

    log("float64 truth (the CPU engine in float64)")
    truth = score(engine_forward(params64, config), pairs, size, pad)
    log("the CPU engine, float32")
    cpu32 = score(engine_forward(params32, config), pairs, size, pad)

    log("weights to the device")
    engines = gpu_engines(params32, config, xp, where, torch, device, half=not args.dry_run)  # no CPU float16
    engines["xlmr_np engine, float64"] = engine_forward(to_namespace(params64, xp, where), config)
    hf = transformers_forward(params32, config, torch, device)
    if hf is not None:
        engines["transformers sdpa, float32"] = hf

    rows = [
        {
            "engine": "xlmr_np engine on the CPU, float32",
            "max |logit - float64 truth|": float(np.abs(cpu32 - truth).max()),
        }
    ]
    for name, forward in engines.items():
        log(name)
        logits = score(forward, pairs, size, pad)
        rows.append(
            {
                "engine": name,
                "max |logit - float64 truth|": float(np.abs(logits - truth).max()),
                "max |logit - CPU engine float32|": float(np.abs(logits - cpu32).max()),
                "docs/s": docs_per_s(forward, pairs, size, pad, args.repeats, sync),
            }
        )
    report["agreement and speed"] = rows

    log("batch independence and repeatability on the device")
    forward = engines["xlmr_np engine, float32"]
    whole = score(forward, pairs, size, pad)
    again = score(forward, pairs, size, pad)
    alone = score(forward, pairs, 1, pad)
    sevens = score(forward, pairs, 7, pad)
    report["exactness on the device"] = {
        "same batches twice: pairs whose bits differ": int(np.sum(whole != again)),
        "batch 1 vs batch size: pairs whose bits differ": int(np.sum(whole != alone)),
        "batch 1 vs batch size: max |diff|": float(np.abs(whole - alone).max()),
        "batches of 7 vs batch size: pairs whose bits differ": int(np.sum(whole != sevens)),
        "batches of 7 vs batch size: max |diff|": float(np.abs(whole - sevens).max()),
    }
    return report


def markdown(report) -> str:
    lines = ["# xlmr_np on the GPU", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in report["environment"].items()]
    s = report["settings"]
    lines += [
        "",
        f"{s['documents']} documents of about {s['tokens']} tokens ({s['tokens_total']:,} tokens), batches of "
        f"{s['batch_size']}, longest first; model {s['model'] if s['model'] != 'None' else 'random'}; median of "
        f"{s['repeats']} passes; tokenization excluded.",
        "",
        "| engine | docs/s | max abs diff from float64 truth | from the CPU engine, float32 |",
        "|---|---|---|---|",
    ]
    for r in report["agreement and speed"]:
        speed = f"{r['docs/s']:.1f}" if "docs/s" in r else "-"
        cpu = f"{r['max |logit - CPU engine float32|']:.2e}" if "max |logit - CPU engine float32|" in r else "-"
        lines.append(f"| {r['engine']} | {speed} | {r['max |logit - float64 truth|']:.2e} | {cpu} |")
    lines += ["", "| exactness of xlmr_np float32 on the device | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in report["exactness on the device"].items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        args.documents, args.tokens, args.repeats = min(args.documents, 12), min(args.tokens, 60), 1
    report = check(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu-check.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    text = markdown(report)
    (args.out / "gpu-check.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
