"""`xlmr-np eval` (C-MTEB reranking MAP and MRR@10) and `xlmr-np merge` (combine shards of an eval)."""

from __future__ import annotations

import argparse
import sys

from ..cmteb import TASKS, default_cache_dir, format_table, merge_shards, run_eval
from ..tokenizer import TRUNCATION_STRATEGIES
from . import cluster
from .common import (
    DEFAULT_MODEL,
    EXIT_INTERRUPTED,
    add_deprecated_alias,
    add_device_argument,
    nonnegative_int,
    positive_int,
    reports_errors,
)


def shard_spec(text: str) -> tuple[int, int]:
    """ "I/N" -> (I, N), with 0 <= I < N."""
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"expected I/N with 0 <= I < N (e.g. 0/4 ... 3/4), got {text!r}")
    return i, n


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="C-MTEB reranking MAP and MRR@10 against bge-reranker-base's published figures",
        description="Score a C-MTEB reranking task with the numpy model and print MAP and MRR@10 beside the "
        "published bge-reranker-base figures. Scores are cached per batch: rerun the same command "
        "to resume an interrupted run.",
    )
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="model directory (config.json, model.safetensors, tokenizer.json) or hub repo id "
        f"(default: {DEFAULT_MODEL})",
    )
    p.add_argument("--revision", help="hub branch, tag or commit of a hub --model (default: main)")
    p.add_argument("--task", required=True, choices=[*TASKS, "all"])
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="read each task's parquet file from DIR/<dataset repo>/<file> (e.g. DIR/C-MTEB/T2Reranking/data/...) "
        "instead of the hub; xlmr-np synthetic-data DIR writes random ones there",
    )
    p.add_argument("--batch-size", type=positive_int, default=32, help="pairs per forward pass (default 32)")
    p.add_argument(
        "--processes",
        type=positive_int,
        default=1,
        help="worker processes, each with its share of the cores (default 1: this process, all cores)",
    )
    add_deprecated_alias(
        p, "--workers", "--processes", "processes", "--workers is threads in the other commands", type=positive_int
    )
    p.add_argument(
        "--shard",
        type=shard_spec,
        metavar="I/N",
        help="score only batches I, I+N, I+2N, ... (0 <= I < N) and write a shard file for merge",
    )
    p.add_argument(
        "--max-queries",
        type=positive_int,
        metavar="N",
        help="evaluate a random sample of N queries per task, with a bootstrap 95%% interval",
    )
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the --max-queries sample (default 0)")
    p.add_argument(
        "--max-length",
        type=positive_int,
        default=None,
        help="tokens per pair (default: the model's own limit; the published bge-reranker figures used 512)",
    )
    p.add_argument(
        "--truncation",
        choices=TRUNCATION_STRATEGIES,
        default="longest_first",
        help="longest_first (default) is what the published scores used",
    )
    p.add_argument("--score-cache", metavar="DIR", help=f"the score cache's directory (default {default_cache_dir()})")
    add_deprecated_alias(
        p, "--cache-dir", "--score-cache", "score_cache", "--cache-dir is the hub cache in the other commands"
    )
    p.add_argument("--out", default="eval-results", help="directory for results.json or shard files")
    add_device_argument(p)  # every process and shard on it: one GPU each, or all on one
    cluster.add_arguments(p)
    p.set_defaults(func=reports_errors(eval_command))

    m = subparsers.add_parser(
        "merge",
        help="merge the shard files of an `xlmr-np eval --shard` run into its results",
        description="Check that the shard files cover every shard of one evaluation (same model, settings, "
        "dataset and plan), then print and write the results as one run would.",
    )
    m.add_argument("shards", nargs="+", help="shard files (<task>.shard-I-of-N.json)")
    m.add_argument("--out", default="eval-results", help="directory for results.json")
    m.set_defaults(func=reports_errors(merge_command))

    d = subparsers.add_parser(
        "synthetic-data",
        help="write random datasets in the C-MTEB layout, to try `xlmr-np eval --data-dir DIR` offline",
        description="Write random datasets (random Han characters at each task's average query and document "
        "length; one positive and DOCS - 1 negatives per query) where `xlmr-np eval --data-dir DIR` reads "
        "them: DIR/<dataset repo>/<file>. Their MAP and MRR@10 mean nothing; the run and its cost are real.",
    )
    d.add_argument("data_dir", metavar="DIR", help="where to write them")
    d.add_argument("--task", default="all", choices=[*TASKS, "all"], help="which task's file (default: all)")
    d.add_argument("--queries", type=positive_int, default=20, help="queries per task (default: 20)")
    d.add_argument("--docs", type=_at_least_two, default=10, help="documents per query (default: 10)")
    d.add_argument("--seed", type=nonnegative_int, default=0, help="random seed (default: 0)")
    d.set_defaults(func=reports_errors(synthetic_command))


def _at_least_two(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"expected 2 or more (a positive and a negative), got {text!r}")
    return value


def eval_command(args) -> int:
    try:
        if args.executor is not None:
            done = cluster.run_from_args(args)
        else:
            done = run_eval(
                args.model,
                args.task,
                out_dir=args.out,
                cache_dir=args.score_cache,
                batch_size=args.batch_size,
                workers=args.processes,
                shard=args.shard,
                max_queries=args.max_queries,
                seed=args.seed,
                max_length=args.max_length,
                truncation=args.truncation,
                revision=args.revision,
                data_dir=args.data_dir,
                device=args.device,
            )
    except KeyboardInterrupt:
        print(
            "xlmr-np eval: interrupted; the finished batches are cached, rerun the same command to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if done["results"] is not None:
        print(format_table(done["results"]))
    for path in done["files"]:
        print(f"wrote {path}", file=sys.stderr)
    if args.shard is not None:
        print(
            f"shard {args.shard[0]}/{args.shard[1]} done; once every shard is, run: "
            f"xlmr-np merge <all shard files> --out DIR",
            file=sys.stderr,
        )
    return 0


def merge_command(args) -> int:
    print(format_table(merge_shards(args.shards, args.out)))
    return 0


def synthetic_command(args) -> int:
    from ..cmteb.synthetic import write_synthetic

    for path in write_synthetic(args.data_dir, args.task, args.queries, args.docs, args.seed):
        print(f"wrote {path}")
    print(f"random data, not the real datasets: xlmr-np eval --data-dir {args.data_dir} --task ... runs on it")
    return 0
