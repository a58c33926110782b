"""One meaning per option and per word across the subcommands: what each option is called, what its output
says it holds, and the old names that still work with a warning. In-process (cli.main) on a numpy random model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xlmr_np import Reranker
from xlmr_np.cli import main
from xlmr_np.random_model import write_random_model

QUERY, DOCS = "capital of France", ["Paris is the capital of France.", "Bananas are yellow."]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(write_random_model(tmp_path_factory.mktemp("random") / "m", std=0.2, seed=1))


def test_score_names_a_logit_a_logit(model, tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"id": i, "query": QUERY, "document": d}) + "\n" for i, d in enumerate(DOCS)))
    logits = Reranker.from_pretrained(model).compute_score([(QUERY, d) for d in DOCS])
    assert main(["score", "--model", model, "--raw-scores", str(pairs)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [set(r) for r in rows] == [{"id", "query", "document", "logit", "truncated"}] * 2
    np.testing.assert_allclose([r["logit"] for r in rows], logits, rtol=1e-6)
    assert main(["score", "--model", model, str(pairs)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    np.testing.assert_allclose([r["score"] for r in rows], 1 / (1 + np.exp(-np.array(logits))), rtol=1e-6)
