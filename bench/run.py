"""The throughput benchmark: xlmr_np against transformers+torch and onnxruntime on one machine, in one run.

What it measures, and why this way:
- a full-size model with bge-reranker-base's config and random weights, saved in the real file layout
  (config.json, model.safetensors, tokenizer.json, onnx/model.onnx), so every implementation reads the same weights
  and nothing needs the hub;
- token ids fed directly (tokenization is the same tokenizers call for every implementation and is not timed);
- every implementation gets its best use: pairs sorted by length before batching (so batches hold similar
  lengths and padding is small), and its own best batch size, picked by timing each candidate on the
  uniform-128 workload (medians of 3 interleaved passes: one pass flipped between candidates from run to
  run); xlmr_np with its default workers (a thread per core), onnxruntime with every graph optimisation
  and a thread per core;
- single-pair latency (one query, one 64-token document, batch size 1) beside throughput;
- implementations interleaved within each repeat (so machine load drifts affect all of them alike), one warm-up
  pass first, medians over repeats; the numpy sgemm peak (all cores) measured at the start of every
  repeat, so "% of peak" uses the machine as it was during the same repeats;
- onnxruntime-int8 (dynamic int8 quantisation) as a reference point, with the agreement of every implementation's
  logits with xlmr_np's float32 ones on the rerank workload;
- load time, time to first score and peak RSS in a fresh process per implementation, since within one process
  they would be shared or already paid;
- the GPU column (bench.gpu), when CuPy and a GPU are there: xlmr_np on CuPy against torch on the same GPU, on
  the rerank workload; without them the report says why there is none. --device cuda measures it alone.

Figures: docs/s; useful GFLOP/s (the FLOPs of the real tokens only: padding is not useful work) and its
fraction of the machine's measured numpy sgemm peak; xlmr_np's ratio to each peer, and a one-line summary
of every ratio at the end. Progress (workload, implementation, repeat, time left) goes to `log` (stderr).
"""

from __future__ import annotations

import importlib.util
import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .coldstart import cold_start
from .errors import BenchmarkError
from .gpu import GPU_BATCH_SIZE, engine_forward, gpu_markdown, gpu_missing, gpu_section, score
from .long import LongOptions, run_long
from .machine import environment, sgemm_peak
from .measure import agreement, best_batch_size, logits_in_order, measure
from .models import MODEL_FILES, ensure_model
from .peers import IMPLEMENTATIONS, PEERS, available_implementations, load_implementation
from .report import long_markdown, long_markdown_subnormals_only, report_chart, report_markdown, targets_markdown
from .subnormals import subnormal_report
from .workloads import mixed, rerank, single_pair, uniform


