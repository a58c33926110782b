"""Endpoint answers against the local reference: scale, differences, ranks, consistency checks, diagnosis.

Everything here is a pure function of the probes, the endpoint's answers and the local scores, so the
HTTP clients, an in-process engine and a golden file all go through the same analysis.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..reranker import sigmoid64
from .probes import Probe
from .reference import FLAVOURS, ROUNDING_ORDER_FLAVOURS, LocalScores, Variant, combined, variants

SCALES = ("logits", "sigmoid", "affine", "monotone")
TOP_K = 3


@dataclass
class Answer:
    """What an engine returned for one probe, by the document index it claimed."""

    scores: list  # [n] float or None (no result for that index)
    texts: list | None = None  # [n] the text it echoed for each index, or None when it echoes none
    problems: list[str] = field(default_factory=list)  # malformed results: bad, repeated or missing indices
    error: str | None = None  # the request failed (HTTP error, rejected input); scores are then empty

    @classmethod
    def failed(cls, n: int, error: str) -> Answer:
        return cls([None] * n, None, [], error)


@dataclass
class Finding:
    """One diagnosis line: the likely cause, and the evidence that names it."""

    cause: str
    evidence: str
    kind: str  # index, scale, ties, order, values, category, echo

    def line(self) -> str:
        return f"diagnosis: {self.cause}: {self.evidence}"


def kendall_tau(a, b, tol: float = 0.0) -> float:
    """Kendall's tau-b of two score vectors (1: same order; ties count as neither agreeing nor not).
    Values within tol of each other are ties, so float noise between equal scores is not a disagreement.

    Example: kendall_tau([3, 2, 1], [30, 20, 10]) = 1.0; kendall_tau([1, 2, 3], [3, 2, 1]) = -1.0.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    i, j = np.triu_indices(len(a), k=1)

    def sign(d):
        return np.where(np.abs(d) <= tol, 0.0, np.sign(d))

    sa, sb = sign(a[i] - a[j]), sign(b[i] - b[j])
    n_a, n_b = np.count_nonzero(sa), np.count_nonzero(sb)
    if n_a == 0 or n_b == 0:
        return 1.0 if n_a == n_b else 0.0
    return float((sa * sb).sum() / np.sqrt(n_a * n_b))


def top_k_overlap(a, b, k: int) -> int:
    """How many of b's k best are among a's k best."""
    return len(set(np.argsort(-np.asarray(a), kind="stable")[:k]) & set(np.argsort(-np.asarray(b), kind="stable")[:k]))


def logit(p) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.log(p) - np.log1p(-p)


def resolution(values) -> np.ndarray:
    """The rounding step of each value as sent: float32 spacing if it is exactly a float32, else float64's."""
    v = np.asarray(values, dtype=np.float64)
    as32 = v.astype(np.float32)
    return np.where(as32.astype(np.float64) == v, np.spacing(np.abs(as32)).astype(np.float64), np.spacing(np.abs(v)))


@dataclass
class Scale:
    name: str  # one of SCALES
    detail: str
    a: float = 1.0  # affine: endpoint = a * logit + b
    b: float = 0.0

    @property
    def comparable(self) -> bool:
        return self.name in ("logits", "sigmoid")

    def to_logits(self, e) -> tuple[np.ndarray, np.ndarray]:
        """Endpoint values -> (logits, the uncertainty the conversion adds to each)."""
        e = np.asarray(e, dtype=np.float64)
        if self.name == "sigmoid":
            with np.errstate(divide="ignore", invalid="ignore"):
                return logit(e), resolution(e) / (e * (1 - e))
        return e, resolution(e)

    def from_logits(self, x) -> np.ndarray:
        """Reference logits on the endpoint's scale (NaN where the map is unknown)."""
        x = np.asarray(x, dtype=np.float64)
        if self.name == "sigmoid":
            return sigmoid64(x)
        if self.name == "affine":
            return self.a * x + self.b
        if self.name == "monotone":
            return np.full_like(x, np.nan)
        return x


