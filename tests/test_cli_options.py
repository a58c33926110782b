"""One meaning per option and per word across the subcommands: what each option is called, what its output
says it holds, and the old names that still work with a warning. In-process (cli.main) on the session's numpy
model with the small tokenizer (conftest.tiny_dir)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xlmr_np import Reranker
from xlmr_np.cli import main

QUERY, DOCS = "capital of France", ["Paris is the capital of France.", "Bananas are yellow."]


@pytest.fixture(scope="module")
def model(tiny_dir):
    return str(tiny_dir)


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


def test_rerank_writes_its_table_or_json_to_a_file(model, tmp_path, capsys):
    long_doc = "Paris " + "is a city on the Seine, " * 12 + "the capital of France."
    argv = ["rerank", "--model", model, QUERY, *DOCS, long_doc]
    assert main([*argv, "-o", str(tmp_path / "table.txt")]) == 0
    assert capsys.readouterr().out == ""
    written = (tmp_path / "table.txt").read_text().splitlines()
    assert written[0].split() == ["rank", "index", "score", "document"] and len(written) == 4
    assert any(line.endswith(long_doc) for line in written), written  # a file gets whole documents
    assert main([*argv, "--json"]) == 0
    printed = capsys.readouterr().out
    assert main([*argv, "--json", "--output", str(tmp_path / "r.json")]) == 0
    written_json, printed_json = json.loads((tmp_path / "r.json").read_text()), json.loads(printed)
    assert written_json.pop("id") != printed_json.pop("id")  # each answer has its own id, as the server's
    assert written_json == printed_json
    assert [r["index"] for r in json.loads(printed)["results"]] == [int(line.split()[1]) for line in written[1:]]


def test_rerank_checks_its_output_before_loading_the_model(model, tmp_path, capsys, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the model was loaded although the output cannot be written")

    monkeypatch.setattr(Reranker, "from_pretrained", never)
    assert main(["rerank", "--model", model, QUERY, *DOCS, "-o", str(tmp_path / "missing" / "out.txt")]) == 1
    assert "the output's directory" in capsys.readouterr().err


def test_rerank_without_arguments_names_only_what_is_missing(capsys):
    assert main(["rerank"]) == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error == "xlmr-np rerank: error: the following arguments are required: QUERY", error


@pytest.mark.parametrize(
    "argv, dest, value, old, new",
    [
        (["eval", "--task", "all", "--workers", "3"], "processes", 3, "--workers", "--processes"),
        (["eval", "--task", "all", "--cache-dir", "d"], "score_cache", "d", "--cache-dir", "--score-cache"),
        (["verify", "--golden", "g", "--json", "r.json"], "json", "r.json", "--json", "--json-report"),
        (
            ["verify", "--golden", "g", "--endpoint-model", "m"],
            "endpoint_model",
            "m",
            "--endpoint-model",
            "--served-model-name",
        ),
    ],
)
def test_old_option_names_still_work_with_a_warning(argv, dest, value, old, new, capsys):
    from xlmr_np.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(argv)
    assert getattr(args, dest) == value
    warning = capsys.readouterr().err.strip()
    assert warning.startswith(f"xlmr-np {argv[0]}: warning: {old} is deprecated here; use {new} ("), warning
    renamed = [new if a == old else a for a in argv]
    assert getattr(parser.parse_args(renamed), dest) == value and capsys.readouterr().err == ""
    assert main([argv[0], "--help"]) == 0
    shown = capsys.readouterr().out
    assert new in shown and f"{old} " not in shown and not shown.count(f"{old}\n")


def test_the_same_option_means_the_same_thing_everywhere(capsys):
    """Options several subcommands share keep one meaning: --workers threads, --cache-dir the hub cache,
    --json a flag printing JSON, --revision the model's hub revision, -o/--output a file of results."""
    from xlmr_np.cli import build_parser

    parser = build_parser()
    meanings = {
        "--workers": "threads",
        "--cache-dir": "hub cache",
        "--revision": "hub branch, tag or commit",
        "--output": "write",
        "--device": "where the model runs",
    }
    seen: dict[str, list[str]] = {}
    for command, sub in parser._subparsers._group_actions[0].choices.items():  # type: ignore[union-attr]
        for action in sub._actions:
            for option in action.option_strings:
                if option in meanings and action.help != "==SUPPRESS==":
                    assert meanings[option] in action.help, (command, option, action.help)
                    seen.setdefault(option, []).append(command)
                if option == "--json" and action.help != "==SUPPRESS==":
                    assert action.nargs == 0, (command, "--json takes no value")
    assert {"eval", "rerank", "score", "serve", "inspect", "verify"} <= set(seen["--revision"]), seen
    assert {"rerank", "score"} <= set(seen["--output"]), seen
    assert {"rerank", "score", "serve", "eval"} <= set(seen["--device"]), seen


@pytest.mark.parametrize(
    "argv",
    [
        ["rerank", QUERY, *DOCS],
        ["score", "PAIRS"],
        ["eval", "--task", "T2Reranking", "--data-dir", "DATA", "--out", "OUT"],
    ],
    ids=["rerank", "score", "eval"],
)
def test_device_cuda_without_cupy_is_one_line_naming_what_is_missing(model, argv, tmp_path, monkeypatch, capsys):
    import sys

    from xlmr_np.cmteb.synthetic import write_synthetic

    monkeypatch.setitem(sys.modules, "cupy", None)  # as on a machine without CuPy
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("q\td\n", encoding="utf-8")
    if argv[0] == "eval":
        write_synthetic(tmp_path / "data", "T2Reranking", 2, 2, 0)
    argv = [{"PAIRS": str(pairs), "DATA": str(tmp_path / "data"), "OUT": str(tmp_path / "out")}.get(a, a) for a in argv]
    status = main(
        [
            *argv,
            "--model",
            model,
            "--device",
            "cuda",
            *(["--score-cache", str(tmp_path / "c")] if argv[0] == "eval" else []),
        ]
    )
    err = capsys.readouterr().err
    assert status == 1, err
    assert err.splitlines() == [
        f"xlmr-np {argv[0]}: error: device 'cuda' needs CuPy, which is not installed here "
        f"(import of cupy halted; None in sys.modules): pip install 'xlmr-np[gpu]'"
    ], err
