"""The verify report: a table per probe, the overall numbers, the diagnosis, and the same as JSON."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .analysis import Analysis


def _nan_stat(values, stat) -> float:
    """max or mean over the finite values; NaN when there are none (ranks-only comparisons)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(stat(values)) if len(values) else float("nan")


def _g(x, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}e}"


@dataclass
class Report:
    """What verify found: `print(report)` for the text, `report.to_dict()` for JSON, `report.agrees` for CI."""

    analysis: Analysis
    source: str  # the endpoint, engine or golden file checked
    reference: dict  # the local model: name, revision, dtype, max_length, truncation
    probe_set: dict  # name, version, sha256
    float32_vs_float64: tuple[float, float] | None = None  # local float32 against float64 logits, max and mean

    @property
    def agrees(self) -> bool:
        return self.analysis.agrees

    @property
    def verdict(self) -> str:
        return self.analysis.verdict

    @property
    def exit_code(self) -> int:
        return 0 if self.agrees else 1

    @property
    def diagnosis(self) -> list[str]:
        return [f.line() for f in self.analysis.findings]

    def lines(self) -> list[str]:
        a = self.analysis
        n_docs = sum(len(r.probe.documents) for r in a.results)
        ref = self.reference
        out = [
            f"xlmr-np verify: {self.source}",
            f"probes: {self.probe_set['name']} version {self.probe_set['version']}, {len(a.results)} requests, "
            f"{n_docs} documents",
            f"reference: {ref['model']} (revision {ref.get('revision') or 'unknown'}, {ref['dtype']}, "
            f"max_length {ref['max_length']}, {ref['truncation']})",
            f"scale: {a.scale.name} ({a.scale.detail})",
            "",
        ]
        out.append(
            f"{'probe':<14} {'docs':>4} {'max|d|':>9} {'mean|d|':>9} {'max|d| logit':>12} {'tau':>6} "
            f"{'top1':>4} {'top3':>4} {'fp16 eff':>9}  result"
        )
        for r in a.results:
            if not r.answered:
                why = r.error or "; ".join(r.problems) or "incomplete answer"
                out.append(
                    f"{r.probe.id:<14} {len(r.probe.documents):>4} {'':>9} {'':>9} {'':>12} {'':>6} {'':>4} "
                    f"{'':>4} {_g(r.fp16_effect):>9}  not answered: {why}"
                )
                continue
            status = "ok" if r.ok else "DIFFERS"
            logit_max = _nan_stat(r.logit_diff, np.max) if r.logit_diff is not None else None
            out.append(
                f"{r.probe.id:<14} {len(r.probe.documents):>4} {_g(_nan_stat(r.diff, np.max)):>9} "
                f"{_g(_nan_stat(r.diff, np.mean)):>9} {_g(logit_max):>12} {r.tau:>6.3f} "
                f"{'yes' if r.top1 else 'no':>4} {r.topk:>2}/{min(3, len(r.reference))} "
                f"{_g(r.fp16_effect):>9}  {status}"
            )
        answered = a.answered
        mx, mean = a.overall("diff")
        out += ["", f"overall on the endpoint's scale ({a.scale.name}): max |diff| {_g(mx)}, mean {_g(mean)}"]
        if a.scale.comparable:
            lmx, lmean = a.overall("logit_diff")
            out.append(f"overall on logits: max |diff| {_g(lmx)}, mean {_g(lmean)} (atol {a.atol:g})")
        if answered:
            taus = [r.tau for r in answered]
            out.append(
                f"ranks: Kendall tau mean {np.mean(taus):.4f} (min {np.min(taus):.4f}), top-1 "
                f"{sum(bool(r.top1) for r in answered)}/{len(answered)}, top-3 overlap "
                f"{sum(r.topk or 0 for r in answered)}/{sum(min(3, len(r.reference)) for r in answered)}"
            )
        ratio = ""
        if a.scale.comparable and answered and a.fp16_max > 0:
            ratio = f"; the endpoint's largest logit difference is {a.overall('logit_diff')[0] / a.fp16_max:.3g}x that"
        out.append(
            f"precision: float16-rounded weights move the local logits by max {_g(a.fp16_max)}, mean "
            f"{_g(a.fp16_mean)}{ratio}"
        )
        if self.float32_vs_float64 is not None:
            out.append(
                f"local float32 against float64: max |diff| {_g(self.float32_vs_float64[0])}, mean "
                f"{_g(self.float32_vs_float64[1])} on logits"
            )
        skipped = [r.probe.id for r in a.results if not r.answered]
        if skipped:
            out.append(f"not compared ({len(skipped)} probes the endpoint did not answer): {', '.join(skipped)}")
        if a.findings:
            out.append("")
            out += [f.line() for f in a.findings]
        if a.hypotheses:
            out.append(
                "closest planted faults (mean / max |diff| on logits): "
                + "; ".join(f"{h.key} {h.mean:.3g} / {h.max:.3g}" for h in a.hypotheses[:4])
            )
        differing = [r for r in answered if not r.ok]
        if differing:
            out += ["", "what the differing probes mean:"]
            out += [f"  {r.probe.id}: {r.probe.meaning}" for r in differing]
        tail = {
            "agrees": f"agrees within atol {a.atol:g} on logits",
            "ranks agree": "ranks agree on every probe; values not comparable (unknown map of the logits)",
            "differs": "differs",
            "no answers": "no probe was answered",
        }[a.verdict]
        out += ["", f"verdict: {tail} (exit {self.exit_code})"]
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def to_dict(self) -> dict:
        a = self.analysis

        def floats(v):
            return None if v is None else [None if not np.isfinite(x) else float(x) for x in np.asarray(v, float)]

        probes = []
        for r in a.results:
            probes.append(
                {
                    "id": r.probe.id,
                    "category": r.probe.category,
                    "meaning": r.probe.meaning,
                    "ok": r.ok,
                    "answered": r.answered,
                    "error": r.error,
                    "problems": r.problems,
                    "notes": r.notes,
                    "reference_logits": floats(r.reference),
                    "endpoint_scores": floats(r.endpoint),
                    "endpoint_scores_matched_by_text": floats(r.aligned),
                    "abs_diff": floats(r.diff),
                    "abs_diff_logits": floats(r.logit_diff),
                    "tolerance": floats(r.tolerance),
                    "truncated_locally": r.truncated,
                    "kendall_tau": r.tau if r.answered else None,
                    "top1": r.top1,
                    "top3_overlap": r.topk,
                    "float16_effect_max": r.fp16_effect,
                }
            )
        mx, mean = a.overall("diff")
        lmx, lmean = a.overall("logit_diff") if a.scale.comparable else (None, None)
        return _finite(
            {
                "verdict": a.verdict,
                "agrees": self.agrees,
                "source": self.source,
                "reference": self.reference,
                "probe_set": self.probe_set,
                "atol": a.atol,
                "expect_scale": a.expect_scale,
                "scale": {"name": a.scale.name, "detail": a.scale.detail, "a": a.scale.a, "b": a.scale.b},
                "overall": {
                    "max_abs_diff": mx,
                    "mean_abs_diff": mean,
                    "max_abs_diff_logits": lmx,
                    "mean_abs_diff_logits": lmean,
                    "float16_effect_max": a.fp16_max,
                    "float16_effect_mean": a.fp16_mean,
                    "float32_vs_float64": self.float32_vs_float64,
                },
                "diagnosis": [{"cause": f.cause, "evidence": f.evidence, "kind": f.kind} for f in a.findings],
                "hypotheses": [
                    {"key": h.key, "cause": h.cause, "mean_abs_diff": h.mean, "max_abs_diff": h.max}
                    for h in a.hypotheses
                ],
                "probes": probes,
            }
        )


def _finite(value):
    """NaN and infinities as null, so the JSON is valid everywhere."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.bool_):
        return bool(value)
    return value
