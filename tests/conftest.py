"""Shared fixtures: random transformers models saved in the hub layout, built once per session."""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest
from helpers import build_model


def require(module: str):
    """Import a reference library, or skip — except in CI (XLMR_NP_REQUIRE_TORCH=1), where a missing
    reference is a failure: the parity tests must never silently skip there."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if os.environ.get("XLMR_NP_REQUIRE_TORCH") == "1":
            pytest.fail(f"{module} is required for the parity tests (XLMR_NP_REQUIRE_TORCH=1): {e}")
        pytest.skip(f"{module} not installed: parity against transformers not checked")


@pytest.fixture(scope="session")
def torch():
    t = require("torch")
    require("transformers")
    t.set_num_threads(max(1, os.cpu_count() or 1))
    return t


@pytest.fixture(scope="session")
def tiny_model(torch, tmp_path_factory):
    """(directory, torch model) of a tiny random cross-encoder: hidden 32, 4 heads, intermediate 37."""
    directory = tmp_path_factory.mktemp("tiny")
    return directory, build_model(directory, seed=0, init_std=0.2)


def diff_message(name: str, ours: np.ndarray, ref: np.ndarray) -> str:
    d = np.abs(np.asarray(ours, dtype=np.float64) - np.asarray(ref, dtype=np.float64))
    return f"{name}: max abs diff {d.max():.3e}, mean abs diff {d.mean():.3e} (shape {d.shape})"


def assert_close(name: str, ours, ref, atol: float, rtol: float = 0.0):
    """llm.c-style check |ours - ref| <= atol + rtol * |ref|, reporting max and mean abs diff on failure."""
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, f"{name}: shape {ours.shape} != reference {ref.shape}"
    ok = np.abs(ours - ref) <= atol + rtol * np.abs(ref)
    assert ok.all(), diff_message(name, ours, ref) + f" exceeds atol {atol:g} + rtol {rtol:g}*|ref|"
