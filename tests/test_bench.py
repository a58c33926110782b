"""The benchmark's own code, on the tiny model: FLOP counts, workloads, batching, kernel warnings, a full run."""

from __future__ import annotations

import re

import helpers
import numpy as np
import pytest

from bench import gpu, machine, measure, peers, report, workloads
from bench.__main__ import main
from bench.errors import BenchmarkError
from bench.run import run
from xlmr_np.testing import family_shape

AVX512 = {"avx2", "fma", "avx512f", "avx512bw", "avx512vl"}
HASWELL_OPENBLAS = [{"internal_api": "openblas", "architecture": "Haswell", "filepath": "libscipy_openblas.so"}]


def test_useful_flops_counts_dense_layers_attention_and_head_per_real_token():
    config = helpers.config(**family_shape("bge-reranker-base"))
    D, F = 768, 3072
    one = 12 * (2 * 4 * 10 * D * D + 2 * 2 * 10 * D * F + 2 * 2 * 10 * 10 * D) + 2 * (D * D + D)
    assert workloads.useful_flops([10], config) == one
    assert workloads.useful_flops([10, 10, 10], config) == 3 * one


def test_batches_sort_longest_first_and_pad_each_batch_to_its_own_longest():
    w = workloads.synthetic("t", [21, 40, 30, 25], vocab_size=1000)
    (ids1, mask1), (ids2, mask2) = workloads.batches(w, 2)
    assert ids1.shape == (2, 40) and ids2.shape == (2, 25)
    assert mask1.sum(axis=1).tolist() == [40, 30] and mask2.sum(axis=1).tolist() == [25, 21]
    assert np.all(ids2[1, 21:] == 1) and ids1[0, 0] == 0 and ids1[0, 39] == 2


def test_mixed_workload_is_reproducible_and_within_its_range():
    a, b = workloads.mixed(100, 1000, seed=0), workloads.mixed(100, 1000, seed=0)
    assert a.lengths.tolist() == b.lengths.tolist()
    assert a.lengths.min() >= 32 and a.lengths.max() <= 512 and len(set(a.lengths.tolist())) > 50


@pytest.mark.parametrize(
    "environ, kernel, expect",
    [
        ({"OPENBLAS_CORETYPE": "Haswell"}, "Haswell", "WARNING: OPENBLAS_CORETYPE=Haswell"),
        ({"OPENBLAS_L2_SIZE": "1048576"}, "Haswell", "WARNING: OPENBLAS_L2_SIZE=1048576"),
        ({"OPENBLAS_CORETYPE": "SkylakeX"}, "SkylakeX", "note: OPENBLAS_CORETYPE=SkylakeX"),
        ({}, "Haswell", None),
    ],
)
def test_kernel_warning_only_when_an_env_var_forces_an_older_kernel(environ, kernel, expect):
    blas = [dict(HASWELL_OPENBLAS[0], architecture=kernel)]
    got = machine.kernel_warnings(environ, blas, AVX512)
    if expect is None:
        assert got == []
    else:
        assert len(got) == 1 and got[0].startswith(expect)


def test_no_warning_when_the_cpu_has_no_avx512():
    assert machine.cpu_kernel_level({"avx2", "fma"}) == 2
    assert machine.kernel_warnings({"OPENBLAS_CORETYPE": "Haswell"}, HASWELL_OPENBLAS, {"avx2", "fma"})[0].startswith(
        "note:"
    )


def test_catalog_documents_explain_what_is_missing(tmp_path):
    with pytest.raises(BenchmarkError, match=r"found 0 translated bash help texts under .*needs 100"):
        workloads.catalog_documents(100, localedir=str(tmp_path))


def test_unknown_implementation_is_refused(tmp_path):
    with pytest.raises(BenchmarkError, match="unknown implementation 'tensorflow'"):
        peers.available_implementations(["tensorflow"], tmp_path)
    with pytest.raises(BenchmarkError, match="unknown implementation 'tensorflow'"):
        peers.load_implementation("tensorflow", tmp_path)