def detect_scale(e, x, atol: float) -> Scale:
    """Which map of the reference logits x the endpoint's values e are: the raw logits, their sigmoid,
    an affine map (a temperature or an offset), or some other monotone map.

    Decided on medians, so that a fault confined to a few probes (truncation) cannot move it.
    """
    e, x = np.asarray(e, dtype=np.float64), np.asarray(x, dtype=np.float64)
    as_logits = float(np.median(np.abs(e - x)))
    in_unit = bool(np.all((e >= 0) & (e <= 1)))
    with np.errstate(divide="ignore", invalid="ignore"):
        as_sigmoid = float(np.median(np.abs(logit(e) - x))) if in_unit else np.inf
    detail = f"median |diff| {as_logits:.2g} read as logits, " + (
        f"{as_sigmoid:.2g} read as sigmoid scores (on logits)" if in_unit else "values outside [0, 1] (no sigmoid)"
    )
    best = "sigmoid" if as_sigmoid < as_logits else "logits"
    if min(as_logits, as_sigmoid) <= 0.1 + 10 * atol:
        return Scale(best, detail)
    if len(e) >= 3 and np.std(x) > 0:
        a, b = np.polyfit(x, e, 1)
        residual = float(np.median(np.abs(e - (a * x + b))))
        if residual <= 1e-3 * max(float(np.std(e)), 1e-12) + atol and a > 0:
            return Scale(
                "affine",
                f"{detail}; endpoint = {a:.6g} * logit + {b:.6g} (median residual {residual:.2g})",
                float(a),
                float(b),
            )
        tau = kendall_tau(e, x)
        if tau >= 0.99:
            return Scale("monotone", f"{detail}; pooled Kendall tau {tau:.4f}: an unknown monotone map of the logits")
    return Scale(best, detail + "; large differences either way")


@dataclass
class ProbeResult:
    probe: Probe
    reference: np.ndarray  # [n] reference logits
    truncated: list[bool]  # [n] cut by the local tokenizer (at its max_length)
    endpoint: np.ndarray  # [n] the endpoint's values by their claimed index (NaN: missing)
    aligned: np.ndarray  # [n] the same, matched to documents by echoed text when indices were wrong
    error: str | None
    problems: list[str]
    fp16_effect: float  # max |float16-rounded weights - reference| on this probe's logits
    diff: np.ndarray | None = None  # [n] |endpoint - reference| on the endpoint's scale
    logit_diff: np.ndarray | None = None  # [n] on logits, when the scale is logits or sigmoid
    tolerance: np.ndarray | None = None  # [n] atol + what converting to logits adds
    tau: float = float("nan")
    top1: bool | None = None
    topk: int | None = None
    notes: list[str] = field(default_factory=list)  # failed checks (ties, order)
    echo_forms: list[str] = field(default_factory=list)  # ECHO_FORMS names of documents echoed in another form

    @property
    def answered(self) -> bool:
        return self.error is None and bool(np.isfinite(self.endpoint).all())

    @property
    def within(self) -> bool:
        if self.logit_diff is not None:
            return bool((self.logit_diff <= self.tolerance).all())
        return self.tau >= 1.0 - 1e-12 if np.isfinite(self.tau) else False

    @property
    def ok(self) -> bool:
        return self.answered and not self.problems and not self.notes and self.within


@dataclass
class Hypothesis:
    """A planted fault (or two) measured against the endpoint's answers."""

    key: str
    cause: str
    mean: float  # mean |endpoint - variant| on logits over the answered probes
    max: float
    fits: bool = False  # explains the answers: exactly, or (compute) up to the order of the scheme's roundings
    exact: bool = False  # every answer within the tolerance
    flavour: str = ""  # compute: the flavour closest to the endpoint (see reference.FLAVOURS)
    spread_mean: float = 0.0  # compute: how far other rounding orders of the scheme lie apart, mean and max
    spread_max: float = 0.0
    pairs_off: int = 0  # compute: pairs beyond the tolerance and that spread
    pairs: int = 1  # faults planted together


