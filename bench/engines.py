"""Engines: name -> a function (input_ids [B, T], attention_mask [B, T]) -> logits [B], all on one model directory."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .errors import BenchmarkError
from .models import ONNX_FILE

ENGINES = ("xlmr_np", "torch-eager", "torch-sdpa", "onnxruntime")


def load_engine(name: str, model_dir: Path) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Load one engine's model from the shared directory; raises BenchmarkError if it is not installed."""
    model_dir = Path(model_dir)
    if name == "xlmr_np":
        from xlmr_np import engine
        from xlmr_np.config import XLMRobertaConfig
        from xlmr_np.weights import load_params

        config = XLMRobertaConfig.from_file(model_dir / "config.json")
        params = load_params(model_dir, config)

        def run_numpy(ids, mask):
            return engine.forward(params, config, ids, mask)[:, 0]

        run_numpy.params = params  # for the cold-start child's residency check
        return run_numpy
    if name.startswith("torch-"):
        try:
            import torch
            from transformers import XLMRobertaForSequenceClassification
        except ImportError as e:
            raise BenchmarkError(f"{name}: needs torch and transformers ({e})") from None
        net = XLMRobertaForSequenceClassification.from_pretrained(
            model_dir, attn_implementation=name.removeprefix("torch-"), dtype=torch.float32).eval()

        def run_torch(ids, mask):
            with torch.inference_mode():
                return net(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits[:, 0].numpy()

        return run_torch
    if name == "onnxruntime":
        try:
            import onnxruntime as ort
        except ImportError:
            raise BenchmarkError("onnxruntime is not installed: pip install 'xlmr-np[bench]'") from None
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(model_dir / ONNX_FILE), options, providers=["CPUExecutionProvider"])
        return lambda ids, mask: session.run(None, {"input_ids": ids, "attention_mask": mask})[0][:, 0]
    raise BenchmarkError(f"unknown engine {name!r}; expected one of {ENGINES}")


def available_engines(requested: Sequence[str], model_dir: Path) -> tuple[list[str], list[str]]:
    """Split requested engines into the ones whose libraries import, and messages for the others."""
    import importlib.util

    needs = {"xlmr_np": [], "torch-eager": ["torch", "transformers"], "torch-sdpa": ["torch", "transformers"],
             "onnxruntime": ["onnxruntime"]}
    ok, skipped = [], []
    for name in requested:
        if name not in needs:
            raise BenchmarkError(f"unknown engine {name!r}; expected one of {ENGINES}")
        missing = [m for m in needs[name] if importlib.util.find_spec(m) is None]
        if name == "onnxruntime" and not missing and not (Path(model_dir) / ONNX_FILE).is_file():
            missing = [str(Path(model_dir) / ONNX_FILE)]
        if missing:
            skipped.append(f"{name}: skipped, {', '.join(missing)} not available (pip install 'xlmr-np[bench]')")
        else:
            ok.append(name)
    return ok, skipped
