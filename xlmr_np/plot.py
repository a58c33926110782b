"""Figures for inspection: attention heatmaps with token labels, and attribution as highlighted text.

matplotlib is optional (`pip install 'xlmr-np[plot]'`). Figures are built with matplotlib.figure.Figure,
not pyplot, so nothing global is touched; save them with fig.savefig(path) or show them in a notebook.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .tracing import Attribution, Inspection, contribution_label


def _matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError:
        raise InputError("plotting needs matplotlib: pip install 'xlmr-np[plot]'") from None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return Figure, FigureCanvasAgg


def attention_figure(inspection: Inspection, layers=None, heads=None):
    """A grid of heatmaps, one per (layer, head): row = attending token, column = attended-to token.

    layers, heads: which to draw (default: all). Each heatmap's rows sum to 1.
    """
    Figure, Canvas = _matplotlib()
    num_heads = inspection.attention(0).shape[0]
    layers = list(range(inspection.num_layers)) if layers is None else list(layers)
    heads = list(range(num_heads)) if heads is None else list(heads)
    for h in heads:
        if not 0 <= h < num_heads:
            raise InputError(f"head must be in [0, {num_heads}), got {h}")
    T = len(inspection.tokens)
    cell = max(2.6, 0.16 * T)  # inches per heatmap: token labels stay legible
    fig = Figure(figsize=(cell * len(heads) + 1.2, cell * len(layers) + 1.0), layout="constrained")
    Canvas(fig)
    axes = fig.subplots(len(layers), len(heads), squeeze=False)
    image = None
    vmax = max(float(inspection.attention(layer)[heads].max()) for layer in layers)  # one scale for all
    for row, layer in enumerate(layers):
        probs = inspection.attention(layer)  # [H, T, T]
        for col, head in enumerate(heads):
            ax = axes[row][col]
            image = ax.imshow(probs[head], vmin=0, vmax=vmax, cmap="viridis")
            ax.set_title(f"layer {layer}, head {head}", fontsize=9)
            ax.set_xticks(range(T), inspection.tokens, rotation=90, fontsize=6)
            ax.set_yticks(range(T), inspection.tokens, fontsize=6)
            ax.set_xlabel("attended-to token (key)", fontsize=7)
            ax.set_ylabel("attending token (query)", fontsize=7)
    fig.colorbar(image, ax=axes, shrink=0.6, label="attention probability")
    fig.suptitle(f"Attention probabilities: query {inspection.query!r}, logit {float(inspection.logits[0]):.4g}")
    return fig


def attribution_figure(attribution: Attribution, title: str | None = None, width: float = 9.0, fontsize: float = 12):
    """The document as wrapped text, each unit on a background coloured by its contribution to the logit
    (logit - logit without the unit).

    Green: the unit pushed the logit up (removing or masking it lowers the logit); red: it pulled the logit
    down; white: no effect.
    """
    Figure, Canvas = _matplotlib()
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.font_manager import FontProperties

    scale = float(np.abs(attribution.contributions).max()) or 1.0
    norm, cmap = Normalize(-scale, scale), colormaps["RdYlGn"]
    fig = Figure(figsize=(width, 1.0), dpi=100)
    Canvas(fig)
    renderer = fig.canvas.get_renderer()
    font = FontProperties(size=fontsize)
    pieces = _pieces(attribution)
    px_per_pt = fig.dpi / 72
    margin, line_h = 0.3 * fig.dpi, 2.0 * fontsize * px_per_pt
    width_px = width * fig.dpi - 2 * margin
    placed, x, y = [], 0.0, 0.0
    for text, delta in pieces:
        if text == "\n":
            x, y = 0.0, y + line_h
            continue
        w = renderer.get_text_width_height_descent(text, font, ismath=False)[0] + 4 * px_per_pt
        if x + w > width_px and x > 0:
            x, y = 0.0, y + line_h
            if text.isspace():
                continue
        placed.append((text, delta, x, y))
        x += w
    height_px = y + line_h + 2 * margin + 1.2 * fig.dpi  # text, a two-line title and the colour bar
    fig.set_size_inches(width, height_px / fig.dpi)
    for text, delta, x, y in placed:
        box = None if delta is None else dict(facecolor=cmap(norm(delta)), edgecolor="none", pad=2)
        strong = delta is not None and abs(delta) > 0.7 * scale  # dark background: white text
        fig.text(
            (margin + x) / (width * fig.dpi),
            1 - (margin + 0.55 * fig.dpi + y) / height_px,
            text,
            fontproperties=font,
            va="top",
            ha="left",
            bbox=box,
            color="white" if strong else "black",
        )
    bar = fig.add_axes((0.15, 0.45 * fig.dpi / height_px, 0.7, 0.12 * fig.dpi / height_px))
    fig.colorbar(ScalarMappable(norm, cmap), cax=bar, orientation="horizontal", label=contribution_label(attribution))
    verb = "removal" if attribution.method == "remove" else "masking"
    fig.suptitle(
        title or f"Attribution by {attribution.unit} {verb}: logit {attribution.logit:.4g}",
        y=1 - 0.08 * fig.dpi / height_px,
        va="top",
        wrap=True,
    )
    return fig


def _pieces(attribution: Attribution) -> list[tuple[str, float | None]]:
    """The document cut into (text, delta) pieces: units with their delta, gaps with None, '\\n' for breaks."""
    out: list[tuple[str, float | None]] = []

    def gap(text):
        for i, line in enumerate(text.split("\n")):
            if i:
                out.append(("\n", None))
            if line:
                out.append((line, None))

    end = 0
    for (a, b), delta in zip(attribution.spans, attribution.contributions):
        gap(attribution.document[end:a])
        out.append((attribution.document[a:b], float(delta)))
        end = b
    gap(attribution.document[end:])
    return out
