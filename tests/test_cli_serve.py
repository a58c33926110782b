"""The installed `xlmr-np` command's rerank and score subcommands, run as subprocesses on a tiny model.

The README example runs exactly as written, with the default --model (the hub id), resolved offline from
a hub cache built on disk. Expected values come from the Python API in this process.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from processes import offline_hub, reranker_in_process, run

from xlmr_np import sigmoid64

pytestmark = pytest.mark.integration

QUERY = "capital of France"
README_DOCS = ["Paris is the capital of France.", "Bananas are yellow."]
LONG_DOC = " ".join(f"sentence {i} is about something else." for i in range(12))


@pytest.fixture(scope="module")
def env(tiny_model, tmp_path_factory):
    return offline_hub(tiny_model[0], tmp_path_factory.mktemp("hub-cache"))


@pytest.fixture(scope="module")
def reranker(tiny_model):
    return reranker_in_process(tiny_model[0])


def table_rows(stdout: str) -> list[tuple[int, int, float, str]]:
    rows = []
    for line in stdout.splitlines()[1:]:
        if line.startswith("*"):
            continue
        rank, index, score, text = line.split(maxsplit=3)
        rows.append((int(rank), int(index), float(score.rstrip("*")), text))
    return rows


def test_readme_example(env, reranker):
    result = run(["rerank", QUERY, *README_DOCS], env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].split() == ["rank", "index", "score", "document"]
    want = reranker.rerank(QUERY, README_DOCS)
    assert table_rows(result.stdout) == [
        (rank, r["index"], round(r["relevance_score"], 6), r["document"]) for rank, r in enumerate(want, start=1)
    ]


def test_jsonl_documents_on_stdin_as_json(env, reranker, tiny_model):
    lines = [json.dumps(README_DOCS[0]), json.dumps({"text": README_DOCS[1]}), "", json.dumps("Berlin.")]
    result = run(
        ["rerank", "--model", str(tiny_model[0]), "--jsonl", "--json", "--top-n", "2", QUERY],
        env,
        input="\n".join(lines),
    )
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    want = reranker.rerank(QUERY, [*README_DOCS, "Berlin."], top_n=2)
    assert [r["index"] for r in body["results"]] == [r["index"] for r in want]
    np.testing.assert_allclose(
        [r["relevance_score"] for r in body["results"]], [r["relevance_score"] for r in want], rtol=1e-6
    )
    assert body["results"][0]["document"]["text"] == want[0]["document"]
    assert body["usage"]["total_tokens"] > 0 and body["model"] == str(tiny_model[0])
    # the shape POST /v1/rerank returns: id, meta and each result's windows, as the Python API has them
    assert set(body) == {"id", "model", "results", "usage", "meta"} and len(body["id"]) == 36
    assert body["meta"] == {"api_version": {"version": "1"}, "billed_units": {"search_units": 1}}
    assert [set(r) for r in body["results"]] == [{"index", "relevance_score", "truncated", "windows", "document"}] * 2
    assert [r["windows"] for r in body["results"]] == [r["windows"] for r in want]


def test_documents_file_marks_truncated_documents(env, tmp_path):
    documents = tmp_path / "docs.txt"
    documents.write_text(f"Paris.\n\n{LONG_DOC}\n", encoding="utf-8")
    result = run(["rerank", "--max-length", "24", "--documents", str(documents), QUERY], env)
    assert result.returncode == 0, result.stderr
    rows = {index: text for _, index, _, text in table_rows(result.stdout)}
    assert sorted(rows) == [0, 1]  # the blank line is skipped
    marked = [line for line in result.stdout.splitlines() if "* " in line]
    assert any("sentence 0" in line for line in marked) and "--windows" in result.stdout.splitlines()[-1]


def test_score_tsv_raw_logits(env, reranker, tmp_path):
    lines = [f"{QUERY}\t{README_DOCS[0]}", f"{QUERY}\t{README_DOCS[1]}", "query\tdocument\twith a tab"]
    pairs = [(QUERY, README_DOCS[0]), (QUERY, README_DOCS[1]), ("query", "document\twith a tab")]  # first tab splits
    source = tmp_path / "pairs.tsv"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run(["score", "--raw-scores", str(source)], env)
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose([float(x) for x in result.stdout.split()], reranker.compute_score(pairs), rtol=1e-6)


def test_score_jsonl_to_file_with_truncation_report(env, reranker, tmp_path):
    rows = [{"id": "a", "query": QUERY, "document": README_DOCS[0]}, {"id": "b", "query": QUERY, "document": LONG_DOC}]
    source, output = tmp_path / "pairs.jsonl", tmp_path / "scores.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = run(["score", "--max-length", "24", str(source), "-o", str(output)], env)
    assert result.returncode == 0, result.stderr
    written = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [(w["id"], w["truncated"]) for w in written] == [("a", False), ("b", True)]
    np.testing.assert_allclose(
        written[0]["score"], sigmoid64(reranker.compute_score([(QUERY, README_DOCS[0])])), rtol=1e-6
    )
    assert "1 of 2 pairs truncated to 24 tokens (pairs 2)" in result.stderr


@pytest.mark.parametrize(
    "args, stdin, status, message",
    [
        (["rerank", QUERY], "", 1, "xlmr-np rerank: error: no documents: give them as arguments"),
        (
            ["rerank", "--jsonl", QUERY],
            '"ok"\n{"txt": 1}\n',
            1,
            'expected a JSON string or {"text": string}, got {"txt": 1} (-:2)',
        ),
        (
            ["rerank", "--jsonl", QUERY],
            "not json\n",
            1,
            "error: not valid JSON (Expecting value: line 1 column 1 (char 0)) (-:1)",
        ),
        (["rerank", "--model", "/no/such/model", QUERY, "doc"], None, 1, "/no/such/model: not a directory"),
        (["rerank", "--model", "org/not-cached", QUERY, "doc"], None, 1, "not in the hub cache"),
        (["rerank", "--top-n", "0", QUERY, "doc"], None, 2, "argument --top-n: expected a positive integer, got '0'"),
        (["score"], "query without a tab\n", 1, "error: no tab: expected query<TAB>document (-:1)"),
        (["score"], "q\td\n\nq\td\n", 1, "error: empty line (every line must hold one pair) (-:2)"),
        (["score", "--jsonl"], '{"query": "q", "document": 3}\n', 1, "error: field 'document' must be a string (-:1)"),
        (
            ["score", "/no/such/file.tsv"],
            None,
            1,
            "cannot read the file: No such file or directory (/no/such/file.tsv)",
        ),
        (["serve", "--max-documents", "0"], None, 1, "--max-documents must be at least 1, got 0"),
        (["serve", "--window-overlap", "-1"], None, 1, "--window-overlap must be at least 0, got -1"),
        (["serve", "--max-concurrent-requests", "0"], None, 1, "--max-concurrent-requests must be at least 1, got 0"),
        (["serve", "--api-key", ""], None, 1, "--api-key is empty; give a key, or none of"),
        (["serve", "--api-key", "  "], None, 1, "--api-key is empty"),
        (["serve", "--api-key", "two words"], None, 1, "must not contain whitespace"),
        (["serve", "--api-key-file", "/no/such/key"], None, 1, "--api-key-file /no/such/key: cannot read"),
        (["serve", "--api-key", "clé"], None, 1, "the key must be printable ASCII (found '\\xe9')"),
        (["serve", "--request-timeout", "nan"], None, 1, "--request-timeout must be at least 0.001, got nan"),
        (["serve", "--max-inflight-tokens", "0"], None, 1, "--max-inflight-tokens must be at least 1, got 0"),
    ],
)
def test_user_errors_are_one_line_with_exit_status_1_or_2_for_usage(env, args, stdin, status, message):
    result = run(args, env, input=stdin)
    assert result.returncode == status and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_empty_key_file_or_variable_is_an_error_not_an_open_server(env, tmp_path):
    empty = tmp_path / "key"
    empty.write_text("\n", encoding="utf-8")
    for args, extra_env, message in [
        (["serve", "--api-key-file", str(empty)], {}, f"{empty} is empty"),
        (["serve"], {"XLMR_NP_API_KEY": ""}, "$XLMR_NP_API_KEY is empty"),
    ]:
        result = run(args, dict(env, **extra_env))
        assert result.returncode == 1 and message in result.stderr, result.stderr


def test_key_file_wins_and_is_stripped(tmp_path):
    from xlmr_np.commands.serve import read_api_key

    key_file = tmp_path / "key"
    key_file.write_text("s3cret\n", encoding="utf-8")

    class Args:
        api_key_file = str(key_file)
        api_key = "from-argv"

    assert read_api_key(Args, {"XLMR_NP_API_KEY": "from-env"}) == "s3cret"
    Args.api_key_file = None
    assert read_api_key(Args, {"XLMR_NP_API_KEY": "from-env"}) == "from-argv"
    Args.api_key = None
    assert read_api_key(Args, {"XLMR_NP_API_KEY": "from-env"}) == "from-env"
    assert read_api_key(Args, {}) is None
    key_file.write_bytes("\ufeffs3cret\r\n".encode())  # a key file saved by an editor that writes a BOM
    Args.api_key_file = str(key_file)
    assert read_api_key(Args, {}) == "s3cret"


def test_serve_without_its_extra_names_the_extra(monkeypatch, capsys):
    """The core install has no web framework: `xlmr-np serve` says which extra to install."""
    import sys

    from xlmr_np.cli import main

    for name in [m for m in sys.modules if m.startswith("xlmr_np.serve")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi -> ModuleNotFoundError
    assert main(["serve", "--model", "/no/such/model"]) == 1
    err = capsys.readouterr().err
    assert "pip install 'xlmr-np[serve]'" in err and "fastapi" in err, err


def test_rerank_json_runs_on_the_core_install(tiny_model, env):
    """`rerank --json` builds its answer from xlmr_np.api's types, which need neither pydantic nor fastapi:
    with both made unimportable, it still prints the /v1/rerank shape."""
    script = (
        "import sys; sys.modules.update(pydantic=None, fastapi=None, starlette=None, uvicorn=None); "
        "from xlmr_np.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, "rerank", "--model", str(tiny_model[0]), "--json", QUERY, *README_DOCS],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert set(body) == {"id", "model", "results", "usage", "meta"} and len(body["results"]) == 2
