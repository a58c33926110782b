"""`xlmr-np random-model DIR`: write a random model to try every command on, with numpy alone, offline."""

from __future__ import annotations

import argparse

from .common import nonnegative_int, positive_int, reports_errors


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def register(subparsers) -> None:
    from ..random_model import DEFAULT_STD, TOKENIZER_PACKAGE

    parser = subparsers.add_parser(
        "random-model",
        help="write a random model (config.json, model.safetensors, tokenizer.json) to try the commands on",
        description="Write a random XLMRobertaForSequenceClassification into DIR, in the hub's file layout, "
        "with numpy alone: config.json, model.safetensors, the real XLM-R tokenizer.json (shipped by "
        f"{TOKENIZER_PACKAGE}, in the 'try' extra) and tokenizer_config.json. Every command runs on it "
        "offline; its scores mean nothing. Default: a tiny model (2 layers, hidden 32; 32 MB of weights).",
    )
    parser.add_argument(
        "directory", metavar="DIR", help="where to write it (created; must be new, empty or an earlier random model)"
    )
    parser.add_argument(
        "--like",
        metavar="NAME",
        help="the shapes and length limit of a known model: bge-reranker-base, bge-reranker-large, "
        "bge-reranker-v2-m3, bce-reranker-base_v1 (1.1 to 2.2 GB at full depth; --num-layers 2 makes "
        "them 0.8 to 1.1 GB)",
    )
    parser.add_argument(
        "--num-layers", type=positive_int, metavar="N", help="encoder layers (default: 2, or the --like model's)"
    )
    parser.add_argument(
        "--std",
        type=positive_float,
        default=DEFAULT_STD,
        help=f"standard deviation of the weights (default: {DEFAULT_STD}, transformers' initializer_range, "
        "which gives nearly uniform attention; 0.2 gives the sharp attention of trained models)",
    )
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--max-length",
        type=positive_int,
        help="tokenizer_config.json's model_max_length, the model's own limit (default: the position table's)",
    )
    parser.add_argument(
        "--tokenizer", metavar="FILE", help="a tokenizer.json to copy instead of the one the 'try' extra ships"
    )
    parser.set_defaults(func=reports_errors(run))


def run(args) -> int:
    from ..config import XLMRobertaConfig
    from ..random_model import random_config, write_random_model

    fields = {} if args.num_layers is None else {"num_hidden_layers": args.num_layers}
    raw = random_config(args.like, **fields)
    target = write_random_model(
        args.directory, raw, std=args.std, seed=args.seed, max_length=args.max_length, tokenizer=args.tokenizer
    )
    config = XLMRobertaConfig.from_dict(raw)
    size = (target / "model.safetensors").stat().st_size
    print(
        f"wrote {target}: a random model ({config.num_hidden_layers} layers, hidden {config.hidden_size}, "
        f"{config.num_attention_heads} heads, {size / 1e6:.0f} MB of float32 weights, std {args.std:g}, "
        f"seed {args.seed}); its scores mean nothing"
    )
    return 0
