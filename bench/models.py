"""The benchmark model: a full-size random cross-encoder in the real file layout, built once and shared.

Every implementation reads the same files (config.json, model.safetensors, tokenizer.json, onnx/model.onnx), so
nothing needs the hub.
"""

from __future__ import annotations

import os
from pathlib import Path

from xlmr_np.testing import BGE_RERANKER_BASE, xlmr_tokenizer_json

from .errors import BenchmarkError

MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json")
ONNX_FILE = "onnx/model.onnx"
ONNX_INT8_FILE = "onnx/model-int8.onnx"  # ONNX_FILE with dynamic int8 quantisation of its weights


def ensure_model(directory: Path, config_overrides: dict | None = None, onnx: bool = True, int8: bool = True) -> Path:
    """Reuse the random model in `directory`, or build it (and its ONNX exports) under `<directory>.lock`.

    config_overrides: config.json fields over bge-reranker-base's (initializer_range is the weights' std);
    int8: also quantise the ONNX export (onnxruntime-int8).

    The lock is an flock on a file that stays in place (other helpers' build scripts use the same
    convention); a second builder waits for the first, then finds the files there. The model is built in
    a temporary directory and renamed into place, so a reader never sees half of it.
    """
    import fcntl

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    if _complete(directory, onnx, int8):
        return directory
    with open(directory.with_name(directory.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        if not _complete(directory, onnx=False, int8=False):
            _build_model(directory, config_overrides or {})
        if onnx and not (directory / ONNX_FILE).is_file():
            export_onnx(directory)
        if onnx and int8 and not (directory / ONNX_INT8_FILE).is_file():
            quantize_int8(directory)
    return directory


def _complete(directory: Path, onnx: bool, int8: bool) -> bool:
    files = MODEL_FILES + ((ONNX_FILE,) if onnx else ()) + ((ONNX_INT8_FILE,) if onnx and int8 else ())
    return all((directory / f).is_file() for f in files)


def _build_model(directory: Path, overrides: dict) -> None:
    """Save a random XLMRobertaForSequenceClassification with the real tokenizer, atomically."""
    try:
        import torch
        from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification
    except ImportError as e:
        raise BenchmarkError(
            f"building the benchmark model needs torch and transformers ({e}): pip install 'xlmr-np[bench]'"
        ) from None
    try:
        tokenizer_json = xlmr_tokenizer_json()
    except (FileNotFoundError, ImportError) as e:
        raise BenchmarkError(f"{e} (it is in the bench extra: pip install 'xlmr-np[bench]')") from None
    tmp = directory.with_name(f"{directory.name}.tmp-{os.getpid()}")
    torch.manual_seed(0)
    model = XLMRobertaForSequenceClassification(XLMRobertaConfig(**dict(BGE_RERANKER_BASE, **overrides))).eval()
    model.save_pretrained(tmp, safe_serialization=True)
    (tmp / "tokenizer.json").write_bytes(tokenizer_json.read_bytes())
    if directory.exists():  # an incomplete earlier attempt
        for f in MODEL_FILES:
            (directory / f).unlink(missing_ok=True)
        directory.rmdir()
    tmp.rename(directory)


def export_onnx(directory: Path) -> Path:
    """Export the model's torch graph to onnx/model.onnx (dynamic batch and sequence axes, the sequence up to
    the position table's limit)."""
    import torch
    from transformers import XLMRobertaForSequenceClassification

    model = XLMRobertaForSequenceClassification.from_pretrained(directory, attn_implementation="eager").eval()
    path = directory / ONNX_FILE
    tmp = path.with_name(f"model.tmp-{os.getpid()}.onnx")
    path.parent.mkdir(exist_ok=True)
    ids = torch.ones((2, 16), dtype=torch.int64)
    longest = model.config.max_position_embeddings - model.config.pad_token_id - 1  # XLM-R's positions start at 2
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence", max=longest)
    with torch.inference_mode():
        torch.onnx.export(
            model,
            (ids, torch.ones_like(ids)),
            tmp,
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            external_data=False,
            dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
        )
    tmp.rename(path)
    return path


def quantize_int8(directory: Path) -> Path:
    """onnxruntime's dynamic quantisation of onnx/model.onnx: int8 weights, activations quantised per call."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path = directory / ONNX_INT8_FILE
    tmp = path.with_name(f"model-int8.tmp-{os.getpid()}.onnx")
    quantize_dynamic(directory / ONNX_FILE, tmp, weight_type=QuantType.QInt8)
    tmp.rename(path)
    return path
