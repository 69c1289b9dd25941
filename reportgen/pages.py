"""One context per page kind, from a `describe.Description`: what each template prints, prepared.

`common` computes, once, what several pages show (the layer table's rows, the image views, the map,
the statistics records); each page kind then has one function returning its typed context. Nothing
here touches a model, so every page is tested from a description built by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypedDict

import numpy as np

from reportgen import (__version__, answers, assets, catalog, channels, charts, compare, comparison_pages, downloads,
                       explanation_checks, findings, outputs, render)
from reportgen.describe import Description
from reportgen.layer_table import (depth_charts, layer_columns, layer_row, map_context, picture_size, shown,
                                   statistic_rows)
from reportgen.linear_probes import chance_accuracy
from reportgen.mask_classes import OXFORD, MaskClasses
from reportgen.prose import (card_metrics, class_accuracy_text, class_list, depth_note, fmt, fmt_interval,
                             other_inputs_note, reshaped_note, tap_note)
from reportgen.stats import mean_defined as stats_mean

INPUT_BOX = 96  # CSS pixels of an input picture on the index; 200 on an image page
IMAGE_BOX = 200
CAM_BOX = 64  # CSS pixels of a Grad-CAM tile in an image page's filmstrip
SMALL_MAP = 16  # map positions under which a layer's channels are shown as values, not pictures
IMPORTANT_LINKS = 8

NAN_PAIR = (float("nan"), float("nan"))


class SiteContext(TypedDict):
    """What every page's frame shows (the templates' `site`)."""

    title: str
    model: str
    version: str
    trained: bool
    mask_is_prediction: bool
    focus: str
    mask_classes: tuple[str, ...]
    oxford: bool
    mask_legend: list
    timeline: bool  # the model's training timeline has a page (timeline.html)


class IndexContext(TypedDict):
    model: dict  # the model card (`model_view`)
    images: list[dict]  # `image_views`
    layers: list[dict]  # the layer table's rows (`layer_row`)
    arch: dict  # `map_context`
    columns: list[str]  # the layer table's measured columns' headings
    charts: dict  # charts.plan
    findings: list[str]
    answers: list[dict]  # answers.answers: what the report found, first
    warnings: list[str]
    colorbar: str
    changes: compare.Comparison


class ChangesContext(TypedDict):
    changes: compare.Comparison
    inside: dict | None  # comparison_pages.inside_view of the layers compared inside the model


class LayerContext(TypedDict):
    arch: dict
    layer: dict  # this layer's row of the index's table
    stat_rows: list[tuple[str, str]]
    channels: int
    shown: int
    grid_width: int
    grid_height: int
    display_width: int
    visible_height: int
    top_channels: str
    colorbar: str
    grids: list[dict]
    has_overlays: bool
    depth_note: str
    stored_note: str
    levels: int
    depth_charts: list[dict]
    prev: dict | None
    next: dict | None
    columns: int
    per_layer_scale: bool
    small_maps: bool
    one_value: bool
    map_size: str
    channel_data: dict
    cams: list[dict]
    explained: str
    attribution_note: str
    attributed_after: str
    important: list[dict]
    ablation: dict | None
    localisation: dict | None  # the Grad-CAM's mass and top pixels on the focus class, beside its baselines
    sanity: dict | None  # the Grad-CAM's sanity checks, in words
    faithfulness: dict | None  # the pixel-removal test: the score, its baselines and the curves


class ImageContext(TypedDict):
    image: dict
    strip: list[dict]
    cam_strip: list[dict]
    explained: str
    prev: dict | None
    next: dict | None


class AboutContext(TypedDict):
    statistics: list[dict]
    constants: dict
    fingerprint: dict  # comparison_pages.fingerprint_format


class SearchContext(TypedDict):
    layer_count: int
    channel_count: int
    columns: list[str]


@dataclass(frozen=True)
class Common:
    """What several pages and data files show, computed once per site."""

    chance: float  # the class probe's chance accuracy; NaN without classes
    stats_rows: list[dict]  # downloads.stats_records: stats.json's layers
    chart_plan: dict  # charts.plan: which charts there are, drawn by charts.write_charts
    manifest: dict
    changes: compare.Comparison
    image_views: list[dict]
    columns: list[tuple[str, str, str]]  # the layer table's measured columns (key, heading, map label)
    rows: list[dict]  # the layer table's rows, one per layer
    arch: dict  # the architecture map with its colours


def common(description: Description) -> Common:
    """What the pages share, computed once; the manifest's build time is read here."""
    stats_rows = downloads.stats_records(description.layers, {i: e["id"] for i, e in description.examples.items()},
                                         description.mask_classes)
    manifest = downloads.manifest(description)
    columns = layer_columns(shown(description))
    rows = [layer_row(r, description.records[0].slug, columns, description.mask_classes.focus)
            for r in description.layers]
    odds = chance(description)
    return Common(chance=odds, stats_rows=stats_rows, chart_plan=charts.plan(stats_rows, description.layer_cka, odds),
                  manifest=manifest,
                  changes=compare.compare(description.previous, manifest, stats_rows, description.fingerprint),
                  image_views=image_views(description), columns=columns, rows=rows,
                  arch=map_context(description, rows, columns))