@dataclass
class Analysis:
    results: list[ProbeResult]
    scale: Scale
    atol: float
    expect_scale: str
    findings: list[Finding]
    hypotheses: list[Hypothesis]
    fp16_max: float
    fp16_mean: float

    @property
    def answered(self) -> list[ProbeResult]:
        return [r for r in self.results if r.answered]

    def overall(self, attr: str) -> tuple[float, float]:
        values = np.concatenate([getattr(r, attr) for r in self.answered if getattr(r, attr) is not None] or [[]])
        values = values[np.isfinite(values)]
        return (float(values.max()), float(values.mean())) if len(values) else (float("nan"), float("nan"))

    @property
    def verdict(self) -> str:
        if not self.answered:
            return "no answers"
        if any(f.kind in ("index", "scale", "ties", "order") for f in self.findings):
            return "differs"
        if not all(r.ok for r in self.answered):
            return "differs"
        return "agrees" if self.scale.comparable else "ranks agree"

    @property
    def agrees(self) -> bool:
        return self.verdict in ("agrees", "ranks agree")


# Forms in which an endpoint may echo a document other than as it was sent, none of which is another
# document: infinity strips whitespace in its request model, others normalise Unicode.
ECHO_FORMS: dict[str, Callable[[str], str]] = {
    "stripped of leading and trailing whitespace": str.strip,
    "with runs of whitespace collapsed to one space": lambda t: " ".join(t.split()),
    "normalised to Unicode NFC": lambda t: unicodedata.normalize("NFC", t),
    "normalised to Unicode NFKC": lambda t: unicodedata.normalize("NFKC", t),
    "stripped and normalised to NFC": lambda t: unicodedata.normalize("NFC", t.strip()),
    "stripped and normalised to NFKC": lambda t: unicodedata.normalize("NFKC", t.strip()),
}


def echo_form(echoed: str, document: str) -> str | None:
    """How an echoed text relates to a document: "" when it is the document, the name of the ECHO_FORMS
    form it is the document in, None when it is not this document.

    >>> echo_form("Paris.", " Paris.\t")
    'stripped of leading and trailing whitespace'
    """
    if echoed == document:
        return ""
    return next((name for name, form in ECHO_FORMS.items() if form(document) == echoed), None)


def answer_vectors(probe: Probe, answer: Answer) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """(values by claimed index, values matched to documents by echoed text, problems found, the forms
    of the documents echoed in another form than sent)."""
    n = len(probe.documents)
    by_index = np.array([np.nan if s is None else float(s) for s in answer.scores], dtype=np.float64)
    problems = list(answer.problems)
    aligned = by_index.copy()
    forms: list[str] = []
    if answer.texts is not None and answer.error is None:
        echoed = [(i, t) for i, t in enumerate(answer.texts) if t is not None]
        found = {i: echo_form(t, probe.documents[i]) for i, t in echoed}
        forms = [f for f in found.values() if f]
        wrong = [i for i, f in found.items() if f is None]
        if wrong:
            problems.append(
                f"{len(wrong)} of {n} results echo another document's text than the one at their "
                f"index (first: index {wrong[0]})"
            )
            aligned = np.array([_matched(d, echoed, by_index) for d in probe.documents])
    return by_index, aligned, problems, forms


def _matched(document: str, echoed: list[tuple[int, str]], values: np.ndarray) -> float:
    """The value of the result whose echo is this document (as sent, or in one of ECHO_FORMS), or NaN."""
    for wanted in (lambda form: form == "", bool):  # the document as sent first, then in another form
        for i, text in echoed:
            if wanted(echo_form(text, document)):
                return float(values[i])
    return float("nan")


