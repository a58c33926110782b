"""What the test modules share, imported as `from helpers import ...` (no test module imports another).

- config_dict: config.json of a test model, as transformers writes it (one builder for every config literal);
- write_model: a random cross-encoder written with numpy alone, with the small tokenizer (the unit tier's
  models: no torch, milliseconds to load);
- transformers_forward: one forward pass of a transformers model on a batch, as numpy arrays;
- load: Reranker.from_pretrained through one bounded cache (for expected answers, not for the code under test);
- run_cli: `xlmr-np ARGV` in this process (cli.main), with its stdin, stdout and stderr as strings;
- the evaluation's datasets: make_rows, write_parquet, hub_path, env_for.

The fixtures built from these (the session's tiny models, the offline hub) are in conftest.py.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xlmr_np.config import XLMRobertaConfig
from xlmr_np.random_model import write_safetensors
from xlmr_np.testing import TINY, assert_close
from xlmr_np.weights import expected_shapes

FIXTURES = Path(__file__).parent / "fixtures"
# The real XLM-R tokenizer.json with a few thousand of its pieces (tools/make_small_tokenizer.py): same ids
# for <s> <pad> </s> <unk>, the same segmentation of the repository's own texts, parsed in milliseconds.
SMALL_TOKENIZER = FIXTURES / "small-tokenizer" / "tokenizer.json"
SMALL_VOCAB = json.loads((SMALL_TOKENIZER.parent / "provenance.json").read_text())["vocab_size"]


def config_dict(**overrides) -> dict:
    """config.json of the tiny test model (xlmr_np.testing.TINY: hidden 32, 4 heads, intermediate 37, 2 layers)
    with `overrides`, as transformers' save_pretrained writes it: model_type, architectures, id2label.

    >>> config_dict(num_labels=2)["id2label"]
    {'0': 'LABEL_0', '1': 'LABEL_1'}
    """
    fields = dict(TINY, **overrides)
    labels = fields.pop("num_labels")
    return dict(
        fields,
        model_type="xlm-roberta",
        architectures=["XLMRobertaForSequenceClassification"],
        id2label={str(i): f"LABEL_{i}" for i in range(labels)},
    )


def config(**overrides) -> XLMRobertaConfig:
    """config_dict(**overrides) parsed as xlmr_np parses config.json."""
    return XLMRobertaConfig.from_dict(config_dict(**overrides))


def random_tensor(rng: np.random.Generator, key: str, shape, std: float = 0.2, head_scale: float = 1.0) -> np.ndarray:
    """One random float32 weight, drawn as xlmr_np.testing.build_model randomises a model: weights N(0, std),
    biases N(0, 0.1), layer norms 1 + N(0, 0.1); classifier.out_proj times head_scale (a trained
    reranker's logits span about -10..10, a fresh head's about 0)."""
    value = rng.standard_normal(shape, dtype=np.float32)  # float32 draws: a full-size table is 768 MB, not 1.5 GB
    value *= 0.1 if key.endswith(".bias") or key.endswith("LayerNorm.weight") else std
    if key.endswith("LayerNorm.weight"):
        value += 1
    if key.startswith("classifier.out_proj."):
        value *= head_scale
    return value


def random_params(cfg: XLMRobertaConfig, seed: int = 0, std: float = 0.2) -> dict[str, np.ndarray]:
    """Random float32 weights of `cfg` under the checkpoint's key names (random_tensor, in key order)."""
    rng = np.random.default_rng(seed)
    return {key: random_tensor(rng, key, shape, std) for key, shape in expected_shapes(cfg).items()}


def write_random_safetensors(path: Path, cfg: XLMRobertaConfig, seed: int, std: float, head_scale: float) -> None:
    """random_params(cfg, seed, std) written one tensor at a time by xlmr_np.random_model's safetensors writer,
    so that a full-size model (1.1 GB) never sits in memory whole."""
    rng = np.random.default_rng(seed)
    tensors = ((key, random_tensor(rng, key, shape, std, head_scale)) for key, shape in expected_shapes(cfg).items())
    write_safetensors(path, cfg, tensors)


def write_model(
    directory,
    seed: int = 0,
    std: float = 0.2,
    head_scale: float = 1.0,
    tokenizer: Path = SMALL_TOKENIZER,
    **overrides,
) -> Path:
    """A random cross-encoder in the hub layout (config.json, model.safetensors, tokenizer.json), written with
    numpy alone: the unit tier's models, and the full-size one. The vocabulary is the small tokenizer's
    unless overridden; transformers' from_pretrained loads the result too."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    raw = config_dict(**{"vocab_size": SMALL_VOCAB, **overrides})
    (directory / "config.json").write_text(json.dumps(raw, indent=2) + "\n")
    cfg = XLMRobertaConfig.from_dict(raw)
    write_random_safetensors(directory / "model.safetensors", cfg, seed, std, head_scale)
    (directory / "tokenizer.json").write_bytes(Path(tokenizer).read_bytes())
    return directory


# A number as printed: 3, -0.08945072, 1,234, 2.22e-15
NUMBER = re.compile(r"[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def same_text_close_numbers(printed: str, expected: str, rtol: float = 1e-5, atol: float = 1e-5) -> bool:
    """The same words, with every number within atol + rtol * |expected|: float32 round-off moves the last
    digits of a printed float, and the width of a table's columns, from one run or machine to the next."""

    def words(text: str) -> str:
        return " ".join(NUMBER.sub("#", text).split())

    if words(printed) != words(expected):
        return False
    for a, b in zip(NUMBER.findall(printed), NUMBER.findall(expected)):
        x, y = float(a.replace(",", "")), float(b.replace(",", ""))
        if abs(x - y) > atol + rtol * abs(y):
            return False
    return True


