"""Running the installed `xlmr-np` command in subprocesses, offline, against a hub cache built on disk."""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from helpers import load

from xlmr_np.testing import add_snapshot

HUB_REPO = "BAAI/bge-reranker-base"


def xlmr_np_command() -> str:
    """The console script installed next to this interpreter (pip install -e .), else the one on PATH."""
    beside = Path(sys.executable).parent / "xlmr-np"
    found = str(beside) if beside.is_file() else shutil.which("xlmr-np")
    if found is None:
        raise FileNotFoundError("the xlmr-np command is not installed: pip install -e .")
    return found


def offline_hub(model_dir, cache_dir) -> dict:
    """Environment for a subprocess in which HUB_REPO resolves, offline, to model_dir's files."""
    add_snapshot(cache_dir, HUB_REPO, model_dir, "0" * 40)
    return dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache_dir), HF_HUB_DISABLE_TELEMETRY="1")


def run(args, env, input=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [xlmr_np_command(), *args], env=env, input=input, capture_output=True, text=True, timeout=timeout
    )


class ServerProcess:
    """`xlmr-np serve --port 0 ...` started in the background; url is known once it says it is serving."""

    def __init__(self, args, env, stderr_path, preexec_fn=None):
        self.stderr_path = stderr_path
        self._stderr = open(stderr_path, "w")
        self.proc = subprocess.Popen(
            [xlmr_np_command(), "serve", "--port", "0", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            preexec_fn=preexec_fn,  # e.g. a resource limit for the server alone
        )
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        self.url = None

    def _read_stdout(self):
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def wait_ready(self, timeout=180) -> str:
        line = self._lines.get(timeout=timeout)
        match = re.search(r"on (http://127\.0\.0\.1:\d+)", line or "")
        if match is None:
            self.stop()
            raise RuntimeError(f"server did not start: {line!r}\n{Path(self.stderr_path).read_text()}")
        self.url = match.group(1)
        return self.url

    def stop(self) -> int:
        self.proc.terminate()
        code = self.proc.wait(timeout=30)
        self._stderr.close()
        return code

    def log(self) -> str:
        return Path(self.stderr_path).read_text()


def reranker_in_process(model_dir):
    """The model loaded in this process (helpers.load: once while among the last 8 used), for the answers a
    subprocess must give."""
    return load(model_dir)


def serve_with_key(model_dir, tmp_path_factory, key: str, *options):
    """Yield the URL of `xlmr-np serve` on model_dir under the hub name HUB_REPO, `key` required (from
    XLMR_NP_API_KEY), offline; stop it after. For a module-scoped fixture: `yield from serve_with_key(...)`."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = dict(os.environ, XLMR_NP_API_KEY=key, HF_HUB_OFFLINE="1")
    process = ServerProcess(["--model", str(model_dir), "--served-model-name", HUB_REPO, *options], env, log)
    try:
        yield process.wait_ready()
    finally:
        process.stop()