def analyse(
    probes: tuple[Probe, ...],
    answers: list[Answer],
    local: LocalScores,
    atol: float = 1e-3,
    expect_scale: str = "any",
    diagnose: bool = True,
) -> Analysis:
    """Compare answers (one per probe) with the local scores; diagnose when they differ."""
    fp16 = local.variant("float16")
    results = []
    for i, (probe, answer) in enumerate(zip(probes, answers)):
        s = local.probe_slice(i)
        by_index, aligned, problems, forms = answer_vectors(probe, answer)
        results.append(
            ProbeResult(
                probe,
                local.logits[s],
                local.truncated[s],
                by_index,
                aligned,
                answer.error,
                problems,
                float(np.max(np.abs(fp16[s] - local.logits[s]))),
                echo_forms=forms,
            )
        )
    answered = [r for r in results if r.answered]
    findings: list[Finding] = []
    fp16_all = np.abs(fp16 - local.logits)
    if not answered:
        return Analysis(
            results,
            Scale("logits", "no answers"),
            atol,
            expect_scale,
            findings,
            [],
            float(fp16_all.max()),
            float(fp16_all.mean()),
        )
    e_all = np.concatenate([r.aligned for r in answered])
    x_all = np.concatenate([r.reference for r in answered])
    keep = np.isfinite(e_all)
    scale = detect_scale(e_all[keep], x_all[keep], atol)
    for r in answered:
        fill = np.isnan(r.aligned)
        values = np.where(fill, r.endpoint, r.aligned)
        r.diff = np.abs(values - scale.from_logits(r.reference))
        if scale.comparable:
            as_logits, uncertainty = scale.to_logits(values)
            r.logit_diff = np.abs(as_logits - r.reference)
            r.tolerance = atol + np.nan_to_num(uncertainty, nan=np.inf)
        tie = atol if scale.comparable else 0.0  # on logits, scores within atol are ties
        r.tau = kendall_tau(_on_logits(r, scale), r.reference, tie)
        r.top1 = bool(r.reference[int(np.argmax(values))] >= r.reference.max() - tie)
        r.topk = top_k_overlap(values, r.reference, min(TOP_K, len(values)))
        _check_ties(r, scale, atol)
    _check_order(answered, scale, atol)
    if expect_scale != "any" and scale.name != expect_scale:
        findings.append(
            Finding(
                f"the scores are {_scale_phrase(scale)}, not {_scale_phrase(Scale(expect_scale, ''))}",
                scale.detail,
                "scale",
            )
        )
    for r in answered:
        if r.problems:
            findings.append(_index_finding(r))
            break
    for r in answered:
        for note in r.notes:
            findings.append(
                Finding(
                    note.split(":", 1)[0],
                    f"probe {r.probe.id}: {note.split(':', 1)[1].strip()}",
                    "ties" if "tie" in note else "order",
                )
            )
    hypotheses: list[Hypothesis] = []
    if diagnose and scale.comparable and not all(r.within for r in answered):
        hypotheses, value_findings = _explain(results, answered, local, scale, atol)
        findings += value_findings
    forms = [f for r in answered for f in r.echo_forms]
    if forms:
        counted = ", ".join(f"{f} ({forms.count(f)})" for f in dict.fromkeys(forms))
        findings.append(
            Finding(
                "the endpoint echoes some documents in another form than sent, at their own index",
                f"{len(forms)} of {sum(len(r.probe.documents) for r in answered)} documents: {counted}; a sign "
                f"that it scores them in that form too",
                "echo",
            )
        )
    fp16_mean = float(fp16_all.mean())
    return Analysis(results, scale, atol, expect_scale, findings, hypotheses, float(fp16_all.max()), fp16_mean)


def _scale_phrase(scale: Scale) -> str:
    return {
        "logits": "raw logits",
        "sigmoid": "sigmoid(logit) in (0, 1)",
        "affine": f"an affine map of the logits ({scale.a:.4g} * logit + {scale.b:.4g})",
        "monotone": "a monotone map of the logits other than the sigmoid",
    }[scale.name]


def _on_logits(r: ProbeResult, scale: Scale) -> np.ndarray:
    values = np.where(np.isnan(r.aligned), r.endpoint, r.aligned)
    return scale.to_logits(values)[0] if scale.comparable else values


def _check_ties(r: ProbeResult, scale: Scale, atol: float) -> None:
    values = _on_logits(r, scale)
    for group in r.probe.ties:
        members = values[list(group)]
        if not np.isfinite(members).all():  # saturated sigmoid scores (0 or 1) carry no logit: compare them as sent
            members = np.where(np.isnan(r.aligned), r.endpoint, r.aligned)[list(group)]
        spread = float(np.ptp(members))
        if not spread <= atol:
            r.notes.append(
                f"identical documents score differently: documents {list(group)} spread by {spread:.3g} "
                f"(tolerance {atol:g})"
            )


