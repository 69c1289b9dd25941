"""The catalog of statistics: a row added to it reaches every output that iterates it, without TensorFlow.

Each output is built from hand-made plain data (no model, no build): stats.json's rows, layers.csv,
the layer table and the architecture map's columns, the layer page's rows, the build comparison and
about.html."""

from __future__ import annotations

import csv
import io
from types import SimpleNamespace

import numpy as np
import pytest

from reportgen import catalog, compare, downloads, layer_table, pages, prose, site, stats
from reportgen.mask_classes import OXFORD

FAKE = catalog.Statistic("fake_stat", "Fake statistic of the {focus}", catalog.UNIT, "",
                         "a made-up number about the {focus}", json="fake_stat", csv="fake_stat_column",
                         column=("fake", "Fake heading", "Fake map label"), tracked="fake tracked")


def _layer_stats(fake_value: float | None = None, channels: int = 4) -> stats.LayerStats:
    rng = np.random.default_rng(3)
    numbers = {s.key: float(rng.uniform(0.1, 0.9)) for s in catalog.layer_statistics()}
    intervals = {key: (value - 0.05, value + 0.05) for key, value in numbers.items()}
    best_iou = rng.uniform(0, 1, (3, channels))
    ntv, area = rng.uniform(0.1, 2, channels), rng.uniform(0, 1, channels)
    # The finalised numbers agree with the per-channel arrays, as `stats.finalise` makes them.
    numbers.update(ntv_median=float(np.percentile(ntv, 50)), ntv_p10=float(np.percentile(ntv, 10)),
                   ntv_p90=float(np.percentile(ntv, 90)), effective_area_median=float(np.percentile(area, 50)),
                   best_iou_focus_max=float(best_iou[0].max()),
                   best_iou_focus_p90=float(np.percentile(best_iou[0], 90)),
                   best_iou_focus_share_above_half=float((best_iou[0] > 0.5).mean()),
                   best_iou_background_max=float(best_iou[1].max()))
    if fake_value is not None:
        numbers["fake_stat"] = fake_value
        intervals["fake_stat"] = (fake_value - 0.1, fake_value + 0.1)
    return stats.LayerStats(
        mean=numbers["mean"], std=numbers["std"], near_zero_fraction=numbers["near_zero_fraction"],
        channel_strength=rng.uniform(0, 1, channels), ntv=ntv, effective_area=area, best_iou=best_iou,
        cka_mask=numbers["cka_mask"], participation=numbers["participation"], probe_weights=[],
        cka_class=numbers["cka_class"], images=6, folds=3, intervals=intervals, numbers=numbers,
        importance=rng.uniform(0, 1, channels), importance_intervals=None)


def _result(index: int, fake_value: float | None = None):
    """What the site stage receives about one layer, as plain values."""
    s = _layer_stats(fake_value)
    conv = SimpleNamespace(index=index, is_output=False, qualified_name=f"conv_{index}", description="Conv2D")
    return SimpleNamespace(
        stats=s, conv=conv, role="encoder", shape=(8, 8, 4), stride=4.0, receptive_field=9.0,
        class_accuracy=0.5, probe_iou=np.array([0.6, 0.7, 0.2]), rgb_probe_iou=np.array([0.3, 0.4, 0.1]),
        order=np.arange(4), intervals={"probe_iou_focus": (0.5, 0.7)}, attribution_note="", attributed_after="",
        ablation=None, stored_note="")


@pytest.fixture()
def fake_row(monkeypatch):
    monkeypatch.setattr(catalog, "STATISTICS", (*catalog.STATISTICS, FAKE))
    return FAKE


def test_a_new_row_reaches_stats_json_with_its_interval(fake_row):
    rows = downloads.stats_records([_result(1, 0.25), _result(2, 0.75)], classes=OXFORD)
    assert [row["fake_stat"] for row in rows] == [0.25, 0.75]
    assert rows[1]["intervals_90"]["fake_stat"] == pytest.approx([0.65, 0.85])


def test_a_new_row_reaches_layers_csv_by_name(fake_row):
    rows = downloads.stats_records([_result(1, 0.25), _result(2, 0.75)], classes=OXFORD)
    table = list(csv.DictReader(io.StringIO(downloads.csv_text(rows))))
    assert [float(line["fake_stat_column"]) for line in table] == [0.25, 0.75]
    assert float(table[0]["fake_stat_column_low"]) == pytest.approx(0.15)
    assert float(table[0]["fake_stat_column_high"]) == pytest.approx(0.35)
    # Every other cell is still its own column's: read back by name, not by position.
    for line, row in zip(table, rows):
        assert float(line["cka_class"]) == pytest.approx(row["cka_class"])
        assert float(line["ntv_median"]) == pytest.approx(row["ntv_p10_p50_p90"][1])
        assert float(line["best_channel_iou_focus_max"]) == pytest.approx(row["best_channel_iou"]["pet"]["max"])
        assert line["focus_class"] == "pet"
        assert float(line["probe_iou_focus"]) == pytest.approx(0.6)


