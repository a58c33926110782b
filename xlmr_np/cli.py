"""The `xlmr-np` command: a thin layer over the Python API.

Each subcommand lives in its own module under xlmr_np.commands and registers itself through
`register(subparsers)`, which adds its parser and sets `func` to the handler `func(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module; modules are imported lazily so `xlmr-np --help` stays fast.
SUBCOMMANDS = {
    "rerank": "xlmr_np.commands.rerank",
    "score": "xlmr_np.commands.score",
    "serve": "xlmr_np.commands.serve",
    "eval": "xlmr_np.commands.eval",
    "merge": "xlmr_np.commands.eval",
    "inspect": "xlmr_np.commands.inspect",
    "verify": "xlmr_np.commands.verify",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xlmr-np", description="Pure-numpy XLM-RoBERTa cross-encoder reranker")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    registered = set()
    for module_name in dict.fromkeys(SUBCOMMANDS.values()):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name == module_name:  # that subcommand is not part of this build
                continue
            raise
        if module_name not in registered:
            module.register(subparsers)
            registered.add(module_name)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
