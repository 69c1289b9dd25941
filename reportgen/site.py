"""The site stage: a `Report` (what the pipeline learned) -> one context per page -> Jinja -> files.

Each page kind has one context builder; templates only loop, branch and print what these prepared.
The site is written into a staging folder and swapped in atomically by the pipeline.
"""

from __future__ import annotations

import json
import math
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import numpy as np

from reportgen import __version__, assets, catalog, channels, compare, downloads, findings, outputs, render, stats
from reportgen.inputs import InputGeometry
from reportgen.outdir import KEY_FILE
from reportgen.paths import templates_dir
from reportgen.stats import mean_defined as stats_mean

INPUT_BOX = 96  # CSS pixels of an input picture on the index; 200 on an image page
IMAGE_BOX = 200
THUMB_BOX = 40
CAM_BOX = 64  # CSS pixels of a Grad-CAM tile in an image page's filmstrip
STRONGEST_LINKS = 3  # channels linked from each row of the index's layer table
SMALL_MAP = 16  # map positions under which a layer's channels are shown as values, not pictures


@dataclass(frozen=True)
class Report:
    """Everything the pipeline learned, as the site needs it."""

    loaded: object  # model_io.LoadedModel
    options: object  # pipeline.BuildOptions
    records: list  # layer_stage.ImageRecord, one per pictured image
    layers: list  # layer_stage.LayerResult, in graph order
    key: str  # the incremental build key
    geometry: InputGeometry
    colorbar: str  # path of the colour scale picture
    previous: compare.Previous | None
    layer_cka: np.ndarray  # L x L
    outputs: list  # outputs.OutputSpec per model output
    predictions: list  # per output, one array per image
    class_names: list[str]  # classes of labelled images (class folders); empty otherwise
    warnings: list[str]  # signs of a wrong input convention
    input_layers: tuple[str, ...]  # the model's own Rescaling / Normalization layers at its start
    original_sizes: list  # (height, width) of each image before fitting, where known
    examples: dict = field(default_factory=dict)  # statistics image index -> its id, picture and page
    targets: object = None  # targets.Targets: the statistics images, their folds, classes and mask
    plan: object = None  # plan.BuildPlan: what was measured, on which images, by which executor
    mask_conventions: tuple[str, ...] = ()  # how the given masks' stored values were read
    stored_form_note: str = ""  # what became of 16-bit images and EXIF orientations
    picture_note: str = ""  # how the pictures were reduced to fit the site's budget, if they were
    accuracy: str = ""  # the model's own accuracy on the labelled pictured images, in a sentence
    segmentation: str = ""  # the model's own IoU per class against the trimaps, over the statistics images
    engine: str = "in process"  # where the statistics ran: "in process" or the Beam runner

    @property
    def mask_classes(self) -> stats.MaskClasses:
        return self.targets.mask_classes if self.targets is not None else stats.OXFORD

    @property
    def has_mask(self) -> bool:
        return any(r.mask is not None for r in self.records)

    @property
    def has_classes(self) -> bool:
        return any(np.isfinite(r.class_accuracy) for r in self.layers)

    @property
    def has_importance(self) -> bool:
        return any(r.stats is not None and r.stats.importance is not None for r in self.layers)

    @property
    def explained(self) -> str:
        """What Grad-CAM and the importances explain, in words (attribution.Target.describe)."""
        return self.targets.explained.describe() if self.targets is not None else ""

def fmt(value, digits: int = 3) -> str:
    """Numbers for people: NaN is 'undefined', never a silent 0."""
    if value is None:
        return "undefined"
    value = float(value)
    if math.isnan(value):
        return "undefined"
    if math.isinf(value):
        return "whole input"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def _environment() -> jinja2.Environment:
    """The one Jinja environment: autoescape on, undefined variables are errors."""
    loader = jinja2.FileSystemLoader(str(templates_dir()))
    env = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    # The channel data embedded in layer pages is the largest text of the site: no spaces in it.
    env.policies["json.dumps_kwargs"] = {"sort_keys": True, "separators": (",", ":")}
    return env


def _iou(truth: np.ndarray | None, predicted: np.ndarray, classes: stats.MaskClasses) -> float:
    """An image's IoU of the focus class; pixels of no class, and Oxford's border, are "not classified"."""
    if truth is None:
        return float("nan")
    cls = classes.focus + 1
    valid = (truth != 0) & ((truth != 3) if classes.in_trimap_order else True)
    a, b = (truth == cls) & valid, (predicted == cls) & valid
    union = np.sum(a | b)
    return float(np.sum(a & b) / union) if union else float("nan")


