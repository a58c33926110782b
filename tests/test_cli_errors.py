"""Bad input to `xlmr-np` through `main(argv)` in this process: one line on stderr, never a traceback,
exit status 2 for usage errors and 1 for failures; and the regressions the line readers, -o, the
argument checks and the shared input rules once had.

The model is the unit tier's tiny random one (numpy weights, the small tokenizer), loaded by each call.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from processes import xlmr_np_command

from xlmr_np import InputError, Reranker, sigmoid64
from xlmr_np.cli import main
from xlmr_np.commands.common import OutputFile, read_lines
from xlmr_np.errors import OutputError
from xlmr_np.serve.errors import ApiError
from xlmr_np.tokenizer import CLIP_WORD_CHARS


@pytest.fixture
def model(tiny_dir):
    """The tiny numpy model's directory (the small tokenizer: each CLI call loads it in milliseconds)."""
    return str(tiny_dir)


def cli(argv, stdin: bytes = b"") -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of main(argv) with `stdin` as standard input."""
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    sys.stdout, sys.stderr = out, err
    try:
        status = main(argv)
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
    return status, out.getvalue(), err.getvalue()


def one_error_line(err: str, command: str) -> str:
    lines = err.splitlines()
    assert lines and lines[-1].startswith(f"xlmr-np {command}: error: "), err
    assert "Traceback" not in err
    return lines[-1].removeprefix(f"xlmr-np {command}: error: ")


# ---------------------------------------------------------------------------------------------------
# Lines end at \n only


SEPARATORS = "\u2028\u2029\x0c\x0b\x1c\x1d\x1e\x85"  # all of them split by str.splitlines()


def test_read_lines_splits_at_newline_only(tmp_path):
    path = tmp_path / "d.txt"
    path.write_bytes(("\ufeffa\u2028b\nc" + SEPARATORS + "d\r\n\ne\n").encode())
    assert read_lines(str(path)) == [(1, "a\u2028b"), (2, "c" + SEPARATORS + "d"), (3, ""), (4, "e")]
    path.write_bytes(b"no final newline")
    assert read_lines(str(path)) == [(1, "no final newline")]
    path.write_bytes(b"")
    assert read_lines(str(path)) == []


def test_rerank_documents_with_unicode_line_separators_keep_their_indices(model, tmp_path):
    documents = ["a\u2028b", "c\x0cd\x85e", "f"]
    path = tmp_path / "d.txt"
    path.write_text("\n".join(documents) + "\n", encoding="utf-8")
    status, out, err = cli(["rerank", "--model", model, "--json", "q", "--documents", str(path)])
    assert status == 0, err
    results = json.loads(out)["results"]
    assert sorted((r["index"], r["document"]["text"]) for r in results) == list(enumerate(documents))


def test_jsonl_written_with_ensure_ascii_false_parses(model, tmp_path):
    rows = [{"id": 1, "query": "q\u2028", "document": "line\u2029sep"}, {"id": 2, "query": "q", "document": "\x85"}]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    status, out, err = cli(["score", "--model", model, str(path)])
    assert status == 0, err
    written = [json.loads(line) for line in out.split("\n")[:-1]]  # not splitlines(): U+2028 is in a line
    assert [w["id"] for w in written] == [1, 2] and [w["document"] for w in written] == ["line\u2029sep", "\x85"]


def test_tsv_errors_name_the_right_line(model, tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("q\u2028x\td\u2029\nq\x0cx\td\nno tab here\n", encoding="utf-8")
    status, _, err = cli(["score", "--model", model, str(path)])
    assert status == 1 and one_error_line(err, "score") == f"no tab: expected query<TAB>document ({path}:3)"


def test_bad_utf8_in_a_file_names_line_and_column(model, tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_bytes(b"q\td\nq\tcaf\xe9\n")
    status, _, err = cli(["score", "--model", model, str(path)])
    assert status == 1 and one_error_line(err, "score") == f"not valid UTF-8: byte 0xe9 at column 6 ({path}:2)"
    status, _, err = cli(["rerank", "--model", model, "q"], stdin=b"ok\n\xff\n")
    assert status == 1 and one_error_line(err, "rerank") == "not valid UTF-8: byte 0xff at column 1 (-:2)"


# ---------------------------------------------------------------------------------------------------
# Options and arguments: usage errors, exit status 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--max-length", "0"], "argument --max-length: expected a positive integer, got '0'"),
        (["--max-length", "-1"], "argument --max-length: expected a positive integer, got '-1'"),
        (
            ["--max-length", "5"],
            "max_length must be an int of at least 6 (the pair template uses 4 special tokens), got 5 (--max-length)",
        ),
        (
            ["--max-length", "100000"],
            "max_length must be an int of at most 512: the position table has 514 slots, "
            "starting at pad_token_id + 1; got 100000 (--max-length)",
        ),
        (["--batch-size", "0"], "argument --batch-size: expected a positive integer, got '0'"),
        (["--top-n", "x"], "argument --top-n: expected a positive integer, got 'x'"),
        (["--window-overlap", "-3"], "argument --window-overlap: expected an integer >= 0, got '-3'"),
        (["--truncation", "middle"], "argument --truncation: invalid choice: 'middle'"),
    ],
)
def test_bad_model_options_are_usage_errors(model, argv, message):
    status, out, err = cli(["rerank", "--model", model, *argv, "q", "d"])
    assert status == 2 and out == "" and message in one_error_line(err, "rerank"), err


@pytest.mark.parametrize(
    "query, message",
    [
        ("", "argument QUERY: query must be a non-empty string, got an empty one"),
        (" \t ", "argument QUERY: query must be a non-empty string, got ' \\t ' (only whitespace)"),
        ("caf\udce9", "argument QUERY: the query is not valid UTF-8: undecodable byte 0xe9 at character 3"),
    ],
)
def test_empty_or_undecodable_query_is_a_usage_error(model, query, message):
    status, _, err = cli(["rerank", "--model", model, query, "d"])
    assert status == 2 and one_error_line(err, "rerank") == message


def test_undecodable_document_argument(model):
    status, _, err = cli(["rerank", "--model", model, "q", "fine", "\udcff"])
    assert status == 2
    assert (
        one_error_line(err, "rerank") == "argument DOC: the document is not valid UTF-8: undecodable byte 0xff "
        "at character 0"
    )


@pytest.mark.integration  # a subprocess
def test_bad_utf8_bytes_in_real_command_line_arguments(tiny_dir):
    """Through exec(), as a shell passes them: Python turns byte 0xff into U+DCFF (surrogateescape)."""
    done = subprocess.run(
        [xlmr_np_command(), b"rerank", b"--model", os.fsencode(tiny_dir), b"q\xff", b"d"],
        capture_output=True,
        timeout=120,
    )
    err = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 2 and "Traceback" not in err, err
    assert err.splitlines()[-1] == (
        "xlmr-np rerank: error: argument QUERY: the query is not valid UTF-8: undecodable byte 0xff at character 1"
    )


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_port_out_of_range(port):
    status, _, err = cli(["serve", "--port", port])
    assert status == 2
    assert one_error_line(err, "serve") == f"argument --port: expected a port number from 0 to 65535, got '{port}'"


def test_errors_stay_on_one_line_whatever_the_arguments_hold(model):
    """Found by the CLI fuzzer: argparse echoed a "\\n" argument and split its error line."""
    status, _, err = cli(["rerank", "--model", model, "q", "d", "--bogus\nx\r\u2028"])
    assert status == 2 and err.endswith("xlmr-np: error: unrecognized arguments: --bogus\\nx\\r\\u2028\n"), err
    status, _, err = cli(["score", "--model", model, "--jsonl"], stdin=b'{"query": "q\xe2\x80\xa8"}\n')
    assert status == 1 and err == "xlmr-np score: error: field 'document' must be a string (-:1)\n"


def test_file_names_no_file_can_have(model, tmp_path):
    """Found by the CLI fuzzer through main(argv): a lone surrogate or a NUL in a file name (never from a
    shell, whose bytes Python decodes with surrogateescape) raised UnicodeEncodeError / ValueError."""
    for name in ("\ud800", "a\x00b"):
        status, _, err = cli(["score", "--model", model, name])
        assert status == 1 and "not a usable file name" in one_error_line(err, "score"), err
        status, _, err = cli(["score", "--model", model, "-o", str(tmp_path / name)], stdin=b"q\td\n")
        assert status == 1 and "not a usable file name" in one_error_line(err, "score"), err


def test_revision_no_url_can_carry_is_a_hub_error():
    """Found by the CLI fuzzer: a lone surrogate in --revision reached huggingface-hub's URL quoting."""
    from xlmr_np.errors import HubError
    from xlmr_np.hub import resolve_model_dir

    with pytest.raises(HubError, match="not a usable repo id or revision"):
        resolve_model_dir("BAAI/bge-reranker-base", revision="main\udbff")


