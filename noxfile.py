"""Developer sessions, each in a fresh virtual environment:

    nox -s tests        the whole suite; a missing torch/transformers fails instead of skipping
    nox -s tests-fast   without torch, transformers or matplotlib: the tests that need them skip, saying why
    nox -s notebooks    execute every notebook and check its committed .ipynb against its .py source
    nox -s lint         ruff check, ruff format --check, mypy on xlmr_np/

Arguments after `--` go to pytest (e.g. nox -s tests -- -x tests/test_eval.py). To rewrite the .ipynb files
after editing a notebook: python tools/execute_notebooks.py notebooks/NN_name.py
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]


@nox.session
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", "-q", *session.posargs, env={"XLMR_NP_REQUIRE_TORCH": "1"})


@nox.session(name="tests-fast")
def tests_fast(session: nox.Session) -> None:
    session.install("-e", ".[test-fast]")
    absent = "import importlib.util as u; m = [m for m in ('torch', 'transformers', 'matplotlib') if u.find_spec(m)]"
    session.run("python", "-c", f"{absent}; assert not m, f'{{m}} installed: this session tests without them'")
    session.run("python", "-m", "pytest", "-q", *session.posargs, env={"XLMR_NP_REQUIRE_TORCH": "0"})


@nox.session
def notebooks(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", "-q", "tests/test_notebooks.py", *session.posargs,
                env={"XLMR_NP_REQUIRE_TORCH": "1"})


@nox.session
def lint(session: nox.Session) -> None:
    session.install("-e", ".[lint]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")
