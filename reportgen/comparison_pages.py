"""The contexts of the pages that compare layers across builds, models and checkpoints: the changes
page's section inside the model, `reportgen compare`'s and `reportgen timeline`'s pages, and
about.html's section on the fingerprint. Numbers are formatted here, before the templates."""

from __future__ import annotations

from typing import TypedDict

from reportgen import catalog
from reportgen.prose import fmt, fmt_interval


CHANGES_HEATMAP = "img/charts/changes-cka"  # the cross-build CKA heatmap, -light.svg and -dark.svg


def inside_view(inside, heatmap: str) -> dict | None:
    """A representation.Inside as a page shows it: numbers formatted, the heatmap's file (`heatmap`,
    without its theme) and size."""
    from reportgen import cross_charts

    if inside is None:
        return None
    rows = [{"index": row["index"], "name": row["name"], "status": row["status"], "channels": row["channels"],
             "cam": row["cam"], "moved": row["status"] == "moved",
             "cka": fmt_interval(float("nan") if row["cka"] is None else row["cka"], (row["low"], row["high"]))}
            for row in inside.rows]
    size = cross_charts.size(*inside.cka.shape) if inside.cka is not None else (0, 0)
    headings = {key: catalog.by_key(key).label for key in ("cka_previous", "matched_channel_r", "gradcam_shift")}
    return {"compared": inside.compared, "notes": inside.notes, "findings": inside.findings, "rows": rows,
            "headings": headings,
            "heatmap": heatmap if inside.cka is not None else None, "width": size[0], "height": size[1],
            "estimator": inside.estimator, "images": inside.images,
            "moved": sum(row["moved"] for row in rows)}


def fingerprint_format(statistics: list[dict]) -> dict:
    """about.html's section on data/fingerprint.npz, from the code that writes and reads it;
    `statistics`: the catalog's rows between builds and models, as about.html's tables show rows."""
    from reportgen import fingerprint, representation

    return {"file": fingerprint.FILE, "probe_images": fingerprint.PROBE_IMAGES,
            "arrays": list(fingerprint.ARRAYS.items()),
            "rounding": fingerprint.ROUNDING, "unchanged": representation.UNCHANGED,
            "identical": f"{representation.IDENTICAL:.5f}",
            "statistics": statistics,
            "no_counterpart": representation.NO_COUNTERPART}


COMPARISON_HEATMAP = "img/cka"  # `reportgen compare`'s heatmap, -light.svg and -dark.svg


class ComparisonContext(TypedDict):
    """`reportgen compare`'s page: two models on the same images."""

    a: str
    b: str
    images: int
    findings: list[str]
    heatmap: dict
    cka_heading: str  # the catalog's label of the cross-model CKA
    best: list[dict]
    channels: list[dict]


def comparison_context(result) -> ComparisonContext:
    """A model_compare.Result as its page shows it."""
    from reportgen import cross_charts

    width, height = cross_charts.size(*result.cka.shape)
    best = [{**row, "cka": fmt(row["cka"])} for row in result.best]
    return ComparisonContext(a=result.a.name, b=result.b.name, images=result.images, findings=result.findings,
                             cka_heading=catalog.by_key("cka_other_model").label,
                             heatmap={"src": COMPARISON_HEATMAP, "width": width, "height": height},
                             best=best, channels=[{"index": c["index"], "match_index": c["match_index"],
                                                   "sentence": c["sentence"]} for c in result.channels])


TIMELINE_HEATMAP = "img/charts/timeline-cka"  # a build's page of its model's training timeline


class TimelineContext(TypedDict):
    """`reportgen timeline`'s page, or a build's timeline.html: the checkpoints of one run."""

    layout: str  # the page's frame: standalone.html (its own site) or base.html (a page of a build)
    checkpoints: list[str]
    images: int
    estimator: str
    findings: list[str]
    heatmap: dict
    cka_heading: str
    rows: list[dict]


def timeline_context(found, layout: str = "standalone.html", heatmap: str = COMPARISON_HEATMAP) -> TimelineContext:
    """A timeline.Timeline as its page shows it: per layer, its CKA with its final self at each checkpoint."""
    from reportgen import cross_charts

    width, height = cross_charts.size(*found.cka.shape)
    rows = [{"index": k + 1, "name": name, "settled": found.checkpoints[found.settled[k]],
             "cells": [fmt_interval(found.cka[k, t], (found.low[k, t], found.high[k, t]))
                        for t in range(len(found.checkpoints))]}
            for k, name in enumerate(found.layers)]
    return TimelineContext(layout=layout, checkpoints=found.checkpoints, images=found.images,
                           estimator=found.estimator, findings=found.findings,
                           heatmap={"src": heatmap, "width": width, "height": height},
                           cka_heading=catalog.by_key("cka_final").label, rows=rows)
