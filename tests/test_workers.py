"""Worker threads (xlmr_np.workers): a pair's logits are the same bits whatever worker it lands on, however
many workers there are, and whoever its neighbours are; costs, partition and the small-job rule; errors."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import config, random_params

from xlmr_np import Reranker, engine, workers
from xlmr_np.errors import ConfigError
from xlmr_np.testing import SAMPLE_PAIRS, assert_close

threadpoolctl = pytest.importorskip("threadpoolctl")

# Big enough that the products are multithreaded BLAS calls when run on the calling thread (OpenBLAS runs
# anything under 4 x 65536 multiply-adds on one thread), odd enough to catch a transposed or mis-sliced row.
CONFIG = config(vocab_size=300, hidden_size=96, intermediate_size=300, num_labels=2)
BGE = config(hidden_size=768, num_attention_heads=12, intermediate_size=3072, num_hidden_layers=12)  # bge-reranker-base
LENGTHS = [300, 7, 129, 64, 1, 256, 33, 128, 511, 90, 2, 200, 45, 170, 12, 400]


@pytest.fixture(scope="module")
def params():
    """Random weights of CONFIG under the checkpoint's key names."""
    return random_params(CONFIG, seed=0)


def padded(lengths, seed=1):
    """A right-padded batch [B, T] of random token ids with the given real lengths, and its mask."""
    rng = np.random.default_rng(seed)
    ids = np.full((len(lengths), max(lengths)), CONFIG.pad_token_id)
    for b, n in enumerate(lengths):
        ids[b, :n] = rng.integers(2, CONFIG.vocab_size, n)
        ids[b, 0] = 0  # <s>
    return ids, ids != CONFIG.pad_token_id


def one_blas_thread(params, ids, mask):
    """engine.forward on the calling thread with one BLAS thread: the numbers the workers must reproduce."""
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        return engine.forward(params, CONFIG, ids, mask)


def test_logits_do_not_depend_on_the_worker_count_nor_the_neighbours(params):
    ids, mask = padded(LENGTHS)
    inline = one_blas_thread(params, ids, mask)
    for count in (1, 2, 3, 5):
        pool = workers.Workers(count)
        assert_close(
            f"{count} workers vs the engine on the calling thread",
            pool.forward(params, CONFIG, ids, mask),
            inline,
            atol=0,
        )
        pool.close()
    pool = workers.Workers(2)
    order = np.random.default_rng(2).permutation(len(LENGTHS))  # other neighbours, other worker
    assert_close("shuffled batch", pool.forward(params, CONFIG, ids[order], mask[order]), inline[order], atol=0)
    halves = [np.flatnonzero(np.arange(len(LENGTHS)) % 2 == k) for k in (0, 1)]
    for half in halves:  # each half on its own: a different split, other neighbours
        assert_close("half the batch", pool.forward(params, CONFIG, ids[half], mask[half]), inline[half], atol=0)
    for b in range(len(LENGTHS)):  # alone: the small-job path, products split by columns and heads
        alone = pool.forward(params, CONFIG, ids[b : b + 1, : LENGTHS[b]], mask[b : b + 1, : LENGTHS[b]])
        assert_close(f"pair {b} ({LENGTHS[b]} tokens) alone", alone, inline[b : b + 1], atol=0)
    pool.close()


class CountingWorkers(workers.Workers):
    """Workers that record how many tasks each map call hands out."""

    def __init__(self, count):
        super().__init__(count)
        self.maps: list[int] = []

    def map(self, tasks):
        self.maps.append(len(tasks))
        super().map(tasks)


def test_a_single_pair_splits_its_products_among_the_workers(params):
    pool = CountingWorkers(3)
    ids, mask = padded([200])
    pool.forward(params, CONFIG, ids, mask)
    # per layer: attention (by heads) and the [N, D] -> [N, F] product (by columns, in one zero-padded call
    # for so few rows); the products down to D = 96, under two column blocks, stay whole
    assert pool.maps and set(pool.maps) == {3}, f"tasks per map call: {pool.maps}"
    assert len(pool.maps) == 2 * CONFIG.num_hidden_layers, f"{len(pool.maps)} split calls: {pool.maps}"
    assert engine.intra_op.get() is None, "the intra-op pool must not outlive the call"


def test_each_group_really_runs_on_its_own_thread(params, monkeypatch):
    """The split path is taken (not the small-job one) and its groups run on distinct threads."""
    import threading

    seen = []
    run = engine.run

    def recording_run(params, config, packed, hidden_states=None):
        seen.append((threading.get_ident(), len(packed.offsets) - 1))
        return run(params, config, packed, hidden_states)

    monkeypatch.setattr(engine, "run", recording_run)
    ids, mask = padded(LENGTHS)
    workers.Workers(3).forward(params, CONFIG, ids, mask)
    assert len(seen) == 3 and len({t for t, _ in seen}) == 3, f"groups (thread, pairs): {seen}"
    assert sum(b for _, b in seen) == len(LENGTHS)


@pytest.mark.parametrize("count", [1, 2])
def test_a_long_batch_runs_in_pieces_of_run_tokens_with_the_same_bits(params, monkeypatch, count):
    """Each engine call gets at most RUN_TOKENS tokens (a longer pair alone), and the logits do not change."""
    ids, mask = padded(LENGTHS)
    inline = one_blas_thread(params, ids, mask)
    sizes = []
    run = engine.run

    def recording_run(params, config, packed, hidden_states=None):
        sizes.append(np.diff(packed.offsets).tolist())
        return run(params, config, packed, hidden_states)

    monkeypatch.setattr(engine, "run", recording_run)
    monkeypatch.setattr(workers, "RUN_TOKENS", 300)
    pool = workers.Workers(count)
    assert_close(f"{count} workers in runs of 300 tokens", pool.forward(params, CONFIG, ids, mask), inline, atol=0)
    pool.close()
    assert sorted(n for run_lengths in sizes for n in run_lengths) == sorted(LENGTHS), f"runs: {sizes}"
    too_long = [r for r in sizes if sum(r) > 300 and len(r) > 1]
    assert not too_long and len(sizes) > count, f"runs over RUN_TOKENS: {too_long}; runs: {sizes}"


