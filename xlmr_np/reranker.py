"""The public API: load a cross-encoder directory and score (query, document) pairs.

>>> from xlmr_np import Reranker
>>> reranker = Reranker.from_pretrained("path/to/bge-reranker-base")
>>> reranker.compute_score([("capital of France", "Paris is the capital of France."),
...                         ("capital of France", "Bananas are yellow.")])
[7.6, -9.2]   # raw logits; normalize=True gives sigmoid scores in (0, 1)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from . import engine, model
from .arrays import params_ops, to_namespace, to_numpy
from .config import XLMRobertaConfig
from .device import DEFAULT_DEVICE, device_namespace
from .errors import ConfigError, InputError
from .family import resolve_max_length
from .hub import resolve_model_dir
from .ranking import DocumentScores, check_documents, check_top_n, progress_bar
from .tokenizer import DEFAULT_WINDOW_OVERLAP, Batch, EncodedPair, EncodeOptions, PairTokenizer, check_pairs
from .tracing import Trace
from .weights import FileStamp, load_params, weight_files
from .workers import Workers, check_workers


@dataclass
class ModelOutput:
    """What Reranker.forward returns; tuples are indexed like transformers' outputs."""

    logits: np.ndarray  # [B, L]
    hidden_states: tuple[np.ndarray, ...] | None = None  # (L_layers + 1) x [B, T, D]: embeddings, then each layer
    attentions: tuple[np.ndarray, ...] | None = None  # L_layers x [B, H, T, T], zero at padding
    trace: dict[str, np.ndarray] | None = None  # every recorded intermediate by module name


def sigmoid64(logits) -> np.ndarray:
    """The logistic function in float64, so scores near 0 or 1 stay distinct instead of tying.

    Written as exp(-|x|) forms so that no intermediate overflows for any finite logit.
    """
    x = np.asarray(logits, dtype=np.float64)
    z = np.exp(-np.abs(x))  # in (0, 1]
    return np.where(x >= 0, 1.0 / (1.0 + z), z / (1.0 + z))


def document_scores(n_documents: int, encoded, owners, sequence_logits, raw_scores: bool = False) -> DocumentScores:
    """Per-document scores from per-sequence logits [S]: a document's logit is its best window's."""
    logits = np.full(n_documents, -np.inf)  # [N]
    np.maximum.at(logits, owners, np.asarray(sequence_logits, dtype=np.float64))
    truncated = [False] * n_documents
    for owner, e in zip(owners, encoded):
        truncated[owner] |= e.truncated
    return DocumentScores(
        logits=logits,
        relevance=logits.copy() if raw_scores else sigmoid64(logits),
        truncated=truncated,
        windows=np.bincount(owners, minlength=n_documents).tolist(),
        total_tokens=sum(len(e.ids) for e in encoded),
    )


