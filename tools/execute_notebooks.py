"""Execute the jupytext sources in notebooks/ and write their paired .ipynb files with outputs.

The .py files (jupytext percent format) are the sources; the .ipynb files are generated from them, so
that GitHub shows every notebook with its tables and figures. tests/test_notebooks.py executes the same
sources with `execute` and checks that each .ipynb still matches its .py.

Run: python tools/execute_notebooks.py [notebooks/01_one_pair_step_by_step.py ...]   (default: all)
Needs the test extra (jupytext, nbclient, ipykernel, matplotlib, torch, transformers). Without
$XLMR_NP_MODEL every notebook builds its own tiny random model; no hub access.
"""

from __future__ import annotations

import sys
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def execute(source: Path, timeout: int = 300):
    """Run a jupytext .py notebook in a fresh kernel, with notebooks/ as the working directory.

    Raises nbclient.exceptions.CellExecutionError, naming the cell and the error, if any cell fails.
    """
    import jupytext
    from nbclient import NotebookClient

    notebook = jupytext.read(source)
    for i, cell in enumerate(notebook.cells):
        cell.id = f"cell-{i:02d}"  # stable ids (jupytext draws random ones), so re-runs diff cleanly
    NotebookClient(notebook, timeout=timeout, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(source.parent)}}).execute()
    return notebook


def main(argv: list[str]) -> int:
    import jupytext

    sources = [Path(a) for a in argv] or sorted(NOTEBOOKS.glob("[0-9]*.py"))
    for source in sources:
        notebook = execute(source.resolve())
        target = source.with_suffix(".ipynb")
        jupytext.write(notebook, target, fmt="ipynb")
        print(f"{source} -> {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