def _check_order(answered: list[ProbeResult], scale: Scale, atol: float) -> None:
    by_id = {r.probe.id: r for r in answered}
    for r in answered:
        source = by_id.get(r.probe.shuffle_of) if r.probe.shuffle_of else None
        if source is None:
            continue
        moved = _on_logits(r, scale)
        original = _on_logits(source, scale)[list(r.probe.order or ())]
        worst = float(np.max(np.abs(moved - original)))
        if not worst <= atol:
            r.notes.append(
                f"a document's score follows its position, not its text: the documents of probe "
                f"{source.probe.id} in another order change score by up to {worst:.3g}"
            )


def _index_finding(r: ProbeResult) -> Finding:
    fixed = ""
    if r.logit_diff is not None:
        fixed = f"; matched to documents by echoed text the scores differ by at most {np.nanmax(r.logit_diff):.3g}"
    return Finding(
        "results are attached to the wrong documents (index does not point into the request's "
        "documents: documents reordered, e.g. sorted for batching, and never put back)",
        f"probe {r.probe.id}: {'; '.join(r.problems)}{fixed}",
        "index",
    )


@dataclass
class Evidence:
    """The endpoint's answers on logits, pooled over the answered probes, and where they come from."""

    e: np.ndarray  # [M] endpoint logits
    x: np.ndarray  # [M] reference logits
    tolerance: np.ndarray  # [M] atol plus what converting the endpoint's values to logits adds
    ok: np.ndarray  # [M] finite (a saturated sigmoid carries no logit)
    slices: list[slice]  # each answered probe's pairs in the local scores
    atol: float

    def pooled(self, y: np.ndarray) -> np.ndarray:
        """A variant's logits [N] over all probes -> [M] over the answered ones."""
        return np.concatenate([y[s] for s in self.slices])


# A compute variant reproduces an engine's answers up to the order of its roundings when: every answer
# lies within the tolerance plus SPREAD_FACTOR times the scheme's spread (the largest gap between its
# flavour and the same flavour with float64 arithmetic between its roundings, or between its eager and
# fused attention) on all but one in ONE_IN pairs; the mean |diff| left is at most SPREAD_FACTOR times
# the mean gap, or a quarter of the mean |diff| without the variant; and the endpoint moves from the
# reference by the scheme's own amount (medians, which a few large differences from another fault cannot
# move) within a factor EFFECT_FACTOR either way: a few differing probes are no reduced-precision engine.
SPREAD_FACTOR = 2.0
EFFECT_FACTOR = 2.0
ONE_IN = 8
# Two faults together: the closest token variants, each with the closest weights or compute variants
# (and any that fits alone).
COMBINED_TOKEN_VARIANTS = 3
COMBINED_MODEL_VARIANTS = 2