class Reranker:
    """A cross-encoder reranker: the numpy engine scores, the reference forward pass explains, tokenizers
    tokenizes. With params on another array namespace (device "cuda": CuPy) the engine runs there, on whole
    batches, and the results come back as numpy arrays."""

    def __init__(
        self,
        params: dict,
        config: XLMRobertaConfig,
        tokenizer: PairTokenizer,
        dtype=np.float32,
        model_dir: str | None = None,
        workers: int | None = None,
        device: str = DEFAULT_DEVICE,
    ):
        self.params = params
        self.config = config
        self.tokenizer = tokenizer
        self.dtype = np.dtype(dtype)
        self.model_dir = model_dir
        self.device = device  # where params live (xlmr_np.device); the engine follows the params
        self.pool = Workers(workers)  # scoring threads (xlmr_np.workers) on numpy params; None: one per core
        self.mapped_files: list[FileStamp] = []  # the weights files the params map (from_pretrained, mmap=True)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        max_length: int | None = None,
        dtype=np.float32,
        truncation: str = "longest_first",
        revision: str | None = None,
        cache_dir=None,
        local_files_only: bool = False,
        token=None,
        mmap: bool = True,
        workers: int | None = None,
        device: str = DEFAULT_DEVICE,
    ) -> Reranker:
        """Load config.json, model.safetensors (or its sharded index) and tokenizer.json from a directory.

        path: a local directory, or a hub repo id such as "BAAI/bge-reranker-base", fetched (only the files
        above) through huggingface-hub's cache with revision, cache_dir, local_files_only and token
        (HF_HUB_OFFLINE=1 is honoured); see xlmr_np.hub.

        max_length: tokens per pair including the 4 special tokens; None (default): the model's own limit
        (xlmr_np.family.model_max_length: 512 for bge-reranker-base, 8192 for bge-reranker-v2-m3); at most
        the position table. dtype: np.float32 (default) or np.float64 for a reference run.
        truncation: "longest_first" (as the published scores) or "only_second" (keeps the query whole).
        mmap: map the weights file (default: loads in milliseconds, pages shared between processes). A file
        overwritten in place under a mapping crashes the process with SIGBUS, so replace a model with a new
        file and a rename (as the hub cache does); mmap=False copies the weights into memory instead.
        workers: threads each batch is split among (xlmr_np.workers); None: one per core; 1: the calling
        thread only. The scores are the same bits for any count. CPU only.
        device: "cpu" (default), or "cuda": the weights are copied once to the GPU and every batch is scored
        there by CuPy (pip install 'xlmr-np[gpu]'); docs/gpu.md says what its numbers promise.
        """
        model_dir = resolve_model_dir(
            path, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token
        )
        check_workers(workers)  # before the weights are read
        xp, where = device_namespace(device)  # CuPy and a GPU, before the weights are read
        if device != "cpu" and workers not in (None, 1):
            raise ConfigError(
                f"workers={workers} splits batches among CPU threads; on device {device!r} a batch runs whole"
            )
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be np.float32 or np.float64, got {dtype}")
        config = XLMRobertaConfig.from_file(model_dir / "config.json")
        max_length = resolve_max_length(model_dir, config, max_length)
        tokenizer = PairTokenizer.from_file(
            model_dir / "tokenizer.json", max_length=max_length, truncation=truncation, pad_token_id=config.pad_token_id
        )
        on_cpu = device == "cpu"
        stamps = [FileStamp.of(f) for f in weight_files(model_dir)] if mmap and on_cpu else []  # see changed
        params = load_params(model_dir, config, dtype, mmap=mmap)
        if not on_cpu:
            params = to_namespace(params, xp, where)  # copied: the mapping is closed with the host params
        reranker = cls(params, config, tokenizer, dtype=dtype, model_dir=str(model_dir), workers=workers, device=device)
        reranker.mapped_files = stamps
        return reranker

    def weights_changed(self) -> str | None:
        """How a mapped weights file was changed in place since loading, or None. Scores computed after such
        a change come from bytes that are no longer the model that was loaded (a long-running process, such
        as the server, checks this after each batch); mmap=False copies the weights and never needs to."""
        return next((change for change in (s.change() for s in self.mapped_files) if change), None)

    @property
    def max_length(self) -> int:
        return self.tokenizer.max_length

    def require_single_logit(self) -> None:
        """Raise ConfigError unless the model has one output logit, the relevance score reranking reads."""
        if self.config.num_labels != 1:
            raise ConfigError(f"reranking needs one relevance logit; this model has {self.config.num_labels} labels")

    def tokenize(self, pairs) -> Batch:
        """(query, document) pairs -> a padded Batch (input_ids, attention_mask, truncated)."""
        return self.tokenizer(pairs)

    def forward(
        self, input_ids, attention_mask, output_hidden_states: bool = False, output_attentions: bool = False, trace=None
    ) -> ModelOutput:
        """Run the model on a token batch; optionally return hidden states, attentions, or a trace.

        Logits and hidden states come from the engine (xlmr_np.engine), which scores everything else too.
        Attentions and traces are the reference forward pass's (xlmr_np.model), which records every
        intermediate; when either is asked for, the whole output is the reference's.
        trace: None, True (record every intermediate), or names/patterns to record
        (e.g. ["encoder.layer.3.output", "encoder.layer.*.attention.self.probs"]).
        """
        layers = range(self.config.num_hidden_layers)
        if not (output_attentions or trace):
            if not output_hidden_states:  # the scoring path, bit for bit
                return ModelOutput(logits=self.batch_logits(input_ids, attention_mask))
            states: list[np.ndarray] = []
            logits = engine.forward(self.params, self.config, input_ids, attention_mask, states)
            return ModelOutput(logits=to_numpy(logits), hidden_states=tuple(to_numpy(s) for s in states))
        names = None if trace is True else [trace] if isinstance(trace, str) else list(trace or [])
        if names is not None and output_hidden_states:
            names += ["embeddings"] + [f"encoder.layer.{i}.output" for i in layers]
        if names is not None and output_attentions:
            names += [f"encoder.layer.{i}.attention.self.probs" for i in layers]
        recorder = Trace(names)  # keeps numpy copies
        logits = to_numpy(model.forward(self.params, self.config, input_ids, attention_mask, recorder))
        real = np.asarray(attention_mask).astype(bool)  # [B, T]
        out = ModelOutput(logits=logits, trace=dict(recorder) if trace else None)
        if output_hidden_states:  # zeros at padding, as the engine gives them
            out.hidden_states = tuple(
                np.where(real[:, :, None], recorder[name], 0)
                for name in ["embeddings"] + [f"encoder.layer.{i}.output" for i in layers]
            )
        if output_attentions:  # zero where either token is padding
            pairs = real[:, None, :, None] & real[:, None, None, :]  # [B, 1, T, T]
            out.attentions = tuple(
                np.where(pairs, recorder[f"encoder.layer.{i}.attention.self.probs"], 0) for i in layers
            )
        return out

    def batch_logits(self, input_ids, attention_mask) -> np.ndarray:
        """The engine's logits [B, L] of one padded batch [B, T], as a numpy array: split among the worker
        threads on numpy params (xlmr_np.workers), whole on another namespace's."""
        if not params_ops(self.params).standard:
            return self.pool.forward(self.params, self.config, input_ids, attention_mask)
        return to_numpy(engine.forward(self.params, self.config, input_ids, attention_mask))

    def predict_logits(
        self, pairs, batch_size: int = 32, progress: bool | None = None
    ) -> tuple[np.ndarray, list[bool]]:
        """Logits [B, L] in input order, and per pair whether it was truncated.

        progress: a progress bar on stderr; None shows it only on a terminal for large jobs.
        """
        encoded = self.tokenizer.encode(pairs)
        return self.logits_of(encoded, batch_size, progress), [e.truncated for e in encoded]

    def logits_of(self, encoded, batch_size: int = 32, progress: bool | None = None) -> np.ndarray:
        """Logits [B, L] of tokenized sequences (tokenizer.encode or encode_windows), in their order.

        Sequences are batched longest first (less padding and similar lengths per batch); the scores do
        not depend on it, since every pair only ever attends to its own tokens.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive int, got {batch_size!r}")
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i].ids))
        logits = np.empty((len(encoded), self.config.num_labels), dtype=self.dtype)  # [B, L]
        with progress_bar(len(encoded), progress) as bar:
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                batch = self.tokenizer.pad([encoded[i] for i in chunk])
                logits[chunk] = self.batch_logits(batch.input_ids, batch.attention_mask)
                bar.update(len(chunk))
        if not np.isfinite(logits).all():
            bad = np.flatnonzero(~np.isfinite(logits).all(axis=1)).tolist()
            raise FloatingPointError(f"non-finite logits for pairs {bad[:10]}: the weights are broken")
        return logits

    def score_documents(
        self,
        query: str,
        documents,
        batch_size: int = 32,
        raw_scores: bool = False,
        windows: bool = False,
        window_overlap: int = DEFAULT_WINDOW_OVERLAP,
        progress: bool | None = None,
        options: EncodeOptions | None = None,
    ) -> DocumentScores:
        """Score one query against documents (input order); the step under rerank, for callers that also
        want token counts.

        windows=False truncates long pairs (reported per document); windows=True splits each document into
        overlapping windows that fit beside the query (see PairTokenizer.encode_windows) and scores it by
        its best window. options: every long-document choice at once (EncodeOptions: direction, a
        per-document token limit, windows), in place of windows and window_overlap.
        """
        self.require_single_logit()
        if options is None:
            options = self.call_options(windows=windows, window_overlap=window_overlap)
        encoded, owners = self.encode_documents(query, documents, options)
        sequence_logits = self.logits_of(encoded, batch_size, progress)[:, 0]  # [S]
        return document_scores(len(documents), encoded, owners, sequence_logits, raw_scores)

    def call_options(self, **changes) -> EncodeOptions:
        """This model's options (its truncation strategy) with `changes`: EncodeOptions for one call."""
        return replace(self.tokenizer.options, **changes)

    def encode_documents(
        self, query: str, documents, options: EncodeOptions | None = None, max_tokens: int | None = None
    ) -> tuple[list[EncodedPair], list[int]]:
        """The sequences score_documents scores, and the document each belongs to (PairTokenizer.sequences:
        options default to the model's own; max_tokens bounds their total, TooManyTokens beyond)."""
        pairs = [(query, document) for document in check_documents(query, documents)]
        return self.tokenizer.sequences(pairs, options, max_tokens)

    def rerank(
        self,
        query: str,
        documents,
        top_n: int | None = None,
        return_documents: bool = True,
        raw_scores: bool = False,
        batch_size: int = 32,
        windows: bool = False,
        window_overlap: int = DEFAULT_WINDOW_OVERLAP,
        progress: bool | None = None,
    ) -> list[dict]:
        """Rank documents for a query, best first, like the hosted /v1/rerank APIs and CrossEncoder.rank.

            >>> reranker.rerank("capital of France", ["Bananas are yellow.", "Paris is the capital of France."])
            [{'index': 1, 'relevance_score': <0..1>, 'truncated': False, 'windows': 1,
              'document': 'Paris is the capital of France.'},
             {'index': 0, 'relevance_score': <lower>, 'truncated': False, 'windows': 1,
              'document': 'Bananas are yellow.'}]

        relevance_score is the float64 sigmoid of the logit, in (0, 1); raw_scores=True gives the logit
        (what compute_score returns). top_n keeps the best n. Long documents: see score_documents.
        """
        check_top_n(top_n)
        scores = self.score_documents(
            query,
            documents,
            batch_size=batch_size,
            raw_scores=raw_scores,
            windows=windows,
            window_overlap=window_overlap,
            progress=progress,
        )
        return scores.ranked(documents, top_n=top_n, return_documents=return_documents)

    def compute_score(self, pairs, batch_size: int = 32, normalize: bool = False):
        """Relevance scores like FlagEmbedding's FlagReranker.compute_score.

        pairs: a list of (query, document) string pairs, or one pair. Returns a list of floats in input
        order; a single pair (bare, or the only one in the list) gives a float, as FlagEmbedding did.
        normalize=True maps logits to (0, 1) with a float64 sigmoid. For a multi-label classifier each
        score is the list of its L logits (normalize=True: softmax probabilities in float64).
        """
        if (
            isinstance(pairs, (tuple, list))
            and len(pairs) == 2
            and isinstance(pairs[0], str)
            and isinstance(pairs[1], str)
        ):
            pairs = [pairs]
        pairs = check_pairs(pairs)
        logits, _ = self.predict_logits(pairs, batch_size=batch_size)
        logits = logits.astype(np.float64)
        if self.config.num_labels == 1:
            scores = (sigmoid64(logits[:, 0]) if normalize else logits[:, 0]).tolist()
        else:
            if normalize:
                e = np.exp(logits - logits.max(axis=1, keepdims=True))
                logits = e / e.sum(axis=1, keepdims=True)
            scores = logits.tolist()
        return scores[0] if len(scores) == 1 else scores