METRIC_LABELS = (("pet_iou", "Pet IoU"), ("background_iou", "Background IoU"), ("border_iou", "Border IoU"),
                 ("mean_iou", "Mean IoU (3 classes)"), ("pixel_accuracy", "Pixel accuracy"))


def _card_metrics(card: dict) -> dict[str, str]:
    """The shipped model's evaluation, labelled for people."""
    metrics = card.get("metrics", {})
    if not metrics:
        return {}
    where = f" (synthetic_pets test, {metrics.get('images', '?')} images)"
    shown = {label + where: f"{metrics[key]:.3f}" for key, label in METRIC_LABELS if key in metrics}
    if card.get("wall_time_s"):
        shown["Training time"] = f"{card['wall_time_s'] / 60:.0f} min on 2 CPU cores, {card.get('epochs_run')} epochs"
    return shown


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


def _depth_note(shape: tuple[int, ...]) -> str:
    if len(shape) == 4:
        return f"3-D conv: each tile is the middle depth slice, {shape[0] // 2 + 1} of {shape[0]}."
    if len(shape) == 2:
        return "1-D conv: one row per channel, position along the row (a channel-by-position heat strip)."
    return ""


def _sortable(value) -> str:
    value = float(value)
    return "" if not math.isfinite(value) else f"{value:.6g}"


def _median(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else float("nan")



def _picture_size(height: int, width: int, box: int) -> dict[str, int]:
    """width and height attributes for a picture shown in a box x box square, aspect ratio kept."""
    w, h = render.box_size(height, width, box)
    return {"width": w, "height": h}


def fmt_interval(value, interval) -> str:
    """A number with its 90% interval, '0.753 (0.701 to 0.804)', or the number alone when undefined."""
    low, high = interval
    if math.isfinite(low) and math.isfinite(high) and math.isfinite(float(value)):
        return f"{fmt(value)} ({fmt(low)} to {fmt(high)})"
    return fmt(value)


def _class_accuracy_text(result, chance: float) -> str:
    interval = result.intervals.get("class_probe_accuracy", (float("nan"),) * 2)
    return f"{fmt_interval(result.class_accuracy, interval)} (chance {fmt(chance)})"


# The probes' columns: scored, not finalised, so not in the catalog. (key, table heading, map label)
PROBE_COLUMNS = {"mask": ("probe", "Probe IoU", "Mask decodability (probe IoU, {focus})"),
                 "classes": ("class_probe", "Class probe acc.", "Class decodability (probe accuracy)")}
NEEDS_ORDER = ("mask", "classes", "target", "")  # the layer table's column groups, left to right


def _shown(report: Report) -> dict[str, bool]:
    """What a catalog row's `needs` asks of the build: whether this build has it."""
    return {"mask": report.has_mask, "classes": report.has_classes, "target": report.has_importance, "": True}


def layer_columns(shown: dict[str, bool]) -> list[tuple[str, str, str]]:
    """The layer table's and the map's measured columns (key, heading, map label): the probes and the
    catalog's columns, of what this build has (`_shown`)."""
    columns = []
    for need in NEEDS_ORDER:
        if shown[need]:
            columns += [PROBE_COLUMNS[need]] if need in PROBE_COLUMNS else []
            columns += [s.column for s in catalog.layer_statistics() if s.column and s.needs == need]
    return columns


def _layer_columns(report: Report) -> list[tuple[str, str, str]]:
    return layer_columns(_shown(report))


def layer_values(result, focus: int) -> dict[str, float]:
    """The layer table's measured values of one layer, by column key (`layer_columns`)."""
    s = result.stats
    return {"probe": result.probe_iou[focus], "class_probe": result.class_accuracy,
            **{c.column[0]: s.value(c.key) for c in catalog.layer_statistics() if c.column}}



def _layer_row(result, thumb_image_slug: str, columns, focus: int) -> dict:
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
        "thumb_size": _picture_size(*render.thumb_shape(maps_h, maps_w), THUMB_BOX),
    }