def run(
    model_dir: Path,
    out_dir: Path,
    implementations: Sequence[str] = IMPLEMENTATIONS,
    repeats: int = 5,
    pairs: int = 64,
    batch_candidates: Sequence[int] = (8, 16, 32),
    build: bool = True,
    cold: bool = True,
    command: str = "",
    log=print,
    documents: int = 100,
    long: LongOptions | None = None,
    device: str = "cpu",
) -> str:
    """Build or reuse the model, measure every implementation on every workload, write report.md/.json/.png.

    pairs: size of the uniform 128/256 workloads (512: half); documents: size of the rerank and mixed ones;
    long: the long-input part on its own model (bench.long), None to leave it out. device "cuda": the GPU
    column alone (BenchmarkError without a GPU); "cpu": everything, the GPU column where there is a GPU.
    """
    from xlmr_np.config import XLMRobertaConfig
    from xlmr_np.weights import load_params

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not build and not all((model_dir / f).is_file() for f in MODEL_FILES):
        raise BenchmarkError(f"{model_dir}: expected {MODEL_FILES}; run without --no-build to build it")
    missing = [m for m in ("threadpoolctl", "matplotlib") if not _has(m)]
    if missing:  # before building: the build takes minutes
        raise BenchmarkError(f"the benchmark needs {', '.join(missing)}: pip install 'xlmr-np[bench]'")
    if device == "cuda":
        missing = gpu_missing()
        if missing is not None:  # before building
            raise BenchmarkError(f"--device cuda: {missing}")
        return run_gpu(model_dir, out_dir, repeats, build, command, log, documents)
    if build:
        ensure_model(
            model_dir,
            onnx=any(e.startswith("onnxruntime") for e in implementations)
            and _has("onnxruntime")
            and _has("onnxscript"),
        )
    names, skipped = available_implementations(implementations, model_dir)
    for s in skipped:
        log(s)
    config = XLMRobertaConfig.from_file(model_dir / "config.json")
    env = environment(names)
    for w in env["warnings"]:
        log(w)
    log("numpy sgemm peak (all cores), measured again at each repeat ...")
    peak = sgemm_peak()
    log(f"numpy sgemm peak {peak:.0f} GFLOP/s")
    V = config.vocab_size
    workloads = [
        uniform(128, pairs, V),
        uniform(256, pairs, V),
        uniform(512, max(pairs // 2, 1), V),
        rerank(model_dir / "tokenizer.json", count=documents, max_length=min(512, config.max_tokens)),
        mixed(documents, V, high=min(512, config.max_tokens)),
        single_pair(V),
    ]
    log(f"loading {', '.join(names)}")
    runners = {e: load_implementation(e, model_dir) for e in names}
    batch_rates = {}
    for e in names:
        log(f"batch-size probe: {e}, candidates {list(batch_candidates)}")
        batch_rates[e] = best_batch_size(runners[e], workloads[0], batch_candidates, pairs=min(32, pairs))
    batch_sizes = {e: max(rates, key=rates.get) for e, rates in batch_rates.items()}
    log(f"best batch sizes: {batch_sizes}")
    agree = {}
    if "xlmr_np" in runners:
        log(f"agreement with xlmr_np float32 on {workloads[3].name}")
        logits = {e: logits_in_order(run, workloads[3], batch_sizes[e]) for e, run in runners.items()}
        agree = {e: agreement(x, logits["xlmr_np"]) for e, x in logits.items() if e != "xlmr_np"}
    results, peaks = measure(
        runners,
        workloads,
        batch_sizes,
        config,
        repeats,
        log=log,
        peak=lambda: sgemm_peak(shapes=((2048, 768, 3072),), repeats=3),
    )
    peak = statistics.median(peaks)
    del runners
    log(f"subnormal probabilities on one pair of {workloads[2].name}")
    first = workloads[2].sequences[0][None, :]
    subnormals = {
        f"{config.hidden_size} wide, std 0.02 ({model_dir.name})": subnormal_report(
            load_params(model_dir, config), config, first, np.ones_like(first)
        )
    }
    if cold:
        log("cold starts: a fresh process per implementation")
    colds = [cold_start(e, model_dir, workloads[3], batch_sizes[e]) for e in names] if cold else []
    longs = None
    if long is not None:
        longs = run_long(long.model, implementations, long.layers, repeats, long.onnxruntime_max, cold, build, log=log)
        subnormals[f"1024 wide, std 0.2 ({Path(long.model).name})"] = longs["subnormals"]
    out_dir.mkdir(parents=True, exist_ok=True)
    text = report_markdown(
        env,
        results,
        colds,
        peak,
        command,
        skipped,
        workloads,
        batch_rates,
        peaks=peaks,
        agree=agree,
        peers=[e for e in PEERS if e in names],
    )
    text += long_markdown(longs, subnormals) if longs else long_markdown_subnormals_only(subnormals)
    text += targets_markdown(results, colds, longs, subnormals)
    gpu = measure_gpu(model_dir, config, workloads[3], repeats, log)
    text += gpu_markdown(gpu, workloads[3].name)
    (out_dir / "report.md").write_text(text)
    (out_dir / "report.json").write_text(
        json.dumps(
            {
                "environment": env,
                "sgemm_peak_gflops": peak,
                "sgemm_peaks_by_repeat": peaks,
                "command": command,
                "batch_rates": batch_rates,
                "agreement": agree,
                "results": [dict(asdict(r), docs_per_s=r.docs_per_s, gflops=r.gflops) for r in results],
                "cold_start": colds,
                "subnormals": subnormals,
                "gpu": gpu,
                "long": None
                if longs is None
                else dict(
                    longs,
                    workloads=[w.name for w in longs["workloads"]],
                    results=[dict(asdict(r), docs_per_s=r.docs_per_s, gflops=r.gflops) for r in longs["results"]],
                ),
            },
            indent=1,
            default=str,
        )
    )
    report_chart(results, colds, out_dir / "bench.png")
    return text


def measure_gpu(model_dir: Path, config, workload, repeats: int, log) -> dict:
    """The GPU column on one workload (bench.gpu.gpu_section), its reference the CPU engine's float32 logits."""
    from xlmr_np.weights import load_params

    missing = gpu_missing()
    if missing is not None:
        return {"missing": missing}
    params = load_params(model_dir, config)
    log(f"GPU column on {workload.name}: the CPU engine's logits first")
    reference = score(engine_forward(params, config), workload.sequences, GPU_BATCH_SIZE, config.pad_token_id)
    return gpu_section(params, config, workload.sequences, reference, repeats, log)


def run_gpu(model_dir: Path, out_dir: Path, repeats: int, build: bool, command: str, log, documents: int) -> str:
    """`--device cuda`: the GPU column alone, on the rerank workload; report.md and report.json."""
    from xlmr_np.config import XLMRobertaConfig

    if build:
        ensure_model(model_dir, onnx=False)
    config = XLMRobertaConfig.from_file(model_dir / "config.json")
    workload = rerank(model_dir / "tokenizer.json", count=documents, max_length=min(512, config.max_tokens))
    gpu = measure_gpu(model_dir, config, workload, repeats, log)
    text = f"# xlmr_np on the GPU\n\n`{command}`\n" + gpu_markdown(gpu, workload.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.md").write_text(text)
    (out_dir / "report.json").write_text(json.dumps({"command": command, "gpu": gpu}, indent=1, default=str))
    return text


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None
