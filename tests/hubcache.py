"""A huggingface-hub cache built on disk from a local model directory, for offline hub-loading tests.

The layout is the one huggingface-hub itself writes (see its docs, "Understand caching"):
    <cache>/models--<org>--<name>/blobs/<sha256>          file contents
    <cache>/models--<org>--<name>/snapshots/<commit>/<f>  symlinks to ../../blobs/<sha256>
    <cache>/models--<org>--<name>/refs/<branch or tag>    the commit hash, no newline
so snapshot_download(..., local_files_only=True) resolves it through its real code path.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def add_snapshot(cache_dir, repo_id: str, model_dir, commit: str, refs=("main",), files=None) -> Path:
    """Store `files` (default: every file) of model_dir as commit `commit` of repo_id; point refs at it."""
    storage = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    (storage / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot = storage / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for source in sorted(Path(model_dir).iterdir()):
        if files is not None and source.name not in files:
            continue
        data = source.read_bytes()
        blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / source.name)
    (storage / "refs").mkdir(exist_ok=True)
    for ref in refs:
        (storage / "refs" / ref).write_text(commit)
    return snapshot
