"""Execute the jupytext sources in notebooks/ and write their paired .ipynb files with outputs.

The .py files (jupytext percent format) are the sources; the .ipynb files are generated from them, so
that GitHub shows every notebook with its tables and figures. tests/test_notebooks.py executes the same
sources with xlmr_np.testing.execute_notebook, checks that each .ipynb still matches its .py, and that the
saved outputs hold no warning and no path of the machine that ran them.

Needs the notebooks extra (pip install -e '.[notebooks]'); 03_numerics also compares against transformers
(the test extra). Without $XLMR_NP_MODEL every notebook writes its own tiny random model: no hub access.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python tools/execute_notebooks.py",
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "sources",
        nargs="*",
        type=Path,
        metavar="SOURCE.py",
        help="jupytext sources to execute (default: every notebooks/[0-9]*.py)",
    )
    parser.add_argument(
        "--timeout", type=int, default=600, help="seconds a cell may run before it fails (default: 600)"
    )
    args = parser.parse_args(argv)
    for source in args.sources:
        if source.suffix != ".py" or not source.is_file():
            parser.error(f"{source}: not a jupytext source (expected an existing .py file, e.g. notebooks/01_*.py)")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        import jupytext

        from xlmr_np.testing import execute_notebook
    except ImportError as e:
        print(f"execute_notebooks: {e.name} is missing: pip install -e '.[notebooks]'", file=sys.stderr)
        return 1
    for source in args.sources or sorted(NOTEBOOKS.glob("[0-9]*.py")):
        notebook = execute_notebook(source.resolve(), timeout=args.timeout)
        target = source.with_suffix(".ipynb")
        jupytext.write(notebook, target, fmt="ipynb")
        print(f"{source} -> {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
