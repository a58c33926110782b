"""Reproduce bge-reranker-base's C-MTEB reranking scores (MAP and MRR@10) with the numpy model.

The protocol is the one behind the published figures (mteb 1.1 RerankingEvaluator, C-MTEB's
ChineseRerankingEvaluator; see xlmr_np.metrics for the metrics):

1. read the task's parquet file at the revision mteb pins: one row per query, with columns `query`
   (str), `positive` and `negative` (lists of str);
2. drop the rows that have no positive or no negative (mteb's RerankingEvaluator.__init__);
3. score the pairs [query, document], positives first, then negatives;
4. AP and RR@10 per query; MAP and MRR@10 are their means, reported in percent.

At CPU speed the four tasks (about 400,000 pairs) take hours, so scoring is organised for that:

- a *plan* fixes each task's work: its distinct pairs in dataset order, cut into batches of
  `batch_size`. The same plan is scored by an uninterrupted run, a resumed run or a set of shards,
  so every pair is computed in the same batch and all of them give the same bits;
- scores go to a ScoreCache (xlmr_np.score_cache) after every batch, so a killed run loses only the
  batches in flight, and a finished run re-scores from the cache without loading the model;
- `shard=(i, n)` scores batches i, i+n, i+2n, ... and writes a self-contained shard file;
  merge_shards() checks that n shards of one plan are all there and complete, then computes the metrics.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ConfigError, DatasetError, InputError, ShardError, XlmrNpError
from .metrics import bootstrap_interval, per_query_metrics
from .score_cache import ScoreCache, pair_key

# ----------------------------------------------------------------------------------------------------
# Tasks


@dataclass(frozen=True)
class Task:
    """One C-MTEB reranking task: where its data is, and bge-reranker-base's published figures."""

    name: str
    repo: str  # hub dataset repository
    revision: str  # the commit mteb pins for this task
    filename: str  # the split's parquet file in the repository at that commit
    split: str
    published_map: float  # percent, bge-reranker-base model card
    published_mrr: float  # percent (MRR@10)


# Revisions: mteb's task definitions (mteb/tasks/Reranking/zho/CMTEBReranking.py). Each repository's
# tree at its pinned commit holds one parquet file under data/ (hub file listings of the four repos).
TASKS = {t.name: t for t in (
    Task("T2Reranking", "C-MTEB/T2Reranking", "76631901a18387f85eaa53e5450019b87ad58ef9",
         "data/dev-00000-of-00001-65d96bde8023d9b9.parquet", "dev", 67.27728847727172, 77.1315192743764),
    Task("MMarcoReranking", "C-MTEB/Mmarco-reranking", "8e0c766dbe9e16e1d221116a3f36795fbade07f6",
         "data/dev-00000-of-00001-3df8a0d7f3506d33.parquet", "dev", 35.4600511272538, 34.60238095238095),
    Task("CMedQAv1-reranking", "C-MTEB/CMedQAv1-reranking", "8d7f1e942507dac42dc58017c1a001c3717da7df",
         "data/test-00000-of-00001-ab36f89569e9d913.parquet", "test", 81.27206722525007, 84.14238095238095),
    Task("CMedQAv2-reranking", "C-MTEB/CMedQAv2-reranking", "23d186750531a14a0357ca22cd92d712fd512ea0",
         "data/test-00000-of-00001-18c9589af3bb5d3a.parquet", "test", 84.10369934291236, 86.79376984126984),
)}


def resolve_tasks(name: str) -> list[Task]:
    """"all" or one task name -> the tasks to run."""
    if name == "all":
        return list(TASKS.values())
    if name not in TASKS:
        raise InputError(f"unknown task {name!r}; expected one of {', '.join(TASKS)} or all")
    return [TASKS[name]]


# ----------------------------------------------------------------------------------------------------
# Data


@dataclass
class Query:
    """One dataset row: a query with its positive and negative documents."""

    row: int  # row index in the parquet file
    text: str
    positives: list[str]
    negatives: list[str]

    @property
    def documents(self) -> list[str]:
        return self.positives + self.negatives


