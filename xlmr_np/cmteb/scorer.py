"""The model side of an evaluation: its identity for the score cache, and scoring batches in one or more processes."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, XlmrNpError

if TYPE_CHECKING:
    from ..reranker import Reranker

Pairs = list[tuple[str, str]]


def model_fingerprint(model_dir: Path) -> str:
    """sha256 of the files that decide the scores (config, tokenizer, weights), for the cache key."""
    weights = sorted(model_dir.glob("*.safetensors"))
    needed = [model_dir / "config.json", model_dir / "tokenizer.json"]
    if not weights or not all(p.is_file() for p in needed):
        raise ConfigError(
            f"{model_dir}: not a model directory (expected config.json, tokenizer.json and model.safetensors)"
        )
    h = hashlib.sha256()
    for path in needed + sorted(model_dir.glob("*.safetensors.index.json")) + weights:
        h.update(path.name.encode("utf-8") + b"\0")
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


def load_reranker(model_dir: Path, settings: dict) -> Reranker:
    """The float32 Reranker of a resolved model directory on the settings' device, refused unless it has one
    relevance logit."""
    from ..device import DEFAULT_DEVICE
    from ..reranker import Reranker

    reranker = Reranker.from_pretrained(
        model_dir,
        max_length=settings["max_length"],
        truncation=settings["truncation"],
        device=settings.get("device", DEFAULT_DEVICE),
    )
    reranker.require_single_logit()
    return reranker


def score(reranker: Reranker, pairs: Pairs) -> np.ndarray:
    """float32 relevance logits of one batch of pairs, in order."""
    logits, _ = reranker.predict_logits(pairs, batch_size=len(pairs))
    return logits[:, 0].astype(np.float32)  # [B]


# A worker process's model, or the error that loading it raised (re-raised by its first batch).
_worker: Reranker | Exception | None = None


def _init_worker(model_dir: Path, settings: dict, threads: int) -> None:
    """Load the model in a worker and give it its share of the cores, so N workers do not oversubscribe.

    A failure is kept, not raised: multiprocessing would respawn a worker whose initializer raises, forever.
    """
    global _worker
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    try:
        _worker = load_reranker(model_dir, settings)
    except Exception as e:  # a broken model: ConfigError, CheckpointError, TokenizerError, OSError...
        _worker = e


def _score_in_worker(item: tuple[int, Pairs]) -> tuple[int, np.ndarray]:
    if isinstance(_worker, Exception):
        raise _worker
    assert _worker is not None, "_init_worker has not run in this process"
    b, pairs = item
    return b, score(_worker, pairs)


class Scorer:
    """Scores batches in this process (workers=1) or in worker processes; start() loads the model."""

    def __init__(self, model_dir: Path, settings: dict, workers: int = 1):
        self.model_dir = model_dir
        self.settings = settings
        self.workers = workers
        self._reranker: Reranker | None = None
        self._pool: Any = None  # multiprocessing.pool.Pool

    def start(self) -> None:
        """Load the model (or start the workers), so that loading is not counted as scoring time."""
        if self.workers == 1:
            self._reranker = load_reranker(self.model_dir, self.settings)
        else:
            self._pool = self._start_pool()

    def map(self, batches: dict[int, Pairs]) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (batch id, float32 scores) as batches finish, in no particular order (after start())."""
        if not batches:
            return
        if self._pool is not None:
            yield from self._pool.imap_unordered(_score_in_worker, batches.items())
            return
        if self._reranker is None:
            raise RuntimeError("Scorer.map before Scorer.start")
        for b, pairs in batches.items():
            yield b, score(self._reranker, pairs)

    def _start_pool(self) -> Any:
        import multiprocessing

        try:
            import threadpoolctl  # noqa: F401  (each worker limits its BLAS threads with it)
        except ImportError:
            raise XlmrNpError("--processes above 1 needs threadpoolctl: pip install 'xlmr-np[eval]'") from None
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = max(1, cores // self.workers)
        # spawn: a fresh interpreter per worker, so no BLAS thread state is inherited through fork
        context = multiprocessing.get_context("spawn")
        return context.Pool(self.workers, initializer=_init_worker, initargs=(self.model_dir, self.settings, threads))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
