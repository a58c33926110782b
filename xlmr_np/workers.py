"""Every core busy: a batch's pairs split among worker threads, each running the engine with one BLAS thread.

Pairs are independent (each attends only to its own tokens) and the weights are read-only, so a batch can be
cut into groups of pairs, each group run through xlmr_np.engine on its own thread, with no copy of the weights
and no change in any pair's numbers: every product runs on whole GEMM_ROWS blocks (see engine.GEMM_ROWS) and
every other op is elementwise or reduces along one row, so a pair's logits are the same bits whichever group
it lands in, whoever its neighbours are, and however many workers there are (tests/test_workers.py checks it
at atol=0). numpy's ufuncs and BLAS release the GIL, so the threads run in parallel.

Why threads of one-thread BLAS rather than one thread of all-core BLAS: BLAS spreads each product over the
cores but synchronises its threads at every call (hundreds per layer, most of them small: attention's per-pair
products), and the elementwise work between the products (GELU, softmax, layer norm) runs on the calling
thread alone. Workers keep every core busy through all of it.

BLAS's thread count is one setting for the whole process (OpenBLAS, MKL), so every engine call sets it to 1
for its duration (threadpoolctl) and restores it after, under a process-wide lock: multithreaded BLAS rounds
some products differently from single-threaded BLAS, so the engine's numbers are defined with one BLAS thread,
and all parallelism is ours. Small jobs (one pair, or too few tokens to give each worker MIN_TOKENS) are not
split by pairs: they run on the calling thread with their dense products split by columns (where the BLAS
gives the same bits that way: engine.column_split_is_exact) and their attention by blocks of heads or of
query rows among the workers (engine.intra_op).

threadpoolctl is optional: without it the default is one worker (the calling thread, BLAS on every core), as
before; asking for more workers then raises ConfigError.

Symbols: B pairs, T padded tokens per pair, n one pair's tokens, L labels.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np

from . import engine
from .config import XLMRobertaConfig
from .errors import ConfigError

# A split batch gives each worker at least this many tokens: below that, each worker would stream all of a
# layer's weights (9 MB per feed-forward product) for a few rows of work, where the column split of the
# small-job path shares them (one 84-token pair, feed-forward up product on two cores: 2.6 ms split by rows,
# 2.0 ms by columns).
MIN_TOKENS = 256

# Each engine call gets at most RUN_TOKENS tokens (a longer pair alone): a worker cuts its pairs, in order,
# into runs, so the activations it holds (about five [N, D] float32 arrays at a layer's peak: 31 MB at 2048
# tokens) do not grow with the batch size; products of 2048 rows already run at BLAS's full speed. Reranking
# 100 documents at batch 32 on two workers (bench.coldstart), peak RSS went from 586 MB (runs unbounded) to
# 460 MB, at the same speed within the noise.
RUN_TOKENS = 2048

_BLAS_LOCK = threading.Lock()  # held while BLAS is limited to one thread for a split batch
_controller = None  # threadpoolctl.ThreadpoolController, found once (it scans the loaded libraries)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def blas_controller():
    """threadpoolctl's controller of the loaded BLAS libraries, or None when threadpoolctl is not installed."""
    global _controller
    if _controller is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            return None
        _controller = ThreadpoolController()
    return _controller


def blas_threads() -> int | None:
    """The BLAS thread count in force now (the largest over the loaded BLAS libraries), None if unknown."""
    controller = blas_controller()
    if controller is None:
        return None
    counts = [lib.num_threads for lib in controller.select(user_api="blas").lib_controllers]
    return max(counts) if counts else None


def default_workers() -> int:
    """One worker per core BLAS may use now (so OPENBLAS_NUM_THREADS=1, or an outer threadpool_limits such as
    `eval --processes` gives each process, also means one worker), at most the cores available; 1 without
    threadpoolctl."""
    threads = blas_threads()
    return 1 if threads is None else max(1, min(threads, available_cores()))


def check_workers(workers) -> int:
    """A worker count as given by a user: None -> default_workers(); otherwise a positive int."""
    if workers is None:
        return default_workers()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive int (or None: one per core), got {workers!r}")
    if workers > 1 and blas_controller() is None:
        raise ConfigError(
            f"workers={workers} needs threadpoolctl to give each worker one BLAS thread: "
            "pip install threadpoolctl (or use workers=1)"
        )
    return workers


def pair_costs(lengths, config: XLMRobertaConfig) -> np.ndarray:
    """Relative cost of each pair from its token count n: the dense products grow with n, attention with n^2.

    Per layer and token: 2 (4 D^2 + 2 D F) FLOPs of dense products; per layer and pair: 4 n^2 D FLOPs of
    attention products plus about 8 passes over H n^2 scores (scale, max, subtract, exp, sum, divide), a pass
    counted like a FLOP of a product. [B] -> [B] float64.
    """
    n = np.asarray(lengths, dtype=np.float64)
    D, F, H = config.hidden_size, config.intermediate_size, config.num_attention_heads
    return n * 2 * (4 * D * D + 2 * D * F) + n * n * (4 * D + 8 * H)


