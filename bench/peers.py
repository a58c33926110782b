"""Engines: name -> a function (input_ids [B, T], attention_mask [B, T]) -> logits [B], all on one model directory."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .errors import BenchmarkError
from .models import ONNX_FILE, ONNX_INT8_FILE

# onnxruntime-int8 is a reference point, not a peer: onnxruntime with dynamic int8 quantisation of the weights
# (what fastembed and sentence-transformers' ONNX backend users run), scored with its agreement to float32.
IMPLEMENTATIONS = ("xlmr_np", "torch-eager", "torch-sdpa", "onnxruntime", "onnxruntime-int8")
PEERS = ("torch-eager", "torch-sdpa", "onnxruntime")  # the float32 implementations xlmr_np is compared with


def cores() -> int:
    """CPU cores this process may use, the thread count every implementation is given."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def load_implementation(name: str, model_dir: Path) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Load one implementation's model from the shared directory; raises BenchmarkError if it is not installed."""
    model_dir = Path(model_dir)
    if name == "xlmr_np":
        from xlmr_np.config import XLMRobertaConfig
        from xlmr_np.weights import load_params
        from xlmr_np.workers import Workers

        config = XLMRobertaConfig.from_file(model_dir / "config.json")
        params = load_params(model_dir, config)
        pool = Workers()  # its default, as Reranker scores: one thread per core, one BLAS thread each

        def run_numpy(ids, mask):
            return pool.forward(params, config, ids, mask)[:, 0]

        run_numpy.params = params  # for the cold-start child's residency check
        return run_numpy
    if name.startswith("torch-"):
        try:
            import torch
            from transformers import XLMRobertaForSequenceClassification
        except ImportError as e:
            raise BenchmarkError(f"{name}: needs torch and transformers ({e})") from None
        net = XLMRobertaForSequenceClassification.from_pretrained(
            model_dir, attn_implementation=name.removeprefix("torch-"), dtype=torch.float32
        ).eval()

        def run_torch(ids, mask):
            with torch.inference_mode():
                return net(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits[:, 0].numpy()

        return run_torch
    if name.startswith("onnxruntime"):
        try:
            import onnxruntime as ort
        except ImportError:
            raise BenchmarkError("onnxruntime is not installed: pip install 'xlmr-np[bench]'") from None
        options = ort.SessionOptions()  # its best CPU settings: every graph optimisation, a thread per core
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = cores()
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        path = model_dir / (ONNX_INT8_FILE if name == "onnxruntime-int8" else ONNX_FILE)
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda ids, mask: session.run(None, {"input_ids": ids, "attention_mask": mask})[0][:, 0]
    raise BenchmarkError(f"unknown implementation {name!r}; expected one of {IMPLEMENTATIONS}")


def available_implementations(requested: Sequence[str], model_dir: Path) -> tuple[list[str], list[str]]:
    """Split requested implementations into the ones whose libraries import, and messages for the others."""
    import importlib.util

    needs = {
        "xlmr_np": [],
        "torch-eager": ["torch", "transformers"],
        "torch-sdpa": ["torch", "transformers"],
        "onnxruntime": ["onnxruntime"],
        "onnxruntime-int8": ["onnxruntime"],
    }
    ok, skipped = [], []
    for name in requested:
        if name not in needs:
            raise BenchmarkError(f"unknown implementation {name!r}; expected one of {IMPLEMENTATIONS}")
        missing = [m for m in needs[name] if importlib.util.find_spec(m) is None]
        onnx_file = {"onnxruntime": ONNX_FILE, "onnxruntime-int8": ONNX_INT8_FILE}.get(name)
        if onnx_file and not missing and not (Path(model_dir) / onnx_file).is_file():
            missing = [str(Path(model_dir) / onnx_file)]
        if missing:
            skipped.append(f"{name}: skipped, {', '.join(missing)} not available (pip install 'xlmr-np[bench]')")
        else:
            ok.append(name)
    return ok, skipped
