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
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from xlmr_np import engine
from xlmr_np.arrays import to_namespace, to_numpy
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


def batches(pairs, size, pad_id) -> list[tuple[list[int], np.ndarray, np.ndarray]]:
    """(pair indices, input_ids [B, T], attention_mask [B, T]): longest first, right-padded (as Reranker)."""
    order = sorted(range(len(pairs)), key=lambda i: -len(pairs[i]))
    out = []
    for start in range(0, len(order), size):
        chunk = order[start : start + size]
        T = max(len(pairs[i]) for i in chunk)
        ids = np.full((len(chunk), T), pad_id, dtype=np.int64)
        mask = np.zeros((len(chunk), T), dtype=np.int64)
        for row, i in enumerate(chunk):
            ids[row, : len(pairs[i])], mask[row, : len(pairs[i])] = pairs[i], 1
        out.append((chunk, ids, mask))
    return out


def score(forward, pairs, size, pad_id) -> np.ndarray:
    """Logits [n] of every pair, in order, batch by batch."""
    logits = np.empty(len(pairs), dtype=np.float64)
    for chunk, ids, mask in batches(pairs, size, pad_id):
        logits[chunk] = forward(ids, mask)
    return logits


# ----------------------------------------------------------------------------------------------------
# The engines


def torch_forward(params, config, torch, device, dtype):
    """A plain torch XLM-R cross-encoder with scaled_dot_product_attention (what transformers' "sdpa"
    attention computes), its weights on `device` in `dtype`: ids, mask -> logits [B] (float64 numpy)."""
    F = torch.nn.functional
    P = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)).to(device=device, dtype=dtype) for k, v in params.items()}
    D, H, eps, pad = config.hidden_size, config.num_attention_heads, config.layer_norm_eps, config.pad_token_id

    def forward(ids, mask):
        with torch.inference_mode():
            ids, keep = torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device).bool()
            B, T = ids.shape
            positions = torch.cumsum((ids != pad).long(), 1) * (ids != pad) + pad  # XLM-R: from pad + 1
            e = "roberta.embeddings."
            x = P[e + "word_embeddings.weight"][ids] + P[e + "token_type_embeddings.weight"][0]
            x = x + P[e + "position_embeddings.weight"][positions]
            x = F.layer_norm(x, (D,), P[e + "LayerNorm.weight"], P[e + "LayerNorm.bias"], eps)
            for i in range(config.num_hidden_layers):
                p = f"roberta.encoder.layer.{i}."

                def dense(t, name, p=p):
                    return F.linear(t, P[p + name + ".weight"], P[p + name + ".bias"])

                q, k, v = (
                    dense(x, "attention.self." + n).view(B, T, H, D // H).transpose(1, 2)
                    for n in ("query", "key", "value")
                )
                a = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])
                a = dense(a.transpose(1, 2).reshape(B, T, D), "attention.output.dense") + x
                x = F.layer_norm(
                    a, (D,), P[p + "attention.output.LayerNorm.weight"], P[p + "attention.output.LayerNorm.bias"], eps
                )
                h = F.gelu(dense(x, "intermediate.dense"))
                y = dense(h, "output.dense") + x
                x = F.layer_norm(y, (D,), P[p + "output.LayerNorm.weight"], P[p + "output.LayerNorm.bias"], eps)
            h = torch.tanh(F.linear(x[:, 0], P["classifier.dense.weight"], P["classifier.dense.bias"]))
            logits = F.linear(h, P["classifier.out_proj.weight"], P["classifier.out_proj.bias"])
            return logits[:, 0].double().cpu().numpy()

    return forward


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


def timed(forward, pairs, size, pad_id, repeats, sync) -> float:
    """docs/s: median over `repeats` passes over every pair, after one warm-up pass."""
    score(forward, pairs, size, pad_id)
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        score(forward, pairs, size, pad_id)
        sync()
        times.append(time.perf_counter() - start)
    return len(pairs) / statistics.median(times)


def environment(args, torch, cupy) -> dict:
    env = {
        "device": "DRY RUN: array-api-strict and torch on the CPU, no GPU figures" if args.dry_run else "cuda",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "torch float32 matmul TF32": bool(torch.backends.cuda.matmul.allow_tf32),
    }
    if cupy is not None:
        from xlmr_np.device import tf32_in_force

        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"]
        env.update(
            {
                "gpu": name.decode() if isinstance(name, bytes) else str(name),
                "cupy": cupy.__version__,
                "cuda runtime": cupy.cuda.runtime.runtimeGetVersion(),
                "cupy float32 2-D products TF32": tf32_in_force(),
            }
        )
    return env


def check(args) -> dict:
    import torch

    if args.dry_run:
        from xlmr_np.testing import strict_array_api

        xp, where, cupy, gpu = strict_array_api(), None, None, "cpu"

        def sync():
            pass
    else:
        import cupy

        from xlmr_np.device import device_namespace

        xp, where = device_namespace("cuda")  # CuPy, the GPU, float32 products in float32
        gpu = "cuda"
        torch.backends.cuda.matmul.allow_tf32 = False  # torch's float32 in float32 too (its default)
        torch.backends.cudnn.allow_tf32 = False

        def sync():
            cupy.cuda.runtime.deviceSynchronize()
            torch.cuda.synchronize()

    params32, params64, config = load_model(args)
    pad = config.pad_token_id
    pairs = documents(args, config)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    report: dict = {"environment": environment(args, torch, cupy), "settings": vars(args) | {"model": str(args.model)}}
    report["settings"]["out"] = str(args.out)
    report["settings"]["pairs tokens"] = int(sum(len(p) for p in pairs))

    log("float64 truth (the CPU engine in float64)")
    truth = score(lambda i, m: engine.forward(params64, config, i, m)[:, 0], pairs, args.batch_size, pad)
    log("the CPU engine, float32")
    cpu32 = score(lambda i, m: engine.forward(params32, config, i, m)[:, 0], pairs, args.batch_size, pad)

    log("weights to the device")
    on32, on64 = to_namespace(params32, xp, where), to_namespace(params64, xp, where)

    def device_engine(params):
        return lambda i, m: to_numpy(engine.forward(params, config, i, m))[:, 0]

    engines = {
        "xlmr_np engine, float32": device_engine(on32),
        "xlmr_np engine, float64": device_engine(on64),
        "torch sdpa, float32": torch_forward(params32, config, torch, gpu, torch.float32),
        "torch sdpa, float16": torch_forward(params32, config, torch, gpu, torch.float16),
        "torch sdpa, bfloat16": torch_forward(params32, config, torch, gpu, torch.bfloat16),
    }
    if args.dry_run:  # half precision matmuls on a CPU are slow or missing: the plumbing is the same
        del engines["torch sdpa, float16"]
    hf = transformers_forward(params32, config, torch, gpu)
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
        logits = score(forward, pairs, args.batch_size, pad)
        rows.append(
            {
                "engine": name,
                "max |logit - float64 truth|": float(np.abs(logits - truth).max()),
                "max |logit - CPU engine float32|": float(np.abs(logits - cpu32).max()),
                "docs/s": timed(forward, pairs, args.batch_size, pad, args.repeats, sync),
            }
        )
    report["agreement and speed"] = rows

    log("batch independence and repeatability on the device")
    forward = engines["xlmr_np engine, float32"]
    whole = score(forward, pairs, args.batch_size, pad)
    again = score(forward, pairs, args.batch_size, pad)
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
        f"{s['documents']} documents of about {s['tokens']} tokens ({s['pairs tokens']:,} tokens), batches of "
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