def partition(costs, groups: int) -> list[list[int]]:
    """Indices of costs in `groups` groups of about equal total: longest-processing-time first (each pair, the
    most costly first, to the group with the least so far; ties to the lowest group). Deterministic.

    >>> partition([5, 1, 4, 2], 2)   # 5 -> group 0, 4 -> 1, 2 -> 1, 1 -> 0: totals 6 and 6
    [[0, 1], [2, 3]]
    """
    totals = [0.0] * groups
    members: list[list[int]] = [[] for _ in range(groups)]
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        g = min(range(groups), key=lambda g: (totals[g], g))
        totals[g] += float(costs[i])
        members[g].append(i)
    return [sorted(m) for m in members if m]


def group_count(lengths, workers: int) -> int:
    """How many groups to split a batch into: one per worker, but no more than pairs, and each with at least
    MIN_TOKENS tokens. 1 means: run on the calling thread."""
    return max(1, min(workers, len(lengths), int(np.sum(lengths)) // MIN_TOKENS))


def runs(lengths, pairs: list[int]) -> list[list[int]]:
    """pairs cut, in order, into runs of at most RUN_TOKENS tokens (a pair longer than that alone).

    >>> runs([1500, 1000, 500, 3000], [0, 1, 2, 3])   # with RUN_TOKENS = 2048
    [[0], [1, 2], [3]]
    """
    out: list[list[int]] = []
    total = 0
    for i in pairs:
        if out and total + int(lengths[i]) <= RUN_TOKENS:
            out[-1].append(i)
            total += int(lengths[i])
        else:
            out.append([i])
            total = int(lengths[i])
    return out


def run_pairs(params, config: XLMRobertaConfig, packed: engine.Packed, pairs: list[int], logits) -> None:
    """engine.run on some of a batch's pairs, RUN_TOKENS at a time, writing their rows of logits [B, L]."""
    lengths = np.diff(packed.offsets)  # [B]
    for part in runs(lengths, pairs):
        logits[part] = engine.run(params, config, subset(packed, part))  # [B_run, L]


def subset(packed: engine.Packed, pairs: list[int]) -> engine.Packed:
    """The packed batch of some of a batch's pairs, in the given order."""
    starts, stops = packed.offsets[pairs], packed.offsets[np.asarray(pairs) + 1]
    rows = np.concatenate([np.arange(a, b) for a, b in zip(starts, stops)])  # [N_group]
    return engine.Packed(
        ids=packed.ids[rows],
        positions=packed.positions[rows],
        offsets=np.concatenate([[0], np.cumsum(stops - starts)]),
        mask=packed.mask[pairs],
    )


class Workers:
    """A pool of worker threads that runs the engine on a batch, split by cost among them.

        >>> pool = Workers(2)
        >>> logits = pool.forward(params, config, input_ids, attention_mask)   # as engine.forward, [B, L]

    workers: threads to use (None: default_workers()); the calling thread is one of them, so workers - 1
    threads are started, on first use. A batch with enough tokens is split by pairs; a smaller one (one pair,
    a few short ones) runs on the calling thread with its products split among the threads (engine.intra_op).
    With threadpoolctl, BLAS runs one thread inside every engine call, whatever `workers` is, so that the
    bits of a pair's logits never depend on it (BLAS on several threads rounds some products differently:
    scores x V of a 491-token pair, for one). Without threadpoolctl, workers is 1 and BLAS is left as it is.
    """

    def __init__(self, workers: int | None = None):
        self.workers = check_workers(workers)
        self._pool: ThreadPoolExecutor | None = None

    @property
    def threads(self) -> int:  # engine.intra_op's interface
        return self.workers

    def map(self, tasks) -> None:
        """Run callables on the pool's threads, the first on the calling thread; return when all are done,
        re-raising the first error (engine.intra_op's interface)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers - 1, thread_name_prefix="xlmr-np-worker")
        futures = [self._pool.submit(task) for task in tasks[1:]]
        try:
            tasks[0]()
        finally:  # every task finishes before the caller moves on (or BLAS gets its threads back), even on error
            wait(futures)
        for f in futures:
            f.result()  # re-raises a worker's error

    def forward(self, params, config: XLMRobertaConfig, input_ids, attention_mask) -> np.ndarray:
        """engine.forward's logits [B, L] for a padded batch [B, T], computed by up to `workers` threads."""
        packed = engine.pack(config, input_ids, attention_mask)  # checks the batch here, on the calling thread
        lengths = np.diff(packed.offsets)  # [B]
        logits = np.empty((len(lengths), config.num_labels), dtype=params["classifier.out_proj.weight"].dtype)
        every = list(range(len(lengths)))
        controller = blas_controller()
        if controller is None:  # no say over BLAS's threads: the calling thread alone (workers is 1)
            run_pairs(params, config, packed, every, logits)
            return logits
        groups = group_count(lengths, self.workers)
        with _BLAS_LOCK, controller.limit(limits=1, user_api="blas"):
            if groups == 1:
                token = engine.intra_op.set(self if self.workers > 1 else None)
                try:
                    run_pairs(params, config, packed, every, logits)
                finally:
                    engine.intra_op.reset(token)
                return logits
            parts = partition(pair_costs(lengths, config), groups)
            self.map([lambda pairs=pairs: run_pairs(params, config, packed, pairs, logits) for pairs in parts])
        return logits

    def close(self) -> None:
        """Stop the worker threads (a later forward starts them again)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
