"""How fast xlmr_np could be at best: the time of its dense products alone, against the peers' whole forward.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m bench.gemm_floor ~/.cache/xlmr-np/full-random

(the model directory `python -m bench` builds on its first run). For each job (one pair of 84 tokens, and
batches of uniform 128, 256 and 512 tokens), in one process, interleaved, medians of --repeats:

- numpy floor: every dense product the engine must run (x W^T with the model's own weights: Q, K, V, the
  attention output, the feed-forward up and down products of every layer; in the last layer, K and V on every
  token and the rest on the <s> rows only, as the engine does), on the job's real tokens, no padding, with
  numpy's BLAS used the faster of two ways: one call per product on every core, or one worker thread per core
  with one BLAS thread, each on its share of the rows. Nothing else (attention's per-pair products, softmax,
  GELU, layer norm) is counted: it is the time xlmr_np would take if everything but those products were free;
- torch matmul: the same products with torch's BLAS (the peers' kernel library), every core;
- torch-sdpa and xlmr_np: the whole forward pass on the same batch (bench.peers).

"torch-sdpa / numpy floor" is then the largest speed-up over torch SDPA that any numpy implementation can reach on
this machine: below 1.0, matching torch SDPA is out of reach with numpy's BLAS.

Symbols: N real tokens of the job, B pairs, D hidden size, F feed-forward size.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np

from xlmr_np.engine import spans

from .peers import cores, load_implementation
from .workloads import batches, single_pair, uniform

JOBS = (("single pair 84", None, 1), ("uniform 128", 128, 16), ("uniform 256", 256, 16), ("uniform 512", 512, 8))


def products(params, config, tokens: int, pairs: int) -> list[tuple[int, np.ndarray]]:
    """[(rows, weight [out, in])] of every dense product of one forward pass on `tokens` rows of `pairs` pairs."""
    out = []
    for i in range(config.num_hidden_layers):
        p = f"roberta.encoder.layer.{i}."
        last = i == config.num_hidden_layers - 1
        rows = pairs if last else tokens  # the last layer: <s> rows only, but keys and values of every token
        out += [(tokens, params[p + "attention.self.key.weight"]), (tokens, params[p + "attention.self.value.weight"])]
        for name in ("attention.self.query", "attention.output.dense", "intermediate.dense", "output.dense"):
            out.append((rows, params[p + name + ".weight"]))
    return out


def numpy_all_cores(work, inputs):
    """Each product as one numpy call, BLAS on every core."""
    for rows, w in work:
        np.matmul(inputs[w.shape[1]][:rows], w.T)  # [rows, in] -> [rows, out]


def numpy_workers(work, inputs, threads: int):
    """One thread per core, one BLAS thread each (the caller limits BLAS), each on its share of every product's rows."""

    def share(k):
        for rows, w in work:
            shares = spans(rows, threads)
            if k >= len(shares):
                continue
            a, b = shares[k]
            np.matmul(inputs[w.shape[1]][a:b], w.T)  # [rows / threads, in] -> [rows / threads, out]

    team = [threading.Thread(target=share, args=(k,)) for k in range(1, threads)]
    for t in team:
        t.start()
    share(0)
    for t in team:
        t.join()


def torch_products(work, inputs):
    import torch

    with torch.inference_mode():
        for rows, w in work:
            torch.nn.functional.linear(inputs[w.shape[1]][:rows], w)  # [rows, in] -> [rows, out]


def seconds(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gemm_floor", description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, help="a full-size model directory (python -m bench builds one)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")

    import torch
    from threadpoolctl import threadpool_limits

    from xlmr_np.config import XLMRobertaConfig
    from xlmr_np.weights import load_params

    config = XLMRobertaConfig.from_file(args.model / "config.json")
    params = load_params(args.model, config)
    threads = cores()
    torch.set_num_threads(threads)
    implementations = {name: load_implementation(name, args.model) for name in ("xlmr_np", "torch-sdpa")}
    torch_weights = {}  # id(numpy weight) -> torch copy, so torch's products read torch-owned memory
    print(f"{threads} cores; medians of {args.repeats}, interleaved; times in ms", file=sys.stderr)
    print(
        "| job | numpy floor | (all-core BLAS, workers) | torch matmul | torch-sdpa forward | xlmr_np forward "
        "| torch-sdpa / numpy floor | xlmr_np / numpy floor |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, length, pairs in JOBS:
        vocab = config.vocab_size
        workload = single_pair(vocab, count=1) if length is None else uniform(length, pairs, vocab)
        ((ids, mask),) = batches(workload, pairs)
        tokens = int(mask.sum())
        work = products(params, config, tokens, pairs)
        rng = np.random.default_rng(0)
        inputs = {d: rng.standard_normal((tokens, d)).astype(np.float32) for d in {w.shape[1] for _, w in work}}
        for _, w in work:
            torch_weights.setdefault(id(w), torch.from_numpy(np.array(w)))
        t_inputs = {d: torch.from_numpy(x) for d, x in inputs.items()}
        t_work = [(rows, torch_weights[id(w)]) for rows, w in work]

        def workers(work=work, inputs=inputs):
            with threadpool_limits(1, user_api="blas"):
                numpy_workers(work, inputs, threads)

        timed = {
            "all-core BLAS": lambda work=work, inputs=inputs: numpy_all_cores(work, inputs),
            "workers": workers,
            "torch matmul": lambda t_work=t_work, t_inputs=t_inputs: torch_products(t_work, t_inputs),
            "torch-sdpa": lambda ids=ids, mask=mask: implementations["torch-sdpa"](ids, mask),
            "xlmr_np": lambda ids=ids, mask=mask: implementations["xlmr_np"](ids, mask),
        }
        times: dict[str, list[float]] = {k: [] for k in timed}
        for fn in timed.values():  # warm-up
            fn()
        for _ in range(args.repeats):
            for k, fn in timed.items():
                times[k].append(seconds(fn))
                time.sleep(0.1)  # lets the previous one's spinning threads (OpenMP, OpenBLAS) go idle
        ms = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
        floor = min(ms["all-core BLAS"], ms["workers"])
        print(
            f"| {name} ({tokens} tokens) | {floor:.0f} | ({ms['all-core BLAS']:.0f}, {ms['workers']:.0f}) "
            f"| {ms['torch matmul']:.0f} | {ms['torch-sdpa']:.0f} | {ms['xlmr_np']:.0f} "
            f"| {ms['torch-sdpa'] / floor:.2f} | {ms['xlmr_np'] / floor:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
