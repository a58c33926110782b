"""xlmr_np.plot: heatmaps with token labels, attribution text layout, and a clear error without matplotlib."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from xlmr_np import InputError
from xlmr_np.plot import _pieces, attribution_figure
from xlmr_np.testing import require
from xlmr_np.tracing import Attribution, format_table

DOC = "Paris is nice.\nBananas!"


def attribution():
    return Attribution(
        DOC, "word", "remove", 0.5, [(0, 5), (6, 8), (9, 14), (15, 23)], np.array([0.3, -0.1, 0.0, -0.3])
    )


def test_pieces_keep_gaps_and_line_breaks():
    assert _pieces(attribution()) == [
        ("Paris", 0.3),
        (" ", None),
        ("is", -0.1),
        (" ", None),
        ("nice.", 0.0),
        ("\n", None),
        ("Bananas!", -0.3),
    ]


def test_attribution_figure_draws_every_unit_with_its_colour():
    require("matplotlib", "plots")
    fig = attribution_figure(attribution(), title="t")
    boxes = {t.get_text(): t.get_bbox_patch().get_facecolor() for t in fig.texts if t.get_bbox_patch()}
    assert set(boxes) == {"Paris", "is", "nice.", "Bananas!"}
    red, white, green = boxes["Bananas!"], boxes["nice."], boxes["Paris"]
    assert red[0] > red[1] and green[1] > green[0] and min(white[:2]) > 0.9  # RdYlGn centre: pale yellow
    assert fig.axes[0].get_xlabel() == "logit - logit with the word removed"


def test_plotting_without_matplotlib_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(InputError, match=r"pip install 'xlmr-np\[plot\]'"):
        attribution_figure(attribution())


def test_tables_align_chinese_text():
    table = format_table([{"query": "什么是光合作用", "AP": 25.0}, {"query": "capital", "AP": 100.0}])
    lines = table.splitlines()
    assert lines[1] == "什么是光合作用   25"  # 7 characters, 14 columns wide
    assert lines[2] == "capital" + " " * 9 + "100"
