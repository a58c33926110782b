"""Every notebook runs top to bottom, its committed .ipynb matches its jupytext source, and it calls the
package instead of redefining it."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import nbformat
import pytest
from helpers import same_text_close_numbers

from xlmr_np.testing import execute_notebook, require

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "notebooks").glob("[0-9]*.py"))


def test_the_notebooks_are_the_ones_the_docs_list():
    """docs/inspection.md's list of notebooks names every source in notebooks/, in order, and nothing else."""
    text = (ROOT / "docs" / "inspection.md").read_text(encoding="utf-8")
    section = text[text.index("## Notebooks") :]
    listed = re.findall(r"^\d+\. `(\w+)`", section, flags=re.MULTILINE)
    assert listed == [p.stem for p in SOURCES], f"docs/inspection.md lists {listed}"


def printed(notebook) -> list[str]:
    """Per code cell: what it printed on stdout and the text of its value (stderr's warnings left out)."""
    cells = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        text = ""
        for output in cell.get("outputs", []):
            if output.output_type == "stream" and output.name == "stdout":
                text += output.text
            elif "text/plain" in output.get("data", {}):
                text += output["data"]["text/plain"]
        cells.append(text)
    return cells


@pytest.mark.integration  # a kernel per notebook
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_runs_and_prints_its_committed_outputs(source, monkeypatch):
    """Each notebook writes its own tiny random model with numpy (no $XLMR_NP_MODEL, no hub), runs without error, and
    every cell prints what its committed .ipynb shows, numbers within 1e-5 (absolute or relative: float32
    round-off, and the round-off differences the comparison tables print, change from one BLAS to another)."""
    needed = ("nbclient", "jupytext", "ipykernel", "matplotlib") + (
        ("torch", "transformers") if "03_" in source.name else ()  # 03_numerics compares against transformers
    )
    for module in needed:
        require(module, "notebook execution")
    monkeypatch.delenv("XLMR_NP_MODEL", raising=False)
    notebook = execute_notebook(source)  # raises CellExecutionError naming the failing cell
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    ran, committed = printed(notebook), printed(nbformat.read(source.with_suffix(".ipynb"), as_version=4))
    assert len(ran) == len(committed), f"{len(ran)} code cells ran, {len(committed)} committed"
    for i, (now, then) in enumerate(zip(ran, committed)):
        assert same_text_close_numbers(now, then), f"{source.name} cell {i} printed:\n{now}\ncommitted:\n{then}"


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
