"""The four C-MTEB reranking tasks: where each one's data lives (the published figures are in xlmr_np.family)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import DatasetError, InputError


@dataclass(frozen=True)
class Task:
    """One C-MTEB reranking task: where its data is."""

    name: str
    repo: str  # hub dataset repository
    revision: str  # the commit mteb pins for this task
    filename: str  # the split's parquet file in the repository at that commit
    split: str


# Revisions: mteb's task definitions (mteb/tasks/Reranking/zho/CMTEBReranking.py). Each repository's
# tree at its pinned commit holds one parquet file under data/ (hub file listings of the four repos).
TASKS = {
    t.name: t
    for t in (
        Task(
            "T2Reranking",
            "C-MTEB/T2Reranking",
            "76631901a18387f85eaa53e5450019b87ad58ef9",
            "data/dev-00000-of-00001-65d96bde8023d9b9.parquet",
            "dev",
        ),
        Task(
            "MMarcoReranking",
            "C-MTEB/Mmarco-reranking",
            "8e0c766dbe9e16e1d221116a3f36795fbade07f6",
            "data/dev-00000-of-00001-3df8a0d7f3506d33.parquet",
            "dev",
        ),
        Task(
            "CMedQAv1-reranking",
            "C-MTEB/CMedQAv1-reranking",
            "8d7f1e942507dac42dc58017c1a001c3717da7df",
            "data/test-00000-of-00001-ab36f89569e9d913.parquet",
            "test",
        ),
        Task(
            "CMedQAv2-reranking",
            "C-MTEB/CMedQAv2-reranking",
            "23d186750531a14a0357ca22cd92d712fd512ea0",
            "data/test-00000-of-00001-18c9589af3bb5d3a.parquet",
            "test",
        ),
    )
}


def resolve_tasks(name: str) -> list[Task]:
    """ "all" or one task name -> the tasks to run."""
    if name == "all":
        return list(TASKS.values())
    if name not in TASKS:
        raise InputError(f"unknown task {name!r}; expected one of {', '.join(TASKS)} or all")
    return [TASKS[name]]


def dataset_file(task: Task) -> Path:
    """The task's parquet file, downloaded through huggingface-hub at the pinned revision (or its cache)."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(
            hf_hub_download(repo_id=task.repo, filename=task.filename, repo_type="dataset", revision=task.revision)
        )
    except Exception as e:  # network, authentication and offline-cache misses all land here
        raise DatasetError(
            f"cannot get {task.repo}@{task.revision[:12]}/{task.filename} from the hub ({type(e).__name__}: {e})"
        ) from e
