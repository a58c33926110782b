"""Golden files: the probe set with float64 reference logits and token ids, as portable JSON.

Another engine's CI can assert against one with nothing but a JSON parser (see docs/verify.md for the
format); `xlmr-np verify --golden FILE` checks a local model against one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .. import __version__
from ..reranker import Reranker, sigmoid64
from .probes import Probe, ProbeSet, VerifyError, probes_from_dicts
from .reference import logits_by_length, model_dir_of

GOLDEN_FORMAT = "xlmr-np-verify-golden"
GOLDEN_FORMAT_VERSION = 1
TEMPLATE = "<s> query </s></s> document </s>"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def hub_revision(model_dir) -> str | None:
    """The commit of a hub-cache snapshot directory (.../snapshots/<commit>), else None."""
    parts = Path(model_dir).parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts[:-1] else None


def hub_repo_id(model_dir) -> str | None:
    """The repo id of a hub-cache snapshot directory (.../models--BAAI--bge-reranker-base/snapshots/<commit>
    -> "BAAI/bge-reranker-base"), else None."""
    parts = Path(model_dir).parts
    i = parts.index("snapshots") if "snapshots" in parts[:-1] else 0
    return (
        parts[i - 1].removeprefix("models--").replace("--", "/") if i and parts[i - 1].startswith("models--") else None
    )


def model_identity(reranker: Reranker, name: str | None = None) -> dict:
    """Name, hub revision and the sha256 of the weights and tokenizer files."""
    directory = model_dir_of(reranker)
    files = sorted(directory.glob("*.safetensors")) + [directory / "tokenizer.json", directory / "config.json"]
    return {
        "name": name or hub_repo_id(directory) or str(directory),
        "revision": hub_revision(directory),
        "sha256": {f.name: sha256_of(f) for f in files if f.is_file()},
    }


def golden_dict(reranker: Reranker, probe_set: ProbeSet, model_name: str | None = None) -> dict:
    """The golden file's content: every probe with its texts, token ids and float64 logits."""
    if reranker.dtype != np.float64:
        raise VerifyError("a golden file holds float64 logits: load the reference with dtype=np.float64")
    pairs = [(p.query, d) for p in probe_set.probes for d in p.documents]
    encoded = reranker.tokenizer.encode(pairs)
    logits = logits_by_length(reranker, encoded)  # [N] float64
    probes, k = [], 0
    for p in probe_set.probes:
        documents = []
        for j, text in enumerate(p.documents):
            e = encoded[k]
            documents.append(
                {
                    "text": text,
                    "tokens": p.tokens[j] if p.tokens else None,
                    "input_ids": e.ids,
                    "truncated": e.truncated,
                    "logit": float(logits[k]),
                    "sigmoid": float(sigmoid64(logits[k])),
                }
            )
            k += 1
        probes.append(
            {
                "id": p.id,
                "category": p.category,
                "meaning": p.meaning,
                "query": p.query,
                "ties": [list(g) for g in p.ties],
                "shuffle_of": p.shuffle_of,
                "order": list(p.order) if p.order else None,
                "documents": documents,
            }
        )
    return {
        "format": GOLDEN_FORMAT,
        "format_version": GOLDEN_FORMAT_VERSION,
        "created_by": f"xlmr-np {__version__}",
        "probe_set": {
            "name": probe_set.name,
            "version": probe_set.version,
            "sha256": probe_set.sha256,
            "provenance": probe_set.provenance,
        },
        "model": model_identity(reranker, model_name),
        "scoring": {
            "dtype": "float64",
            "max_length": reranker.max_length,
            "truncation": reranker.tokenizer.truncation,
            "template": TEMPLATE,
            "logit": "the classifier's single output (label 0), before any sigmoid",
            "sigmoid": "1 / (1 + exp(-logit)), computed in float64",
        },
        "probes": probes,
    }


def write_golden(path, reranker: Reranker, probe_set: ProbeSet, model_name: str | None = None) -> dict:
    data = golden_dict(reranker, probe_set, model_name)
    Path(path).write_text(json.dumps(data, ensure_ascii=False, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return data


def read_golden(path) -> tuple[dict, tuple[Probe, ...]]:
    """A golden file's content and its probes; a clear error for anything that is not one."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise VerifyError(f"{path}: cannot read a golden file ({e})") from None
    if not isinstance(data, dict) or data.get("format") != GOLDEN_FORMAT:
        raise VerifyError(f'{path}: not an xlmr-np golden file (no "format": "{GOLDEN_FORMAT}")')
    if data.get("format_version") != GOLDEN_FORMAT_VERSION:
        raise VerifyError(
            f"{path}: golden format version {data.get('format_version')!r}; this xlmr-np reads "
            f"version {GOLDEN_FORMAT_VERSION}"
        )
    try:
        return data, probes_from_dicts(data["probes"])
    except (KeyError, TypeError) as e:
        raise VerifyError(f"{path}: malformed probe entry ({e!r})") from None