def chance(description: Description) -> float:
    labels = [r.label for r in description.records if r.label is not None]
    return chance_accuracy(labels) if description.has_classes else float("nan")


def model_view(description: Description) -> dict:
    """The index page's model card: the model's real inputs and outputs, never another model's."""
    card, options, geometry = description.model, description.options, description.geometry
    named = next((spec for spec in description.outputs if spec.classes), None)
    return {
        "description": card.description,
        "parameters": f"{card.parameters:,}",
        "conv_layers": len(description.layers),
        "input": geometry.describe() + other_inputs_note(card)
                 + (f". {description.stored_form_note}" if description.stored_form_note else ""),
        "reshaped": reshaped_note(description.original_sizes, geometry.height, geometry.width, geometry.fit),
        "convention": options.convention.describe(),
        "own_preprocessing": "; ".join(description.input_layers) or "none found: the model takes the values as given",
        "masks": "; ".join(description.mask_conventions),
        "pictures": description.picture_note[:1].upper() + description.picture_note[1:],
        "accuracy": description.accuracy,
        "segmentation": description.segmentation,
        "outputs": [spec.describe() for spec in description.outputs],
        "classes": class_list(named.classes) if named else "",
        "data_classes": class_list(description.class_names) if description.class_names else "",
        "checksum": card.checksum or "none (initialised weights)",
        "trained_on": card.meta.get("trained_on", "not trained" if not card.trained else "not stated"),
        "metrics": card_metrics(card.meta),
        "command": card.meta.get("command", ""),
        "tap": tap_note(options.tap),
    }


def _iou(truth: np.ndarray | None, predicted: np.ndarray, classes: MaskClasses) -> float:
    """An image's IoU of the focus class; pixels of no class, and Oxford's border, are "not classified"."""
    if truth is None:
        return float("nan")
    cls = classes.focus + 1
    valid = (truth != 0) & ((truth != 3) if classes.in_trimap_order else True)
    a, b = (truth == cls) & valid, (predicted == cls) & valid
    union = np.sum(a | b)
    return float(np.sum(a & b) / union) if union else float("nan")


def image_views(description: Description) -> list[dict]:
    """Each pictured image with its pictures and what the model said about it."""
    views = []
    height, width = description.geometry.size
    for i, record in enumerate(description.records):
        graded = record.prediction is not None and record.mask_classes is not None and record.trimap is not None
        said = [outputs.summarise(spec, values[i]) for spec, values in zip(description.outputs, description.predictions)]
        views.append({
            "id": record.id,
            "slug": record.slug,
            "href": f"images/{record.slug}.html",
            "input": assets.image_path(record.slug, "input"),
            "trimap": assets.image_path(record.slug, "trimap") if record.trimap is not None else None,
            "prediction": assets.image_path(record.slug, "prediction") if record.prediction is not None else None,
            "error": assets.image_path(record.slug, "error") if graded else None,
            "iou": fmt(_iou(record.trimap, record.prediction + 1, description.mask_classes)) if graded else None,
            "label": description.class_names[record.label] if record.label is not None else None,
            "outputs": [{"name": o.name, "text": o.text(), "score": o.score_name, "top": o.top} for o in said],
            "small": picture_size(height, width, INPUT_BOX),
            "large": picture_size(height, width, IMAGE_BOX),
        })
    return views