@dataclass
class Outputs:
    """A transformers forward pass as numpy arrays (hidden_states and attentions empty unless asked for)."""

    logits: np.ndarray  # [B, L]
    hidden_states: list[np.ndarray]  # num_hidden_layers + 1 of [B, T, D]
    attentions: list[np.ndarray]  # num_hidden_layers of [B, H, T, T]


def transformers_forward(
    torch, model, batch, dtype=np.float32, hidden_states: bool = False, attentions: bool = False
) -> Outputs:
    """XLMRobertaForSequenceClassification on a padded batch (input_ids and attention_mask [B, T], as xlmr_np's
    Batch) in `dtype`, the model left in float32 afterwards, as it came; dtype None: in the model's own dtype,
    which is left as it is (for a caller that holds numpy views of the model's weights)."""
    if dtype is not None:
        model.to(torch.float64 if np.dtype(dtype) == np.float64 else torch.float32)
    try:
        with torch.inference_mode():
            out = model(
                input_ids=torch.from_numpy(batch.input_ids),
                attention_mask=torch.from_numpy(batch.attention_mask),
                output_hidden_states=hidden_states,
                output_attentions=attentions,
            )
    finally:
        if dtype is not None:
            model.float()
    return Outputs(
        out.logits.numpy(),
        [h.numpy() for h in out.hidden_states or ()],
        [a.numpy() for a in out.attentions or ()],
    )


@functools.lru_cache(maxsize=8)
def _load(path: str, options: tuple):
    from xlmr_np import Reranker

    return Reranker.from_pretrained(path, **dict(options))


def load(path, **options):
    """Reranker.from_pretrained(path, **options), loaded once per (path, options) while among the last 8
    used: the expected answers of tests whose model takes a second to load (the real 250k-piece tokenizer)."""
    return _load(str(path), tuple(sorted(options.items())))


def run_cli(argv: list[str], stdin: bytes = b"") -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `xlmr-np ARGV` run in this process (xlmr_np.cli.main), reading `stdin`."""
    from xlmr_np.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    sys.stdout, sys.stderr = out, err
    try:
        status = main(argv)
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
    return status, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------------------------------------------
# The evaluation's datasets: small parquet files in the C-MTEB layout, in an offline hub cache

CJK = list(
    "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可"
    "她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三"
    "已老从动两长知民样现实问题病医药"
)


def make_rows(seed: int, queries: int, max_docs: int = 12) -> dict:
    """Columns query / positive / negative like the C-MTEB files, with the protocol's edge cases:
    rows without positives, rows without negatives, a document repeated within a row."""
    rng = np.random.default_rng(seed)

    def text(lo, hi):
        return "".join(rng.choice(CJK, size=int(rng.integers(lo, hi))))

    rows: dict[str, list] = {"query": [], "positive": [], "negative": []}
    for i in range(queries):
        positives = [text(5, 60) for _ in range(0 if i % 7 == 3 else int(rng.integers(1, 4)))]
        negatives = [text(5, 60) for _ in range(0 if i % 11 == 5 else int(rng.integers(1, max_docs)))]
        if i % 13 == 0 and negatives:
            negatives.append(negatives[0])  # a duplicate document: scored once, counted twice
        rows["query"].append(text(3, 15))
        rows["positive"].append(positives)
        rows["negative"].append(negatives)
    return rows


def write_parquet(pq, path: Path, rows: dict) -> Path:
    import pyarrow as pa

    schema = pa.schema(
        [("query", pa.string()), ("positive", pa.list_(pa.string())), ("negative", pa.list_(pa.string()))]
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(rows, schema=schema), path)
    return path


def hub_path(hub: Path, task) -> Path:
    """Where huggingface-hub keeps the task's file at the pinned revision."""
    return hub / f"datasets--{task.repo.replace('/', '--')}" / "snapshots" / task.revision / task.filename


def evaluate(model_dir, tmp_path, name="run", **kwargs) -> dict:
    """xlmr_np.cmteb.run_eval in this process, quietly, on CMedQAv1-reranking in batches of 4 unless told
    otherwise, writing into tmp_path/name with its score cache in tmp_path/cache; returns its results."""
    from xlmr_np.cmteb import run_eval

    kwargs.setdefault("task_name", "CMedQAv1-reranking")
    kwargs.setdefault("cache_dir", tmp_path / "cache")
    kwargs.setdefault("batch_size", 4)
    kwargs.setdefault("stream", io.StringIO())
    return run_eval(model_dir, out_dir=tmp_path / name, **kwargs)


def env_for(hub: Path) -> dict:
    """A subprocess's environment with `hub` as its offline hub cache."""
    return dict(os.environ, HF_HUB_CACHE=str(hub), HF_HUB_OFFLINE="1")


# ---------------------------------------------------------------------------------------------------
# Client libraries against `xlmr-np serve` (test_clients.py, test_clients_frameworks.py)

KEY = "client-key-3f9a1c"
QUERY = "capital of France"
DOCS = [
    "Paris is the capital of France.",
    "Bananas are yellow.",
    "Berlin is the capital of Germany.",
    "Der Eiffelturm steht in Paris.",
]
# The same code scores in both processes, and the scores have come out identical; but the server may batch
# a request's sequences with another request's (other shapes, other BLAS blocking), so allow float32
# rounding: 1e-6 on a sigmoid in (0, 1), far below the gaps between these documents' scores.
ATOL = 1e-6


def check_ranking(name: str, indices, scores, want: list[dict]) -> None:
    """A client's ranking (indices best first) and scores against the Python API's results."""
    assert list(indices) == [r["index"] for r in want], f"{name}: order {list(indices)}"
    assert_close(f"{name} relevance_score", scores, [r["relevance_score"] for r in want], atol=ATOL)
