"""Check any rerank endpoint or engine against the numpy reference, and say what differs and why.

    >>> from xlmr_np import Reranker
    >>> from xlmr_np.verify import compare_scores, verify_endpoint
    >>> reranker = Reranker.from_pretrained("BAAI/bge-reranker-base")
    >>> report = verify_endpoint("http://localhost:8080", reranker=reranker)       # TEI, Cohere, Jina, vLLM
    >>> report = compare_scores(lambda q, docs: engine.score(q, docs), reranker=reranker)   # in process
    >>> print(report); report.agrees; report.diagnosis

The probes (probes-v2.json, hand-written and versioned) are sent to the engine and scored locally; the
report gives per-probe and overall |differences| on the engine's scale and on logits, rank agreement,
consistency checks (duplicates tie, shuffled documents keep their scores), and, when the engine differs,
which known fault planted in the local model reproduces its answers. See docs/verify.md.
"""

from __future__ import annotations

import numpy as np

from ..reranker import Reranker
from ..weights import load_params
from .analysis import Answer, Finding, analyse, kendall_tau
from .clients import FORMATS, Endpoint, connect
from .golden import hub_repo_id, hub_revision, read_golden, write_golden
from .probes import PROBE_SET_VERSION, Probe, ProbeSet, VerifyError, load_probes
from .reference import LocalScores, logits_by_length, model_dir_of, open_tokenizer
from .report import Report

DEFAULT_ATOL = 1e-3  # on logits: float32 engines agree to ~1e-5, float16 ones differ by ~1e-2

__all__ = [
    "DEFAULT_ATOL",
    "FORMATS",
    "PROBE_SET_VERSION",
    "Answer",
    "Endpoint",
    "Probe",
    "ProbeSet",
    "Report",
    "Verifier",
    "VerifyError",
    "check_golden",
    "compare_scores",
    "connect",
    "float64_copy",
    "kendall_tau",
    "verify_endpoint",
    "write_golden",
]


def float64_copy(reranker: Reranker) -> Reranker:
    """The same model computing in float64 (weights read again from its directory, tokenizer shared)."""
    if reranker.dtype == np.float64:
        return reranker
    params = load_params(model_dir_of(reranker), reranker.config, np.float64)
    return Reranker(params, reranker.config, reranker.tokenizer, dtype=np.float64, model_dir=reranker.model_dir)


def _as_answer(result, n: int) -> Answer:
    if isinstance(result, Answer):
        return result
    scores = np.asarray(result, dtype=np.float64).reshape(-1)
    if len(scores) != n:
        return Answer.failed(n, f"returned {len(scores)} scores for {n} documents")
    return Answer([float(s) for s in scores])


class Verifier:
    """The probes scored by the local model once, checked against any number of engines.

    reranker: the truth (float32, or float64 for --float64). float32: with a float64 truth, the float32
    model whose distance from it the report states as the floor of agreement.
    """

    def __init__(
        self,
        reranker: Reranker,
        probes: tuple[Probe, ...] | None = None,
        float32: Reranker | None = None,
        model_name: str | None = None,
        probe_set: ProbeSet | None = None,
    ):
        reranker.require_single_logit()
        tokenizer = open_tokenizer(reranker)
        if probes is None:
            probe_set = probe_set or load_probes(tokenizer, reranker.max_length)
            probes = probe_set.probes
        self.reranker = reranker
        self.probes = probes
        self.probe_set = (
            {"name": probe_set.name, "version": probe_set.version, "sha256": probe_set.sha256}
            if probe_set
            else {"name": "custom", "version": "-", "sha256": None}
        )
        self.local = LocalScores(reranker, probes, tokenizer=tokenizer)
        self.float32_vs_float64 = None
        if float32 is not None and float32.dtype != reranker.dtype:
            d = np.abs(logits_by_length(float32, self.local.encoded) - self.local.logits)
            self.float32_vs_float64 = (float(d.max()), float(d.mean()))
        self.reference = {
            "model": model_name or hub_repo_id(reranker.model_dir) or reranker.model_dir,
            "revision": hub_revision(reranker.model_dir),
            "dtype": str(reranker.dtype),
            "max_length": reranker.max_length,
            "truncation": reranker.tokenizer.truncation,
        }

    def answers(self, fn) -> list[Answer]:
        """fn(query, documents) -> scores (or an Answer) for every probe; a probe whose call raises is
        recorded as not answered (an engine may refuse empty documents), not fatal."""
        out = []
        for p in self.probes:
            try:
                out.append(_as_answer(fn(p.query, list(p.documents)), len(p.documents)))
            except VerifyError:
                raise
            except Exception as e:  # the engine's own failure on this input, reported per probe
                out.append(Answer.failed(len(p.documents), f"{type(e).__name__}: {e}"))
        return out

    def check(
        self,
        fn,
        source: str = "engine",
        atol: float = DEFAULT_ATOL,
        expect_scale: str = "any",
        diagnose: bool = True,
        answers: list[Answer] | None = None,
    ) -> Report:
        if not (isinstance(atol, (int, float)) and atol >= 0):
            raise VerifyError(f"atol must be a non-negative number, got {atol!r}")
        if expect_scale not in ("any", "logits", "sigmoid"):
            raise VerifyError(f"expect_scale must be any, logits or sigmoid, got {expect_scale!r}")
        answers = self.answers(fn) if answers is None else answers
        analysis = analyse(self.probes, answers, self.local, atol, expect_scale, diagnose)
        return Report(analysis, source, self.reference, self.probe_set, self.float32_vs_float64)


