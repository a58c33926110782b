"""Compare xlmr_np with transformers intermediate by intermediate, and name the first one that diverges.

The reference forward pass (xlmr_np.model) records its intermediates under transformers' module names
without the "roberta." prefix, so each has an exact counterpart: the output of that module, caught with a
forward hook. The attention probabilities are the second output of `attention.self` (eager attention
only: SDPA never forms them). The engine (xlmr_np.engine, what Reranker scores with) is compared at the
layer boundaries it exposes: the embeddings, every layer's output, and the logits.

    >>> import xlmr_np
    >>> result = xlmr_np.compare(reranker, [("query", "document")])     # loads transformers from the same dir
    >>> print(result)                     # every intermediate: max and mean |difference|, tolerance, verdict
    >>> result.first_divergence           # None, or the row of the first tensor beyond its tolerance
    >>> xlmr_np.compare(reranker, pairs, forward="engine")              # the engine, layer by layer

torch and transformers are optional: only `compare` with no `reference` model and `reference_trace` need them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import engine, model
from .errors import ComparisonError
from .tracing import Trace, format_table

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
    numpy_function: str  # the function that produced it, e.g. "xlmr_np.model.intermediate"
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
        return (
            f"first divergence: {first.name} (max |diff| {first.max_abs:.3g} > tolerance {first.tolerance:.3g}); "
            f"everything up to {before} agrees, so look at {first.numpy_function} against "
            f"transformers' {first.reference_module}"
        )

    def __str__(self) -> str:
        rows = [
            dict(
                name=r.name,
                shape=r.shape,
                max_abs=r.max_abs,
                mean_abs=r.mean_abs,
                tolerance=r.tolerance,
                ok="ok" if not r.diverges else "DIVERGES",
            )
            for r in self.rows
        ]
        return format_table(rows) + "\n" + self.verdict()


FORWARDS = ("reference", "engine")


def numpy_function(name: str, forward: str = "reference") -> str:
    """The function that produces a trace name: 'encoder.layer.2.intermediate' -> 'xlmr_np.model.intermediate'.

    forward "engine": the engine's function at that layer boundary ('encoder.layer.2.output' ->
    'xlmr_np.engine.encoder_layer').
    """
    if name.startswith("embeddings"):
        function = "embeddings"
    elif name.startswith("classifier."):
        function = "classification_head"
    elif forward == "engine":
        function = "encoder_layer"
    elif ".attention.self" in name:
        function = "self_attention"
    elif name.endswith(".attention.output"):
        function = "attention_output"
    else:
        function = name.rsplit(".", 1)[1]  # "intermediate" or "output"
    return f"xlmr_np.{'engine' if forward == 'engine' else 'model'}.{function}"


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
            torch_model(
                input_ids=torch.from_numpy(np.asarray(input_ids, dtype=np.int64)),
                attention_mask=torch.from_numpy(np.asarray(attention_mask, dtype=np.int64)),
            )
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


def diff_traces(
    ours: dict[str, np.ndarray],
    theirs: dict[str, np.ndarray],
    attention_mask,
    atol: float = ATOL,
    rtol: float = RTOL,
    forward: str = "reference",
) -> Comparison:
    """Compare two traces of the same batch name by name, over non-padding positions only.

    Padding is left out because each implementation fills it differently (the engine with zeros, the
    reference and transformers with whatever a masked-out computation gives), and it never reaches a real
    token. forward: which xlmr_np forward pass `ours` came from, to name its functions.
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
        rows.append(
            TensorDiff(
                name,
                a.shape,
                float(d.max()),
                float(d.mean()),
                atol + rtol * ref_max,
                numpy_function(name, forward),
                reference_module(name)[0],
            )
        )
    return Comparison(rows)


def _valid(name: str, shape: tuple[int, ...], keep: np.ndarray) -> np.ndarray:
    """Boolean mask of the comparable elements: real tokens, and for attention real (query, key) pairs."""
    if name.startswith("classifier."):
        return np.ones(shape, dtype=bool)  # [B, ...] per pair
    if name.endswith(".probs"):
        return np.broadcast_to(keep[:, None, :, None] & keep[:, None, None, :], shape)  # [B, H, T, T]
    return np.broadcast_to(keep[:, :, None], shape)  # [B, T, D]


def compare(
    reranker, pairs, reference=None, atol: float = ATOL, rtol: float = RTOL, forward: str = "reference"
) -> Comparison:
    """Run the same pairs through xlmr_np and transformers; diff every corresponding intermediate.

    reranker: an xlmr_np Reranker (or a model directory). reference: a transformers
    XLMRobertaForSequenceClassification with eager attention; None loads one from the reranker's directory.
    forward: "reference" (xlmr_np.model: every intermediate) or "engine" (xlmr_np.engine, what Reranker
    scores with: the embeddings, each layer's output and the logits). The comparison is in float64,
    whatever dtypes the two sides computed in.
    """
    from .reranker import Reranker

    if forward not in FORWARDS:
        raise ComparisonError(f"forward must be one of {FORWARDS}, got {forward!r}")
    if not isinstance(reranker, Reranker):
        reranker = Reranker.from_pretrained(reranker)
    if reference is None:
        reference = load_reference(reranker.model_dir)
    batch = reranker.tokenize(pairs)
    ours = trace_of(reranker, batch.input_ids, batch.attention_mask, forward)
    theirs = reference_trace(reference, batch.input_ids, batch.attention_mask, list(ours))
    return diff_traces(ours, theirs, batch.attention_mask, atol, rtol, forward)


def trace_of(reranker, input_ids, attention_mask, forward: str = "reference") -> dict[str, np.ndarray]:
    """xlmr_np's intermediates for a batch by name: every one the reference records, or the engine's
    layer boundaries ("embeddings", "encoder.layer.{i}.output", "classifier.out_proj")."""
    if forward == "reference":
        trace = Trace()
        model.forward(reranker.params, reranker.config, input_ids, attention_mask, trace)
        return dict(trace)
    states: list[np.ndarray] = []
    logits = engine.forward(reranker.params, reranker.config, input_ids, attention_mask, states)
    names = ["embeddings"] + [f"encoder.layer.{i}.output" for i in range(reranker.config.num_hidden_layers)]
    return {**dict(zip(names, states)), "classifier.out_proj": logits}


def load_reference(model_dir: str):
    """transformers' model from the same directory, float32, eager attention, in eval mode."""
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager").eval()
