"""From a task's scores to its results: MAP and MRR@10 beside the published figures of the model evaluated (where
it is a known model with published figures: xlmr_np.family), the text table, the file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import OutputError
from ..family import KNOWN_MODELS, known_by_name
from .metrics import bootstrap_interval, per_query_metrics
from .plan import Structure
from .tasks import Task


def published_figures(known_model: str | None, task: Task) -> dict | None:
    """The figures published for a known model (its repo id, as results.json names it) on a task, or None."""
    known = known_by_name(known_model) if known_model is not None else None
    published = known.cmteb.get(task.name) if known is not None else None
    if published is None:
        return None
    return {"map": published.map, "mrr@10": published.mrr, "model": known_model, "source": published.source}


def task_result(
    task: Task, structure: Structure, scores: np.ndarray, sample: dict | None, known_model: str | None
) -> dict:
    """Metrics of one task from its plan structure and the scores of its distinct pairs, beside the figures
    published for `known_model` (a known model's repo id, or None)."""
    per_query = [(np.arange(len(positions)) < n_pos, scores[positions]) for _, n_pos, positions in structure]
    ap, rr = per_query_metrics(per_query, k=10)
    result: dict = {
        "task": task.name,
        "dataset": task.repo,
        "revision": task.revision,
        "split": task.split,
        "file": task.filename,
        "queries": len(structure),
        "pairs": sum(len(p) for _, _, p in structure),
        "map": 100 * float(np.mean(ap)),
        "mrr@10": 100 * float(np.mean(rr)),
        "published": published_figures(known_model, task),
    }
    published = result["published"] or {}
    result["difference"] = {m: result[m] - published[m] for m in ("map", "mrr@10") if published.get(m) is not None}
    if sample is not None:
        boot_seed = [sample["seed"], 1]  # a stream apart from the one that drew the sample
        result["sample"] = dict(
            sample,
            **{
                "map_ci95": [100 * v for v in bootstrap_interval(ap, seed=boot_seed)],
                "mrr@10_ci95": [100 * v for v in bootstrap_interval(rr, seed=boot_seed)],
            },
        )
    result["per_query"] = [
        {"row": row, "positives": n_pos, "negatives": len(positions) - n_pos, "ap": a, "rr@10": r}
        for (row, n_pos, positions), a, r in zip(structure, ap.tolist(), rr.tolist())
    ]
    return result


def format_table(results: dict) -> str:
    """The results as an aligned text table, with the published figures and the differences ("-" where the
    model has none)."""
    tasks = results["tasks"]
    sampled = any(t.get("sample") for t in tasks)
    header = [
        "task",
        "queries",
        "pairs",
        "MAP",
        "MRR@10",
        "published MAP",
        "published MRR@10",
        "diff MAP",
        "diff MRR@10",
    ] + (["MAP 95% CI", "MRR@10 95% CI"] if sampled else [])

    def figure(value, form):
        return "-" if value is None else format(value, form)

    rows = []
    for t in tasks:
        published, difference = t["published"] or {}, t["difference"]
        row = [
            t["task"],
            f"{t['queries']:,}",
            f"{t['pairs']:,}",
            f"{t['map']:.4f}",
            f"{t['mrr@10']:.4f}",
            figure(published.get("map"), ".4f"),
            figure(published.get("mrr@10"), ".4f"),
            figure(difference.get("map"), "+.4f"),
            figure(difference.get("mrr@10"), "+.4f"),
        ]
        if sampled:
            s = t.get("sample")
            row += [
                f"[{s['map_ci95'][0]:.2f}, {s['map_ci95'][1]:.2f}]" if s else "",
                f"[{s['mrr@10_ci95'][0]:.2f}, {s['mrr@10_ci95'][1]:.2f}]" if s else "",
            ]
        rows.append(row)
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in [header] + rows
    ]
    notes = [
        f"{t['task']}: {t['queries']:,} of "
        f"{t['sample']['of_queries']:,} queries sampled (seed {t['sample']['seed']}); the interval is a "
        f"bootstrap over the sampled queries"
        for t in tasks
        if t.get("sample")
    ]
    sources = sorted({(t["published"]["model"], t["published"]["source"]) for t in tasks if t["published"]})
    notes += [f"published: {model}, {source}" for model, source in sources]
    if not sources:
        known = ", ".join(known.repo_id for known in KNOWN_MODELS if known.cmteb)
        notes.append(f"published: none for this model (xlmr-np knows the figures of {known})")
    return "\n".join(lines + notes)


def write_json(path: Path, data: dict) -> None:
    """Write JSON through a temporary file and a rename, so a reader never sees half a file."""
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        check_output_dir(path.parent)
        temporary.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(temporary, path)
    except OSError as e:
        temporary.unlink(missing_ok=True)
        if isinstance(e, OutputError):
            raise
        raise OutputError(
            f"cannot write {path.name}: {e.strerror or e}; the scores are cached, rerun the same "
            f"command once that is fixed",
            where=str(path),
        ) from None


def check_output_dir(directory: Path) -> None:
    """Make `directory` (and its parents) or raise OutputError if it cannot be: run before the scoring, so
    that an --out naming a file fails in a second, not after hours."""
    if directory.exists() and not directory.is_dir():
        raise OutputError(
            "the output directory is a file; --out must name a directory (made if missing)", where=str(directory)
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot make the output directory: {e.strerror or e}", where=str(directory)) from None