def test_no_subcommand_and_help():
    status, _, err = cli([])
    assert status == 2 and "usage: xlmr-np" in err
    status, out, _ = cli(["score", "--help"])
    assert status == 0 and "usage: xlmr-np score" in out
    status, _, err = cli(["frobnicate"])
    assert status == 2 and "xlmr-np: error: argument COMMAND: invalid choice: 'frobnicate'" in err


# ---------------------------------------------------------------------------------------------------
# The empty-query rule and lone surrogates: one rule for the CLI, the server and the Python API


def test_empty_query_one_rule_for_cli_server_and_python(model):
    reranker = Reranker.from_pretrained(model)
    for query in ("", "   ", "\n\t"):
        with pytest.raises(InputError, match="query must be a non-empty string"):
            reranker.rerank(query, ["d"])
        with pytest.raises(ApiError, match="query must be a non-empty string") as caught:
            parse_request({"query": query, "documents": ["d"]})
        assert caught.value.status == 400 and caught.value.field == "query"
        assert cli(["rerank", "--model", model, query, "d"])[0] == 2


@pytest.mark.parametrize(
    "pairs, message",
    [
        ([("q\ud800", "d")], r"the query is not valid Unicode: lone surrogate U\+D800 at character 1 \(pairs\[0\]\)"),
        (
            [("q", "d"), ("q", "ab\udfff")],
            r"the document is not valid Unicode: lone surrogate U\+DFFF at character 2 "
            r"\(pairs\[1\]\)",
        ),
        ([("q", "caf\udce9")], r"the document is not valid UTF-8: undecodable byte 0xe9 at character 3"),
    ],
)
def test_lone_surrogates_are_input_errors_of_the_python_api(model, pairs, message):
    reranker = Reranker.from_pretrained(model)
    with pytest.raises(InputError, match=message):
        reranker.compute_score(pairs)
    with pytest.raises(InputError, match=message.replace("pairs", "documents").split(" \\(")[0]):
        reranker.rerank(pairs[-1][0], [d for _, d in pairs]) if "document" in message else reranker.rerank(
            pairs[0][0], ["d"]
        )


