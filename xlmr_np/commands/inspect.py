"""`xlmr-np inspect --model M QUERY DOC`: look inside one pair's forward pass.

Prints the logit and its sigmoid (the score `rerank` reports), a per-layer table (hidden-state size, how
much each layer rewrote its input, attention entropy, where <s> looks) and the document highlighted by
gradient-free attribution: each word's contribution to the logit (logit - logit without the word). With
--all, every named intermediate with its shape and statistics; with --plot out.png, attention heatmaps in
out.png and the attribution picture in out-attribution.png.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..errors import InputError
from .common import add_model_arguments, load_reranker, reports_errors


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="look inside the forward pass of one (query, document) pair",
        description=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("query")
    p.add_argument("document")
    p.add_argument("--all", action="store_true", help="also print every named intermediate with statistics")
    p.add_argument("--unit", choices=("word", "token"), default="word", help="attribution unit")
    p.add_argument(
        "--method",
        choices=("remove", "mask"),
        default="remove",
        help="attribution: delete the unit, or replace its tokens with <mask>",
    )
    p.add_argument(
        "--plot",
        metavar="OUT.png",
        help="write attention heatmaps here and the attribution "
        "picture next to it (OUT-attribution.png); needs matplotlib (xlmr-np[plot])",
    )
    p.add_argument("--layers", type=_indices, help="layers to plot, e.g. 0,11 (default: all)")
    p.add_argument("--heads", type=_indices, help="heads to plot, e.g. 0-3 (default: all)")
    p.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="highlight with ANSI colours (auto: when stdout is a terminal and NO_COLOR is unset)",
    )
    add_model_arguments(p)
    p.set_defaults(func=reports_errors(run))


def _indices(text: str) -> list[int]:
    """'0,2-4' -> [0, 2, 3, 4]."""
    out: list[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        try:
            out.extend(range(int(a), int(b or a) + 1))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected indices like 0,2-4, got {text!r}") from None
    return out


def run(args) -> int:
    from ..reranker import sigmoid64
    from ..tracing import attribute, format_table, inspect_pair, layer_table, render_terminal, stats

    reranker = load_reranker(args)
    config = reranker.config
    for name, chosen, count in (
        ("layer", args.layers, config.num_hidden_layers),
        ("head", args.heads, config.num_attention_heads),
    ):
        bad = [i for i in chosen or [] if not 0 <= i < count]
        if bad:
            raise InputError(f"--{name}s: the model has {count} {name}s (0..{count - 1}); got {bad}")
    seen = inspect_pair(reranker, args.query, args.document)
    segments = [s for s in seen.segments if s is not None]
    logit = float(seen.logits[0])
    print(
        f"model {args.model}: {config.num_hidden_layers} layers, {config.num_attention_heads} heads, "
        f"hidden {config.hidden_size}"
    )
    print(
        f"{len(seen.tokens)} tokens (query {segments.count(0)}, document {segments.count(1)})"
        f"{', truncated' if seen.truncated else ''}; logit {logit:.6g}, "
        f"score {float(sigmoid64(logit)):.6g} (its sigmoid, as rerank reports)"
    )
    print()
    print(format_table(layer_table(seen)))
    if args.all:
        print()
        print(format_table(stats(seen)))
    result = attribute(
        reranker, args.query, args.document, unit=args.unit, method=args.method, batch_size=args.batch_size
    )
    print()
    print(render_terminal(result, color=_use_color(args.color)))
    if args.plot:
        _plot(seen, result, args)
    return 0


def _use_color(choice: str) -> bool:
    if choice != "auto":
        return choice == "always"
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def _plot(seen, result, args) -> None:
    from ..plot import attention_figure, attribution_figure

    out = Path(args.plot)
    side = out.with_name(f"{out.stem}-attribution{out.suffix}")
    attention_figure(seen, layers=args.layers, heads=args.heads).savefig(out, dpi=100)
    verb = "removal" if args.method == "remove" else "masking"
    title = f"Attribution by {args.unit} {verb}: logit {result.logit:.4g}\nquery {args.query!r}"
    attribution_figure(result, title=title).savefig(side, dpi=100)
    print(f"\nwrote {out} (attention heatmaps) and {side} (attribution)")
