"""Batching across requests: one engine thread packs the queued requests' sequences into forward passes of
at most `max_batch_tokens` padded tokens, oldest request first.

Every pair only ever attends to its own tokens, and the engine's logits do not depend on what else is in
the batch (bit for bit; tests/test_parity.py checks it at atol=0), so a request gets exactly the scores it
would get alone. The thread runs numpy, whose BLAS uses every core and releases the GIL, so the event loop
keeps answering (health checks, new requests, 429s) while a batch runs.

A job's sequences are taken longest first, so a batch mixes similar lengths; a cancelled job (client gone,
deadline passed) is dropped from the queue before its next sequence is taken.

Before and after every forward pass the batcher asks `check()` whether the model can still be trusted (the
weights file it maps may have been overwritten in place); if not, that batch's logits are discarded and
every job fails with ModelChanged: no score computed from changed bytes is ever answered.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..tokenizer import EncodedPair


class ModelChanged(RuntimeError):
    """The model's weights changed under the engine; the message says how."""


@dataclass(eq=False)
class Job:
    """One request's sequences on their way through the engine."""

    sequences: list[EncodedPair]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    order: list[int] = field(init=False)  # sequence indices, longest first
    logits: np.ndarray = field(init=False)  # [S] float64 (exact for float32 logits), filled batch by batch
    taken: int = 0  # sequences handed to the engine
    scored: int = 0  # sequences whose logits are in
    cancelled: bool = False
    queued_at: float = field(default_factory=time.perf_counter)
    started_at: float | None = None  # first batch holding one of its sequences
    finished_at: float | None = None

    def __post_init__(self):
        self.order = sorted(range(len(self.sequences)), key=lambda i: -len(self.sequences[i].ids))
        self.logits = np.empty(len(self.sequences), dtype=np.float64)

    @property
    def queue_seconds(self) -> float:
        return (self.started_at or self.finished_at or time.perf_counter()) - self.queued_at

    @property
    def inference_seconds(self) -> float:
        return (self.finished_at or time.perf_counter()) - (self.started_at or self.queued_at)


def next_batch(jobs: deque[Job], max_batch_tokens: int) -> list[tuple[Job, int]]:
    """Take sequences from the oldest jobs while the padded batch (count x longest) fits the budget; the first
    sequence is always taken, so one longer than the budget still runs alone. Cancelled jobs are dropped.

    Example: budget 1000, job A with lengths [300, 200], job B with [400] -> A's 300 and 200 (600 padded),
    then B's 400 would make 3 x 400 = 1200: the batch is [(A, 0), (A, 1)].
    """
    batch: list[tuple[Job, int]] = []
    longest = 0
    while jobs:
        job = jobs[0]
        if job.cancelled or job.taken == len(job.order):
            jobs.popleft()
            continue
        index = job.order[job.taken]
        length = max(longest, len(job.sequences[index].ids))
        if batch and (len(batch) + 1) * length > max_batch_tokens:
            break
        batch.append((job, index))
        longest = length
        job.taken += 1
    return batch


class Batcher:
    """The queue and the engine thread. `submit` is called from the event loop; `logits_of` is the model's
    (Reranker.logits_of): sequences -> logits [S, 1]; `check()` returns why the model can no longer be
    trusted, or None."""

    def __init__(self, logits_of, max_batch_tokens: int, metrics=None, check=None):
        self.logits_of = logits_of
        self.max_batch_tokens = max_batch_tokens
        self.metrics = metrics
        self.check = check or (lambda: None)
        self._jobs: deque[Job] = deque()
        self._ready = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="xlmr-np-engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish the batch in progress, then end the thread (queued jobs are the caller's to finish first)."""
        with self._ready:
            self._stopping = True
            self._ready.notify()
        self._thread.join()

    def submit(self, sequences: list[EncodedPair]) -> Job:
        loop = asyncio.get_running_loop()
        job = Job(sequences, loop, loop.create_future())
        with self._ready:
            self._jobs.append(job)
            self._ready.notify()
        self._observe_queue()
        return job

    def cancel(self, job: Job) -> None:
        """Drop what is still queued of a job; a batch already running finishes."""
        with self._ready:
            job.cancelled = True
        self._observe_queue()

    def queued_sequences(self) -> int:
        with self._ready:
            return sum(len(j.order) - j.taken for j in self._jobs if not j.cancelled)

    def _trust(self) -> None:
        failure = self.check()
        if failure is not None:
            raise ModelChanged(failure)

    def _observe_queue(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(self.queued_sequences())

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._stopping and not any(not j.cancelled for j in self._jobs):
                    self._ready.wait()
                if self._stopping:
                    return
                batch = next_batch(self._jobs, self.max_batch_tokens)
            self._observe_queue()
            if batch:
                self._score(batch)

    def _score(self, batch: list[tuple[Job, int]]) -> None:
        started = time.perf_counter()
        for job, _ in batch:
            job.started_at = job.started_at or started
        sequences = [job.sequences[i] for job, i in batch]
        try:
            self._trust()
            logits = self.logits_of(sequences, batch_size=len(sequences), progress=False)[:, 0]  # [B]
            self._trust()  # bytes read during the pass may already be another file's
        except ModelChanged as e:  # nothing more can be scored: every queued job fails
            with self._ready:
                jobs = {job for job, _ in batch} | set(self._jobs)
                self._jobs.clear()
            _fail_all(jobs, e)
            return
        except Exception as e:  # non-finite logits (broken weights) or a bug: every job in the batch fails
            _fail_all({job for job, _ in batch}, e)
            return
        if self.metrics is not None:
            self.metrics.batch_tokens.observe(len(sequences) * max(len(s.ids) for s in sequences))
            self.metrics.batch_seconds.observe(time.perf_counter() - started)
        finished = time.perf_counter()
        for (job, index), logit in zip(batch, logits):
            job.logits[index] = logit
            job.scored += 1
            if job.scored == len(job.sequences):
                job.finished_at = finished
                job.loop.call_soon_threadsafe(_succeed, job.future, job.logits)


def _fail_all(jobs, error: BaseException) -> None:
    for job in jobs:
        job.cancelled = True
        job.loop.call_soon_threadsafe(_fail, job.future, error)


def _succeed(future: asyncio.Future, value) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future, error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