def parse_request(body: dict):
    """A /v1/rerank body through the server's validation (xlmr_np.serve.schema), as the server parses it."""
    schema = pytest.importorskip("xlmr_np.serve.schema")  # the serve extra
    return schema.validate(schema.CohereRequest, body)


def test_lone_surrogate_in_a_request_is_a_400_naming_the_field():
    body = json.loads('{"query": "q", "documents": ["ok", "bad \\udc80"]}')
    with pytest.raises(ApiError, match="lone surrogate") as caught:
        parse_request(body)
    assert caught.value.status == 400 and caught.value.field == "documents[1]"
    with pytest.raises(ApiError, match="query is not valid Unicode: lone surrogate U\\+D83D") as caught:
        parse_request(json.loads('{"query": "\\ud83d", "documents": ["d"]}'))
    assert caught.value.field == "query"


def test_lone_surrogate_in_jsonl_is_named_by_line(model, tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"query": "q", "document": "d"}\n{"query": "\\ud800", "document": "d"}\n', encoding="utf-8")
    status, _, err = cli(["score", "--model", model, str(path)])
    assert status == 1
    assert one_error_line(err, "score") == (
        f"the query is not valid Unicode: lone surrogate U+D800 at character 0 ({path}:2)"
    )


def test_jsonl_nested_too_deeply(model):
    status, _, err = cli(["rerank", "--model", model, "--jsonl", "q"], stdin=b"[" * 100_000 + b"\n")
    assert status == 1 and one_error_line(err, "rerank") == "not valid JSON here (nested too deeply) (-:1)"


