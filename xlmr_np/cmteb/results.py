"""From a task's scores to its results: MAP and MRR@10 beside the published figures, the text table, the file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import OutputError
from .metrics import bootstrap_interval, per_query_metrics
from .plan import Structure
from .tasks import Task


def task_result(task: Task, structure: Structure, scores: np.ndarray, sample: dict | None) -> dict:
    """Metrics of one task from its plan structure and the scores of its distinct pairs."""
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
        "published": {"map": task.published_map, "mrr@10": task.published_mrr},
    }
    result["difference"] = {m: result[m] - result["published"][m] for m in ("map", "mrr@10")}
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
    """The results as an aligned text table, with the published figures and the differences."""
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
    rows = []
    for t in tasks:
        row = [
            t["task"],
            f"{t['queries']:,}",
            f"{t['pairs']:,}",
            f"{t['map']:.4f}",
            f"{t['mrr@10']:.4f}",
            f"{t['published']['map']:.4f}",
            f"{t['published']['mrr@10']:.4f}",
            f"{t['difference']['map']:+.4f}",
            f"{t['difference']['mrr@10']:+.4f}",
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