def test_missing_model_without_build_is_an_error(tmp_path):
    with pytest.raises(BenchmarkError, match="expected .*config.json.*--no-build"):
        run(tmp_path / "none", tmp_path / "out", implementations=["xlmr_np"], build=False)


def test_bad_arguments_exit_2(capsys):
    assert main(["--repeats", "0"]) == 2
    assert "must be positive" in capsys.readouterr().err


@pytest.mark.integration  # the benchmark end to end, against torch
def test_full_run_on_the_tiny_model_writes_table_json_and_chart(tiny_model, tmp_path):
    """Every workload and figure end to end, xlmr_np against torch, with one repeat and cold starts."""
    try:
        workloads.catalog_documents(6)
    except BenchmarkError as e:
        pytest.skip(f"no real multilingual text for the rerank workload on this machine: {e}")
    directory, _ = tiny_model
    out = tmp_path / "out"
    text = run(
        directory,
        out,
        implementations=["xlmr_np", "torch-sdpa"],
        repeats=1,
        pairs=4,
        batch_candidates=(2, 4),
        build=False,
        command="test",
        log=lambda m: None,
        documents=6,
    )
    for workload in ("uniform 128", "uniform 256", "uniform 512", "rerank 1x6", "mixed 32..512", "single pair 64"):
        assert f"| {workload} | xlmr_np |" in text and f"| {workload} | torch-sdpa |" in text
    assert "| xlmr_np | " in text and "| torch-sdpa | " in text  # cold-start rows
    assert "measured numpy sgemm peak" in text and "kernel" in text
    assert "| single pair 64 | torch-sdpa | 1 |" in text  # latency: batch size 1 for every implementation
    assert "| torch-sdpa | " in text.split("Agreement with xlmr_np's float32 logits")[1]
    assert "Summary, xlmr_np against each peer" in text and "vs torch-sdpa: uniform 128 " in text
    assert "| 32 wide, std 0.02 (" in text and "| 0% (0) |" in text  # subnormal probabilities: the engine has none
    assert "- std-0.02 workloads: uniform 128 " in text.split("Figures for the targets")[1]
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import json

    report = json.loads((out / "report.json").read_text())
    assert {r["implementation"] for r in report["results"]} == {"xlmr_np", "torch-sdpa"}
    assert all(r["docs_per_s"] > 0 and len(r["seconds"]) == 1 for r in report["results"])
    assert len(report["sgemm_peaks_by_repeat"]) == 1 and report["sgemm_peaks_by_repeat"][0] > 0
    assert report["agreement"]["torch-sdpa"]["max_abs"] < 1e-4, report["agreement"]
    cold = {c["implementation"]: c for c in report["cold_start"]}
    assert cold["xlmr_np"]["peak_rss_mb"] > 0 and cold["xlmr_np"]["weights_file_rss_mb"] is not None
    # 6 short pairs touch a few hundred rows: the 32 MB table must not have been paged in by read-ahead
    assert 0 < cold["xlmr_np"]["embedding_resident_mb"] < cold["xlmr_np"]["embedding_mb"] / 4
    missing = gpu.gpu_missing()  # the GPU column: measured where there is a GPU, else the reason, no numbers
    if missing is None:
        assert {r["engine"] for r in report["gpu"]["rows"]} >= {"xlmr_np engine, float32", "torch sdpa, float32"}
    else:
        assert report["gpu"] == {"missing": missing} and f"No GPU column: {missing}." in text.split("## GPU")[1]


