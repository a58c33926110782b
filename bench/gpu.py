"""The GPU column: xlmr_np's engine on CuPy against torch on the same GPU (float32 scaled_dot_product_attention,
float16 and bfloat16 as reference points), docs/s and agreement, on token ids (tokenization not timed).

Used by `python -m bench` (its GPU section) and tools/gpu_check.py (the fuller one-off check). Imports only
numpy and xlmr_np at the top: torch and CuPy when measured. Without a usable GPU the section says why, and
holds no numbers.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from xlmr_np import engine
from xlmr_np.arrays import to_namespace, to_numpy

GPU_BATCH_SIZE = 32  # pairs per batch on the GPU, for every engine


def gpu_missing() -> str | None:
    """Why the GPU column cannot be measured here (None: it can): CuPy, a GPU, torch's CUDA build."""
    from xlmr_np.device import device_namespace
    from xlmr_np.errors import ConfigError

    try:
        device_namespace("cuda")
    except ConfigError as e:
        return str(e)
    try:
        import torch
    except ImportError:
        return "torch is not installed: the GPU column compares with torch on the same GPU"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no GPU (a CPU-only build?): the GPU column compares with torch on it"
    return None


def batches(sequences, size, pad_id) -> list[tuple[list[int], np.ndarray, np.ndarray]]:
    """(indices, input_ids [B, T], attention_mask [B, T]): longest first, right-padded (as Reranker batches)."""
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    out = []
    for start in range(0, len(order), size):
        chunk = order[start : start + size]
        T = max(len(sequences[i]) for i in chunk)
        ids = np.full((len(chunk), T), pad_id, dtype=np.int64)
        mask = np.zeros((len(chunk), T), dtype=np.int64)
        for row, i in enumerate(chunk):
            ids[row, : len(sequences[i])], mask[row, : len(sequences[i])] = sequences[i], 1
        out.append((chunk, ids, mask))
    return out


def score(forward, sequences, size, pad_id) -> np.ndarray:
    """float64 logits [n] of every sequence, in order, batch by batch; forward(ids, mask) -> logits [B]."""
    logits = np.empty(len(sequences), dtype=np.float64)
    for chunk, ids, mask in batches(sequences, size, pad_id):
        logits[chunk] = forward(ids, mask)
    return logits


def docs_per_s(forward, sequences, size, pad_id, repeats, sync) -> float:
    """Median docs/s over `repeats` passes over every sequence, after one warm-up pass; sync() waits for the
    device before and after each pass."""
    score(forward, sequences, size, pad_id)
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        score(forward, sequences, size, pad_id)
        sync()
        times.append(time.perf_counter() - start)
    return len(sequences) / statistics.median(times)


def engine_forward(params, config):
    """xlmr_np's engine on params' namespace: ids, mask -> float64 numpy logits [B] (the first label)."""
    return lambda ids, mask: to_numpy(engine.forward(params, config, ids, mask))[:, 0].astype(np.float64)


def torch_forward(params, config, torch, device, dtype):
    """A plain torch XLM-R cross-encoder with scaled_dot_product_attention (what transformers' "sdpa"
    attention computes), its weights on `device` in `dtype`: ids, mask -> float64 numpy logits [B]."""
    F = torch.nn.functional
    P = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)).to(device=device, dtype=dtype) for k, v in params.items()}
    D, H, eps, pad = config.hidden_size, config.num_attention_heads, config.layer_norm_eps, config.pad_token_id

    def norm(x, name):
        return F.layer_norm(x, (D,), P[name + ".weight"], P[name + ".bias"], eps)

    def dense(x, name):
        return F.linear(x, P[name + ".weight"], P[name + ".bias"])

    def forward(ids, mask):
        with torch.inference_mode():
            ids, keep = torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device).bool()
            B, T = ids.shape
            positions = torch.cumsum((ids != pad).long(), 1) * (ids != pad) + pad  # XLM-R: from pad + 1
            e = "roberta.embeddings."
            x = P[e + "word_embeddings.weight"][ids] + P[e + "token_type_embeddings.weight"][0]
            x = norm(x + P[e + "position_embeddings.weight"][positions], e + "LayerNorm")
            for i in range(config.num_hidden_layers):
                p = f"roberta.encoder.layer.{i}."
                q, k, v = (
                    dense(x, p + "attention.self." + n).view(B, T, H, D // H).transpose(1, 2)
                    for n in ("query", "key", "value")
                )
                a = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])  # [B, H, T, Dh]
                a = dense(a.transpose(1, 2).reshape(B, T, D), p + "attention.output.dense")
                x = norm(a + x, p + "attention.output.LayerNorm")
                y = dense(F.gelu(dense(x, p + "intermediate.dense")), p + "output.dense")
                x = norm(y + x, p + "output.LayerNorm")
            logits = dense(torch.tanh(dense(x[:, 0], "classifier.dense")), "classifier.out_proj")
            return logits[:, 0].double().cpu().numpy()

    return forward