def measure(v: Variant, evidence: Evidence, local: LocalScores) -> Hypothesis:
    """How well one variant (or combination) reproduces the answers; a compute variant by its closest
    flavour, with the spread of its rounding orders when it moves the answers by the scheme's amount."""
    ev = evidence
    ys = [ev.pooled(local.variant(v.key))]  # [M]: the first flavour; the others only for a scheme of the right size
    if v.kind == "compute" and within_factor(_median_gap(ys[0], ev.x, ev.ok), _median_gap(ev.e, ev.x, ev.ok), 2):
        ys = [ev.pooled(y) for y in local.flavours(v.key)]  # F x [M]
    residuals = [np.where(ev.ok, np.abs(ev.e - y), 0.0) for y in ys]  # F x [M]
    best = int(np.argmin([r.mean() for r in residuals]))
    r = residuals[best]
    h = Hypothesis(v.key, v.cause, float(r[ev.ok].mean()), float(r[ev.ok].max()), pairs=1 + v.key.count("+"))
    h.exact = h.fits = bool((r <= ev.tolerance).all())
    if v.kind != "compute":
        return h
    model = v.key.split("+")[-1]
    h.flavour = list(FLAVOURS[model])[best]
    if h.exact:
        return h
    moved = np.abs(ev.e - ev.x)[ev.ok]  # [M]
    if len(ys) == 1 or not within_factor(_median_gap(ys[best], ev.x, ev.ok), float(np.median(moved)), 1):
        return h  # not this scheme's amount: its rounding orders need not be run
    gaps = [np.abs(ys[best] - ev.pooled(local.twin(v.key, h.flavour)))]  # [M]
    if model in ROUNDING_ORDER_FLAVOURS:
        gaps.append(np.max(ys, axis=0) - np.min(ys, axis=0))
    spread = np.max(gaps, axis=0)[ev.ok]  # [M]
    h.spread_mean, h.spread_max = float(spread.mean()), float(spread.max())
    h.pairs_off = int((r > ev.tolerance + SPREAD_FACTOR * h.spread_max).sum())
    h.fits = bool(
        h.pairs_off <= len(r) // ONE_IN
        and h.mean <= max(SPREAD_FACTOR * h.spread_mean, float(moved.mean()) / 4) + ev.atol
    )
    return h


def _median_gap(a: np.ndarray, b: np.ndarray, ok: np.ndarray) -> float:
    return float(np.median(np.abs(a - b)[ok]))


def within_factor(effect: float, moved: float, loosen: float) -> bool:
    """Whether the endpoint moved from the reference by the scheme's amount, within EFFECT_FACTOR (times
    loosen) either way."""
    factor = EFFECT_FACTOR * loosen
    return effect / factor <= moved <= effect * factor


def best_fit(hypotheses: list[Hypothesis]) -> Hypothesis | None:
    """The hypothesis that explains the answers, if any: an exact reproduction before one up to the order
    of roundings, one fault before two; but two faults beat one fault reproduced only up to its roundings
    when they leave no answer beyond the allowance where it leaves some, or half its mean |diff| or less
    (a tokenizer difference hidden in a reduced-precision engine's noise)."""
    fitting = sorted((h for h in hypotheses if h.fits), key=lambda h: (not h.exact, h.pairs, h.mean))
    if not fitting:
        return None
    first = fitting[0]
    if not first.exact and first.pairs == 1:
        closer = [
            h
            for h in fitting
            if h.pairs > 1
            and (h.mean <= first.mean / 2 or (h.pairs_off == 0 < first.pairs_off and h.mean < first.mean))
        ]
        return min(closer, key=lambda h: (not h.exact, h.mean)) if closer else first
    return first


def hypotheses_for(evidence: Evidence, local: LocalScores) -> list[Hypothesis]:
    """Every single variant but the compute ones measured; when none reproduces the answers exactly, the
    compute variants too, and the closest token variants combined with the closest weights or compute
    variants. Sorted closest first."""
    singles = variants(local.max_length)
    measured = {v.key: measure(v, evidence, local) for v in singles if v.kind != "compute"}
    if any(h.exact for h in measured.values()):  # the compute variants, the costly ones, are not needed
        return sorted(measured.values(), key=lambda h: h.mean)
    measured.update({v.key: measure(v, evidence, local) for v in singles if v.kind == "compute"})
    models = sorted((v for v in singles if v.kind in ("weights", "compute")), key=lambda v: measured[v.key].mean)
    models = [v for i, v in enumerate(models) if i < COMBINED_MODEL_VARIANTS or measured[v.key].fits]
    base = evidence.pooled(local.variant(models[0].key))  # [M]

    def added(a: Variant) -> float:
        """Mean |diff| left by a's effect added to the closest model variant's: a cheap guess at the pair."""
        y = base + evidence.pooled(local.variant(a.key)) - evidence.x
        return float(np.abs(evidence.e - y)[evidence.ok].mean())

    tokens = sorted((v for v in singles if v.kind == "tokens"), key=added)
    for a in tokens[:COMBINED_TOKEN_VARIANTS]:
        for b in models:
            both = combined(a, b)
            measured[both.key] = measure(both, evidence, local)
    return sorted(measured.values(), key=lambda h: h.mean)