def _verifier(reranker, model, float64) -> Verifier:
    """The reference: `reranker` if given (named by the hub repo or directory it was loaded from), else
    `model` loaded (and named so)."""
    name = model if reranker is None else None
    if reranker is None:
        reranker = Reranker.from_pretrained(model)
    truth = float64_copy(reranker) if float64 else reranker
    return Verifier(truth, float32=reranker if float64 else None, model_name=name)


def compare_scores(
    fn,
    reranker: Reranker | None = None,
    model: str = "BAAI/bge-reranker-base",
    atol: float = DEFAULT_ATOL,
    float64: bool = False,
    expect_scale: str = "any",
    diagnose: bool = True,
) -> Report:
    """Check an in-process engine: fn(query, documents) -> one score per document, in their order.

    The reference is `reranker`, or else `model` loaded. Scores may be logits, sigmoid scores or another
    monotone map (detected). See docs/verify.md for sentence-transformers' CrossEncoder, FlagEmbedding's
    FlagReranker and an onnxruntime session.
    """
    return _verifier(reranker, model, float64).check(
        fn, source=getattr(fn, "__name__", "engine"), atol=atol, expect_scale=expect_scale, diagnose=diagnose
    )


def verify_endpoint(
    url,
    format: str = "auto",
    api_key: str | None = None,
    endpoint_model: str | None = None,
    reranker: Reranker | None = None,
    model: str = "BAAI/bge-reranker-base",
    atol: float = DEFAULT_ATOL,
    float64: bool = False,
    expect_scale: str | None = None,
    diagnose: bool = True,
    verifier: Verifier | None = None,
) -> Report:
    """Check an HTTP rerank endpoint: a URL (format auto, cohere, jina, tei or vllm) or an Endpoint.

    expect_scale None: "logits" for TEI (raw_scores is requested), else "any".
    """
    endpoint = url if isinstance(url, Endpoint) else connect(url, format, api_key, endpoint_model)
    if expect_scale is None:
        expect_scale = "logits" if endpoint.format == "tei" else "any"
    verifier = verifier or _verifier(reranker, model, float64)
    return verifier.check(endpoint, source=repr(endpoint), atol=atol, expect_scale=expect_scale, diagnose=diagnose)


def check_golden(
    path, reranker: Reranker, atol: float = DEFAULT_ATOL, diagnose: bool = True, model_name: str | None = None
) -> Report:
    """Check a local model against a golden file: its logits and its token ids."""
    data, probes = read_golden(path)
    verifier = Verifier(reranker, probes, model_name=model_name)
    verifier.probe_set = {k: data["probe_set"].get(k) for k in ("name", "version", "sha256")}
    golden = [Answer([d["logit"] for d in p["documents"]]) for p in data["probes"]]
    report = verifier.check(
        None,
        source=f"golden file {path} (model {data['model'].get('name')}, revision "
        f"{data['model'].get('revision') or 'unknown'})",
        atol=atol,
        expect_scale="logits",
        diagnose=diagnose,
        answers=golden,
    )
    ids = [d["input_ids"] for p in data["probes"] for d in p["documents"]]
    differ = [i for i, (a, e) in enumerate(zip(ids, verifier.local.encoded)) if a != e.ids]
    if differ:
        pair = verifier.local.pairs[differ[0]]
        report.analysis.findings.insert(
            0,
            Finding(
                "the tokenizer differs from the one the golden file was made with",
                f"{len(differ)} of {len(ids)} pairs get other token ids (first: query {pair[0][:30]!r}, document "
                f"{pair[1][:30]!r})",
                "tokens",
            ),
        )
    return report
