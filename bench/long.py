"""Long inputs and sharp attention: xlmr_np against torch SDPA and onnxruntime on a bge-reranker-v2-m3-shaped
random model (1024 wide, 16 heads, feed-forward 4096, 8,194 positions; --long-layers layers, the same for
every implementation) whose weights have std 0.2, so that its attention is sharp (softmax probabilities down
to subnormal floats in the plain formula), as trained models' is and std-0.02 random weights' is not.

Workloads, each one batch: 16 pairs of 512 tokens; one query against 16 documents of 1,024 and of 2,048
tokens; one pair of 8,192 tokens. Times interleaved as in the main benchmark (bench.measure); peak RSS of
the two longest workloads in a fresh process per implementation (bench.coldstart); the float32 logits of
the 8,192-token pair against the float64 truth (xlmr_np in float64, which tests/test_long_pairs.py ties to
transformers in float64 within 1e-12); and the subnormal probabilities of one 512-token pair.

torch-eager is left out (its attention holds [16, 8192, 8192] scores, 4.3 GB in float32, per layer), and
so is onnxruntime above --long-onnxruntime-max tokens: the ONNX graph is exported from the eager attention.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xlmr_np.testing import family_shape

from .coldstart import cold_start
from .measure import Result, logits_in_order, measure
from .models import ensure_model
from .peers import available_implementations, load_implementation
from .subnormals import subnormal_report
from .workloads import Workload, documents

LONG_IMPLEMENTATIONS = ("xlmr_np", "torch-sdpa", "onnxruntime")


@dataclass(frozen=True)
class LongOptions:
    """The long-input part's settings (python -m bench --long-model, --long-layers, --long-onnxruntime-max)."""

    model: Path  # the long model's directory, built on first use
    layers: int = 2  # layers of the long model (fewer than v2-m3's 24, for time; the same for every implementation)
    onnxruntime_max: int = 2048  # onnxruntime runs the workloads up to this many tokens per pair


LEFT_OUT = {"torch-eager": " (its attention holds [16, T, T] scores per layer: 4.3 GB in float32 at 8,192 tokens)"}
SHARP_STD = 0.2
MAX_TOKENS = 8192


def long_config(layers: int) -> dict:
    """config.json fields of the long model: bge-reranker-v2-m3's shapes, `layers` layers, weights of std 0.2."""
    return dict(family_shape("bge-reranker-v2-m3", layers), initializer_range=SHARP_STD)


def long_workloads(vocab_size: int) -> list[Workload]:
    """16 x 512 tokens, 1 x 16 documents of 1,024 and of 2,048 tokens, one pair of 8,192 tokens (a 16-token
    query and the special tokens included)."""
    return [
        documents(512 - 20, 16, vocab_size, name="sharp 16x512"),
        documents(1024, 16, vocab_size),
        documents(2048, 16, vocab_size),
        documents(MAX_TOKENS - 20, 1, vocab_size, name=f"one pair {MAX_TOKENS}"),
    ]


def run_long(
    model_dir: Path,
    requested: Sequence[str],
    layers: int,
    repeats: int,
    onnxruntime_max: int,
    cold: bool,
    build: bool,
    log=print,
) -> dict:
    """Build or reuse the long model, measure, and return everything the report's long-input section shows."""
    from xlmr_np.config import XLMRobertaConfig
    from xlmr_np.weights import load_params
    from xlmr_np.workers import Workers

    model_dir = Path(model_dir)
    wanted = [e for e in requested if e in LONG_IMPLEMENTATIONS]
    if build:
        log(f"long model: {model_dir} (built on first use, with its ONNX export: minutes)")
        ensure_model(model_dir, long_config(layers), onnx="onnxruntime" in wanted, int8=False)
    names, skipped = available_implementations(wanted, model_dir)
    skipped += [f"{e}: not run on long inputs{LEFT_OUT.get(e, '')}" for e in requested if e not in wanted]
    config = XLMRobertaConfig.from_file(model_dir / "config.json")
    if config.num_hidden_layers != layers:
        skipped.append(f"long model {model_dir} has {config.num_hidden_layers} layers, not --long-layers {layers}")
    workloads = long_workloads(config.vocab_size)
    runners = {e: load_implementation(e, model_dir) for e in names}
    fits = [w for w in workloads if int(w.lengths.max()) <= onnxruntime_max]
    beyond = [w for w in workloads if int(w.lengths.max()) > onnxruntime_max]
    onnx_runs = {w.name for w in fits}  # the workloads onnxruntime runs
    if beyond and "onnxruntime" in runners:
        skipped.append(
            f"onnxruntime: not run above {onnxruntime_max} tokens (--long-onnxruntime-max): its graph, exported "
            f"from the eager attention, holds each layer's [16, T, T] scores (4.3 GB in float32 at 8,192 tokens)"
        )
    sizes = {e: 16 for e in runners}  # every long workload has its own batch size; this is never used
    results: list[Result] = []
    for group, members in ((fits, runners), (beyond, {e: r for e, r in runners.items() if e != "onnxruntime"})):
        if group and members:
            results += measure(members, group, sizes, config, repeats, log=log)[0]
    pair = workloads[-1]
    log(f"float64 truth on {pair.name}: xlmr_np in float64")
    truth_params = load_params(model_dir, config, dtype=np.float64)
    pool = Workers()
    ((ids, mask),) = [(s[None, :], np.ones((1, len(s)), dtype=np.int64)) for s in pair.sequences]
    truth = pool.forward(truth_params, config, ids, mask)[:, 0].astype(np.float64)
    del truth_params
    accuracy = {
        e: float(np.abs(logits_in_order(run, pair, 1) - truth).max())
        for e, run in runners.items()
        if e != "onnxruntime" or pair.name in onnx_runs
    }
    log("subnormal probabilities on one 512-token pair of the sharp model")
    params = load_params(model_dir, config)
    first = workloads[0].sequences[0][None, :]
    subnormals = subnormal_report(params, config, first, np.ones_like(first))
    del params, runners
    colds = []
    if cold:
        for w in workloads[2:]:
            for e in names:
                if e == "onnxruntime" and w.name not in onnx_runs:
                    continue
                log(f"peak RSS: {w.name}, {e}, in a fresh process")
                colds.append(dict(cold_start(e, model_dir, w, w.batch_size or 1), workload=w.name))
    return {
        "model": str(model_dir),
        "layers": config.num_hidden_layers,
        "workloads": workloads,
        "results": results,
        "cold": colds,
        "accuracy": accuracy,
        "truth": truth.tolist(),
        "subnormals": subnormals,
        "skipped": skipped,
    }