def dataset_file(task: Task) -> Path:
    """The task's parquet file, downloaded through huggingface-hub at the pinned revision (or its cache)."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id=task.repo, filename=task.filename, repo_type="dataset",
                                    revision=task.revision))
    except Exception as e:  # network, authentication and offline-cache misses all land here
        raise DatasetError(f"cannot get {task.repo}@{task.revision[:12]}/{task.filename} from the hub "
                           f"({type(e).__name__}: {e})") from e


def read_rows(path: str | Path) -> list[Query]:
    """Every row of a C-MTEB reranking parquet file, checked against the expected column layout."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DatasetError("reading the datasets needs pyarrow: pip install 'xlmr-np[eval]'") from None
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError subclasses for unreadable files
        raise DatasetError(f"{path}: not a readable parquet file ({e})") from e
    missing = [c for c in ("query", "positive", "negative") if c not in table.column_names]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {missing}; expected query (str), positive and negative "
                           f"(lists of str), found {table.column_names}")
    columns = [table.column(c).to_pylist() for c in ("query", "positive", "negative")]
    rows = []
    for i, (query, positives, negatives) in enumerate(zip(*columns)):
        if not isinstance(query, str) or not _is_texts(positives) or not _is_texts(negatives):
            raise DatasetError(f"{path}: row {i} is not (str, list of str, list of str): "
                               f"{type(query).__name__}, {type(positives).__name__}, {type(negatives).__name__}")
        rows.append(Query(i, query, positives, negatives))
    return rows


