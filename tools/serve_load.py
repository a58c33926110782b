"""Load figures for a running `xlmr-np serve` (the numbers in docs/server.md come from this script).

    python tools/serve_load.py URL latency                # keep-alive: /health and a 2-document rerank
    python tools/serve_load.py URL concurrency --n 500    # n rerank requests at once, plus n idle connections
    python tools/serve_load.py URL throughput             # 16 concurrent 10-document requests vs one of 160
                                                          # (give the server a --request-timeout to match)
    python tools/serve_load.py URL big --mb 2 --pid PID   # one 2 MB document (run the server with --windows)

Add --key KEY for a server with an API key. Prints JSON lines; the machine's load is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

QUERY = "what is the capital of France?"
SENTENCE = (
    "Paris is the capital and most populous city of France, with an estimated population of two "
    "million residents, and a centre of finance, diplomacy, commerce, fashion and science. "
)


def documents(n: int, tag: str) -> list[str]:
    """n documents of about 40 tokens, distinct per request."""
    return [f"{tag} {i}: {SENTENCE}" for i in range(n)]


def report(**fields) -> None:
    print(json.dumps({**fields, "loadavg_1m": os.getloadavg()[0]}), flush=True)


def latency(client: httpx.Client, url: str, n: int = 200) -> None:
    for path, body in (("/health", None), ("/v1/rerank", {"query": QUERY, "documents": documents(2, "d")})):
        times = []
        for _ in range(n):
            started = time.perf_counter()
            response = client.get(url + path) if body is None else client.post(url + path, json=body)
            times.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
        report(
            figure="keep-alive latency",
            path=path,
            requests=n,
            median_ms=round(statistics.median(times) * 1e3, 3),
            p90_ms=round(sorted(times)[int(0.9 * n)] * 1e3, 3),
        )


def concurrency(url: str, headers: dict, n: int) -> None:
    host, port = url.removeprefix("http://").split(":")
    idle = [socket.create_connection((host, int(port))) for _ in range(n)]
    barrier = threading.Barrier(n)
    client = httpx.Client(headers=headers, timeout=600, limits=httpx.Limits(max_connections=n))

    def send(i):
        barrier.wait()
        return client.post(url + "/v1/rerank", json={"query": QUERY, "documents": documents(4, f"r{i}")}).status_code

    started = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        statuses = list(pool.map(send, range(n)))
    seconds = time.perf_counter() - started
    health = client.get(url + "/health").status_code
    for connection in idle:
        connection.close()
    report(
        figure="concurrency",
        requests=n,
        idle_connections_held=n,
        answered_200=statuses.count(200),
        answered_429=statuses.count(429),
        other=[s for s in statuses if s not in (200, 429)][:5],
        seconds=round(seconds, 2),
        health_during=health,
    )


def throughput(url: str, headers: dict, repeats: int) -> None:
    client = httpx.Client(headers=headers, timeout=600, limits=httpx.Limits(max_connections=32))
    client.post(url + "/v1/rerank", json={"query": QUERY, "documents": documents(10, "warm")})
    for shape, requests, per_request in (("16 concurrent x 10 documents", 16, 10), ("1 x 160 documents", 1, 160)):
        runs = []
        for r in range(repeats):
            barrier = threading.Barrier(requests)

            def send(i, barrier=barrier, n=per_request, tag=f"{shape[:2]}{r}"):
                barrier.wait()
                body = {"query": QUERY, "documents": documents(n, f"{tag}-{i}")}
                return client.post(url + "/v1/rerank", json=body).status_code

            started = time.perf_counter()
            with ThreadPoolExecutor(requests) as pool:
                assert set(pool.map(send, range(requests))) == {200}
            runs.append(time.perf_counter() - started)
        seconds = statistics.median(runs)
        report(
            figure="throughput",
            shape=shape,
            documents=requests * per_request,
            median_seconds=round(seconds, 2),
            documents_per_second=round(requests * per_request / seconds, 1),
            runs=[round(s, 2) for s in runs],
        )


def peak_rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def big(url: str, headers: dict, mb: float, pid: int | None) -> None:
    document = "word " * int(mb * 1e6 / 5)
    before = peak_rss_mb(pid)
    started = time.perf_counter()
    response = httpx.post(
        url + "/v1/rerank",
        headers=headers,
        timeout=3600,
        json={"query": QUERY, "documents": [document], "return_documents": False},
    )
    seconds = time.perf_counter() - started
    body = response.json()
    report(
        figure="one large document",
        megabytes=mb,
        status=response.status_code,
        seconds=round(seconds, 2),
        total_tokens=body.get("usage", {}).get("total_tokens"),
        server_peak_rss_mb_before=before,
        server_peak_rss_mb_after=peak_rss_mb(pid),
        queue_ms=response.headers.get("x-queue-time"),
        inference_ms=response.headers.get("x-inference-time"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("figure", choices=("latency", "concurrency", "throughput", "big"))
    parser.add_argument("--key")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--mb", type=float, default=2.0)
    parser.add_argument("--pid", type=int, help="the server's process id, for its peak memory (Linux)")
    parser.add_argument("--repeats", type=int, default=3, help="throughput runs per shape (the median is reported)")
    args = parser.parse_args()
    headers = {"Authorization": f"Bearer {args.key}"} if args.key else {}
    url = args.url.rstrip("/")
    if args.figure == "latency":
        latency(httpx.Client(headers=headers, timeout=60), url)
    elif args.figure == "concurrency":
        concurrency(url, headers, args.n)
    elif args.figure == "throughput":
        throughput(url, headers, args.repeats)
    else:
        big(url, headers, args.mb, args.pid)


if __name__ == "__main__":
    main()