# ---------------------------------------------------------------------------------------------------
# -o: checked before the scoring, written whole or not at all


def test_output_into_a_missing_directory_fails_before_loading_the_model(tmp_path, tiny_dir):
    pairs = tmp_path / "p.tsv"
    pairs.write_text("q\td\n")
    missing = tmp_path / "nowhere" / "out.txt"
    # the model does not exist either: the output is checked first, so that is what the error names
    status, _, err = cli(["score", "--model", str(tmp_path / "no-model"), str(pairs), "-o", str(missing)])
    assert status == 1
    assert one_error_line(err, "score") == f"the output's directory {str(missing.parent)!r} does not exist ({missing})"
    status, _, err = cli(["score", "--model", str(tmp_path / "no-model"), str(pairs), "-o", str(tmp_path)])
    assert status == 1 and one_error_line(err, "score") == f"the output is a directory; name a file ({tmp_path})"


def test_output_is_replaced_whole_or_left_alone(model, tmp_path, monkeypatch):
    pairs = tmp_path / "p.tsv"
    pairs.write_text("q\td\nq\te\n")
    out = tmp_path / "scores.txt"
    out.write_text("old results\n")
    out.chmod(0o640)

    def broken(*args, **kwargs):
        raise FloatingPointError("non-finite logits for pairs [1]: the weights are broken")

    with monkeypatch.context() as m:
        m.setattr(Reranker, "predict_logits", broken)
        status, _, err = cli(["score", "--model", model, str(pairs), "-o", str(out)])
    assert status == 1 and "non-finite logits" in one_error_line(err, "score")
    assert out.read_text() == "old results\n" and sorted(p.name for p in tmp_path.iterdir()) == ["p.tsv", "scores.txt"]
    status, _, err = cli(["score", "--model", model, "--raw-scores", str(pairs), "-o", str(out)])
    assert status == 0, err
    expected = Reranker.from_pretrained(model).compute_score([("q", "d"), ("q", "e")])
    np.testing.assert_allclose([float(x) for x in out.read_text().split()], expected, rtol=1e-6)
    assert out.stat().st_mode & 0o777 == 0o640  # the replaced file keeps its permissions
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.tsv", "scores.txt"]


def test_output_write_failure_leaves_no_temporary_file(tmp_path, monkeypatch):
    output = OutputFile(str(tmp_path / "out.txt"))
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(OutputError, match=r"cannot write the output: No space left on device \(.*out.txt\)"):
        output.write("x\n")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------------
# A huge single line costs what a long document does


