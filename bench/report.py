"""The report: a markdown header and tables, and a PNG chart."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .measure import Result
from .workloads import Workload


def report_markdown(
    env: dict,
    results: list[Result],
    cold: list[dict],
    peak: float,
    command: str,
    skipped: Sequence[str],
    workloads: Sequence[Workload],
    batch_rates: dict,
    peaks: Sequence[float] = (),
    agree: dict | None = None,
    peers: Sequence[str] = (),
) -> str:
    """The header (machine, BLAS, versions, warnings), the throughput table, ratios, cold-start table,
    the agreement of each implementation with xlmr_np's float32 logits, and a one-line summary of every ratio."""
    lines = [
        f"Command: `{command}`",
        "",
        f"- CPU: {env['cpu']}, {env['cores']} cores; Python {env['python']}; "
        f"load average at start {_fmt_load(env['load_average'])}",
        "- packages: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
    ]
    for lib in env["blas"]:
        lines.append(
            f"- thread pool: {lib['internal_api']} {lib.get('version') or ''} "
            f"kernel {lib.get('architecture') or '-'}, {lib['num_threads']} threads "
            f"({Path(str(lib['filepath'])).name})"
        )
    lines.append(f"- OpenBLAS/OpenMP environment: {env['openblas_env'] or 'none set'}")
    lines.append(
        f"- measured numpy sgemm peak (all cores): {peak:.0f} GFLOP/s"
        + (
            f", the median of one measurement at the start of each repeat ({', '.join(f'{p:.0f}' for p in peaks)})"
            if peaks
            else ""
        )
    )
    lines += [f"- {w}" for w in env["warnings"]]
    lines += [f"- {s}" for s in skipped]
    lines += [
        f"- workload {w.name}: {len(w.sequences)} pairs, {int(w.lengths.sum())} tokens "
        f"(median {int(np.median(w.lengths))}), {w.about}"
        for w in workloads
    ]
    lines.append(
        "- batch size: each implementation's fastest on the first pairs of uniform 128 (docs/s): "
        + "; ".join(f"{e}: " + ", ".join(f"{b}: {r:.2f}" for b, r in rates.items()) for e, rates in batch_rates.items())
    )
    implementations = list(dict.fromkeys(r.implementation for r in results))
    by = {(r.workload, r.implementation): r for r in results}
    lines += [
        "",
        "| workload | implementation | batch | docs/s | useful GFLOP/s | % of sgemm peak | xlmr_np speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for w in dict.fromkeys(r.workload for r in results):
        for e in implementations:
            r = by[w, e]
            ratio = by[w, "xlmr_np"].docs_per_s / r.docs_per_s if (w, "xlmr_np") in by and e != "xlmr_np" else None
            lines.append(
                f"| {w} | {e} | {r.batch_size} | {r.docs_per_s:.2f} | {r.gflops:.0f} | "
                f"{100 * r.gflops / peak:.0f}% | {f'{ratio:.2f}x' if ratio else '-'} |"
            )
    if cold:
        base = next((c for c in cold if c["implementation"] == "xlmr_np"), None)
        lines += [
            "",
            "Fresh process per implementation: import + load, first score of one pair, then the rerank "
            "workload; peak RSS over the whole run (page cache warm for every implementation).",
            "",
            "| implementation | load s | time to first score s | rerank s | peak RSS MB | xlmr_np / implementation: "
            "first score, peak RSS |",
            "|---|---|---|---|---|---|",
        ]
        for c in cold:
            ratios = (
                "-"
                if base is None or c is base
                else (
                    f"{base['time_to_first_score_s'] / c['time_to_first_score_s']:.2f}x, "
                    f"{base['peak_rss_mb'] / c['peak_rss_mb']:.2f}x"
                )
            )
            lines.append(
                f"| {c['implementation']} | {c['load_s']:.2f} | {c['time_to_first_score_s']:.2f} | "
                f"{c['rerank_s']:.1f} | {c['peak_rss_mb']:.0f} | {ratios} |"
            )
        if base is not None and base.get("weights_file_rss_mb") is not None:
            lines.append(
                f"\nxlmr_np after the rerank: {base['weights_file_rss_mb']:.0f} MB of the mapped "
                f"model.safetensors resident in the process, of which the word-embedding table "
                f"{base['embedding_resident_mb']:.1f} MB of {base['embedding_mb']:.0f} MB "
                f"(/proc/self/pagemap)."
            )
    if agree:
        lines += [
            "",
            f"Agreement with xlmr_np's float32 logits on {workloads[3].name if len(workloads) > 3 else ''}:"
            " max and mean |logit difference|, Spearman rank correlation.",
            "",
            "| implementation | max abs | mean abs | Spearman |",
            "|---|---|---|---|",
        ]
        lines += [f"| {e} | {a['max_abs']:.3g} | {a['mean_abs']:.3g} | {a['spearman']:.6f} |" for e, a in agree.items()]
    summary = summary_line(results, cold, peers)
    if summary:
        lines += ["", summary]
    return "\n".join(lines) + "\n"


def summary_line(results: list[Result], cold: list[dict], peers: Sequence[str]) -> str:
    """Every ratio of xlmr_np against each peer on one line: throughput per workload (above 1: xlmr_np is
    faster), single-pair latency (peer / xlmr_np, above 1: xlmr_np answers sooner) and peak RSS (xlmr_np /
    peer, below 1: xlmr_np uses less)."""
    by = {(r.workload, r.implementation): r for r in results}
    workloads = list(dict.fromkeys(r.workload for r in results))
    rss = {c["implementation"]: c["peak_rss_mb"] for c in cold}
    parts = []
    for peer in peers:
        ratios = [
            f"{w} {by[w, 'xlmr_np'].docs_per_s / by[w, peer].docs_per_s:.2f}x"
            for w in workloads
            if (w, "xlmr_np") in by and (w, peer) in by
        ]
        if "xlmr_np" in rss and peer in rss:
            ratios.append(f"peak RSS {rss['xlmr_np'] / rss[peer]:.2f}x")
        if ratios:
            parts.append(f"vs {peer}: " + ", ".join(ratios))
    return (
        (
            "Summary, xlmr_np against each peer (docs/s ratio per workload; single pair: latency ratio): "
            + "; ".join(parts)
        )
        if parts
        else ""
    )


def _fmt_load(load) -> str:
    return "-" if load is None else "/".join(f"{x:.2f}" for x in load)


def report_chart(results: list[Result], cold: list[dict], path: Path) -> Path:
    """Grouped bars of docs/s per workload and implementation, plus time to first score and peak RSS."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    implementations = list(dict.fromkeys(r.implementation for r in results))
    workloads = list(dict.fromkeys(r.workload for r in results))
    by = {(r.workload, r.implementation): r.docs_per_s for r in results}
    panels = 3 if cold else 1
    fig, axes = plt.subplots(
        1, panels, figsize=(5 * panels + 4, 4.5), squeeze=False, gridspec_kw={"width_ratios": [3] + [1] * (panels - 1)}
    )
    ax = axes[0, 0]
    width = 0.8 / len(implementations)
    for j, e in enumerate(implementations):
        xs = [i + (j - (len(implementations) - 1) / 2) * width for i in range(len(workloads))]
        ax.bar(xs, [by[w, e] for w in workloads], width, label=e)
    ax.set_xticks(range(len(workloads)), workloads)
    ax.set_ylabel("docs/s (higher is better)")
    ax.legend()
    for k, (key, label) in enumerate(
        (("time_to_first_score_s", "time to first score, s"), ("peak_rss_mb", "peak RSS reranking, MB")), start=1
    ):
        if k < panels:
            axes[0, k].bar([c["implementation"] for c in cold], [c[key] for c in cold], color="gray")
            axes[0, k].set_title(label + " (lower is better)", fontsize=9)
            axes[0, k].tick_params(axis="x", labelrotation=45)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def subnormal_rows(name: str, s: dict) -> str:
    """One model's row of the subnormal table."""
    return (
        f"| {name} | {s['tokens']} | {100 * s['plain_share']:.3g}% ({s['plain_subnormal']} of {s['plain_total']}) | "
        f"{100 * s['engine_share']:.3g}% ({s['engine_subnormal']}) | {100 * s['engine_zero_share']:.3g}% | "
        f"{s['floor_logit_change']:.3g} |"
    )


def long_markdown_subnormals_only(subnormals: dict) -> str:
    """The subnormal table alone, for a run without the long-input part."""
    return (
        "\n".join(["", SUBNORMAL_HEADER, "", *SUBNORMAL_TABLE, *(subnormal_rows(n, s) for n, s in subnormals.items())])
        + "\n"
    )


SUBNORMAL_HEADER = (
    "Subnormal softmax probabilities (below 1.2e-38) on one pair, over the probabilities each computes: the "
    "plain formula (xlmr_np.model) and the engine, which sets weights below 2^-60 of their row's largest to "
    "exactly 0; and how far that floor moves the engine's float32 logits (max |with - without|)."
)
SUBNORMAL_TABLE = [
    "| model | tokens | plain formula: subnormal | engine: subnormal | engine: set to 0 | logit change |",
    "|---|---|---|---|---|---|",
]


def long_markdown(long: dict, subnormals: dict) -> str:
    """The long-input section: times, peak RSS, float32 accuracy at 8,192 tokens, subnormal probabilities.

    subnormals: model name -> subnormal_report, the soft main model's and the sharp long model's."""
    by = {(r.workload, r.implementation): r for r in long["results"]}
    lines = [
        "",
        f"## Long inputs and sharp attention: bge-reranker-v2-m3's shapes, {long['layers']} layers, weights of "
        f"std 0.2 ({long['model']})",
        "",
    ]
    lines += [f"- {s}" for s in long["skipped"]]
    lines += [
        f"- workload {w.name}: {len(w.sequences)} pair{'s' * (len(w.sequences) > 1)} of {int(w.lengths.max())} "
        f"tokens, {w.about}"
        for w in long["workloads"]
    ]
    lines += [
        "",
        "| workload | implementation | batch | s per pass | docs/s | useful GFLOP/s | xlmr_np speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for w in dict.fromkeys(r.workload for r in long["results"]):
        for e in dict.fromkeys(r.implementation for r in long["results"]):
            if (w, e) not in by:
                continue
            r = by[w, e]
            ratio = by[w, "xlmr_np"].docs_per_s / r.docs_per_s if (w, "xlmr_np") in by and e != "xlmr_np" else None
            lines.append(
                f"| {w} | {e} | {r.batch_size} | {r.median_s:.2f} | {r.docs_per_s:.2f} | {r.gflops:.0f} | "
                f"{f'{ratio:.2f}x' if ratio else '-'} |"
            )
    if long["cold"]:
        lines += [
            "",
            "Peak RSS in a fresh process per implementation and workload (load, one pair, then the workload):",
            "",
            "| workload | implementation | load s | workload s | peak RSS MB |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {c['workload']} | {c['implementation']} | {c['load_s']:.2f} | {c['rerank_s']:.1f} | "
            f"{c['peak_rss_mb']:.0f} |"
            for c in long["cold"]
        ]
    if long["accuracy"]:
        lines += [
            "",
            f"float32 logit of the {long['workloads'][-1].name} pair against the float64 truth (xlmr_np in float64, "
            f"logit {long['truth'][0]:.6g}): |float32 - truth|",
            "",
            "| implementation | abs error |",
            "|---|---|",
        ]
        lines += [f"| {e} | {err:.3g} |" for e, err in long["accuracy"].items()]
    lines += ["", SUBNORMAL_HEADER, "", *SUBNORMAL_TABLE, *(subnormal_rows(n, s) for n, s in subnormals.items())]
    return "\n".join(lines) + "\n"


def targets_markdown(results: list[Result], cold: list[dict], long: dict | None, subnormals: dict) -> str:
    """The figures the targets of the long-input work are read from, one line each, against torch SDPA."""

    def ratio(rows, workload):  # xlmr_np docs/s / torch SDPA docs/s on one workload
        by = {(r.workload, r.implementation): r for r in rows}
        if (workload, "xlmr_np") in by and (workload, "torch-sdpa") in by:
            return f"{by[workload, 'xlmr_np'].docs_per_s / by[workload, 'torch-sdpa'].docs_per_s:.2f}x"
        return "not measured"

    lines = ["", "## Figures for the targets (xlmr_np against torch SDPA; speed: docs/s ratio, above 1 is faster)", ""]
    if long is not None:
        rss = {(c["workload"], c["implementation"]): c["peak_rss_mb"] for c in long["cold"]}
        pair = long["workloads"][-1].name
        mine, theirs = rss.get((pair, "xlmr_np")), rss.get((pair, "torch-sdpa"))
        acc = long["accuracy"]
        lines += [
            f"- 16 x 512 tokens, sharp weights, 1024 wide: {ratio(long['results'], 'sharp 16x512')}",
            f"- {pair}, sharp weights, v2-m3-shaped ({long['layers']} layers): {ratio(long['results'], pair)}",
            f"- 1 x 16 documents of 2,048 tokens, v2-m3-shaped: {ratio(long['results'], '1x16 docs 2048')}",
            f"- peak RSS, {pair}: "
            + (f"{mine:.0f} MB against {theirs:.0f} MB ({mine / theirs:.2f}x)" if mine and theirs else "not measured"),
            "- float32 logit at 8,192 tokens, |float32 - float64 truth|: "
            + (
                f"xlmr_np {acc['xlmr_np']:.3g}, torch SDPA {acc['torch-sdpa']:.3g}"
                if {"xlmr_np", "torch-sdpa"} <= set(acc)
                else "not measured"
            ),
        ]
    lines += [
        "- std-0.02 workloads: "
        + ", ".join(f"{w} {ratio(results, w)}" for w in dict.fromkeys(r.workload for r in results)),
        "- subnormal probabilities produced by the engine: "
        + ", ".join(f"{name} {s['engine_subnormal']}" for name, s in subnormals.items())
        + " (the plain formula: "
        + ", ".join(f"{name} {s['plain_subnormal']}" for name, s in subnormals.items())
        + ")",
    ]
    return "\n".join(lines) + "\n"