def test_runs_cut_pairs_in_order_with_a_long_pair_alone(monkeypatch):
    monkeypatch.setattr(workers, "RUN_TOKENS", 4096)
    assert workers.runs([3000, 2000, 1000, 5000, 10, 4096], [0, 1, 2, 3, 4, 5]) == [[0], [1, 2], [3], [4], [5]]
    assert workers.runs([10, 20], [1, 0]) == [[1, 0]]
    assert workers.runs([], []) == []


def test_blas_threads_are_restored_after_a_split_batch_and_after_a_failure(params, monkeypatch):
    before = workers.blas_threads()
    ids, mask = padded(LENGTHS)
    pool = workers.Workers(2)
    pool.forward(params, CONFIG, ids, mask)
    assert workers.blas_threads() == before

    def failing_run(params, config, packed, hidden_states=None):
        raise FloatingPointError(f"planted failure in a group of {len(packed.offsets) - 1} pairs")

    monkeypatch.setattr(engine, "run", failing_run)
    with pytest.raises(FloatingPointError, match="planted failure"):
        pool.forward(params, CONFIG, ids, mask)
    assert workers.blas_threads() == before
    pool.close()


def test_the_reranker_scores_the_same_bits_with_any_worker_count(tiny_dir):
    crowd = SAMPLE_PAIRS * 6
    one = Reranker.from_pretrained(tiny_dir, workers=1)
    assert one.pool.workers == 1
    expected = one.compute_score(crowd, batch_size=32)
    lengths = [len(e.ids) for e in one.tokenizer.encode(crowd[:32])]
    assert workers.group_count(np.array(lengths), 2) == 2, f"a first batch of {sum(lengths)} tokens is not split"
    for count in (2, 4):
        reranker = Reranker(one.params, one.config, one.tokenizer, workers=count)
        assert_close(
            f"compute_score with {count} workers", reranker.compute_score(crowd, batch_size=32), expected, atol=0
        )
    assert Reranker(one.params, one.config, one.tokenizer).pool.workers == workers.default_workers()


def test_partition_balances_cost_not_pair_count():
    costs = workers.pair_costs([512, 64, 64, 64, 64, 64, 64, 64, 64], BGE)
    groups = workers.partition(costs, 2)
    assert sorted(i for g in groups for i in g) == list(range(9))
    totals = [costs[g].sum() for g in groups]
    assert groups[0] == [0], f"the 512-token pair should be alone: {groups}"
    assert max(totals) / min(totals) < 1.2, f"group costs {totals}"
    assert workers.partition([5, 1, 4, 2], 2) == [[0, 1], [2, 3]]
    assert workers.partition([3.0], 4) == [[0]]


def test_costs_grow_faster_than_tokens():
    one, two = workers.pair_costs([256, 512], BGE)
    assert two > 2 * one, f"a 512-token pair costs {two / one:.3f}x a 256-token one; attention makes it > 2x"


@pytest.mark.parametrize(
    "lengths, count, expected",
    [
        ([64], 4, 1),  # one pair: nothing to split
        ([64, 64, 64], 2, 1),  # 192 tokens: below MIN_TOKENS for each of two workers
        ([300, 300], 2, 2),
        ([300, 300, 300], 8, 3),  # no more groups than pairs
        ([128] * 16, 2, 2),
        ([128] * 16, 1, 1),
    ],
)
def test_small_jobs_stay_on_the_calling_thread(lengths, count, expected):
    assert workers.group_count(np.array(lengths), count) == expected


def test_the_default_is_one_worker_per_blas_thread_within_the_cores():
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        assert workers.default_workers() == 1
    assert 1 <= workers.default_workers() <= workers.available_cores()


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_a_bad_worker_count_is_refused(bad):
    with pytest.raises(ConfigError, match=r"workers must be a positive int"):
        workers.Workers(bad)


def test_without_threadpoolctl_one_worker_is_the_default_and_more_are_refused(monkeypatch):
    monkeypatch.setattr(workers, "blas_controller", lambda: None)
    assert workers.Workers().workers == 1
    assert workers.Workers(1).workers == 1
    with pytest.raises(ConfigError, match=r"workers=2 needs threadpoolctl"):
        workers.Workers(2)


@pytest.mark.integration  # the CLI as a subprocess
def test_the_cli_takes_workers_and_gives_the_same_scores(tiny_dir, tmp_path_factory):
    from processes import offline_hub, run

    env = offline_hub(tiny_dir, tmp_path_factory.mktemp("hub-cache"))
    source = tmp_path_factory.mktemp("pairs") / "pairs.tsv"
    source.write_text("".join(f"{q}\t{d}\n" for q, d in SAMPLE_PAIRS * 4), encoding="utf-8")
    outputs = {}
    for count in ("1", "2"):
        result = run(["score", "--raw-scores", "--workers", count, str(source)], env)
        assert result.returncode == 0, result.stderr
        outputs[count] = [float(x) for x in result.stdout.split()]
    assert_close("score --workers 2 vs --workers 1", outputs["2"], outputs["1"], atol=0)
    for bad in ("0", "two"):
        result = run(["rerank", "--workers", bad, "query", "doc"], env)
        assert result.returncode == 2 and f"expected a positive integer, got '{bad}'" in result.stderr, result.stderr