def _model_view(report: Report) -> dict:
    """The index page's model card: the model's real inputs and outputs, never another model's."""
    loaded, options, geometry = report.loaded, report.options, report.geometry
    card = loaded.meta
    named = next((spec for spec in report.outputs if spec.classes), None)
    fitted = [size for size in report.original_sizes if size is not None]
    reshaped = sum(1 for h, w in fitted if abs(w / h - geometry.width / geometry.height) > 0.01)
    return {
        "description": loaded.description,
        "parameters": f"{int(loaded.model.count_params()):,}",
        "conv_layers": len(report.layers),
        "input": geometry.describe() + _other_inputs_note(loaded.model, options.image_input)
                 + (f". {report.stored_form_note}" if report.stored_form_note else ""),
        "reshaped": (f"{reshaped} of the {len(fitted)} images had another aspect ratio and were "
                     f"{ {'stretch': 'stretched', 'crop': 'cropped', 'pad': 'padded'}[geometry.fit] } to fit."
                     if reshaped else ""),
        "convention": options.convention.describe(),
        "own_preprocessing": "; ".join(report.input_layers) or "none found: the model takes the values as given",
        "masks": "; ".join(report.mask_conventions),
        "pictures": report.picture_note[:1].upper() + report.picture_note[1:],
        "accuracy": report.accuracy,
        "segmentation": report.segmentation,
        "outputs": [spec.describe() for spec in report.outputs],
        "classes": _class_list(named.classes) if named else "",
        "data_classes": _class_list(report.class_names) if report.class_names else "",
        "checksum": loaded.checksum or "none (initialised weights)",
        "trained_on": card.get("trained_on", "not trained" if not loaded.trained else "not stated"),
        "metrics": _card_metrics(card),
        "command": card.get("command", ""),
        "tap": "conv output (before normalisation and activation)" if options.tap == "conv"
               else "block output after normalisation and activation",
    }


