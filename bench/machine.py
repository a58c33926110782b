"""The machine: CPU, BLAS kernel, threads, versions, and the numpy sgemm peak."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

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
            out.append(
                f"WARNING: {settings} is set and {lib.get('filepath')} runs the {lib.get('architecture')} "
                f"kernel, older than this CPU supports; unset them for the benchmark "
                f"(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE ...)"
            )
        elif forced:
            out.append(
                f"note: {' '.join(f'{k}={v}' for k, v in forced.items())} is set "
                f"(kernel {lib.get('architecture')} is still the CPU's best family)"
            )
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


def environment(implementations: Sequence[str]) -> dict:
    """Everything the header reports; imports the peers' libraries so their thread pools are listed too."""
    from importlib.metadata import PackageNotFoundError, version

    from threadpoolctl import threadpool_info

    if any(e.startswith("torch") for e in implementations):
        import torch  # noqa: F401  (loads its BLAS and OpenMP so threadpoolctl can list them)
    name, flags = cpu_info()
    blas = [
        {
            k: p.get(k)
            for k in ("internal_api", "version", "architecture", "num_threads", "filepath", "threading_layer", "prefix")
        }
        for p in threadpool_info()
    ]
    versions = {}
    for package in ("xlmr-np", "numpy", "torch", "transformers", "onnxruntime", "onnx", "tokenizers"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            pass
    return {
        "cpu": name,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "blas": blas,
        "versions": versions,
        "warnings": kernel_warnings(dict(os.environ), blas, flags),
        "openblas_env": {
            k: os.environ[k]
            for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
            if k in os.environ
        },
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


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
