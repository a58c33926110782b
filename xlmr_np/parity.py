"""Compare xlmr_np with transformers intermediate by intermediate, and name the first one that diverges.

xlmr_np's trace names are transformers' module names without the "roberta." prefix, so each traced
tensor has an exact counterpart: the output of that module, caught with a forward hook. The attention
probabilities are the second output of `attention.self` (eager attention only: SDPA never forms them).

    >>> import xlmr_np
    >>> result = xlmr_np.compare(reranker, [("query", "document")])     # loads transformers from the same dir
    >>> print(result)                     # every intermediate: max and mean |difference|, tolerance, verdict
    >>> result.first_divergence           # None, or the row of the first tensor beyond its tolerance

torch and transformers are optional: only `compare` with no `reference` model and `reference_trace` need them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import model
from .errors import ComparisonError
from .inspect import format_table

# Default tolerance per tensor: atol + rtol * max|reference|. Measured float32 round-off against
# transformers: below 2e-6 (1.55e-6 at most) in every tensor of the 2-layer test model (tests/helpers.py
# TINY, init_std 0.2); on bge-reranker-base's full-size config with random weights, at most 5.3e-6 in a hidden state
# (tolerance there ~7e-5) and 1.9e-5 in logits of magnitude 9.7 (tolerance 1.1e-4). A tanh-GELU in the
# feed-forward moves the tiny model by 4.7e-4 (tests/test_parity_compare.py, tests/test_full_size.py).
ATOL = 1e-5
RTOL = 1e-5


@dataclass
class TensorDiff:
    """How one intermediate differs, over its comparable (non-padding) elements."""

    name: str
    shape: tuple[int, ...]
    max_abs: float
    mean_abs: float
    tolerance: float  # atol + rtol * max|reference|
    numpy_function: str  # the xlmr_np.model function that produced it
    reference_module: str  # the transformers module whose output it is compared with

    @property
    def diverges(self) -> bool:
        return not self.max_abs <= self.tolerance  # NaN diverges too


@dataclass
class Comparison:
    """Every corresponding intermediate, in the order data flows, and the first that diverges."""

    rows: list[TensorDiff]

    @property
    def first_divergence(self) -> TensorDiff | None:
        return next((r for r in self.rows if r.diverges), None)

    def verdict(self) -> str:
        """One sentence naming the first diverging tensor and the code on both sides of it."""
        first = self.first_divergence
        if first is None:
            return f"all {len(self.rows)} intermediates agree within tolerance"
        before = self.rows[self.rows.index(first) - 1].name if self.rows.index(first) else "the input ids"
        return (f"first divergence: {first.name} (max |diff| {first.max_abs:.3g} > tolerance {first.tolerance:.3g}); "
                f"everything up to {before} agrees, so look at xlmr_np.model.{first.numpy_function} against "
                f"transformers' {first.reference_module}")

    def __str__(self) -> str:
        rows = [dict(name=r.name, shape=r.shape, max_abs=r.max_abs, mean_abs=r.mean_abs, tolerance=r.tolerance,
                     ok="ok" if not r.diverges else "DIVERGES") for r in self.rows]
        return format_table(rows) + "\n" + self.verdict()


def numpy_function(name: str) -> str:
    """The xlmr_np.model function that records a trace name: 'encoder.layer.2.intermediate' -> 'intermediate'."""
    if name.startswith("embeddings"):
        return "embeddings"
    if name.startswith("classifier."):
        return "classification_head"
    if ".attention.self" in name:
        return "self_attention"
    if name.endswith(".attention.output"):
        return "attention_output"
    return name.rsplit(".", 1)[1]  # "intermediate" or "output"


def reference_module(name: str, prefix: str = "roberta") -> tuple[str, int | None]:
    """Trace name -> (transformers module path, index into its output tuple, or None for a plain tensor)."""
    if name.endswith(".probs"):
        return f"{prefix}.{name.removesuffix('.probs')}", 1
    if name.startswith("classifier."):
        return name, None
    if name.endswith(".attention.self"):
        return f"{prefix}.{name}", 0
    return f"{prefix}.{name}", None


def reference_trace(torch_model, input_ids, attention_mask, names) -> dict[str, np.ndarray]:
    """Run a transformers XLMRobertaForSequenceClassification with forward hooks; outputs as float64 numpy.

    names: the trace names to catch (a module's output is caught once, however many names it serves).
    """
    import torch

    prefix = getattr(torch_model, "base_model_prefix", "roberta")
    caught: dict[str, object] = {}
    handles = []
    try:
        for path in dict.fromkeys(reference_module(n, prefix)[0] for n in names):
            try:
                module = torch_model.get_submodule(path)
            except AttributeError:
                raise ComparisonError(
                    f"the reference model has no module {path!r}; expected a transformers "
                    f"XLMRobertaForSequenceClassification ({type(torch_model).__name__} given)"
                ) from None
            handles.append(module.register_forward_hook(_catcher(caught, path)))
        with torch.no_grad():
            torch_model(input_ids=torch.from_numpy(np.asarray(input_ids, dtype=np.int64)),
                        attention_mask=torch.from_numpy(np.asarray(attention_mask, dtype=np.int64)))
    finally:
        for h in handles:
            h.remove()
    return {n: _pick(caught, n, prefix) for n in names}


def _catcher(caught: dict, path: str):
    def hook(module, args, output):
        caught[path] = output

    return hook


def _pick(caught: dict, name: str, prefix: str) -> np.ndarray:
    path, index = reference_module(name, prefix)
    out = caught[path] if index is None else caught[path][index]
    if out is None:
        raise ComparisonError(
            f"{path} returned no attention probabilities: load the reference with attn_implementation='eager' "
            f"(SDPA and flash attention never form them)"
        )
    return out.detach().double().numpy()


def diff_traces(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray], attention_mask,
                atol: float = ATOL, rtol: float = RTOL) -> Comparison:
    """Compare two traces of the same batch name by name, over non-padding positions only.

    Padding is left out because each implementation fills it differently (xlmr_np with zeros, transformers
    with whatever a masked-out computation gives), and it never reaches a real token.
    """
    keep = np.asarray(attention_mask).astype(bool)  # [B, T]
    rows = []
    for name, a in ours.items():
        if name not in theirs:
            raise ComparisonError(f"{name} is in one trace but not the other")
        b = theirs[name]
        if a.shape != b.shape:
            raise ComparisonError(f"{name}: shapes differ, {a.shape} here and {b.shape} in the reference")
        valid = _valid(name, a.shape, keep)
        d = np.abs(a.astype(np.float64) - b.astype(np.float64))[valid]
        ref_max = float(np.abs(b.astype(np.float64))[valid].max())
        rows.append(TensorDiff(name, a.shape, float(d.max()), float(d.mean()), atol + rtol * ref_max,
                               numpy_function(name), reference_module(name)[0]))
    return Comparison(rows)


def _valid(name: str, shape: tuple[int, ...], keep: np.ndarray) -> np.ndarray:
    """Boolean mask of the comparable elements: real tokens, and for attention real (query, key) pairs."""
    if name.startswith("classifier."):
        return np.ones(shape, dtype=bool)  # [B, ...] per pair
    if name.endswith(".probs"):
        return np.broadcast_to(keep[:, None, :, None] & keep[:, None, None, :], shape)  # [B, H, T, T]
    return np.broadcast_to(keep[:, :, None], shape)  # [B, T, D]


def compare(reranker, pairs, reference=None, atol: float = ATOL, rtol: float = RTOL) -> Comparison:
    """Run the same pairs through xlmr_np and transformers; diff every corresponding intermediate.

    reranker: an xlmr_np Reranker (or a model directory). reference: a transformers
    XLMRobertaForSequenceClassification with eager attention; None loads one from the reranker's directory.
    The comparison is in float64, whatever dtypes the two sides computed in.
    """
    from .reranker import Reranker

    if not isinstance(reranker, Reranker):
        reranker = Reranker.from_pretrained(reranker)
    if reference is None:
        reference = load_reference(reranker.model_dir)
    batch = reranker.tokenize(pairs)
    trace = model.Trace()
    model.forward(reranker.params, reranker.config, batch.input_ids, batch.attention_mask, trace)
    theirs = reference_trace(reference, batch.input_ids, batch.attention_mask, list(trace.tensors))
    return diff_traces(trace.tensors, theirs, batch.attention_mask, atol, rtol)


def load_reference(model_dir: str):
    """transformers' model from the same directory, float32, eager attention, in eval mode."""
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager").eval()
