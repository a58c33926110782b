"""python -m bench: docs/s of xlmr_np against transformers+torch and onnxruntime, on one machine, in one run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m bench --out bench-out

Run from a source checkout with the bench extra installed (pip install -e '.[bench]'). Writes
report.md, report.json and bench.png to --out, and prints the report.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from xlmr_np.commands.common import add_device_argument

from .errors import BenchmarkError
from .long import LongOptions
from .peers import IMPLEMENTATIONS
from .run import run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    p.add_argument(
        "--model",
        type=Path,
        default=Path.home() / ".cache/xlmr-np/full-random",
        help="random full-size model directory, built on first use (default: %(default)s)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("bench-out"),
        help="where report.md, report.json and bench.png go (default: %(default)s)",
    )
    p.add_argument("--implementations", default=",".join(IMPLEMENTATIONS), help="comma-separated subset of %(default)s")
    p.add_argument("--repeats", type=int, default=5, help="timed passes per workload and implementation (median)")
    p.add_argument("--pairs", type=int, default=64, help="pairs in the uniform 128/256 workloads (512: half)")
    p.add_argument("--documents", type=int, default=100, help="documents in the rerank and mixed workloads")
    p.add_argument("--batch-sizes", default="8,16,32", help="candidates; each implementation gets its fastest")
    p.add_argument("--no-build", action="store_true", help="fail instead of building a missing model")
    p.add_argument("--no-cold-start", action="store_true", help="skip the fresh-process load/RSS measurements")
    p.add_argument("--no-long", action="store_true", help="skip the long-input part (bge-reranker-v2-m3's shapes)")
    p.add_argument(
        "--long-layers", type=int, default=2, help="layers of the long model, the same for every implementation"
    )
    p.add_argument(
        "--long-model",
        type=Path,
        default=None,
        help="long model directory, built on first use (default: ~/.cache/xlmr-np/v2-m3-shaped-sharp-<layers>-layers)",
    )
    p.add_argument(
        "--long-onnxruntime-max",
        type=int,
        default=2048,
        help="onnxruntime runs the long workloads up to this many tokens per pair (its eager-attention graph holds "
        "[16, T, T] scores per layer: 4.3 GB at 8,192 tokens)",
    )
    add_device_argument(p)  # cuda: the GPU column alone (xlmr_np on CuPy against torch on the same GPU)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    implementations = [e.strip() for e in args.implementations.split(",") if e.strip()]
    sizes = [int(s) for s in args.batch_sizes.split(",") if s.strip()]
    if min(args.repeats, args.pairs, args.documents, args.long_layers) < 1 or not sizes or min(sizes) < 1:
        print(
            "python -m bench: --repeats, --pairs, --documents, --batch-sizes and --long-layers must be positive",
            file=sys.stderr,
        )
        return 2
    long_model = args.long_model or Path.home() / f".cache/xlmr-np/v2-m3-shaped-sharp-{args.long_layers}-layers"
    long = None if args.no_long else LongOptions(long_model, args.long_layers, args.long_onnxruntime_max)
    command = "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        text = run(
            args.model,
            args.out,
            implementations=implementations,
            repeats=args.repeats,
            pairs=args.pairs,
            batch_candidates=sizes,
            build=not args.no_build,
            cold=not args.no_cold_start,
            documents=args.documents,
            long=long,
            command=command.strip(),
            device=args.device,
            log=lambda m: print(m, file=sys.stderr, flush=True),
        )
    except BenchmarkError as e:
        print(f"python -m bench: error: {e}", file=sys.stderr)
        return 1
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
