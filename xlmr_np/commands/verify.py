"""`xlmr-np verify`: check a rerank endpoint (or a golden file) against the local numpy reference.

Sends the probe set to the endpoint, scores the same probes locally, and reports per probe and overall
the |differences| on the endpoint's scale and on logits, rank agreement, consistency checks and, when
they differ, the likely cause. Exit status 0 when the endpoint agrees within --atol, 1 when it does not
(or cannot be checked). --write-golden writes the probes with float64 reference logits and token ids as
portable JSON; --golden checks the local model against such a file. See docs/verify.md.
"""

from __future__ import annotations

import json
import os

from ..errors import InputError
from .common import add_deprecated_alias, add_model_arguments, load_reranker, reports_errors
from .serve import API_KEY_ENV


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="check a rerank endpoint or a golden file against this model",
        description=__doc__.split("\n\n", 1)[1],
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--endpoint", metavar="URL", help="the endpoint's base URL, or its full .../rerank URL")
    target.add_argument("--golden", metavar="FILE", help="check the local model against a golden file")
    target.add_argument("--write-golden", metavar="FILE", help="write the probes with float64 logits and token ids")
    parser.add_argument(
        "--format",
        choices=("auto", "cohere", "jina", "tei", "vllm"),
        default="auto",
        help="the endpoint's wire format (default: auto, tried in turn)",
    )
    parser.add_argument(
        "--api-key-env",
        metavar="VAR",
        help=f"environment variable holding the endpoint's API key, sent as a bearer token (default: "
        f"${API_KEY_ENV}, the variable `xlmr-np serve` reads, when it is set)",
    )
    parser.add_argument(
        "--served-model-name",
        dest="endpoint_model",
        metavar="NAME",
        help="the model name the endpoint serves, sent in requests (required by vLLM; default: none sent)",
    )
    add_deprecated_alias(
        parser, "--endpoint-model", "--served-model-name", "endpoint_model", "the name serve and vLLM use"
    )
    parser.add_argument(
        "--expect-scale",
        choices=("any", "logits", "sigmoid"),
        help="fail unless the scores are on this scale (default: logits for tei, which is asked "
        "for raw scores; any otherwise)",
    )
    parser.add_argument(
        "--atol", type=float, default=None, help="tolerance on logits (default: 1e-3; float16 engines need about 5e-2)"
    )
    parser.add_argument("--float64", action="store_true", help="score the reference in float64")
    parser.add_argument("--json-report", dest="json", metavar="FILE", help="also write the full report as JSON")
    add_deprecated_alias(parser, "--json", "--json-report", "json", "--json prints JSON instead of text in rerank")
    parser.add_argument(
        "--no-diagnosis",
        action="store_true",
        help="skip the planted-fault runs that name a cause (faster on the full-size model)",
    )
    add_model_arguments(parser)
    parser.set_defaults(func=reports_errors(run))


def run(args) -> int:
    from ..verify import DEFAULT_ATOL, check_golden, connect, float64_copy, verify_endpoint, write_golden
    from ..verify.golden import read_golden
    from ..verify.probes import load_probes
    from ..verify.reference import open_tokenizer

    atol = DEFAULT_ATOL if args.atol is None else args.atol
    if not atol >= 0:
        raise InputError(f"--atol must be a non-negative number, got {args.atol}")
    api_key = os.environ.get(API_KEY_ENV, "").strip() or None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise InputError(f"--api-key-env {args.api_key_env}: that environment variable is not set")
    # Whatever can fail without the model fails first: the model takes a while to load.
    endpoint = connect(args.endpoint, args.format, api_key, args.endpoint_model) if args.endpoint else None
    if args.golden:
        read_golden(args.golden)
    reranker = load_reranker(args)
    if args.write_golden:
        reference = float64_copy(reranker)
        probes = load_probes(open_tokenizer(reference), reference.max_length)
        data = write_golden(args.write_golden, reference, probes, args.model)
        n = sum(len(p["documents"]) for p in data["probes"])
        print(
            f"xlmr-np verify: wrote {args.write_golden}: probe set {data['probe_set']['version']}, "
            f"{len(data['probes'])} probes, {n} documents, float64 logits of {data['model']['name']} "
            f"(revision {data['model']['revision'] or 'unknown'})"
        )
        return 0
    if args.golden:
        truth = float64_copy(reranker) if args.float64 else reranker
        report = check_golden(args.golden, truth, atol=atol, diagnose=not args.no_diagnosis, model_name=args.model)
    else:
        report = verify_endpoint(
            endpoint,
            reranker=reranker,
            model=args.model,
            atol=atol,
            float64=args.float64,
            expect_scale=args.expect_scale,
            diagnose=not args.no_diagnosis,
        )
    print(report)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report.to_dict(), f, ensure_ascii=False, indent=1, allow_nan=False)
            f.write("\n")
    return report.exit_code
