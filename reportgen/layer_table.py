"""The per-layer numbers as the pages show them: the layer table's columns and rows, a layer page's
rows of numbers, its across-depth bars, and the architecture map's colours.

The measured columns are the probes' and the catalog's, of what this build has (`shown`).
"""

from __future__ import annotations

import math

import numpy as np

from reportgen import assets, catalog, render
from reportgen.describe import Description
from reportgen.prose import fmt, fmt_interval

THUMB_BOX = 40  # CSS pixels of a layer's thumbnail in the index's table
STRONGEST_LINKS = 3  # channels linked from each row of the index's layer table

# The probes' columns: scored, not finalised, so not in the catalog. (key, table heading, map label)
PROBE_COLUMNS = {"mask": ("probe", "Probe IoU", "Mask decodability (probe IoU, {focus})"),
                 "classes": ("class_probe", "Class probe acc.", "Class decodability (probe accuracy)")}
# The layer table's column groups, left to right.
NEEDS_ORDER = ("mask", "classes", "target", "mask+target", "target+sanity", "target+faithfulness", "")


def shown(description: Description) -> dict[str, bool]:
    """What a catalog row's `needs` asks of the build: whether this build has it."""
    return {"mask": description.has_mask, "classes": description.has_classes,
            "target": description.has_importance, "sanity": bool(description.sanity),
            "faithfulness": bool(description.faithfulness), "": True}


def has(shown: dict[str, bool], needs: str) -> bool:
    """Whether the build has what a catalog row needs: one of `shown`'s keys, or several joined by "+"."""
    return all(shown[part] for part in needs.split("+"))


def layer_columns(shown: dict[str, bool]) -> list[tuple[str, str, str]]:
    """The layer table's and the map's measured columns (key, heading, map label): the probes and the
    catalog's columns, of what this build has (`shown`)."""
    columns = []
    for need in NEEDS_ORDER:
        if has(shown, need):
            columns += [PROBE_COLUMNS[need]] if need in PROBE_COLUMNS else []
            columns += [s.column for s in catalog.layer_statistics() if s.column and s.needs == need]
    return columns


def layer_values(result, focus: int) -> dict[str, float]:
    """The layer table's measured values of one layer, by column key (`layer_columns`)."""
    s = result.stats
    return {"probe": result.probe_iou[focus], "class_probe": result.class_accuracy,
            **{c.column[0]: s.value(c.key) for c in catalog.layer_statistics() if c.column}}


def _sortable(value) -> str:
    value = float(value)
    return "" if not math.isfinite(value) else f"{value:.6g}"


def layer_row(result, thumb_image_slug: str, columns, focus: int) -> dict:
    """One layer's row of the index's layer table, also the head of its page."""
    values = layer_values(result, focus)
    maps_h, maps_w, _ = assets.image_maps_shape(result.shape)
    conv = result.conv
    return {
        "index": conv.index,
        "name": conv.qualified_name,
        "href": f"layers/{result.slug}.html",
        "role": result.role,
        "kind": conv.description,
        "shape": "x".join(str(d) for d in result.shape),
        # Sorted by the map's size, then its channels: 1x1x256 before 5x5x8 before 160x160x3.
        "shape_sort": float(np.prod(result.shape[:-1])) + result.shape[-1] / 1e6 if len(result.shape) > 1
        else result.shape[-1] / 1e6,
        "rf": fmt(result.receptive_field, 4),
        "rf_sort": _sortable(result.receptive_field),
        "cells": [{"text": fmt(values[key]), "sort": _sortable(values[key])} for key, *_ in columns],
        "thumb": assets.top_path(result.slug, thumb_image_slug),
        "strongest": [{"channel": int(c), "href": f"layers/{result.slug}.html#c{int(c)}"}
                      for c in result.order[:STRONGEST_LINKS]],
        "thumb_size": picture_size(*render.thumb_shape(maps_h, maps_w), THUMB_BOX),
    }


def statistic_rows(s, classes, shown: dict[str, bool]) -> list[tuple[str, str]]:
    """A layer page's catalog rows, (label, value with its interval), of what this build has."""
    return [(statistic.label_for(classes), fmt_interval(s.value(statistic.key), s.interval(statistic.key)))
            for statistic in catalog.layer_statistics() if has(shown, statistic.needs)]


def _depth_bars(values: list[float], current: int, height: int = 40) -> list[dict]:
    """Bar geometry of a small across-depth chart; undefined values get no bar."""
    finite = [v for v in values if math.isfinite(v)]
    top = max(finite) if finite else 1.0
    bars = []
    for i, value in enumerate(values):
        h = 0.0 if not math.isfinite(value) or top <= 0 else max(1.0, height * value / top)
        bars.append({"x": i * 6, "y": f"{height - h:.1f}", "h": f"{h:.1f}", "current": i == current,
                     "label": f"conv {i + 1}: {fmt(value)}"})
    return bars


def depth_charts(description: Description, index: int) -> list[dict]:
    """Small across-depth bar charts of the measures this build defines, layer `index` highlighted."""
    layers, classes = description.layers, description.mask_classes
    series = []
    if description.has_mask:
        series += [("Linear CKA with the mask", [float(r.stats.cka_mask) for r in layers]),
                   (f"Mask decodability (probe IoU, {classes.focus_name})",
                    [float(r.probe_iou[classes.focus]) for r in layers])]
    if description.has_classes:
        series += [("Class decodability (probe accuracy)", [float(r.class_accuracy) for r in layers])]
    series += [("Median nTV (detail)", [float(r.stats.ntv_median) for r in layers])]
    return [{"title": title, "bars": _depth_bars(values, index)} for title, values in series
            if any(math.isfinite(v) for v in values)]


def map_context(description: Description, rows: list[dict], columns) -> dict:
    """The architecture map with, per statistic of the layer table, each conv node's colour.

    The colours are computed here, once, for every statistic: the page script only swaps them."""
    classes = description.mask_classes
    lut = render.colormap_lut(description.options.cmap)
    statistics, fills, inks = [], [], []
    measured = [layer_values(r, classes.focus) for r in description.layers]
    for key, _, map_label in columns:
        values = np.array([layer[key] for layer in measured], np.float64)
        finite = values[np.isfinite(values)]
        if not finite.size:
            continue
        low, high = float(finite.min()), float(finite.max())
        scaled = np.clip((values - low) / (high - low if high > low else 1.0), 0, 1)
        colours = [lut[int(round(v * 255))] if np.isfinite(x) else None for v, x in zip(scaled, values)]
        fills.append(["#%02x%02x%02x" % tuple(c) if c is not None else "" for c in colours])
        # Dark numbers on light fills: relative luminance (WCAG) against the two inks' contrast.
        inks.append(["undefined" if c is None else "ink-dark" if _luminance(c) > 0.18 else "ink-light"
                     for c in colours])
        statistics.append({"label": map_label.format(focus=classes.focus_name), "low": fmt(low), "high": fmt(high)})
    return {"map": description.architecture, "rows": {row["index"]: row for row in rows}, "statistics": statistics,
            "fills": fills, "inks": inks, "colorbar": description.colorbar, "conv_count": len(description.layers)}


def _luminance(rgb) -> float:
    linear = [(c / 255) / 12.92 if c / 255 <= 0.04045 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def picture_size(height: int, width: int, box: int) -> dict[str, int]:
    """width and height attributes for a picture shown in a box x box square, aspect ratio kept."""
    w, h = render.box_size(height, width, box)
    return {"width": w, "height": h}
