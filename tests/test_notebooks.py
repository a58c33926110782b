"""Every notebook runs top to bottom, its committed .ipynb matches its jupytext source, and it calls the
package instead of redefining it."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from xlmr_np.testing import execute_notebook, require

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "notebooks").glob("[0-9]*.py"))


def test_there_are_notebooks():
    assert [p.name[:2] for p in SOURCES] == ["01", "02", "03", "04"]


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_executes_without_error(source, monkeypatch):
    """Each notebook writes its own tiny random model (no $XLMR_NP_MODEL, no hub); only 03_numerics, which
    compares against transformers, needs torch."""
    needed = ("nbclient", "jupytext", "ipykernel", "matplotlib") + (
        ("torch", "transformers") if "03_" in source.name else ()
    )
    for module in needed:
        require(module, "notebook execution")
    monkeypatch.delenv("XLMR_NP_MODEL", raising=False)
    notebook = execute_notebook(source)  # raises CellExecutionError naming the failing cell
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors


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


# What a saved output must not hold: a warning, or a path of the machine that executed it.
MACHINE_PATH = re.compile(r"(/tmp/|/home/|/root/|/work/|/Users/|site-packages|xlmr-np-notebook-|[A-Z]:\\\\)")


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_saved_outputs_hold_no_warning_and_no_machine_path(source):
    saved = json.loads(source.with_suffix(".ipynb").read_text(encoding="utf-8"))
    for number, cell in enumerate(saved["cells"]):
        for output in cell.get("outputs", []):
            assert output.get("name") != "stderr", f"cell {number} wrote to stderr: {''.join(output['text'])[:300]}"
            widget = output.get("data", {}).get("application/vnd.jupyter.widget-view+json")
            assert widget is None, f"cell {number} saved a widget (a progress bar?): {output['data']}"
            text = json.dumps({k: v for k, v in output.get("data", {}).items() if not k.startswith("image/")})
            text += "".join(output.get("text", ""))
            assert "Warning" not in text, f"cell {number} shows a warning: {text[:300]}"
            found = MACHINE_PATH.search(text)
            assert found is None, (
                f"cell {number} shows a path of the machine: {text[max(0, found.start() - 80) :][:200]}"
            )


def test_the_regeneration_tool_explains_itself(capsys):
    from tools.execute_notebooks import parse_args

    with pytest.raises(SystemExit) as done:
        parse_args(["--help"])
    assert done.value.code == 0
    shown = capsys.readouterr().out
    assert shown.startswith("usage: python tools/execute_notebooks.py") and "pip install -e '.[notebooks]'" in shown
    with pytest.raises(SystemExit) as done:
        parse_args(["notebooks/missing.py"])
    assert done.value.code == 2
    assert "notebooks/missing.py: not a jupytext source" in capsys.readouterr().err