def test_without_the_row_layers_csv_keeps_its_columns():
    rows = downloads.stats_records([_result(1)], classes=OXFORD)
    header = next(csv.reader(io.StringIO(downloads.csv_text(rows))))
    # The columns layers.csv has always had keep their order; a statistic added since follows them.
    assert header[:len(downloads.CSV_FIELDS)] == list(downloads.CSV_FIELDS)
    intervals = [column for column in header if column.endswith(("_low", "_high"))]
    legacy = [f"{column}_{end}" for column in downloads._INTERVAL_ORDER for end in ("low", "high")]
    assert intervals[:len(legacy)] == legacy
    added = [s.csv for s in catalog.layer_statistics() if s.csv and s.csv not in downloads.CSV_FIELDS]
    assert header == [*downloads.CSV_FIELDS, *added, *intervals]


def test_a_new_row_reaches_the_layer_table_map_and_page(fake_row):
    shown = {"mask": True, "classes": True, "target": True, "sanity": True, "faithfulness": True, "": True}
    columns = layer_table.layer_columns(shown)
    assert ("fake", "Fake heading", "Fake map label") in columns
    assert [key for key, *_ in columns][:3] == ["probe", "cka", "iou"]
    assert layer_table.layer_values(_result(1, 0.25), focus=0)["fake"] == 0.25
    page = dict(layer_table.statistic_rows(_layer_stats(0.25), OXFORD, shown))
    assert page["Fake statistic of the pet"] == prose.fmt_interval(0.25, (0.15, 0.35)) == "0.25 (0.15 to 0.35)"


def test_a_row_that_needs_what_the_build_lacks_is_left_out(monkeypatch):
    needy = catalog.Statistic("needy", "Needy", catalog.UNIT, "mask", column=("needy", "Needy", "Needy"))
    monkeypatch.setattr(catalog, "STATISTICS", (*catalog.STATISTICS, needy))
    shown = {"mask": False, "classes": False, "target": False, "sanity": False, "faithfulness": False, "": True}
    assert "needy" not in [key for key, *_ in layer_table.layer_columns(shown)]
    assert "Needy" not in dict(layer_table.statistic_rows(_layer_stats(), OXFORD, shown))


def test_a_new_row_reaches_the_comparison(fake_row):
    labels = [label for label, _, _ in compare.tracked()]
    assert labels[0] == "probe IoU (focus class)" and "fake tracked" in labels
    before = downloads.stats_records([_result(1, 0.25)], classes=OXFORD)[0]
    after = downloads.stats_records([_result(1, 0.75)], classes=OXFORD)[0]
    getter = dict((label, get) for label, get, _ in compare.tracked())["fake tracked"]
    assert getter(after) - getter(before) == pytest.approx(0.5)


def test_a_new_row_reaches_about_html(fake_row, tmp_path):
    context = pages.about_context(OXFORD)
    row = next(r for r in context["statistics"] if r["key"] == "fake_stat")
    assert row == {"key": "fake_stat", "label": "Fake statistic of the pet", "range": "[0, 1]",
                   "transform": "logit", "definition": "a made-up number about the pet", "needs": "nothing"}
    writer = site._Pages(tmp_path, {"title": "t", "model": "m", "version": "0", "trained": True,
                                   "mask_is_prediction": False, "focus": "pet", "mask_classes": ["pet", "background",
                                                                                                  "border"],
                                   "oxford": True, "mask_legend": "", "timeline": False})
    writer.write("about.html", "about.html", **context)
    html = (tmp_path / "about.html").read_text()
    assert "<code>fake_stat</code>" in html and "a made-up number about the pet" in html


def test_about_html_states_the_code_s_constants_and_targets(tmp_path):
    writer = site._Pages(tmp_path, {"title": "t", "model": "m", "version": "0", "trained": True,
                                   "mask_is_prediction": False, "focus": "cat", "mask_classes": ["cat", "dog"],
                                   "oxford": False, "mask_legend": "", "timeline": False})
    writer.write("about.html", "about.html", **pages.about_context(OXFORD))
    html = (tmp_path / "about.html").read_text()
    assert f"Ridge regression (λ = {catalog.PROBE_RIDGE:g})" in html
    assert f"at most {catalog.POOL_GRID} × {catalog.POOL_GRID}" in html
    assert f"one common {catalog.CKA_GRID} × {catalog.CKA_GRID} grid" in html
    assert f"its {catalog.TOP_IMPORTANT} most important channels" in html
    assert f"(|a| &lt; {catalog.NEAR_ZERO:g})" in html
    # The two statements the code contradicted: the target is a log-odds, the probe scores the focus class.
    assert "the log-odds (" in html and "a probability after a softmax" not in html
    assert "IoU of the focus class, cat" in html and "IoU of the pet class" not in html


def test_every_row_is_well_formed():
    keys = [s.key for s in catalog.STATISTICS]
    assert len(keys) == len(set(keys))
    accumulated = tuple(s.key for s in catalog.layer_statistics() if s.measured_on == catalog.STATISTICS_IMAGES)
    assert stats.LAYER_NUMBERS == accumulated
    assert {s.measured_on for s in catalog.STATISTICS} == {catalog.STATISTICS_IMAGES, catalog.PICTURED_IMAGES}
    for s in catalog.STATISTICS:
        assert s.scope in (catalog.LAYER, catalog.CHANNEL, catalog.BETWEEN) and all(n in catalog.NEEDS for n in s.needs.split("+"))
        assert s.bounds[0] < s.bounds[1]
    csv_columns = [s.csv for s in catalog.STATISTICS if s.csv]
    assert len(csv_columns) == len(set(csv_columns))