def _explain(
    results, answered, local: LocalScores, scale: Scale, atol: float
) -> tuple[list[Hypothesis], list[Finding]]:
    """Which known fault (or two), planted in the local model, reproduces the endpoint's logits."""
    findings: list[Finding] = []
    index = {id(r): i for i, r in enumerate(results)}
    evidence = Evidence(
        e=np.concatenate([_on_logits(r, scale) for r in answered]),
        x=np.concatenate([r.reference for r in answered]),
        tolerance=np.concatenate([r.tolerance for r in answered]),
        ok=np.array([]),
        slices=[local.probe_slice(index[id(r)]) for r in answered],
        atol=atol,
    )
    evidence.ok = np.isfinite(evidence.e)
    d = np.abs(evidence.e - evidence.x)[evidence.ok]
    r0_mean, r0_max = float(d.mean()), float(d.max())
    hypotheses = hypotheses_for(evidence, local)
    fit = best_fit(hypotheses)
    best = fit or hypotheses[0]
    planted = "planting both in the local model" if best.pairs > 1 else "planting this fault in the local model"
    if fit is not None and fit.exact:
        findings.append(
            Finding(
                fit.cause,
                f"{planted} reproduces every answer within the tolerance (max |diff| {fit.max:.3g} on logits, "
                f"against {r0_max:.3g} without it)",
                "values",
            )
        )
    elif fit is not None:
        if fit.spread_max > 0:
            orders = (
                "its eager and fused attention, float64 between its roundings"
                if fit.key.split("+")[-1] in ROUNDING_ORDER_FLAVOURS
                else "float64 between its roundings"
            )
            rest = (
                f"the rest is the order of roundings, in which faithful implementations of that precision differ "
                f"({orders}: mean {fit.spread_mean:.3g}, max {fit.spread_max:.3g})"
            ) + (
                f", but for {fit.pairs_off} of {len(evidence.e)} pairs, where a value near a rounding step moved by "
                f"a whole step"
                if fit.pairs_off
                else ""
            )
        else:
            rest = "every answer within the tolerance" + (
                f" but {fit.pairs_off}, where a value near a rounding step moved by a step" if fit.pairs_off else ""
            )
        findings.append(
            Finding(
                fit.cause,
                f"{planted} ({fit.flavour}) brings the mean |diff| on logits from {r0_mean:.3g} to {fit.mean:.3g} "
                f"(max {r0_max:.3g} to {fit.max:.3g}); {rest}",
                "values",
            )
        )
    elif best.mean <= r0_mean / 4:
        findings.append(
            Finding(
                f"likely {best.cause}",
                f"planting it in the local model brings the mean |diff| on "
                f"logits from {r0_mean:.3g} to {best.mean:.3g} (max "
                f"{best.max:.3g}); not exact, so something else differs too",
                "values",
            )
        )
    else:
        findings.append(
            Finding(
                "no known fault explains the differences",
                f"the closest, {best.key}, only brings the mean |diff| on logits from {r0_mean:.3g} to {best.mean:.3g}",
                "values",
            )
        )
    failing = [r for r in answered if not r.within]
    categories = sorted({r.probe.category for r in failing})
    findings.append(
        Finding(
            "where the differences are",
            f"{len(failing)} of {len(answered)} probes beyond tolerance, in categories "
            f"{', '.join(categories)} ({', '.join(r.probe.id for r in failing)})",
            "category",
        )
    )
    lengths = [r for r in answered if r.probe.category == "truncation" and r.probe.tokens and any(r.probe.tokens)]
    if any(not r.within for r in lengths) and "truncat" in best.cause + best.key:
        status = [
            f"probe {r.probe.id}, documents of "
            + ", ".join(
                f"{n} tokens {'agrees' if d <= t else 'differs'}"
                for n, d, t in zip(r.probe.tokens, r.logit_diff, r.tolerance)
                if n is not None
            )
            for r in lengths
        ]
        findings.append(Finding("truncation point", "; ".join(status), "category"))
    return hypotheses, findings