def _is_texts(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def apply_protocol(rows: list[Query]) -> list[Query]:
    """Keep the rows with at least one positive and one negative, in order (mteb drops the others)."""
    return [q for q in rows if q.positives and q.negatives]


def sample_queries(queries: list[Query], max_queries: int, seed: int) -> list[Query]:
    """A uniform sample of max_queries queries (all of them if there are fewer), kept in dataset order."""
    if max_queries >= len(queries):
        return list(queries)
    chosen = np.random.default_rng(seed).choice(len(queries), size=max_queries, replace=False)
    return [queries[i] for i in sorted(chosen.tolist())]


# ----------------------------------------------------------------------------------------------------
# The plan: which pairs are scored in which batch


@dataclass
class Plan:
    """The distinct pairs of a list of queries, in first-seen order, cut into fixed batches."""

    task: Task
    pairs: list[tuple[str, str]]
    keys: list[bytes]  # pair_key of each pair
    structure: list[list]  # per query: [row, number of positives, indices into pairs of its documents]
    batch_size: int
    digest: str

    @property
    def n_batches(self) -> int:
        return math.ceil(len(self.pairs) / self.batch_size)

    def batch(self, b: int) -> range:
        return range(b * self.batch_size, min((b + 1) * self.batch_size, len(self.pairs)))


def plan_digest(task_name: str, revision: str, batch_size: int, keys: Sequence[bytes], structure) -> str:
    """sha256 over everything that decides which scores a plan needs and how they are batched."""
    h = hashlib.sha256(json.dumps([task_name, revision, batch_size, structure]).encode("utf-8"))
    h.update(b"".join(keys))
    return h.hexdigest()


def make_plan(task: Task, queries: list[Query], batch_size: int) -> Plan:
    """Number the distinct (query, document) pairs and batch them; repeated pairs are scored once."""
    index: dict[bytes, int] = {}
    pairs, keys, structure = [], [], []
    for q in queries:
        positions = []
        for document in q.documents:
            key = pair_key(q.text, document)
            if key not in index:
                index[key] = len(keys)
                keys.append(key)
                pairs.append((q.text, document))
            positions.append(index[key])
        structure.append([q.row, len(q.positives), positions])
    digest = plan_digest(task.name, task.revision, batch_size, keys, structure)
    return Plan(task, pairs, keys, structure, batch_size, digest)


def shard_batches(n_batches: int, shard: tuple[int, int] | None) -> range:
    """Batches i, i+n, i+2n, ... for shard (i, n): interleaved, so shards get similar work."""
    if shard is None:
        return range(n_batches)
    i, n = shard
    return range(i, n_batches, n)


# ----------------------------------------------------------------------------------------------------
# Model identity and scoring


def model_fingerprint(model_dir: str | Path) -> str:
    """sha256 of the files that decide the scores (config, tokenizer, weights), for the cache key."""
    model_dir = Path(model_dir)
    weights = sorted(model_dir.glob("*.safetensors"))
    needed = [model_dir / "config.json", model_dir / "tokenizer.json"]
    if not weights or not all(p.is_file() for p in needed):
        raise ConfigError(f"{model_dir}: not a model directory (expected config.json, tokenizer.json and "
                          f"model.safetensors)")
    h = hashlib.sha256()
    for path in needed + sorted(model_dir.glob("*.safetensors.index.json")) + weights:
        h.update(path.name.encode("utf-8") + b"\0")
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


def _load_reranker(model_dir: str, settings: dict):
    from .config import XLMRobertaConfig
    from .reranker import Reranker

    config = XLMRobertaConfig.from_file(Path(model_dir) / "config.json")
    if config.num_labels != 1:
        raise ConfigError(f"{model_dir}: reranking needs a one-label cross-encoder, this model has "
                          f"num_labels={config.num_labels}")
    return Reranker.from_pretrained(model_dir, max_length=settings["max_length"],
                                    truncation=settings["truncation"])


def _score(reranker, pairs: list[tuple[str, str]]) -> np.ndarray:
    logits, _ = reranker.predict_logits(pairs, batch_size=len(pairs))
    return logits[:, 0].astype(np.float32)  # [B]


_worker_reranker = None  # the model of a worker process


def _init_worker(model_dir: str, settings: dict, threads: int) -> None:
    """Load the model in a worker and give it its share of the cores, so N workers do not oversubscribe."""
    global _worker_reranker
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    _worker_reranker = _load_reranker(model_dir, settings)


def _score_in_worker(item: tuple[int, list[tuple[str, str]]]) -> tuple[int, np.ndarray]:
    b, pairs = item
    return b, _score(_worker_reranker, pairs)


class Scorer:
    """Scores batches in this process (workers=1) or in worker processes; start() loads the model."""

    def __init__(self, model_dir: str | Path, settings: dict, workers: int = 1):
        self.model_dir = str(model_dir)
        self.settings = settings
        self.workers = workers
        self._reranker = None
        self._pool = None

    def start(self) -> None:
        """Load the model (or start the workers), so that loading is not counted as scoring time."""
        if self.workers == 1:
            self._reranker = _load_reranker(self.model_dir, self.settings)
        else:
            self._pool = self._start_pool()

    def map(self, batches: dict[int, list[tuple[str, str]]]) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (batch id, float32 scores) as batches finish, in no particular order (after start())."""
        if self._pool is None:
            for b, pairs in batches.items():
                yield b, _score(self._reranker, pairs)
        else:
            yield from self._pool.imap_unordered(_score_in_worker, batches.items())

    def _start_pool(self):
        import multiprocessing

        try:
            import threadpoolctl  # noqa: F401  (each worker limits its BLAS threads with it)
        except ImportError:
            raise XlmrNpError("--workers above 1 needs threadpoolctl: pip install 'xlmr-np[eval]'") from None
        # Load once here so that a broken model fails with a clear error: a failing Pool initializer
        # would make multiprocessing respawn workers forever.
        _load_reranker(self.model_dir, self.settings)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = max(1, cores // self.workers)
        # spawn: a fresh interpreter per worker, so no BLAS thread state is inherited through fork
        context = multiprocessing.get_context("spawn")
        return context.Pool(self.workers, initializer=_init_worker,
                            initargs=(self.model_dir, self.settings, threads))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None


class Progress:
    """Pairs scored, pairs/s and time remaining, printed at most every `interval` seconds."""

    def __init__(self, total: int, stream=None, interval: float = 2.0, clock=time.monotonic):
        self.total = total
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self.shown = -math.inf

    def advance(self, pairs: int, label: str) -> None:
        self.done += pairs
        now = self.clock()
        if now - self.shown >= self.interval or self.done >= self.total:
            self.shown = now
            print(self.line(label, now), file=self.stream, flush=True)

    def line(self, label: str, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else math.inf
        return (f"{label}: {self.done:,}/{self.total:,} pairs ({100 * self.done / max(self.total, 1):.1f}%), "
                f"{rate:.1f} pairs/s, {_duration(elapsed)} elapsed, ETA {_duration(eta)}")


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


# ----------------------------------------------------------------------------------------------------
# Results


def task_result(task: Task, structure: list[list], scores: np.ndarray, sample: dict | None) -> dict:
    """Metrics of one task from its plan structure and the scores of its distinct pairs."""
    per_query = [(np.arange(len(positions)) < n_pos, scores[positions]) for _, n_pos, positions in structure]
    ap, rr = per_query_metrics(per_query, k=10)
    result = {
        "task": task.name, "dataset": task.repo, "revision": task.revision, "split": task.split,
        "file": task.filename, "queries": len(structure), "pairs": sum(len(p) for _, _, p in structure),
        "map": 100 * float(np.mean(ap)), "mrr@10": 100 * float(np.mean(rr)),
        "published": {"map": task.published_map, "mrr@10": task.published_mrr},
    }
    result["difference"] = {m: result[m] - result["published"][m] for m in ("map", "mrr@10")}
    if sample is not None:
        boot_seed = [sample["seed"], 1]  # a stream apart from the one that drew the sample
        result["sample"] = dict(sample, **{
            "map_ci95": [100 * v for v in bootstrap_interval(ap, seed=boot_seed)],
            "mrr@10_ci95": [100 * v for v in bootstrap_interval(rr, seed=boot_seed)],
        })
    result["per_query"] = [
        {"row": row, "positives": n_pos, "negatives": len(positions) - n_pos, "ap": a, "rr@10": r}
        for (row, n_pos, positions), a, r in zip(structure, ap.tolist(), rr.tolist())
    ]
    return result


def format_table(results: dict) -> str:
    """The results as an aligned text table, with the published figures and the differences."""
    tasks = results["tasks"]
    sampled = any(t.get("sample") for t in tasks)
    header = ["task", "queries", "pairs", "MAP", "MRR@10", "published MAP", "published MRR@10", "diff MAP",
              "diff MRR@10"] + (["MAP 95% CI", "MRR@10 95% CI"] if sampled else [])
    rows = []
    for t in tasks:
        row = [t["task"], f"{t['queries']:,}", f"{t['pairs']:,}", f"{t['map']:.4f}", f"{t['mrr@10']:.4f}",
               f"{t['published']['map']:.4f}", f"{t['published']['mrr@10']:.4f}",
               f"{t['difference']['map']:+.4f}", f"{t['difference']['mrr@10']:+.4f}"]
        if sampled:
            s = t.get("sample")
            row += [f"[{s['map_ci95'][0]:.2f}, {s['map_ci95'][1]:.2f}]" if s else "",
                    f"[{s['mrr@10_ci95'][0]:.2f}, {s['mrr@10_ci95'][1]:.2f}]" if s else ""]
        rows.append(row)
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in [header] + rows]
    notes = [f"{t['task']}: {t['queries']:,} of "
             f"{t['sample']['of_queries']:,} queries sampled (seed {t['sample']['seed']}); the interval is a "
             f"bootstrap over the sampled queries" for t in tasks if t.get("sample")]
    return "\n".join(lines + notes)


def write_json(path: Path, data: dict) -> None:
    """Write JSON through a temporary file and a rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    temporary.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(temporary, path)


# ----------------------------------------------------------------------------------------------------
# Running: plan, score what the cache lacks, report or write a shard

SHARD_FORMAT = "xlmr-np eval shard"
SHARD_VERSION = 1


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/xlmr-np/scores, else ~/.cache/xlmr-np/scores."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "xlmr-np" / "scores"


@dataclass
class TaskRun:
    task: Task
    plan: Plan
    cache: ScoreCache
    batches: range  # the batches this run is responsible for
    todo: dict[int, list[tuple[str, str]]]  # those of them with a pair not cached yet
    sample: dict | None


def _prepare(task: Task, cache_root: Path, header: dict, writer: str, batch_size: int,
             shard: tuple[int, int] | None, max_queries: int | None, seed: int) -> TaskRun:
    queries = apply_protocol(read_rows(dataset_file(task)))
    sample = None
    if max_queries is not None:
        sample = {"max_queries": max_queries, "seed": seed, "of_queries": len(queries)}
        queries = sample_queries(queries, max_queries, seed)
    plan = make_plan(task, queries, batch_size)
    header = dict(header, task=task.name, dataset=task.repo, revision=task.revision)
    cache = ScoreCache(cache_root / f"{task.name}-{task.revision[:12]}", header, writer)
    batches = shard_batches(plan.n_batches, shard)
    todo = {b: [plan.pairs[j] for j in plan.batch(b)] for b in batches
            if any(plan.keys[j] not in cache for j in plan.batch(b))}
    return TaskRun(task, plan, cache, batches, todo, sample)


def run_eval(model_dir: str | Path, task_name: str, *, out_dir: str | Path, cache_dir: str | Path | None = None,
             batch_size: int = 32, workers: int = 1, shard: tuple[int, int] | None = None,
             max_queries: int | None = None, seed: int = 0, max_length: int = 512,
             truncation: str = "longest_first", stream=None) -> dict:
    """Evaluate a model on one task or "all"; returns the results (None for a shard) and files written.

    Without shard: writes out_dir/results.json (the table and the per-query figures). With shard=(i, n):
    writes out_dir/<task>.shard-<i>-of-<n>.json per task, for merge_shards().
    """
    if shard is not None and not (0 <= shard[0] < shard[1]):
        raise InputError(f"shard must be (i, n) with 0 <= i < n, got {shard}")
    out_dir = Path(out_dir)
    settings = {"max_length": max_length, "truncation": truncation, "dtype": "float32"}
    fingerprint = model_fingerprint(model_dir)
    model_key = hashlib.sha256((fingerprint + json.dumps(settings, sort_keys=True)).encode()).hexdigest()[:16]
    cache_root = Path(cache_dir if cache_dir is not None else default_cache_dir()) / model_key
    writer = "all" if shard is None else f"shard-{shard[0]}-of-{shard[1]}"
    header = {"model_fingerprint": fingerprint, "settings": settings}
    runs: list[TaskRun] = []
    try:
        for task in resolve_tasks(task_name):
            runs.append(_prepare(task, cache_root, header, writer, batch_size, shard, max_queries, seed))
        total = sum(len(p) for run in runs for p in run.todo.values())
        scorer = Scorer(model_dir, settings, workers)
        try:
            if total:
                scorer.start()
            progress = Progress(total, stream)
            for run in runs:
                for b, scores in scorer.map(run.todo):
                    run.cache.append([run.plan.keys[j] for j in run.plan.batch(b)], scores)
                    progress.advance(len(scores), run.task.name)
        finally:
            scorer.close()
        common = {"model": str(model_dir), "model_fingerprint": fingerprint, "settings": settings,
                  "batch_size": batch_size}
        if shard is not None:
            files = [_write_shard(out_dir, run, shard, common) for run in runs]
            return {"results": None, "files": files}
        results = dict(common, tasks=[
            task_result(run.task, run.plan.structure,
                        np.array([run.cache.scores[k] for k in run.plan.keys]), run.sample)
            for run in runs])
        write_json(out_dir / "results.json", results)
        return {"results": results, "files": [out_dir / "results.json"]}
    finally:
        for run in runs:
            run.cache.close()


def _checksum(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


def _write_shard(out_dir: Path, run: TaskRun, shard: tuple[int, int], common: dict) -> Path:
    """A self-contained shard file: the plan's structure and keys, and the scores of this shard's batches."""
    plan = run.plan
    mine = {j for b in run.batches for j in plan.batch(b)}
    payload = dict(common, format=SHARD_FORMAT, version=SHARD_VERSION, task=run.task.name,
                   dataset=run.task.repo, revision=run.task.revision, sample=run.sample, shard=list(shard),
                   plan_digest=plan.digest, keys=[k.hex() for k in plan.keys], structure=plan.structure,
                   scores=[run.cache.scores[k] if j in mine else None for j, k in enumerate(plan.keys)])
    path = out_dir / f"{run.task.name}.shard-{shard[0]}-of-{shard[1]}.json"
    write_json(path, {"payload": payload, "sha256": _checksum(payload)})
    return path


# ----------------------------------------------------------------------------------------------------
# Merging shards

# Fields every shard of one merge must share, and those the shards of one task must share as well.
_SAME_RUN = ("model_fingerprint", "settings", "batch_size")
_SAME_TASK = ("dataset", "revision", "sample", "plan_digest")


def read_shard(path: str | Path) -> dict:
    """A shard file's payload, after checking that it is one and that its checksum holds."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ShardError(f"{path}: not a readable shard file ({e})") from e
    payload = data.get("payload") if isinstance(data, dict) else None
    if not isinstance(payload, dict) or payload.get("format") != SHARD_FORMAT:
        raise ShardError(f"{path}: not an xlmr-np eval shard file")
    if payload.get("version") != SHARD_VERSION:
        raise ShardError(f"{path}: shard format version {payload.get('version')}, expected {SHARD_VERSION}")
    if data.get("sha256") != _checksum(payload):
        raise ShardError(f"{path}: checksum mismatch: the file is corrupted or was edited; rerun that shard")
    return payload


def _check_same(shards: list[tuple[Path, dict]], fields: tuple[str, ...], what: str) -> None:
    (first_path, first), *rest = shards
    for path, payload in rest:
        for field in fields:
            if payload.get(field) != first.get(field):
                raise ShardError(f"{what}: {first_path} and {path} differ in {field} ({first.get(field)!r} vs "
                                 f"{payload.get(field)!r}); the shards of one evaluation must share the model, "
                                 f"settings, batch size, dataset revision and query sample")


def _merge_task(name: str, shards: list[tuple[Path, dict]]) -> dict:
    if name not in TASKS:
        raise ShardError(f"{shards[0][0]}: unknown task {name!r}")
    _check_same(shards, _SAME_TASK + ("keys", "structure"), name)
    counts = {p["shard"][1] for _, p in shards}
    if len(counts) != 1:
        raise ShardError(f"{name}: the shards split the task in different numbers of parts: {sorted(counts)}")
    (n,) = counts
    seen: dict[int, Path] = {}
    for path, payload in shards:
        i = payload["shard"][0]
        if i in seen:
            raise ShardError(f"{name}: shard {i}/{n} given twice ({seen[i]} and {path})")
        seen[i] = path
    missing = sorted(set(range(n)) - set(seen))
    if missing:
        raise ShardError(f"{name}: shard(s) {missing} of {n} missing (have {sorted(seen)}); "
                         f"all shards 0..{n - 1} are needed")
    first = shards[0][1]
    keys = [bytes.fromhex(k) for k in first["keys"]]
    batch_size = first["batch_size"]
    if plan_digest(name, first["revision"], batch_size, keys, first["structure"]) != first["plan_digest"]:
        raise ShardError(f"{name}: the shards' plan does not match its digest; the shard files are inconsistent")
    scores = np.full(len(keys), np.nan)
    n_batches = math.ceil(len(keys) / batch_size)
    for path, payload in shards:
        mine = [j for b in shard_batches(n_batches, tuple(payload["shard"]))
                for j in range(b * batch_size, min((b + 1) * batch_size, len(keys)))]
        given = [j for j, s in enumerate(payload["scores"]) if s is not None]
        if given != mine:
            raise ShardError(f"{path}: shard {payload['shard'][0]}/{n} holds scores for {len(given):,} pairs but its "
                             f"batches have {len(mine):,}; the shard is incomplete or mislabelled, rerun it")
        scores[mine] = [payload["scores"][j] for j in mine]
    return task_result(TASKS[name], first["structure"], scores, first["sample"])


def merge_shards(paths: Sequence[str | Path], out_dir: str | Path) -> dict:
    """Combine shard files into the results of one run (refusing missing, incomplete or mismatched
    shards), and write out_dir/results.json."""
    if not paths:
        raise ShardError("no shard files given")
    shards = [(Path(p), read_shard(p)) for p in paths]
    _check_same(shards, _SAME_RUN, "merge")
    by_task: dict[str, list[tuple[Path, dict]]] = {}
    for path, payload in shards:
        by_task.setdefault(payload["task"], []).append((path, payload))
    order = sorted(by_task, key=lambda name: list(TASKS).index(name) if name in TASKS else len(TASKS))
    first = shards[0][1]
    results = {"model": first["model"], **{k: first[k] for k in _SAME_RUN},
               "tasks": [_merge_task(name, by_task[name]) for name in order]}
    write_json(Path(out_dir) / "results.json", results)
    return results