def _class_list(names, limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _other_inputs_note(model, image_input: str | None) -> str:
    """What the report fed to a multi-input model's other inputs, said on the index."""
    from reportgen.capture import image_input as image_input_index
    from reportgen.capture import unfed_conv_layers

    if len(model.inputs) == 1:
        return ""
    chosen = image_input_index(model, image_input)
    others = [t.name for i, t in enumerate(model.inputs) if i != chosen]
    unfed = unfed_conv_layers(model, chosen)
    left_out = (f"; {len(unfed)} conv layer calls that this input does not reach are left out: "
                f"{_class_list(unfed)}") if unfed else ""
    return (f" (input {model.inputs[chosen].name!r}; the other inputs, {', '.join(map(repr, others))}, "
            f"were fed zeros{left_out})")


def _image_views(report: Report) -> list[dict]:
    """Each pictured image with its pictures and what the model said about it."""
    views = []
    height, width = report.geometry.size
    for i, record in enumerate(report.records):
        graded = record.prediction is not None and record.mask_classes is not None and record.trimap is not None
        said = [outputs.summarise(spec, values[i]) for spec, values in zip(report.outputs, report.predictions)]
        views.append({
            "id": record.id,
            "slug": record.slug,
            "href": f"images/{record.slug}.html",
            "input": assets.image_path(record.slug, "input"),
            "trimap": assets.image_path(record.slug, "trimap") if record.trimap is not None else None,
            "prediction": assets.image_path(record.slug, "prediction") if record.prediction is not None else None,
            "error": assets.image_path(record.slug, "error") if graded else None,
            "iou": fmt(_iou(record.trimap, record.prediction + 1, report.mask_classes)) if graded else None,
            "label": report.class_names[record.label] if record.label is not None else None,
            "outputs": [{"name": o.name, "text": o.text(), "score": o.score_name, "top": o.top} for o in said],
            "small": _picture_size(height, width, INPUT_BOX),
            "large": _picture_size(height, width, IMAGE_BOX),
        })
    return views


def _stat_rows(report: Report, result, chance: float) -> list[tuple[str, str]]:
    s = result.stats
    nan = (float("nan"),) * 2
    rows = [
        ("Images measured", f"{s.images}; ranges are 90% intervals (jackknife over image folds)"),
        ("Receptive field", f"{fmt(result.receptive_field, 4)} input pixels"),
        ("Stride", f"{fmt(result.stride)} input pixels per map pixel"),
    ]
    if report.has_mask:
        mean_iou = stats_mean(result.probe_iou)
        classes = report.mask_classes
        focus, name = classes.focus, classes.focus_name
        rows += [
            (f"Mask decodability (probe IoU, {name})",
             fmt_interval(result.probe_iou[focus], result.intervals.get("probe_iou_focus", nan))),
            (f"Mask decodability (probe IoU, mean of {classes.count} classes)",
             fmt_interval(mean_iou, result.intervals.get("probe_iou_mean", nan))),
            (f"RGB baseline (the same probe on pooled pixels, {name})",
             fmt_interval(result.rgb_probe_iou[focus], result.intervals.get("rgb_probe_iou_focus", nan))),
    ]
    if report.has_classes:
        rows.append(("Class decodability (leave-out probe accuracy)", _class_accuracy_text(result, chance)))
    return rows + statistic_rows(s, report.mask_classes, _shown(report))


def statistic_rows(s, classes, shown: dict[str, bool]) -> list[tuple[str, str]]:
    """A layer page's catalog rows, (label, value with its interval), of what this build has."""
    return [(statistic.label_for(classes), fmt_interval(s.value(statistic.key), s.interval(statistic.key)))
            for statistic in catalog.layer_statistics() if shown[statistic.needs]]


def _depth_charts(report: Report, index: int) -> list[dict]:
    """Small across-depth bar charts of the measures this report defines, this layer highlighted."""
    series = []
    if report.has_mask:
        series += [("Linear CKA with the mask", [float(r.stats.cka_mask) for r in report.layers]),
                   (f"Mask decodability (probe IoU, {report.mask_classes.focus_name})",
                    [float(r.probe_iou[report.mask_classes.focus]) for r in report.layers])]
    if report.has_classes:
        series += [("Class decodability (probe accuracy)", [float(r.class_accuracy) for r in report.layers])]
    series += [("Median nTV (detail)", [float(r.stats.ntv_median) for r in report.layers])]
    return [{"title": title, "bars": _depth_bars(values, index)} for title, values in series
            if any(math.isfinite(v) for v in values)]


def _layer_context(report: Report, index: int, rows: list[dict], image_views: list[dict], chance: float) -> dict:
    result = report.layers[index]
    layout = result.layout
    shown = min(result.shape[-1], layout.columns * 2)
    return {
        "layer": rows[index], "stat_rows": _stat_rows(report, result, chance), "channels": result.shape[-1],
        "shown": shown, "grid_width": layout.width, "grid_height": layout.height,
        "display_width": layout.width * layout.scale,
        "visible_height": layout.height_of(math.ceil(shown / layout.columns)),
        "top_channels": ", ".join(str(int(c)) for c in result.order[:assets.TOP_OVERLAYS]),
        "colorbar": report.colorbar,
        "grids": [{"image": v, "grid": assets.grid_path(result.slug, v["slug"], layout.lossless),
                   "overlay": assets.overlay_path(result.slug, v["slug"])} for v in image_views],
        "has_overlays": layout.tile_h > 1, "depth_note": _depth_note(result.shape), "stored_note": result.stored_note,
        "levels": layout.levels if layout.lossless else 256,
        "depth_charts": _depth_charts(report, index),
        "prev": rows[index - 1] if index > 0 else None,
        "next": rows[index + 1] if index + 1 < len(rows) else None,
        "columns": layout.columns, "per_layer_scale": report.options.scale == "layer",
        # Maps under 4 x 4 pixels say nothing as pictures: their channels are shown as values.
        "small_maps": len(result.shape) == 3 and result.shape[0] * result.shape[1] < SMALL_MAP,
        "one_value": len(result.shape) == 3 and result.shape[0] * result.shape[1] == 1,
        "map_size": "x".join(str(d) for d in result.shape[:-1]),
        "channel_data": channels.layer_channels(result.channel_numbers, image_views, report.examples),
        **_attribution_context(report, result, image_views),
    }


IMPORTANT_LINKS = 8


def _attribution_context(report: Report, result, image_views: list[dict]) -> dict:
    """A layer page's Grad-CAM maps, its most important channels and its ablation check."""
    s = result.stats
    cams = []
    if result.cam_peaks is not None:
        cams = [{"image": v, "src": assets.cam_path(result.slug, v["slug"]), "peak": fmt(peak),
                 "empty": not peak > 0} for v, peak in zip(image_views, result.cam_peaks)]
    important = []
    if s is not None and s.importance is not None and np.nanmax(s.importance, initial=0) > 0:
        order = np.argsort(-np.nan_to_num(s.importance, nan=-1.0), kind="stable")[:IMPORTANT_LINKS]
        important = [{"channel": int(c), "value": fmt(s.importance[c]), "href": f"#c{int(c)}"} for c in order]
    return {"cams": cams, "explained": report.explained, "attribution_note": result.attribution_note,
            "attributed_after": result.attributed_after, "important": important, "ablation": result.ablation}


def _map_context(report: Report, rows: list[dict]) -> dict:
    """The architecture map with, per statistic of the layer table, each conv node's colour.

    The colours are computed here, once, for every statistic: the page script only swaps them."""
    from reportgen import architecture

    arch = architecture.build_map(report.loaded.model, [r.conv for r in report.layers])
    lut = render.colormap_lut(report.options.cmap)
    statistics, fills, inks = [], [], []
    measured = [layer_values(r, report.mask_classes.focus) for r in report.layers]
    for key, _, map_label in _layer_columns(report):
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
        label = map_label.format(focus=report.mask_classes.focus_name)
        statistics.append({"label": label, "low": fmt(low), "high": fmt(high)})
    return {"map": arch, "rows": {row["index"]: row for row in rows}, "statistics": statistics, "fills": fills, "inks": inks,
            "colorbar": report.colorbar, "conv_count": len(report.layers)}


def _luminance(rgb) -> float:
    linear = [(c / 255) / 12.92 if c / 255 <= 0.04045 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _image_context(report: Report, index: int, rows: list[dict], image_views: list[dict]) -> dict:
    view = image_views[index]
    strip = [{"layer": row, "src": assets.top_path(r.slug, view["slug"]), "size": row["thumb_size"],
              "channel": int(r.order[0]), "href": f"{row['href']}#c{int(r.order[0])}"}
             for row, r in zip(rows, report.layers)]
    height, width = report.geometry.size
    cam_strip = [{"layer": row, "src": assets.cam_path(r.slug, view["slug"]), "href": f"{row['href']}#gradcam-h",
                  "peak": fmt(r.cam_peaks[index]), "size": _picture_size(height, width, CAM_BOX)}
                 for row, r in zip(rows, report.layers) if r.cam_peaks is not None]
    return {"image": view, "strip": strip, "cam_strip": cam_strip, "explained": report.explained,
            "prev": image_views[index - 1] if index > 0 else None,
            "next": image_views[index + 1] if index + 1 < len(image_views) else None}


def _site_context(report: Report) -> dict:
    classes = report.mask_classes
    oxford = classes == stats.OXFORD
    return {"title": "reportgen", "model": report.loaded.description, "version": __version__,
            "trained": report.loaded.trained, "mask_is_prediction": any(r.mask_is_prediction for r in report.records),
            "focus": classes.focus_name, "mask_classes": classes.names, "oxford": oxford,
            "mask_legend": render.class_legend(classes.names, classes.in_trimap_order)}


class _Pages:
    """Renders templates into the staging folder and counts the pages."""

    def __init__(self, root: Path, site_context: dict):
        self.root, self.site, self.count = root, site_context, 0
        self.env = _environment()

    def write(self, template: str, relative: str, **context) -> None:
        context.setdefault("root", "../" * relative.count("/"))
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.env.get_template(template).render(**context, site=self.site), encoding="utf-8")
        self.count += 1


def write_site(root: Path, report: Report, executor: Executor | None = None) -> int:
    """Render every page and data file into `root`; returns the number of HTML pages.

    The charts, one drawing per theme, are drawn by `executor` (worker processes) while this process
    writes the pages.
    """
    from reportgen import charts, workers

    stats_rows = downloads.stats_records(report.layers, {i: e["id"] for i, e in report.examples.items()},
                                         report.mask_classes)
    chance = _chance(report)
    plan = charts.plan(stats_rows, report.layer_cka, chance)
    executor = executor or workers.InProcess()
    drawn = [executor.submit(charts.write_charts, root, report.layers, stats_rows, report.layer_cka, theme, plan)
             for theme in charts.THEMES]
    manifest = downloads.manifest(report)
    changes = compare.compare(report.previous, manifest, stats_rows)
    pages = _Pages(root, _site_context(report))

    image_views = _image_views(report)
    columns = _layer_columns(report)
    rows = [_layer_row(r, report.records[0].slug, columns, report.mask_classes.focus) for r in report.layers]
    arch = _map_context(report, rows)
    pages.write("index.html", "index.html", model=_model_view(report), images=image_views, layers=rows, arch=arch,
                columns=[heading for _, heading, _ in columns], charts=plan, findings=findings.compute(report, chance),
                warnings=report.warnings, colorbar=report.colorbar, changes=changes)
    pages.write("changes.html", "changes.html", changes=changes)
    for i, result in enumerate(report.layers):
        pages.write("layer.html", f"layers/{result.slug}.html", arch=arch,
                    **_layer_context(report, i, rows, image_views, chance))
    for i, view in enumerate(image_views):
        pages.write("image.html", f"images/{view['slug']}.html", **_image_context(report, i, rows, image_views))
    pages.write("about.html", "about.html", **about_context(report.mask_classes))
    every_channel = channels.every_channel(report.layers, rows)
    pages.write("search.html", "search.html", layer_count=len(report.layers),
                channel_count=sum(int(r.shape[-1]) for r in report.layers),
                columns=[column["name"] for column in every_channel["columns"]])
    pages.write("404.html", "404.html", root="")

    _copy_static(root)
    data = root / "data"
    data.mkdir(exist_ok=True)
    cka_rows = [[downloads.json_value(round(float(v), 6)) for v in row] for row in report.layer_cka]
    classes = report.mask_classes
    downloads.write_json(data / "stats.json", {"layers": stats_rows, "layer_cka": cka_rows,
                                               "class_chance": downloads.json_value(chance),
                                               "mask_classes": {"names": list(classes.names),
                                                                "focus": classes.focus_name}}, compact=True)
    (data / "layers.csv").write_text(downloads.csv_text(stats_rows))
    # A script, not JSON: a page opened from file:// may run a script beside it but not fetch a file.
    search = json.dumps(every_channel, sort_keys=True, separators=(",", ":"))
    (data / "channels.js").write_text(f"window.reportgenChannels = {search};\n")
    (data / "architecture.js").write_text(architecture_script(pages.env, arch))
    downloads.write_json(data / "predictions.json", downloads.predictions(report))
    downloads.write_json(data / "changes.json", {"first_build": changes.first_build, "summary": changes.summary,
                                                 "layers": changes.rows})
    downloads.write_json(data / "manifest.json", manifest)
    (root / KEY_FILE).write_text(report.key + "\n")
    for job in drawn:
        job.result()
    return pages.count


def architecture_script(env, arch: dict) -> str:
    """data/architecture.js: the map's drawing as the layer pages show it (links from layers/), and
    each conv node's fill and ink for every statistic of the map's list."""
    drawing = env.get_template("_architecture.html").module.architecture_svg(arch, "../")
    found = {"svg": str(drawing).strip(), "fills": arch["fills"], "inks": arch["inks"],
             "low": [s["low"] for s in arch["statistics"]], "high": [s["high"] for s in arch["statistics"]]}
    # A script, not JSON, as data/channels.js is; "<\/" so that no copy of it inlined in a page could end a script.
    return "window.reportgenArchitecture = " + json.dumps(found, separators=(",", ":")).replace("</", "<\\/") + ";\n"


def statistics_table(classes: stats.MaskClasses) -> list[dict]:
    """The per-layer numbers with an interval, as about.html lists them: from their one definition."""
    def scale(bounds) -> str:
        low, high = bounds
        if math.isfinite(low) and math.isfinite(high):
            return f"[{fmt(low, 1)}, {fmt(high, 1)}]"
        return f"above {fmt(low, 1)}" if math.isfinite(low) else "any"

    return [{"key": s.key, "label": s.label_for(classes), "range": scale(s.bounds), "transform": s.transform,
             "definition": s.definition_for(classes), "needs": catalog.NEEDS[s.needs]}
            for s in catalog.layer_statistics()]


def about_context(classes: stats.MaskClasses) -> dict:
    """about.html's context: the catalog's rows and the constants the page states, from the code."""
    return {"statistics": statistics_table(classes), "constants": catalog.constants()}


def _chance(report: Report) -> float:
    from reportgen.stats import chance_accuracy

    labels = [r.label for r in report.records if r.label is not None]
    return chance_accuracy(labels) if report.has_classes else float("nan")


def _copy_static(root: Path) -> None:
    (root / ".nojekyll").write_text("")
    static = templates_dir() / "static"
    (root / "assets").mkdir(exist_ok=True)
    for name in ("style.css", "site.js"):
        (root / "assets" / name).write_bytes((static / name).read_bytes())