def test_device_cuda_without_cupy_says_why_before_building_anything(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "cupy", None)
    argv = ["--device", "cuda", "--model", str(tmp_path / "model"), "--out", str(tmp_path / "out")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("python -m bench: error: --device cuda: device 'cuda' needs CuPy, which is not installed"), (
        err
    )
    assert not (tmp_path / "model").exists() and not (tmp_path / "out").exists()


def test_gpu_section_is_a_table_or_the_reason_there_is_none():
    rows = [{"engine": "xlmr_np engine, float32", "docs_per_s": 812.25, "max_abs_vs_cpu": 1.1e-6}]
    text = gpu.gpu_markdown({"environment": {"gpu": "X"}, "rows": rows}, "rerank 1x100")
    assert "| xlmr_np engine, float32 | 812.2 | 1.10e-06 |" in text and "rerank 1x100, batches of 32" in text
    assert gpu.gpu_markdown({"missing": "no GPU"}, "w").splitlines()[-1] == "No GPU column: no GPU."


def test_agreement_reports_differences_and_rank_correlation():
    reference = np.array([1.0, 2.0, 3.0, 4.0])
    a = measure.agreement(np.array([1.0, 2.5, 2.9, 4.0]), reference)
    assert a["max_abs"] == 0.5 and abs(a["mean_abs"] - 0.15) < 1e-12 and a["spearman"] == 1.0
    assert measure.agreement(reference[::-1].copy(), reference)["spearman"] == -1.0


def test_logits_come_back_in_the_workload_order():
    w = workloads.synthetic("w", [30, 50, 25, 50], 100)
    logits = measure.logits_in_order(lambda ids, mask: mask.sum(axis=1).astype(float), w, 3)
    assert logits.tolist() == [30, 50, 25, 50]


def test_summary_line_has_every_ratio_against_each_peer():
    results = [measure.Result("u", e, 8, 10, 100, seconds=[s]) for e, s in (("xlmr_np", 1.0), ("onnxruntime", 2.0))]
    cold = [
        {"implementation": "xlmr_np", "peak_rss_mb": 500.0},
        {"implementation": "onnxruntime", "peak_rss_mb": 1000.0},
    ]
    line = report.summary_line(results, cold, ["onnxruntime"])
    assert line.endswith("vs onnxruntime: u 2.00x, peak RSS 0.50x"), line


@pytest.mark.integration
def test_long_inputs_on_a_tiny_sharp_model_with_bge_reranker_v2_m3s_positions(torch, tmp_path):
    """bench.long end to end on a tiny model with 8,194 positions and sharp weights (std 1.0): every long
    workload timed for xlmr_np and torch SDPA (torch-eager left out, saying why), the float64 truth at 8,192
    tokens, the subnormal counts (the plain formula's many, the engine's none), and the report's lines."""
    from bench.long import run_long
    from xlmr_np.testing import build_model

    build_model(tmp_path / "long", seed=0, init_std=1.0, max_position_embeddings=8194)
    out = run_long(tmp_path / "long", ["xlmr_np", "torch-sdpa", "torch-eager"], 2, 1, 2048, False, False, log=print)
    names = ["sharp 16x512", "1x16 docs 1024", "1x16 docs 2048", "one pair 8192"]
    assert [w.name for w in out["workloads"]] == names
    assert [max(w.lengths) for w in out["workloads"]] == [512, 1044, 2068, 8192]
    assert sorted((r.workload, r.implementation) for r in out["results"]) == sorted(
        (w, e) for w in names for e in ("xlmr_np", "torch-sdpa")
    )
    assert any(s.startswith("torch-eager: not run on long inputs (its attention holds") for s in out["skipped"])
    assert set(out["accuracy"]) == {"xlmr_np", "torch-sdpa"} and max(out["accuracy"].values()) < 1e-3
    s = out["subnormals"]
    assert s["plain_subnormal"] > 1000 and s["engine_subnormal"] == 0 and s["engine_zero_share"] > 0.1, s
    assert s["floor_logit_change"] < 1e-5, s
    text = report.long_markdown(out, {"tiny": s}) + report.targets_markdown([], [], out, {"tiny": s})
    assert "| one pair 8192 | torch-sdpa | 1 |" in text and "| tiny | 512 |" in text
    assert "- one pair 8192, sharp weights, v2-m3-shaped (2 layers): " in text and "not measured" in text  # no RSS


@pytest.mark.integration
def test_ops_speed_times_every_op_against_its_reference(capsys):
    """Each op is timed, compared with its reference in the table, and its output checked (ops_speed.check)."""
    from bench import ops_speed

    assert ops_speed.main(["--repeats", "1"]) == 0
    table = capsys.readouterr().out
    ops = ("| GELU |", "| softmax, sharp scores: engine |", "x the plain formula", "| attention (engine.attention)")
    for op in ops:
        assert op in table, table
    assert table.count("ns/score; plain formula (one head): ") == 2, table


def test_ops_speed_stops_at_an_op_whose_output_is_wrong(monkeypatch):
    from bench import ops_speed
    from xlmr_np import engine

    monkeypatch.setattr(engine, "gelu", lambda x, bias=None, out=None: np.multiply(x, 0.5, out=out))  # not GELU
    with pytest.raises(AssertionError, match=r"GELU: wrong output \(not numerics.gelu's bits\)"):
        ops_speed.main(["--repeats", "1"])


@pytest.mark.integration
def test_gemm_floor_prints_a_row_per_job(torch, tiny_dir, capsys):
    """python -m bench.gemm_floor (docs/performance.md) on the tiny model: every job's row, the times in whole
    ms (0 for the tiny model's products) and the ratios positive."""
    from bench import gemm_floor

    gemm_floor.main([str(tiny_dir), "--repeats", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if "tokens) |" in line]
    assert [row.split(" (")[0].removeprefix("| ") for row in rows] == [name for name, _, _ in gemm_floor.JOBS]
    for row in rows:
        numbers = [float(n) for n in re.findall(r"\d+(?:\.\d+)?", row.split(") |", 1)[1])]
        assert len(numbers) == 8 and min(numbers[-2:]) > 0, row


@pytest.mark.integration
def test_profile_forward_prints_each_op_family(tiny_dir, capsys):
    """python -m bench.profile_forward (docs/performance.md) on the tiny model: the forward's time and each op
    family's share of it."""
    from bench import profile_forward

    profile_forward.main(str(tiny_dir), 2, 32)  # a pair's 16-token query and its document
    out = capsys.readouterr().out
    assert out.startswith("2 pairs x 32 tokens: forward "), out
    for label in profile_forward.OPS:
        assert re.search(rf"^\s*{re.escape(label.strip())}\s+\d+\.\d+ s\s+\d+\.\d%", out, re.M), (label, out)


@pytest.mark.integration
def test_gpu_check_dry_run_on_the_cpu_writes_its_tables(torch, tmp_path):
    """tools/gpu_check.py as a person with a GPU runs it, but --dry-run: array-api-strict for CuPy, torch on
    the CPU, a tiny model. It checks the script end to end (its float64 truth, every engine's agreement, the
    exactness table, JSON and markdown), not a GPU."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).parent.parent
    env = dict(os.environ, PYTHONPATH=str(root))
    command = [sys.executable, str(root / "tools" / "gpu_check.py"), "--dry-run", "--out", str(tmp_path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    error = {r["engine"]: r["max |logit - float64 truth|"] for r in report["agreement and speed"]}
    print(error)
    assert error["xlmr_np engine, float64"] < 1e-12
    assert max(error["xlmr_np engine, float32"], error["torch sdpa, float32"]) < 1e-5
    assert 1e-4 < error["torch sdpa, bfloat16"] < 1.0  # bfloat16 keeps 8 bits: visibly off, still the same model
    exact = report["exactness on the device"]
    assert exact["same batches twice: pairs whose bits differ"] == 0
    assert exact["batch 1 vs batch size: max |diff|"] < 1e-5
    text = (tmp_path / "gpu-check.md").read_text()
    assert "DRY RUN" in text and "| xlmr_np engine, float32 | " in text and done.stdout == text + "\n"
