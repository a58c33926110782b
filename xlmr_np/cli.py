"""The `xlmr-np` command: a thin layer over the Python API.

Each subcommand lives in its own module under xlmr_np.commands and registers itself through
`register(subparsers)`, which adds its parser and sets `func` to the handler `func(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# subcommand -> module; modules are imported lazily so `xlmr-np --help` stays fast.
SUBCOMMANDS = {
    "rerank": "xlmr_np.commands.rerank",
    "score": "xlmr_np.commands.score",
    "serve": "xlmr_np.commands.serve",
    "eval": "xlmr_np.commands.eval",
    "merge": "xlmr_np.commands.eval",
    "synthetic-data": "xlmr_np.commands.eval",
    "inspect": "xlmr_np.commands.inspect",
    "verify": "xlmr_np.commands.verify",
    "random-model": "xlmr_np.commands.random_model",
}


class Parser(argparse.ArgumentParser):
    """argparse with its error on one line: an argument it echoes ("unrecognized arguments: ...") may hold a
    newline or a carriage return, shown escaped. Subparsers are made of this class too."""

    def error(self, message: str):
        from .commands.common import one_line

        super().error(one_line(message))


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="xlmr-np", description="Pure-numpy XLM-RoBERTa cross-encoder reranker")
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
    """Run one subcommand and return its exit status: 0 done, 1 failed, 2 usage error, 130 interrupted.

    Every failure is one line on stderr (see commands.common.report); argparse's own usage errors keep
    argparse's form (the usage line, then `xlmr-np <command>: error: ...`) and status 2.
    """
    from .commands.common import EXIT_INTERRUPTED, EXIT_USAGE, report

    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error argparse has printed (2)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    command = getattr(args, "command", None) or ""
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"xlmr-np {command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `xlmr-np ... | head`: the reader has what it wanted
        _silence_stdout()
        return 1
    except Exception as e:  # the package's errors, OS errors and MemoryError as one line; bugs re-raised
        return report(command, e)


def _silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so that the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
