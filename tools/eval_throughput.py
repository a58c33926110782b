"""Pairs/s of a model on pairs shaped like each C-MTEB reranking task, and the wall time that implies.

The datasets themselves are not reachable from this project's machines, so the pairs are built from real
Chinese text found on the machine (the zh_CN message catalogues under /usr/share/locale: Han characters
and Chinese punctuation), cut to each task's average query and document length in characters as mteb
publishes them (mteb/descriptive_stats/Reranking/<task>.json). T2Reranking's documents average 841
characters, past 512 tokens, so its pairs are all truncated to 512 tokens here; its real documents vary
in length (1 to 120,026 characters), and shorter ones are cheaper, so its estimate is on the high side.

    python -c "from xlmr_np import testing as t; t.build_model('full-random', **t.BGE_RERANKER_BASE)"
    python tools/eval_throughput.py --model full-random

Scores go through Reranker.predict_logits in batches, as `xlmr-np eval --processes 1` scores them.
To time `xlmr-np eval` itself, write a small dataset of the same shape into a hub cache and point the
command at it:

    python tools/eval_throughput.py --write-hub eval-hub --task CMedQAv2-reranking --queries 6 --docs 8
    HF_HUB_CACHE=eval-hub HF_HUB_OFFLINE=1 xlmr-np eval --model full-random \
        --task CMedQAv2-reranking --batch-size 8 --processes 2
"""

from __future__ import annotations

import argparse
import gettext
import glob
import os
import platform
import re
import time

import numpy as np
from tokenizers import Tokenizer

from xlmr_np import Reranker

# task: (average query characters, average document characters, pairs scored by `xlmr-np eval`)
PROFILES = {
    "T2Reranking": (10.948, 840.83, 97_422),
    "MMarcoReranking": (11.44, 123.77, 100_026),
    "CMedQAv1-reranking": (55.717, 106.64, 100_000),
    "CMedQAv2-reranking": (48.848, 100.61, 100_000),
}
CHINESE = re.compile("[\u4e00-\u9fff，。：；？！、（）]")


def chinese_text() -> str:
    """Han characters and Chinese punctuation of every zh_CN message catalogue, in file order."""
    parts = []
    for path in sorted(glob.glob("/usr/share/locale/zh_CN/LC_MESSAGES/*.mo")):
        with open(path, "rb") as f:
            try:
                catalog = gettext.GNUTranslations(f)._catalog
            except (OSError, UnicodeDecodeError):
                continue
        parts += ["".join(CHINESE.findall(v)) for v in catalog.values() if isinstance(v, str)]
    text = "".join(parts)
    if len(text) < 100_000:
        raise SystemExit(f"only {len(text)} Chinese characters found under /usr/share/locale/zh_CN")
    return text


def make_pairs(text: str, query_chars: float, doc_chars: float, count: int, rng) -> list[tuple[str, str]]:
    q, d = round(query_chars), round(doc_chars)
    starts = rng.integers(0, len(text) - q - d, size=count)
    return [(text[s : s + q], text[s + q : s + q + d]) for s in starts]


def write_hub_task(hub: str, task_name: str, queries: int, docs: int, text: str, rng) -> str:
    """A parquet file shaped like the task (one positive and docs - 1 negatives per query) where
    huggingface-hub looks for the task's file at its pinned revision under the cache `hub`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from xlmr_np.cmteb import TASKS

    task = TASKS[task_name]
    query_chars, doc_chars, _ = PROFILES[task_name]
    pairs = make_pairs(text, query_chars, doc_chars, queries * docs, rng)
    rows = {
        "query": [pairs[i * docs][0] for i in range(queries)],
        "positive": [[pairs[i * docs][1]] for i in range(queries)],
        "negative": [[d for _, d in pairs[i * docs + 1 : (i + 1) * docs]] for i in range(queries)],
    }
    path = os.path.join(hub, f"datasets--{task.repo.replace('/', '--')}", "snapshots", task.revision, task.filename)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.table(rows), path)
    return path


def environment() -> str:
    from threadpoolctl import threadpool_info

    blas = [f"{i.get('internal_api')} {i.get('version')} ({i.get('num_threads')} threads)" for i in threadpool_info()]
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        platform.processor(),
    )
    return (
        f"CPU {cpu}; {len(os.sched_getaffinity(0))} cores usable; load average {os.getloadavg()[0]:.2f} at start; "
        f"numpy {np.__version__}; BLAS {', '.join(blas)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory to time")
    parser.add_argument("--write-hub", metavar="DIR", help="instead, write a --task shaped dataset into this hub cache")
    parser.add_argument("--task", choices=PROFILES)
    parser.add_argument("--queries", type=int, default=6)
    parser.add_argument("--docs", type=int, default=8, help="documents per query")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=3, help="timed batches per task (after one warm-up batch)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.write_hub:
        if not args.task:
            parser.error("--write-hub needs --task")
        print(
            write_hub_task(
                args.write_hub, args.task, args.queries, args.docs, chinese_text(), np.random.default_rng(args.seed)
            )
        )
        return
    if not args.model:
        parser.error("--model is required (or --write-hub)")

    print(environment())
    reranker = Reranker.from_pretrained(args.model)
    text = chinese_text()
    rng = np.random.default_rng(args.seed)
    sample = text[:100_000]
    ids = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json")).encode(sample, add_special_tokens=False).ids
    print(f"text: {len(text):,} characters, {len(sample) / len(ids):.2f} characters per token (first 100,000)")
    total_seconds = 0.0
    print("| task | query chars | doc chars | tokens/pair | pairs/s | s per 1,000 pairs | pairs | estimated time |")
    print("|---|---|---|---|---|---|---|---|")
    for task, (query_chars, doc_chars, pairs_in_task) in PROFILES.items():
        pairs = make_pairs(text, query_chars, doc_chars, args.batch_size * (args.batches + 1), rng)
        tokens = np.mean([len(e.ids) for e in reranker.tokenizer.encode(pairs)])
        reranker.predict_logits(pairs[: args.batch_size], batch_size=args.batch_size)  # warm-up
        start = time.perf_counter()
        reranker.predict_logits(pairs[args.batch_size :], batch_size=args.batch_size)
        rate = (len(pairs) - args.batch_size) / (time.perf_counter() - start)
        seconds = pairs_in_task / rate
        total_seconds += seconds
        print(
            f"| {task} | {query_chars:.0f} | {doc_chars:.0f} | {tokens:.0f} | {rate:.2f} | {1000 / rate:.0f} | "
            f"{pairs_in_task:,} | {seconds / 3600:.1f} h |"
        )
    print(
        f"all four tasks: {total_seconds / 3600:.1f} h with one process on {len(os.sched_getaffinity(0))} cores; "
        f"load average {os.getloadavg()[0]:.2f} at the end"
    )


if __name__ == "__main__":
    main()