def test_huge_line_is_tokenized_from_a_bounded_prefix(model, monkeypatch):
    """A 2 MB line: the same ids as tokenizing it whole, and the Rust tokenizer never sees more than the
    prefix (16 x max_length characters here, since words are short)."""
    reranker = Reranker.from_pretrained(model)
    words = np.random.default_rng(0).choice(["Paris", "capital", "北京是中国的首都", "of", "é", "🙂", "  "], 500_000)
    text = " ".join(words.tolist())
    assert len(text) > 2_000_000
    whole = reranker.tokenizer._tokenizer.encode_batch([("q", text)])[0].ids  # the tokenizer's own truncation
    seen = []
    real = type(reranker.tokenizer._tokenizer).encode_batch

    def spy(self, inputs, *args, **kwargs):
        seen.extend(len(t) for pair in inputs for t in (pair if isinstance(pair, tuple) else (pair,)))
        return real(self, inputs, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(type(reranker.tokenizer._tokenizer), "encode_batch", spy)
        [ours] = reranker.tokenizer.encode([("q", text)])
    assert ours.ids == whole and ours.truncated
    assert max(seen) <= 16 * 512


def test_a_huge_word_is_cut_inside_at_a_bounded_length(model):
    """1.2 million characters without a space (CJK text has none): tokenized from its first 108,192."""
    reranker = Reranker.from_pretrained(model)
    word = "北京是中国的首都" * 150_000
    assert reranker.tokenizer.clip(word) == word[: 16 * 512 + CLIP_WORD_CHARS]
    [encoded] = reranker.tokenizer.encode([("q", word)])
    assert len(encoded.ids) == 512 and encoded.truncated
    sentence = "北京是中国的首都 " * 20_000  # the same text with spaces: cut between words
    assert len(reranker.tokenizer.clip(sentence)) <= 16 * 512


def test_long_query_beside_a_long_document(model):
    """Whole, this pair would be cut by the tokenizers library into every combination of its two texts'
    max_length pieces: about 1,000 x 2,000 encodings, more memory than a machine has. From the bounded
    prefixes it is at most 16 x 16."""
    reranker = Reranker.from_pretrained(model)
    query, document = "what is the capital " * 25_000, "北京是中国的首都。 Paris " * 100_000
    [encoded] = reranker.tokenizer.encode([(query, document)])
    assert len(encoded.ids) == 512 and encoded.truncated
    assert encoded.ids[:5] == reranker.tokenizer.encode([(query[:100], document)])[0].ids[:5]


@pytest.mark.integration  # a subprocess
def test_score_on_a_5mb_line_stays_within_bounded_memory(tmp_path, tiny_dir):
    """Peak RSS of `xlmr-np score` on one 5 MB line, against the same command on a one-word line."""
    big = tmp_path / "big.tsv"
    rng = np.random.default_rng(1)
    big.write_text("query\t" + " ".join(rng.choice(["alpha", "beta", "北京", "Paris", "of"], 1_000_000)) + "\n")
    small = tmp_path / "small.tsv"
    small.write_text("query\tword\n")
    peaks = {}
    for name, path in (("small", small), ("big", big)):
        script = (
            "import resource, subprocess, sys; "
            "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
        )
        done = subprocess.run(
            [sys.executable, "-c", script, xlmr_np_command(), "score", "--model", str(tiny_dir), str(path)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        peaks[name] = int(done.stdout) / 1024  # MB
    assert Path(big).stat().st_size > 5_000_000
    assert peaks["big"] - peaks["small"] < 100, f"peak RSS {peaks['big']:.0f} MB vs {peaks['small']:.0f} MB"


# ---------------------------------------------------------------------------------------------------
# Failures of the environment are one line too


def test_missing_model_and_interrupt(model, tmp_path, monkeypatch):
    status, _, err = cli(["rerank", "--model", str(tmp_path / "nope"), "q", "d"])
    assert status == 1 and "not a directory" in one_error_line(err, "rerank")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Reranker, "score_documents", interrupted)
    status, _, err = cli(["rerank", "--model", model, "q", "d"])
    assert status == 130 and err == "xlmr-np rerank: interrupted\n"


def test_sigmoid_scores_on_stdout_stay_correct(model):
    """The reporting layer does not change what a good run prints."""
    status, out, err = cli(["score", "--model", model], stdin=b"q\td\n")
    assert status == 0, err
    expected = sigmoid64(Reranker.from_pretrained(model).compute_score([("q", "d")]))
    assert abs(float(out) - float(expected)) < 1e-6, f"abs diff {abs(float(out) - float(expected)):.3e}"
