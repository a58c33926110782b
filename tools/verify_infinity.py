"""`xlmr-np verify` against infinity-emb serving a random model with the real XLM-R tokenizer, once per
--dtype, and the table docs/verify.md records: `nox -s verify_infinity`, in its own environment (infinity-emb
pins numpy<2 and transformers 4, which the project's test environment does not have).

    python tools/verify_infinity.py [--dtypes float32,float16,bfloat16,int8] [--out table.md]

Each server is started on a free port with the torch engine on the CPU and found from its base URL
(--format auto); a server that does not come up within --wait seconds gets a row saying so, with the last
line of its log. Prints the versions, then one Markdown row per dtype: peer, setting, verdict, first
diagnosis line.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from xlmr_np import Reranker
from xlmr_np.verify import Verifier, VerifyError, verify_endpoint

BIN = Path(sys.executable).parent
PACKAGES = ("infinity-emb", "torch", "transformers", "sentence-transformers", "numpy", "tokenizers", "xlmr-np")


def versions() -> str:
    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found) + f", Python {sys.version.split()[0]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(1)
    return False


def last_line(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    return lines[-1][:200] if lines else "(empty log)"


def row(peer: str, setting: str, verdict: str, first: str) -> str:
    cell = first.replace("|", "\\|")  # a | inside a Markdown table cell
    return f"| {peer} | {setting} | {verdict} | {cell} |"


def check_dtype(model_dir: Path, dtype: str, verifier: Verifier, work: Path, wait: float) -> str:
    """One server with --dtype dtype, checked; its row of the table."""
    peer = f"infinity-emb {importlib.metadata.version('infinity-emb')} (torch engine, CPU)"
    port = free_port()
    log = work / f"infinity-{dtype}.log"
    command = [str(BIN / "infinity_emb"), "v2", "--model-id", str(model_dir), "--port", str(port)]
    command += ["--engine", "torch", "--device", "cpu", "--dtype", dtype, "--no-model-warmup"]
    with open(log, "w", encoding="utf-8") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_healthy(url, process, wait):
            return row(peer, f"--dtype {dtype}", "not started", last_line(log))
        try:
            report = verify_endpoint(url, format="auto", verifier=verifier)
        except VerifyError as e:
            return row(peer, f"--dtype {dtype}", "cannot be checked", str(e))
        first = report.diagnosis[0].removeprefix("diagnosis: ") if report.diagnosis else "-"
        print(f"{dtype}: {report.source}", *report.diagnosis, sep="\n  ", file=sys.stderr)
        return row(peer, f"--dtype {dtype}", f"{report.verdict} (exit {report.exit_code})", first)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtypes", default="float32,float16,bfloat16,int8")
    parser.add_argument("--out", type=Path, help="also write the versions and the table to this file")
    parser.add_argument("--wait", type=float, default=300, help="seconds a server may take to come up")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = work / "model"
        subprocess.run([str(BIN / "xlmr-np"), "random-model", str(model_dir), "--std", "0.2"], check=True)
        verifier = Verifier(Reranker.from_pretrained(model_dir), model_name="a random model (real XLM-R tokenizer)")
        lines = [
            versions(),
            "",
            "| peer | setting | verdict | first diagnosis line |",
            "|---|---|---|---|",
        ]
        lines += [check_dtype(model_dir, dtype, verifier, work, args.wait) for dtype in args.dtypes.split(",")]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