def stat_rows(description: Description, result, chance: float) -> list[tuple[str, str]]:
    """A layer page's numbers, (label, value with its interval), of what this build has."""
    s = result.stats
    rows = [
        ("Images measured", f"{s.images}; ranges are 90% intervals (jackknife over image folds)"),
        ("Receptive field", f"{fmt(result.receptive_field, 4)} input pixels"),
        ("Stride", f"{fmt(result.stride)} input pixels per map pixel"),
    ]
    if description.has_mask:
        classes = description.mask_classes
        focus, name = classes.focus, classes.focus_name
        rows += [
            (f"Mask decodability (probe IoU, {name})",
             fmt_interval(result.probe_iou[focus], result.intervals.get("probe_iou_focus", NAN_PAIR))),
            (f"Mask decodability (probe IoU, mean of {classes.count} classes)",
             fmt_interval(stats_mean(result.probe_iou), result.intervals.get("probe_iou_mean", NAN_PAIR))),
            (f"RGB baseline (the same probe on pooled pixels, {name})",
             fmt_interval(result.rgb_probe_iou[focus], result.intervals.get("rgb_probe_iou_focus", NAN_PAIR))),
        ]
    if description.has_classes:
        rows.append(("Class decodability (leave-out probe accuracy)",
                     class_accuracy_text(result.class_accuracy,
                                         result.intervals.get("class_probe_accuracy", NAN_PAIR), chance)))
    return rows + statistic_rows(s, description.mask_classes, shown(description))


def site_context(description: Description) -> SiteContext:
    classes = description.mask_classes
    return SiteContext(title="reportgen", model=description.model.description, version=__version__,
                       trained=description.model.trained,
                       mask_is_prediction=any(r.mask_is_prediction for r in description.records),
                       focus=classes.focus_name, mask_classes=classes.names, oxford=classes == OXFORD,
                       mask_legend=render.class_legend(classes.names, classes.in_trimap_order),
                       timeline=description.training is not None)


def index_context(description: Description, shared: Common) -> IndexContext:
    return IndexContext(model=model_view(description), images=shared.image_views, layers=shared.rows,
                        arch=shared.arch, columns=[heading for _, heading, _ in shared.columns],
                        charts=shared.chart_plan,
                        findings=findings.compute(description, shared.chance) + _since_previous(shared.changes),
                        answers=answers.answers(description, shared.chance, shared.image_views),
                        warnings=description.warnings,
                        colorbar=description.colorbar, changes=shared.changes)


def _since_previous(changes: compare.Comparison) -> list[str]:
    """The changes page's sentences on what changed inside the model, for the index's findings."""
    inside = changes.inside
    if inside is None or not inside.compared:
        return []
    return [f"Since the previous build: {line[0].lower()}{line[1:]}" if line.startswith("Cannot") else
            f"Since the previous build, {line}" for line in inside.findings]


def changes_context(shared: Common) -> ChangesContext:
    return ChangesContext(changes=shared.changes, inside=comparison_pages.inside_view(
        shared.changes.inside, comparison_pages.CHANGES_HEATMAP))


def layer_context(description: Description, shared: Common, index: int) -> LayerContext:
    """The page of layer `index` (in graph order)."""
    result, rows, views = description.layers[index], shared.rows, shared.image_views
    layout = result.layout
    visible = min(result.shape[-1], layout.columns * 2)
    return LayerContext(
        arch=shared.arch, layer=rows[index], stat_rows=stat_rows(description, result, shared.chance),
        channels=result.shape[-1], shown=visible, grid_width=layout.width, grid_height=layout.height,
        display_width=layout.width * layout.scale,
        visible_height=layout.height_of(math.ceil(visible / layout.columns)),
        top_channels=", ".join(str(int(c)) for c in result.order[:assets.TOP_OVERLAYS]),
        colorbar=description.colorbar,
        grids=[{"image": v, "grid": assets.grid_path(result.slug, v["slug"], layout.lossless),
                "overlay": assets.overlay_path(result.slug, v["slug"])} for v in views],
        has_overlays=layout.tile_h > 1, depth_note=depth_note(result.shape), stored_note=result.stored_note,
        levels=layout.levels if layout.lossless else 256,
        depth_charts=depth_charts(description, index),
        prev=rows[index - 1] if index > 0 else None,
        next=rows[index + 1] if index + 1 < len(rows) else None,
        columns=layout.columns, per_layer_scale=description.options.scale == "layer",
        # Maps under 4 x 4 pixels say nothing as pictures: their channels are shown as values.
        small_maps=len(result.shape) == 3 and result.shape[0] * result.shape[1] < SMALL_MAP,
        one_value=len(result.shape) == 3 and result.shape[0] * result.shape[1] == 1,
        map_size="x".join(str(d) for d in result.shape[:-1]),
        channel_data=channels.layer_channels(result.channel_numbers, views, description.examples),
        **_attribution_context(description, result, views))


