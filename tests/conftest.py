"""The test tiers, and the fixtures shared by every test module.

Tiers (markers registered in pyproject.toml):
- unit, every test not marked otherwise: in process, about a second at most, no subprocess, no server, no
  torch or transformers. Its models are written with numpy (helpers.write_model) with the small tokenizer.
- integration (`@pytest.mark.integration`): the CLI as a subprocess, servers on real sockets, notebooks,
  executors, the ONNX export, the benchmark, the README and docs run as written.
- parity (`@pytest.mark.parity`): anything compared against torch or transformers; `slow` besides marks the
  full-size (278M-parameter) models.

Which tests run:
    python -m pytest -q                      the unit tier (nothing else runs when no path is named)
    python -m pytest -q -m integration       one tier (or -m parity, -m "parity and not slow")
    python -m pytest -q tests/test_foo.py    every tier of the files or tests named
    python -m pytest -q -m ""                everything
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest
from helpers import load, write_model

from xlmr_np.testing import build_model, require

TIERS = ("integration", "parity")  # the marked tiers; the rest is unit


def pytest_report_header(config):
    if _default_selection(config):
        return "tier: unit (no path and no -m given); the others: -m integration, -m parity, -m '' for all"
    return None


def _default_selection(config) -> bool:
    """No -m and no path named: the unit tier alone, as the README's `python -m pytest -q` promises."""
    no_paths = config.args_source in (pytest.Config.ArgsSource.TESTPATHS, pytest.Config.ArgsSource.INVOCATION_DIR)
    return no_paths and not config.option.markexpr


@pytest.hookimpl(tryfirst=True)  # before -m selects: the unit marker must be there to be selected
def pytest_collection_modifyitems(config, items):
    for item in items:
        tiers = [name for name in TIERS if item.get_closest_marker(name)]
        if item.get_closest_marker("unit") and tiers:
            raise pytest.UsageError(f"{item.nodeid} is marked unit and {tiers[0]}: a test has one tier")
        if item.get_closest_marker("slow") and not tiers:
            raise pytest.UsageError(f"{item.nodeid} is marked slow without a tier: add parity or integration")
        if not tiers:
            item.add_marker(pytest.mark.unit)
    if _default_selection(config):
        others = [item for item in items if not item.get_closest_marker("unit")]
        if others:
            config.hook.pytest_deselected(items=others)
            items[:] = [item for item in items if item.get_closest_marker("unit")]


def peak_rss_mb() -> float:
    """This process's peak resident set size (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(f"peak RSS of this pytest process: {peak_rss_mb():.0f} MB")


def pytest_sessionfinish(session):
    """XLMR_NP_MAX_RSS_MB (set by .ci/run): fail the run if this process grew past it."""
    limit = os.environ.get("XLMR_NP_MAX_RSS_MB")
    if limit and peak_rss_mb() > float(limit):
        print(f"\npeak RSS {peak_rss_mb():.0f} MB exceeds XLMR_NP_MAX_RSS_MB={limit}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


class SubprocessInUnitTest(AssertionError):
    pass


@pytest.fixture(autouse=True)
def _unit_tier_rules(request, monkeypatch):
    """A unit test starts no subprocess and imports neither torch nor transformers: mark it otherwise."""
    if request.node.get_closest_marker("unit") is None:
        yield
        return

    def refuse(*args, **kwargs):
        raise SubprocessInUnitTest(
            f"{request.node.nodeid} starts a subprocess: mark it @pytest.mark.integration (tests/conftest.py)"
        )

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    before = {name for name in ("torch", "transformers") if name in sys.modules}
    yield
    imported = {name for name in ("torch", "transformers") if name in sys.modules} - before
    if imported:
        pytest.fail(f"{request.node.nodeid} imported {sorted(imported)}: mark it @pytest.mark.parity")


# ---------------------------------------------------------------------------------------------------
# Models


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """The unit tier's model directory: the tiny config (hidden 32, 4 heads, intermediate 37, 2 layers), random
    weights written with numpy (seed 0), the small tokenizer. Read-only: copy it to change a file."""
    return write_model(tmp_path_factory.mktemp("tiny-numpy"), seed=0)


@pytest.fixture(scope="session")
def tiny_reranker(tiny_dir):
    """tiny_dir loaded once for the session (Reranker.from_pretrained with its defaults)."""
    return load(tiny_dir)


@pytest.fixture(scope="session")
def torch():
    t = require("torch")
    require("transformers")
    t.set_num_threads(max(1, os.cpu_count() or 1))
    return t


@pytest.fixture(scope="session")
def tiny_model(torch, tmp_path_factory):
    """(directory, torch model) of a tiny random cross-encoder built by transformers with the real
    250,002-piece tokenizer: hidden 32, 4 heads, intermediate 37 (parity and integration tiers).

    Without torch or transformers, the test skips saying so (fails under XLMR_NP_REQUIRE_TORCH=1).
    """
    directory = tmp_path_factory.mktemp("tiny")
    return directory, build_model(directory, seed=0, init_std=0.2)


# ---------------------------------------------------------------------------------------------------
# The evaluation's datasets


@pytest.fixture(scope="session")
def pq():
    return require("pyarrow.parquet", "reading C-MTEB parquet files")  # in the test extra; a failure, not a skip, in CI


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty offline hub cache for in-process runs (helpers.hub_path places datasets in it;
    helpers.env_for points subprocesses at it)."""
    import huggingface_hub.constants

    path = tmp_path / "hub"
    path.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return path
