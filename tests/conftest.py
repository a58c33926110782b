"""Shared fixtures: random transformers models saved in the hub layout, built once per session."""

from __future__ import annotations

import os

import pytest

from xlmr_np.testing import build_model, require


@pytest.fixture(scope="session")
def torch():
    t = require("torch")
    require("transformers")
    t.set_num_threads(max(1, os.cpu_count() or 1))
    return t


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """(directory, torch model) of a tiny random cross-encoder: hidden 32, 4 heads, intermediate 37.

    Without torch or transformers, build_model skips the test saying so (fails under XLMR_NP_REQUIRE_TORCH=1).
    """
    directory = tmp_path_factory.mktemp("tiny")
    return directory, build_model(directory, seed=0, init_std=0.2)