def gpu_engines(params32, config, xp, where, torch, device, half=True) -> dict:
    """name -> forward(ids, mask): xlmr_np on namespace xp (CuPy), torch sdpa float32, float16, bfloat16."""
    engines = {
        "xlmr_np engine, float32": engine_forward(to_namespace(params32, xp, where), config),
        "torch sdpa, float32": torch_forward(params32, config, torch, device, torch.float32),
    }
    if half:
        engines["torch sdpa, float16"] = torch_forward(params32, config, torch, device, torch.float16)
    engines["torch sdpa, bfloat16"] = torch_forward(params32, config, torch, device, torch.bfloat16)
    return engines


def gpu_sync(torch):
    """Wait for CuPy's and torch's work on the GPU."""
    import cupy

    def sync():
        cupy.cuda.runtime.deviceSynchronize()
        torch.cuda.synchronize()

    return sync


def float32_in_float32(torch) -> None:
    """torch's float32 products in float32 on the GPU (no TF32: its defaults, pinned), as xlmr_np's."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def gpu_section(params32, config, sequences, reference, repeats, log=print) -> dict:
    """The GPU column on these sequences: {"missing": why} without a GPU, else {"environment", "rows"} with
    docs/s and max |logit - reference| (the CPU engine's float32 logits) per engine."""
    missing = gpu_missing()
    if missing is not None:
        return {"missing": missing}
    import torch

    from xlmr_np.device import device_namespace

    float32_in_float32(torch)
    xp, where = device_namespace("cuda")
    sync = gpu_sync(torch)
    rows = []
    for name, forward in gpu_engines(params32, config, xp, where, torch, "cuda").items():
        log(f"GPU: {name}")
        logits = score(forward, sequences, GPU_BATCH_SIZE, config.pad_token_id)
        speed = docs_per_s(forward, sequences, GPU_BATCH_SIZE, config.pad_token_id, repeats, sync)
        rows.append({"engine": name, "docs_per_s": speed, "max_abs_vs_cpu": float(np.abs(logits - reference).max())})
    return {"environment": gpu_environment(torch), "rows": rows}


def gpu_environment(torch) -> dict:
    import cupy

    from xlmr_np.device import tf32_in_force

    name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
    return {
        "gpu": name.decode() if isinstance(name, bytes) else str(name),
        "cupy": cupy.__version__,
        "cuda runtime": cupy.cuda.runtime.runtimeGetVersion(),
        "torch": torch.__version__,
        "cupy float32 2-D products in TF32": tf32_in_force(),
        "torch float32 matmul in TF32": bool(torch.backends.cuda.matmul.allow_tf32),
    }


def gpu_markdown(section: dict, workload: str) -> str:
    """The report's GPU section: the table, or the one line saying why there is none."""
    lines = ["", "## GPU", ""]
    if "missing" in section:
        return "\n".join(lines + [f"No GPU column: {section['missing']}.", ""])
    env = ", ".join(f"{k} {v}" for k, v in section["environment"].items())
    lines += [
        f"{workload}, batches of {GPU_BATCH_SIZE} sorted longest first, tokenization not timed; {env}.",
        "",
        "| engine (on the GPU) | docs/s | max abs diff from xlmr_np float32 on the CPU |",
        "|---|---|---|",
    ]
    lines += [f"| {r['engine']} | {r['docs_per_s']:.1f} | {r['max_abs_vs_cpu']:.2e} |" for r in section["rows"]]
    return "\n".join(lines + [""])
