"""`xlmr-np inspect`: the per-layer table, the highlighted document, and the --plot pictures."""

from __future__ import annotations

import pytest
from helpers import write_model

from xlmr_np import Reranker, sigmoid64
from xlmr_np.cli import main
from xlmr_np.tracing import inspect_pair

QUERY, DOCUMENT = "capital of France", "Paris is the capital of France. Bananas are yellow."


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(write_model(tmp_path_factory.mktemp("tiny"), seed=2))


def test_prints_logit_score_layer_table_and_attribution(model_dir, capsys):
    assert main(["inspect", "--model", model_dir, QUERY, DOCUMENT, "--all", "--color", "never"]) == 0
    out = capsys.readouterr().out
    seen = inspect_pair(Reranker.from_pretrained(model_dir), QUERY, DOCUMENT)  # the reference forward pass
    logit = float(seen.logits[0])
    assert f"logit {logit:.6g}, score {float(sigmoid64(logit)):.6g} (its sigmoid, as rerank reports)" in out
    assert f"logit {logit:.4g}; highlight = logit - logit with the word removed" in out
    assert "2 layers, 4 heads, hidden 32" in out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("stage"))
    assert [line.split()[:2] for line in lines[header + 1 : header + 4]] == [
        ["embeddings", lines[header + 1].split()[1]],
        ["layer", "0"],
        ["layer", "1"],
    ]
    assert "encoder.layer.1.attention.self.probs" in out  # --all
    assert any(line.startswith("Paris[") and "yellow.[" in line for line in lines)
    assert "\x1b[" not in out


def test_plot_writes_heatmaps_and_attribution(model_dir, tmp_path, capsys):
    out = tmp_path / "inspect.png"
    assert (
        main(
            [
                "inspect",
                "--model",
                model_dir,
                QUERY,
                DOCUMENT,
                "--plot",
                str(out),
                "--layers",
                "1",
                "--heads",
                "0-1",
                "--unit",
                "token",
                "--method",
                "mask",
                "--color",
                "always",
            ]
        )
        == 0
    )
    side = tmp_path / "inspect-attribution.png"
    for path in (out, side):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert f"wrote {out} (attention heatmaps) and {side} (attribution)" in printed
    assert "\x1b[48;2;" in printed
    assert "highlight = logit - logit with the token masked" in printed


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--layers", "2"], "--layers: the model has 2 layers (0..1); got [2]"),
        (["--heads", "0,7"], "--heads: the model has 4 heads (0..3); got [7]"),
    ],
)
def test_out_of_range_layers_and_heads(model_dir, capsys, argv, message):
    assert main(["inspect", "--model", model_dir, QUERY, DOCUMENT, *argv]) == 1
    assert message in capsys.readouterr().err


def test_missing_model_directory(tmp_path, capsys):
    assert main(["inspect", "--model", str(tmp_path / "nope"), QUERY, DOCUMENT]) == 1
    assert "not a directory" in capsys.readouterr().err


def test_bad_index_list_is_a_usage_error(model_dir, capsys):
    assert main(["inspect", "--model", model_dir, QUERY, DOCUMENT, "--layers", "x"]) == 2  # argparse's status
    assert "expected indices like 0,2-4, got 'x'" in capsys.readouterr().err
