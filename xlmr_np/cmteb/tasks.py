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


def local_dataset_file(data_dir: Path, task: Task) -> Path:
    """Where `--data-dir DIR` holds a task's file: DIR/<dataset repo>/<file in the repo>, the layout
    `hf download <repo> <file> --repo-type dataset --revision <rev> --local-dir DIR/<repo>` writes."""
    return data_dir / task.repo / task.filename


def dataset_file(task: Task, data_dir: str | Path | None = None) -> Path:
    """The task's parquet file: under data_dir (see local_dataset_file), else from huggingface-hub at the
    pinned revision: its cache first, then a download, tried only when the hub can be reached (no retries
    against a hub that is down or an offline machine) and never with HF_HUB_OFFLINE set.

    A file that cannot be had raises DatasetError saying where to put it and how to try eval without it.
    """
    if data_dir is not None:
        path = local_dataset_file(Path(data_dir), task)
        if not path.is_file():
            raise DatasetError(f"{path}: no such file. {_where_the_data_goes(task, str(data_dir))}")
        return path
    from huggingface_hub import constants, hf_hub_download

    def download(local_files_only: bool) -> Path:
        return Path(
            hf_hub_download(
                task.repo, task.filename, repo_type="dataset", revision=task.revision, local_files_only=local_files_only
            )
        )

    try:
        return download(local_files_only=True)
    except Exception:  # not in the cache (or a cache entry it cannot use): a download may still have it
        pass
    name = f"{task.repo}@{task.revision[:12]}/{task.filename}"
    unreachable = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else _unreachable(constants.ENDPOINT)
    if unreachable:
        raise DatasetError(
            f"{name} is not in the hub cache {constants.HF_HUB_CACHE} and {unreachable}. "
            f"{_where_the_data_goes(task, 'DIR')}"
        )
    try:
        return download(local_files_only=False)
    except Exception as e:  # authentication, a lost connection, a full disk
        raise DatasetError(f"cannot get {name} from the hub ({type(e).__name__}: {e})") from e


def _where_the_data_goes(task: Task, data_dir: str) -> str:
    local = local_dataset_file(Path(data_dir), task)
    return (
        f"Get it where the hub is reachable (hf download {task.repo} {task.filename} --repo-type dataset "
        f"--revision {task.revision} --local-dir {Path(data_dir) / task.repo}), then pass --data-dir {data_dir} "
        f"(it reads {local}); or try eval on random data: xlmr-np synthetic-data {data_dir} --task {task.name}"
    )


def _unreachable(endpoint: str) -> str | None:
    """Why the hub at `endpoint` cannot be reached, found with one TCP connection (no retries), or None.

    Behind a proxy (HTTPS_PROXY and the like) the hub is reached through it, which only a download can
    tell: None then.
    """
    import os
    import socket
    from urllib.parse import urlsplit

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")):
        return None
    url = urlsplit(endpoint)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=HUB_PROBE_SECONDS).close()
    except OSError as e:
        return f"the hub ({host}) cannot be reached ({e.strerror or e})"
    return None


HUB_PROBE_SECONDS = 3.0  # one connection attempt: a firewall that drops packets costs this, not minutes
