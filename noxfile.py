"""Developer sessions, each in a fresh virtual environment:

    nox -s tests        the three tiers, as CI runs them; a missing torch/transformers fails instead of skipping
    nox -s unit         the unit tier (what `python -m pytest -q` runs): about a minute
    nox -s integration  the CLI as a subprocess, servers, notebooks, executors, ONNX, bench, the README as run
    nox -s parity       everything compared against torch and transformers, the full-size models included
    nox -s tests-fast   every tier without torch, transformers or matplotlib: what needs them skips, saying why
    nox -s notebooks    execute every notebook and check its committed .ipynb against its .py source
    nox -s fuzz         the fuzz harness with 50 times CI's budget and fresh random inputs (minutes)
    nox -s attacks      the server's attack tests with the floods (1,024 connections, 30 clients that never
                        read 8 MB answers, three 7 MiB documents at once): about a minute more than CI's
    nox -s lint         ruff check, ruff format --check, mypy on xlmr_np/
    nox -s clients_frameworks   LangChain and LlamaIndex rerankers against `xlmr-np serve` (before a release)

Arguments after `--` go to pytest (e.g. nox -s tests -- -x tests/test_eval.py). To rewrite the .ipynb files
after editing a notebook: python tools/execute_notebooks.py notebooks/NN_name.py
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]


# each tier in its own pytest process, as .ci/run runs them (tests/conftest.py defines the tiers)
TIERS = {"unit": [], "integration": ["-m", "integration"], "parity": ["-m", "parity"]}
CI_ENV = {"XLMR_NP_REQUIRE_TORCH": "1", "XLMR_NP_MAX_RSS_MB": "3072"}


@nox.session
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    for selection in TIERS.values():
        session.run("python", "-m", "pytest", "-q", *selection, *session.posargs, env=CI_ENV)


def tier_session(name: str, selection: list[str]) -> None:
    """`nox -s <name>`: one tier alone."""

    @nox.session(name=name)
    def run_tier(session: nox.Session) -> None:
        session.install("-e", ".[test]")
        session.run("python", "-m", "pytest", "-q", *selection, *session.posargs, env=CI_ENV)


for name, selection in TIERS.items():
    tier_session(name, selection)


@nox.session(name="tests-fast")
def tests_fast(session: nox.Session) -> None:
    session.install("-e", ".[test-fast]")
    absent = "import importlib.util as u; m = [m for m in ('torch', 'transformers', 'matplotlib') if u.find_spec(m)]"
    session.run("python", "-c", f"{absent}; assert not m, f'{{m}} installed: this session tests without them'")
    session.run("python", "-m", "pytest", "-q", "-m", "", *session.posargs, env={"XLMR_NP_REQUIRE_TORCH": "0"})


@nox.session
def notebooks(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run(
        "python", "-m", "pytest", "-q", "tests/test_notebooks.py", *session.posargs, env={"XLMR_NP_REQUIRE_TORCH": "1"}
    )


@nox.session
def fuzz(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run(
        "python",
        "-m",
        "pytest",
        "-q",
        "tests/test_fuzz.py",
        *session.posargs,
        env={"XLMR_NP_REQUIRE_TORCH": "1", "XLMR_NP_FUZZ": "long", "XLMR_NP_FUZZ_REPORT": "fuzz-report.json"},
    )


@nox.session
def attacks(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run(
        "python",
        "-m",
        "pytest",
        "-q",
        "tests/test_serve_attacks.py",
        *session.posargs,
        env={"XLMR_NP_REQUIRE_TORCH": "1", "XLMR_NP_ATTACKS": "long"},
    )


@nox.session
def lint(session: nox.Session) -> None:
    session.install("-e", ".[lint]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")


# LangChain and LlamaIndex rerankers: heavy (about 100 packages) and pinned to their own cohere release,
# so they stay out of the test extra and run in this session's own environment before a release.
FRAMEWORKS = ["langchain-cohere", "langchain-community", "llama-index-postprocessor-cohere-rerank"]
REPORTED = [*FRAMEWORKS, "langchain-core", "llama-index-core", "cohere"]


@nox.session(name="clients_frameworks")
def clients_frameworks(session: nox.Session) -> None:
    """LangChain's CohereRerank and JinaRerank and LlamaIndex's CohereRerank against `xlmr-np serve`."""
    session.install("-e", ".[test]", *FRAMEWORKS)
    session.run(
        "python",
        "-c",
        "import sys, importlib.metadata as m; "  # the versions tested, in the log
        "[print(name, m.version(name)) for name in sys.argv[1:]]",
        *REPORTED,
    )
    session.run(
        "python",
        "-m",
        "pytest",
        "-q",
        "tests/test_clients_frameworks.py",
        *session.posargs,
        env={"XLMR_NP_REQUIRE_FRAMEWORKS": "1", "XLMR_NP_REQUIRE_TORCH": "1"},
    )
