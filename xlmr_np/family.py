"""The XLM-R reranker family: the models xlmr_np knows by name, and the one rule for a model's length limit.

Every model here is `XLMRobertaForSequenceClassification` with one label and the same 250,002-piece
tokenizer; they differ in depth, width and position table. Any other config of the architecture runs
too, with its own limits and no published figures: this table only adds what a config cannot say (the
published C-MTEB figures) and lets a known model be recognised by its name and checked by its shapes.

    >>> identify(config, "BAAI/bge-reranker-v2-m3").max_length        # doctest: +SKIP
    8192

The length rule (`model_max_length`): a model's own limit is its tokenizer_config.json's
`model_max_length`, capped by the position table (config.max_tokens); where the file or the field is
missing, the position table's limit. Every entry point (Python API, CLI, server, eval, verify, bench)
takes None to mean this limit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from .config import XLMRobertaConfig
from .errors import ConfigError, InputError

TOKENIZER_CONFIG = "tokenizer_config.json"
# The pair template's special tokens (<s> A </s></s> B </s>) plus one token from each text.
SHORTEST_LENGTH = 6


@dataclass(frozen=True)
class Published:
    """A published C-MTEB reranking result, in percent."""

    map: float
    mrr: float | None  # MRR@10, where it was published
    source: str  # where the figure was published


SHAPE_FIELDS = (  # config.json's fields that give a model of this architecture its shapes
    "num_hidden_layers",
    "hidden_size",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
)


@dataclass(frozen=True)
class KnownModel:
    """One model of the family, as its hub repository's config.json and tokenizer_config.json describe it."""

    repo_id: str
    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    max_length: int  # tokenizer_config.json's model_max_length
    cmteb: Mapping[str, Published] = field(default_factory=dict)  # C-MTEB task name -> published figures

    @property
    def name(self) -> str:
        """The repository's own name: "BAAI/bge-reranker-base" -> "bge-reranker-base"."""
        return self.repo_id.split("/")[-1]

    def shapes(self) -> dict[str, int]:
        """The model's shapes as config.json fields: {"num_hidden_layers": 12, "hidden_size": 768, ...}."""
        return {name: getattr(self, name) for name in SHAPE_FIELDS}

    def matches(self, config: XLMRobertaConfig) -> bool:
        """Whether a config has this model's shapes (a directory merely named after it may not)."""
        return all(getattr(config, name) == value for name, value in self.shapes().items())


_CARD = "model card (model-index), full precision"
_BCE = "BCEmbedding's reranker evaluation summary, two decimals"

KNOWN_MODELS = (
    KnownModel(
        "BAAI/bge-reranker-base",
        12,
        768,
        12,
        3072,
        514,
        512,
        {
            "T2Reranking": Published(67.27728847727172, 77.1315192743764, _CARD),
            "MMarcoReranking": Published(35.4600511272538, 34.60238095238095, _CARD),
            "CMedQAv1-reranking": Published(81.27206722525007, 84.14238095238095, _CARD),
            "CMedQAv2-reranking": Published(84.10369934291236, 86.79376984126984, _CARD),
        },
    ),
    KnownModel(
        "BAAI/bge-reranker-large",
        24,
        1024,
        16,
        4096,
        514,
        512,
        {  # the model card publishes no model-index; MRR@10 was not published
            "T2Reranking": Published(67.60, None, _BCE),
            "MMarcoReranking": Published(37.64, None, _BCE),
            "CMedQAv1-reranking": Published(82.14, None, _BCE),
            "CMedQAv2-reranking": Published(84.18, None, _BCE),
        },
    ),
    # Published on other benchmarks (BEIR, MIRACL, ...), not on C-MTEB reranking.
    KnownModel("BAAI/bge-reranker-v2-m3", 24, 1024, 16, 4096, 8194, 8192),
    KnownModel(
        "maidalun1020/bce-reranker-base_v1",
        12,
        768,
        12,
        3072,
        514,
        512,
        {
            "T2Reranking": Published(70.25, None, _BCE),
            "MMarcoReranking": Published(34.13, None, _BCE),
            "CMedQAv1-reranking": Published(79.64, None, _BCE),
            "CMedQAv2-reranking": Published(81.31, None, _BCE),
        },
    ),
)


def known_by_name(name: str) -> KnownModel | None:
    """The known model called `name`: its repo id ("BAAI/bge-reranker-base") or its own name
    ("bge-reranker-base"), in any case."""
    wanted = name.lower()
    for known in KNOWN_MODELS:
        if wanted in (known.repo_id.lower(), known.name.lower()):
            return known
    return None


def identify(config: XLMRobertaConfig, name: str | PurePath) -> KnownModel | None:
    """The known model a model argument names, if its config has that model's shapes; else None.

    name: a hub repo id ("BAAI/bge-reranker-v2-m3"), or a directory whose own name, or whose hub-cache
    folder (models--BAAI--bge-reranker-v2-m3/snapshots/<commit>), is the model's.
    bge-reranker-base and bce-reranker-base_v1 have the same shapes, so only the name tells them apart,
    and a random or fine-tuned model of the same shapes in a directory of another name is not claimed.
    """
    text = str(name)
    candidates = [text, *PurePath(text).parts]
    candidates += [part.removeprefix("models--").replace("--", "/") for part in PurePath(text).parts]
    for candidate in candidates:
        known = known_by_name(candidate)
        if known is not None and known.matches(config):
            return known
    return None


def model_max_length(model_dir: str | Path, config: XLMRobertaConfig) -> int:
    """The model's own length limit in tokens (pair template included): see the module docstring.

    transformers writes a huge sentinel (int(1e30)) as model_max_length when a tokenizer has no limit of
    its own; the position table caps it like any other value.
    """
    path = Path(model_dir) / TOKENIZER_CONFIG
    if not path.is_file():
        return config.max_tokens
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ConfigError(f"{path}: not a readable JSON file ({type(e).__name__}: {e})") from None
    value = raw.get("model_max_length") if isinstance(raw, dict) else None
    if value is None:
        return config.max_tokens
    if isinstance(value, float) and value.is_integer():  # the sentinel written as 1e+30
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < SHORTEST_LENGTH:
        raise ConfigError(f"{path}: model_max_length must be an integer of at least {SHORTEST_LENGTH}, got {value!r}")
    return min(value, config.max_tokens)


def resolve_max_length(model_dir: str | Path, config: XLMRobertaConfig, max_length: int | None) -> int:
    """The length limit in force: `max_length` as given (checked against the position table here, and
    against the pair template's minimum by the tokenizer), or the model's own (None)."""
    if max_length is None:
        return model_max_length(model_dir, config)
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length > config.max_tokens:
        raise InputError(
            f"max_length must be an int of at most {config.max_tokens}: the position table has "
            f"{config.max_position_embeddings} slots, starting at pad_token_id + 1; got {max_length!r}",
            where="max_length",
        )
    return max_length
