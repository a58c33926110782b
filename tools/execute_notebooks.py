"""Execute the jupytext sources in notebooks/ and write their paired .ipynb files with outputs.

The .py files (jupytext percent format) are the sources; the .ipynb files are generated from them, so
that GitHub shows every notebook with its tables and figures. tests/test_notebooks.py executes the same
sources with xlmr_np.testing.execute_notebook and checks that each .ipynb still matches its .py.

Run: python tools/execute_notebooks.py [notebooks/01_one_pair_step_by_step.py ...]   (default: all)
Needs the test extra (jupytext, nbclient, ipykernel, matplotlib, torch, transformers). Without
$XLMR_NP_MODEL every notebook builds its own tiny random model; no hub access.
"""

from __future__ import annotations

import sys
from pathlib import Path

from xlmr_np.testing import execute_notebook

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def main(argv: list[str]) -> int:
    import jupytext

    sources = [Path(a) for a in argv] or sorted(NOTEBOOKS.glob("[0-9]*.py"))
    for source in sources:
        notebook = execute_notebook(source.resolve())
        target = source.with_suffix(".ipynb")
        jupytext.write(notebook, target, fmt="ipynb")
        print(f"{source} -> {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
