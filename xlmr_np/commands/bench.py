"""`xlmr-np bench`: throughput against transformers+torch and onnxruntime (see xlmr_np.benchmark).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE xlmr-np bench --model ~/.cache/xlmr-np/full-random --out bench-out
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from ..benchmark import ENGINES, run


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="measure docs/s against transformers+torch and onnxruntime",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=Path.home() / ".cache/xlmr-np/full-random",
                   help="random full-size model directory, built on first use (default: %(default)s)")
    p.add_argument("--out", type=Path, default=Path("bench-out"),
                   help="where report.md, report.json and bench.png go (default: %(default)s)")
    p.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset of %(default)s")
    p.add_argument("--repeats", type=int, default=5, help="timed passes per workload and engine (median)")
    p.add_argument("--pairs", type=int, default=64, help="pairs in the uniform 128/256 workloads (512: half)")
    p.add_argument("--documents", type=int, default=100, help="documents in the rerank and mixed workloads")
    p.add_argument("--batch-sizes", default="8,16,32", help="candidates; each engine gets its fastest")
    p.add_argument("--no-build", action="store_true", help="fail instead of building a missing model")
    p.add_argument("--no-cold-start", action="store_true", help="skip the fresh-process load/RSS measurements")
    p.set_defaults(func=handle)


def handle(args) -> int:
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    sizes = [int(s) for s in args.batch_sizes.split(",") if s.strip()]
    if min(args.repeats, args.pairs, args.documents) < 1 or not sizes or min(sizes) < 1:
        print("xlmr-np bench: --repeats, --pairs, --documents and --batch-sizes must be positive", file=sys.stderr)
        return 2
    command = "xlmr-np " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else "xlmr-np bench"
    text = run(args.model, args.out, engines=engines, repeats=args.repeats, pairs=args.pairs,
               batch_candidates=sizes, build=not args.no_build, cold=not args.no_cold_start,
               documents=args.documents, command=command, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(text)
    return 0