def _attribution_context(description: Description, result, views: list[dict]) -> dict:
    """A layer page's Grad-CAM maps, its most important channels and its ablation check."""
    s = result.stats
    cams = []
    if result.cam_peaks is not None:
        cams = [{"image": v, "src": assets.cam_path(result.slug, v["slug"]), "peak": fmt(peak),
                 "empty": not peak > 0} for v, peak in zip(views, result.cam_peaks)]
    important = []
    if s is not None and s.importance is not None and np.nanmax(s.importance, initial=0) > 0:
        order = np.argsort(-np.nan_to_num(s.importance, nan=-1.0), kind="stable")[:IMPORTANT_LINKS]
        important = [{"channel": int(c), "value": fmt(s.importance[c]), "href": f"#c{int(c)}"} for c in order]
    return {"cams": cams, "explained": description.explained, "attribution_note": result.attribution_note,
            "attributed_after": result.attributed_after, "important": important, "ablation": result.ablation,
            **explanation_checks.layer_view(description, result.conv.index, s)}


def image_context(description: Description, shared: Common, index: int) -> ImageContext:
    """The page of pictured image `index`."""
    views, rows = shared.image_views, shared.rows
    view = views[index]
    strip = [{"layer": row, "src": assets.top_path(r.slug, view["slug"]), "size": row["thumb_size"],
              "channel": int(r.order[0]), "href": f"{row['href']}#c{int(r.order[0])}"}
             for row, r in zip(rows, description.layers)]
    height, width = description.geometry.size
    cam_strip = [{"layer": row, "src": assets.cam_path(r.slug, view["slug"]), "href": f"{row['href']}#gradcam-h",
                  "peak": fmt(r.cam_peaks[index]), "size": picture_size(height, width, CAM_BOX)}
                 for row, r in zip(rows, description.layers) if r.cam_peaks is not None]
    return ImageContext(image=view, strip=strip, cam_strip=cam_strip, explained=description.explained,
                        prev=views[index - 1] if index > 0 else None,
                        next=views[index + 1] if index + 1 < len(views) else None)


def statistics_table(classes: MaskClasses, rows=None) -> list[dict]:
    """The per-layer numbers with an interval, as about.html lists them: from their one definition."""
    def scale(bounds) -> str:
        low, high = bounds
        if math.isfinite(low) and math.isfinite(high):
            return f"[{fmt(low, 1)}, {fmt(high, 1)}]"
        return f"above {fmt(low, 1)}" if math.isfinite(low) else "any"

    return [{"key": s.key, "label": s.label_for(classes), "range": scale(s.bounds), "transform": s.transform,
             "definition": s.definition_for(classes), "needs": catalog.needs_text(s.needs)}
            for s in (catalog.layer_statistics() if rows is None else rows)]


def about_context(classes: MaskClasses) -> AboutContext:
    """about.html's context: the catalog's rows and the constants the page states, from the code."""
    return AboutContext(statistics=statistics_table(classes), constants=catalog.constants(),
                        fingerprint=comparison_pages.fingerprint_format(statistics_table(
                            OXFORD, catalog.between_statistics())))


def search_context(description: Description, every_channel: dict) -> SearchContext:
    """search.html's context; `every_channel` is channels.every_channel, also written as data/channels.js."""
    return SearchContext(layer_count=len(description.layers),
                         channel_count=sum(int(r.shape[-1]) for r in description.layers),
                         columns=[column["name"] for column in every_channel["columns"]])
