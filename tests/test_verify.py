"""xlmr-np verify: the probe set, the analysis on synthetic answers, in-process engines, xlmr-np's own
server in each format it speaks, golden files, and the user-facing errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from processes import HUB_REPO, ServerProcess, offline_hub, run
from tokenizers import Tokenizer

from xlmr_np.reranker import sigmoid64
from xlmr_np.testing import xlmr_tokenizer_json
from xlmr_np.verify import Verifier, VerifyError, compare_scores, kendall_tau, verify_endpoint
from xlmr_np.verify.analysis import detect_scale
from xlmr_np.verify.clients import Endpoint, parse_results
from xlmr_np.verify.probes import load_probes, probe_data

KEY_VAR, KEY = "VERIFY_TEST_KEY", "verify-key-30c1"


# --- the probe set ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def probe_set():
    return load_probes(Tokenizer.from_file(str(xlmr_tokenizer_json())))


def test_long_documents_have_exactly_their_stated_token_counts(probe_set):
    tokenizer = Tokenizer.from_file(str(xlmr_tokenizer_json()))

    def count(text):
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    lengths = probe_set.by_id("lengths")
    assert [count(d) for d in lengths.documents] == [200, 300, 510, 520, 2000] == list(lengths.tokens)
    long_query = probe_set.by_id("long-query")
    assert count(long_query.query) == 300
    assert [count(d) for d in long_query.documents[:2]] == [300, 600]


def test_probe_set_is_versioned_and_every_probe_says_what_a_difference_means(probe_set):
    data, sha256 = probe_data()
    assert probe_set.version == data["version"] == "1" and probe_set.sha256 == sha256 and len(sha256) == 64
    assert "by hand" in probe_set.provenance
    ids = [p.id for p in probe_set.probes]
    assert len(ids) == len(set(ids)) == 14
    for p in probe_set.probes:
        assert len(p.meaning) > 60 and p.documents, p.id
    shuffled = probe_set.by_id("shuffled")
    assert sorted(shuffled.documents) == sorted(probe_set.by_id(shuffled.shuffle_of).documents)
    assert {p.category for p in probe_set.probes} >= {
        "model",
        "template",
        "precision",
        "truncation",
        "unicode",
        "edge",
        "consistency",
    }


def test_normalisation_probe_holds_nfc_and_nfd_forms(probe_set):
    import unicodedata

    docs = probe_set.by_id("normalisation").documents
    assert docs[0] != docs[1] and unicodedata.normalize("NFC", docs[1]) == docs[0]
    assert docs[2] != docs[3] and unicodedata.normalize("NFC", docs[3]) == docs[2]


# --- analysis on synthetic answers ----------------------------------------------------------------------


def test_kendall_tau_worked_examples():
    assert kendall_tau([3, 2, 1], [30, 20, 10]) == 1.0
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0
    assert kendall_tau([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(4 / 6)
    assert kendall_tau([1, 1 + 1e-9, 3], [1, 1, 3]) < 1.0
    assert kendall_tau([1, 1 + 1e-9, 3], [1, 1, 3], tol=1e-6) == 1.0


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda x: x + 1e-6, "logits"),
        (lambda x: sigmoid64(x), "sigmoid"),
        (lambda x: 0.5 * x + 3.0, "affine"),
        (lambda x: np.tanh(x / 4), "monotone"),
    ],
)
def test_scale_detection(make, name):
    x = np.linspace(-9, 7, 40)
    scale = detect_scale(make(x), x, atol=1e-3)
    assert scale.name == name, scale.detail
    if name == "affine":
        assert (scale.a, scale.b) == pytest.approx((0.5, 3.0))


def test_parse_results_names_bad_repeated_and_missing_indices():
    answer = parse_results(
        [{"index": 0, "score": 1.0}, {"index": 0, "score": 2.0}, {"index": 7, "score": 3.0}, {"index": 1}], 3, "score"
    )
    assert answer.problems == [
        "index 0 appears more than once",
        "result index 7 is not an index into the 3 documents",
        "result 1 has no numeric score",
        "no result for documents [1, 2]",
    ]


# --- in-process engines ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reranker(tiny_reranker):
    return tiny_reranker


@pytest.fixture(scope="module")
def verifier(reranker):
    return Verifier(reranker)


def test_compare_scores_on_the_model_itself_is_exact(reranker):
    def engine(query, documents):
        return reranker.score_documents(query, documents, raw_scores=True).logits

    report = compare_scores(engine, reranker=reranker)
    assert report.agrees and report.exit_code == 0 and report.verdict == "agrees"
    assert report.analysis.overall("logit_diff") == (0.0, 0.0)
    assert "verdict: agrees within atol 0.001 on logits (exit 0)" in str(report)


def test_monotone_map_is_compared_on_ranks_only(verifier, reranker):
    def steep(q, docs):  # strictly increasing, neither affine nor a sigmoid
        x = reranker.score_documents(q, docs, raw_scores=True).logits
        return 1000 * x**3 + x

    report = verifier.check(steep)
    assert report.analysis.scale.name == "monotone" and report.verdict == "ranks agree", str(report)
    as_json = json.loads(json.dumps(report.to_dict(), allow_nan=False))  # no NaN although nothing is on logits
    assert as_json["overall"]["max_abs_diff"] is None and as_json["probes"][0]["abs_diff_logits"] is None
    report = verifier.check(lambda q, docs: -reranker.score_documents(q, docs, raw_scores=True).logits, diagnose=False)
    assert not report.agrees


def test_engine_failures_are_per_probe(verifier, reranker):
    def refuses_empty(query, documents):
        if any(not d.strip() for d in documents):
            raise ValueError("empty document")
        return reranker.score_documents(query, documents, raw_scores=True).logits

    report = verifier.check(refuses_empty)
    not_answered = [r.probe.id for r in report.analysis.results if not r.answered]
    assert not_answered == ["empty"] and report.agrees
    assert "empty   " in str(report) and "not answered: ValueError: empty document" in str(report)
    report = verifier.check(lambda q, docs: [0.0])
    assert report.verdict == "no answers" and report.exit_code == 1


def test_ties_and_order_are_checked(verifier, reranker):
    calls = []

    def position_dependent(query, documents):  # a score that leaks the document's position
        calls.append(1)
        return reranker.score_documents(query, documents, raw_scores=True).logits + 0.01 * np.arange(len(documents))

    report = verifier.check(position_dependent, diagnose=False)
    causes = [f.cause for f in report.analysis.findings]
    assert "identical documents score differently" in causes
    assert "a document's score follows its position, not its text" in causes
    assert not report.agrees and len(calls) == len(verifier.probes)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(atol=-1), "atol must be a non-negative number"),
        (dict(expect_scale="probabilities"), "expect_scale must be any, logits or sigmoid"),
    ],
)
def test_bad_arguments(verifier, kwargs, message):
    with pytest.raises(VerifyError, match=message):
        verifier.check(lambda q, d: [0.0] * len(d), **kwargs)


# --- xlmr-np's own server ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def env(tiny_dir, tmp_path_factory):
    return offline_hub(tiny_dir, tmp_path_factory.mktemp("hub-cache"))


@pytest.fixture(scope="module")
def server(env, tmp_path_factory):
    process = ServerProcess(
        ["--served-model-name", "tiny"], dict(env, XLMR_NP_API_KEY=KEY), tmp_path_factory.mktemp("logs") / "serve.log"
    )
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


@pytest.mark.integration  # xlmr-np serve / verify in a subprocess
@pytest.mark.parametrize(
    "format, path, scale",
    [
        ("cohere", "", "sigmoid"),
        ("cohere", "/v2/rerank", "sigmoid"),
        ("jina", "", "sigmoid"),
        ("vllm", "", "sigmoid"),
        ("tei", "", "logits"),  # verify asks TEI for raw_scores
    ],
)
def test_own_server_agrees_in_each_format(format, path, scale, server, verifier):
    report = verify_endpoint(server.url + path, format=format, api_key=KEY, endpoint_model="tiny", verifier=verifier)
    max_logit_diff, mean_logit_diff = report.analysis.overall("logit_diff")
    assert report.agrees, str(report)
    assert max_logit_diff <= 1e-6, f"max |diff| {max_logit_diff:.3e}, mean {mean_logit_diff:.3e} on logits"
    assert report.analysis.scale.name == scale


@pytest.mark.integration  # xlmr-np serve / verify in a subprocess
def test_cli_against_own_server_with_json_report(server, env, tmp_path):
    """The README's example: default --model (the hub id, resolved from the cache), format detected."""
    out = tmp_path / "report.json"
    result = run(
        ["verify", "--endpoint", server.url, "--api-key-env", KEY_VAR, "--json-report", str(out)],
        dict(env, **{KEY_VAR: KEY}),
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"xlmr-np verify: {server.url}/v1/rerank (cohere format)" in result.stdout
    assert "verdict: agrees within atol 0.001 on logits (exit 0)" in result.stdout
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["verdict"] == "agrees" and report["reference"]["revision"] == "0" * 40
    assert report["overall"]["max_abs_diff_logits"] <= 1e-6, report["overall"]
    assert len(report["probes"]) == 14 and report["probe_set"]["version"] == "1"


@pytest.mark.integration  # xlmr-np serve / verify in a subprocess
@pytest.mark.parametrize(
    "args, extra_env, message",
    [
        (["--endpoint", "http://127.0.0.1:9"], {}, "cannot reach http://127.0.0.1:9/v1/rerank"),
        (["--endpoint", "URL", "--api-key-env", "NO_SUCH_VAR_XYZ"], {}, "NO_SUCH_VAR_XYZ: that environment variable"),
        (["--endpoint", "URL", "--format", "cohere"], {}, "refused the request (HTTP 401"),
        (
            ["--endpoint", "URL/v9/rerank", "--format", "cohere", "--api-key-env", KEY_VAR],
            {KEY_VAR: KEY},
            "no such route (HTTP 404)",
        ),
        (
            ["--endpoint", "URL", "--format", "cohere", "--api-key-env", KEY_VAR, "--served-model-name", "other"],
            {KEY_VAR: KEY},
            'model "other" is not served here',
        ),
        (["--endpoint", "URL", "--format", "vllm"], {}, "the vllm format needs the served model name"),
        (["--golden", "GOLDEN"], {}, "not an xlmr-np golden file"),
        (["--endpoint", "URL", "--atol", "-1"], {}, "--atol must be a non-negative number"),
    ],
)
def test_cli_errors_are_one_line_with_exit_status_1(args, extra_env, message, server, env, tmp_path):
    golden = tmp_path / "golden.json"
    golden.write_text('{"format": "something else"}', encoding="utf-8")
    args = [a.replace("URL", server.url) if a.startswith("URL") else str(golden) if a == "GOLDEN" else a for a in args]
    result = run(["verify", *args], dict(env, **extra_env), timeout=300)
    assert result.returncode == 1 and message in result.stderr, result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_endpoint_url_forms():
    assert Endpoint("http://h:1", "tei").url == "http://h:1/rerank"
    assert Endpoint("http://h:1/", "cohere").url == "http://h:1/v1/rerank"
    assert Endpoint("http://h:1/v2/rerank", "cohere").url == "http://h:1/v2/rerank"
    body = Endpoint("http://h:1", "tei").body("q", ["a"])
    assert body == {"query": "q", "texts": ["a"], "raw_scores": True, "return_text": True, "truncate": True}


# --- golden files -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def perturbed_model(tiny_dir, tmp_path_factory):
    """The tiny model with classifier.dense's weights moved by 1e-3: every logit shifts a little."""
    from safetensors.numpy import load_file, save_file

    directory = tmp_path_factory.mktemp("perturbed")
    for f in tiny_dir.iterdir():
        shutil.copy(f, directory / f.name)
    weights = load_file(directory / "model.safetensors")
    rng = np.random.default_rng(0)
    key = "classifier.dense.weight"
    weights[key] = weights[key] + 1e-3 * rng.standard_normal(weights[key].shape).astype(np.float32)
    save_file(weights, directory / "model.safetensors", metadata={"format": "pt"})
    return directory


@pytest.mark.integration  # xlmr-np serve / verify in a subprocess
def test_golden_round_trip(tiny_dir, perturbed_model, env, tmp_path):
    golden = tmp_path / "golden.json"
    result = run(["verify", "--write-golden", str(golden)], env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"wrote {golden}: probe set 1, 14 probes, 65 documents, float64 logits of {HUB_REPO}" in result.stdout
    data = json.loads(golden.read_text(encoding="utf-8"))
    assert data["format"] == "xlmr-np-verify-golden" and data["format_version"] == 1
    assert data["model"]["revision"] == "0" * 40 and data["probe_set"]["version"] == "1"
    assert data["scoring"]["dtype"] == "float64" and len(data["model"]["sha256"]["model.safetensors"]) == 64
    first = data["probes"][0]["documents"][0]
    assert first["input_ids"][0] == 0 and first["input_ids"][-1] == 2 and isinstance(first["logit"], float)

    out = tmp_path / "same.json"
    same = run(["verify", "--golden", str(golden), "--float64", "--json-report", str(out)], env, timeout=300)
    assert same.returncode == 0, same.stdout + same.stderr
    overall = json.loads(out.read_text(encoding="utf-8"))["overall"]
    assert overall["max_abs_diff_logits"] == 0.0, overall

    other = run(
        ["verify", "--golden", str(golden), "--float64", "--no-diagnosis", "--model", str(perturbed_model)],
        env,
        timeout=300,
    )
    assert other.returncode == 1, other.stdout + other.stderr
    assert "verdict: differs (exit 1)" in other.stdout
    lines = [line for line in other.stdout.splitlines() if line.startswith("overall on logits")]
    assert float(lines[0].split("max |diff| ")[1].split(",")[0]) > 1e-4, lines
