"""Every notebook runs top to bottom, its committed .ipynb matches its jupytext source, and it calls the
package instead of redefining it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from xlmr_np.testing import execute_notebook, require

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "notebooks").glob("[0-9]*.py"))


def test_there_are_notebooks():
    assert [p.name[:2] for p in SOURCES] == ["01", "02", "03", "04"]


@pytest.mark.integration  # a kernel per notebook
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_executes_without_error(source, monkeypatch):
    """Each notebook builds its own tiny random model (no $XLMR_NP_MODEL, no hub)."""
    for module in ("nbclient", "jupytext", "ipykernel", "torch", "transformers", "matplotlib"):
        require(module, "notebook execution")
    monkeypatch.delenv("XLMR_NP_MODEL", raising=False)
    notebook = execute_notebook(source)  # raises CellExecutionError naming the failing cell
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors


@pytest.mark.integration  # jupytext runs `pandoc --version`
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_paired_ipynb_is_in_sync_and_executed(source):
    jupytext = require("jupytext", "notebook sources")
    paired = source.with_suffix(".ipynb")
    assert paired.is_file(), f"{paired.name} missing: run python tools/execute_notebooks.py {source.name}"
    expected = [(c.cell_type, c.source) for c in jupytext.read(source).cells]
    committed = jupytext.read(paired)
    assert [(c.cell_type, c.source) for c in committed.cells] == expected, (
        f"{paired.name} is stale: run python tools/execute_notebooks.py notebooks/{source.name}"
    )
    code = [c for c in committed.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), f"{paired.name} was saved without running every cell"
    figures = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert figures or "01_" in source.name, f"{paired.name} should show its figures"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_does_not_redefine_package_code(source):
    import xlmr_np
    from xlmr_np import model, parity, plot, tracing

    ours = set()
    for module in (xlmr_np, model, tracing, parity, plot):
        ours |= {n for n in vars(module) if not n.startswith("__")}
    tree = ast.parse(source.read_text())
    defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert not defined & ours, f"{source.name} redefines {sorted(defined & ours)}: import them instead"
