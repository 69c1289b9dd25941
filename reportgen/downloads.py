"""The site's data files: every statistic (stats.json, layers.csv), every output of the model
(predictions.json) and what produced the build (manifest.json). Plain data, no HTML."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from reportgen import __version__, outputs
from reportgen import catalog
from reportgen.catalog import focus_class  # noqa: F401  (where compare and charts read it)
from reportgen.mask_classes import OXFORD, MaskClasses

PACKAGES = ("reportgen", "tensorflow-cpu", "keras", "numpy", "pillow", "matplotlib", "jinja2",
            "tensorflow-datasets", "typer")


def json_value(value):
    """A float for JSON: NaN and infinities (undefined) become null."""
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def write_json(path: Path, data, compact: bool = False) -> None:
    """Indented for reading, or `compact` for the large files (a number per line tripled stats.json)."""
    layout = {"separators": (",", ":")} if compact else {"indent": 1}
    path.write_text(json.dumps(data, sort_keys=True, default=str, **layout) + "\n")


def intervals(result) -> dict[str, list]:
    """Every per-layer number's 90% jackknife interval, [low, high], by name."""
    found = {s.key: result.stats.interval(s.key) for s in catalog.layer_statistics()}
    found.update(result.intervals)
    return {name: [json_value(v) for v in pair] for name, pair in sorted(found.items())}


def baselines_record(baselines: dict) -> dict | None:
    """The Grad-CAM localisation's baselines (localisation.Baselines.summary) as [value, low, high] by name."""
    if not baselines:
        return None
    return {name: [json_value(found["value"]), *(json_value(v) for v in found["interval"])]
            for name, found in baselines.items()}


def _examples_record(top, ids: dict[int, str]) -> dict | None:
    """A layer's dataset examples: the images' ids once, then per channel [image, value] pairs."""
    if top is None:
        return None
    used = top.used_images()
    slot = {image: k for k, image in enumerate(used)}
    return {"images": [ids[i] for i in used],
            "per_channel": [[[slot[int(i)], json_value(round(float(v), 4))] for v, i in zip(values, images) if i >= 0]
                            for values, images in zip(top.values, top.images)]}


def _by_class(names, values) -> dict:
    return {name: json_value(float(values[k])) if k < len(values) else None for k, name in enumerate(names)}


def stats_records(results, example_ids: dict[int, str] | None = None, classes: MaskClasses = OXFORD) -> list[dict]:
    """Every statistic of every layer, as plain JSON-ready data (the downloadable record).

    `example_ids`: statistics image index -> id, for each channel's dataset examples."""
    rows = []
    for r in results:
        s = r.stats
        rows.append({
            "images": s.images,
            "is_head": r.conv.is_output,
            "intervals_90": intervals(r),
            "index": r.conv.index,
            "name": r.conv.qualified_name,
            "type": r.conv.description,
            "role": r.role,
            "output_shape": list(r.shape),
            "stride": json_value(r.stride),
            "receptive_field": json_value(float(r.receptive_field)),
            "class_probe_accuracy": json_value(r.class_accuracy),
            "focus_class": classes.focus_name,
            "probe_iou": _by_class(classes.names, r.probe_iou),
            "rgb_probe_iou": _by_class(classes.names, r.rgb_probe_iou),
            "ntv_p10_p50_p90": [json_value(v) for v in s.band(s.ntv)],
            "effective_area_p10_p50_p90": [json_value(v) for v in s.band(s.effective_area)],
            "best_channel_iou": {
                c: dict(zip(("max", "p90", "fraction_above_0_5"), (json_value(v) for v in s.iou_summary(k))))
                for k, c in enumerate(classes.names)
            },
            "channel_ranking": [int(c) for c in r.order],
            "channels": {
                "strength": [json_value(float(v)) for v in s.channel_strength],
                "ntv": [json_value(float(v)) for v in s.ntv],
                "effective_area": [json_value(float(v)) for v in s.effective_area],
                "best_iou_focus": [json_value(float(v)) for v in s.best_iou[classes.focus]],
                "taylor_importance": None if s.importance is None else [json_value(float(v)) for v in s.importance],
                "taylor_importance_90": None if s.importance_intervals is None else
                [[json_value(float(v)) for v in pair] for pair in s.importance_intervals],
            },
            "attribution_note": r.attribution_note or None,
            "attributed_after": r.attributed_after or None,
            "ablation": r.ablation,
            "dataset_examples": _examples_record(s.examples, example_ids) if example_ids else None,
            "stored_note": r.stored_note or None,
            **{statistic.json: json_value(s.value(statistic.key))
               for statistic in catalog.layer_statistics() if statistic.json},
        })
    return rows


# layers.csv's first columns, in the order the file has always had; the catalog's columns that are not
# among them (a statistic added since) follow, then the intervals.
CSV_FIELDS = ("index", "name", "type", "role", "output_shape", "stride", "receptive_field", "mean", "std",
              "near_zero_fraction", "cka_mask", "cka_class", "class_probe_accuracy", "participation_ratio_over_c",
              "focus_class", "probe_iou_focus", "probe_iou_mean", "rgb_probe_iou_focus", "ntv_median",
              "effective_area_median", "best_channel_iou_focus_max", "best_channel_iou_focus_p90",
              "best_channel_iou_focus_fraction_above_0_5", "images", "is_head", "importance_top_share",
              "ablation_images", "ablation_metric", "ablation_baseline", "ablation_top_k", "ablation_random_k", "ablation_taylor_spearman")
# The probes' layers.csv columns with a 90% interval (they are scored, not finalised: not in the catalog):
# column name -> name in `intervals_90`
PROBE_INTERVALS = {"class_probe_accuracy": "class_probe_accuracy", "probe_iou_focus": "probe_iou_focus",
                   "probe_iou_mean": "probe_iou_mean", "rgb_probe_iou_focus": "rgb_probe_iou_focus"}
# The order the interval columns have always had; new ones follow.
_INTERVAL_ORDER = ("cka_mask", "cka_class", "class_probe_accuracy", "participation_ratio_over_c", "probe_iou_focus",
                   "probe_iou_mean", "rgb_probe_iou_focus", "ntv_median", "effective_area_median",
                   "best_channel_iou_focus_max", "importance_top_share")


def csv_fields() -> tuple[str, ...]:
    extra = tuple(s.csv for s in catalog.layer_statistics() if s.csv and s.csv not in CSV_FIELDS)
    return CSV_FIELDS + extra


def csv_intervals() -> dict[str, str]:
    """layers.csv columns with a 90% interval: column name -> name in `intervals_90`."""
    found = {**PROBE_INTERVALS, **{s.csv: s.key for s in catalog.layer_statistics() if s.csv and s.csv_interval}}
    order = [c for c in _INTERVAL_ORDER if c in found] + [c for c in found if c not in _INTERVAL_ORDER]
    return {column: found[column] for column in order}


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet reads as a formula (OWASP CSV injection)


def csv_cell(value):
    """A cell that a spreadsheet shows as text: a string that a spreadsheet would run as a formula
    (a layer named "=HYPERLINK(...)") gets a leading apostrophe, as OWASP recommends. Numbers stay numbers."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _cells(row: dict) -> dict:
    """One layers.csv row's cells by column name."""
    probe = [v for v in row["probe_iou"].values() if v is not None]
    focus = focus_class(row)
    cells = {name: row.get(name) for name in ("index", "name", "type", "role", "stride", "receptive_field",
                                              "class_probe_accuracy", "images", "is_head")}
    cells.update({"output_shape": "x".join(map(str, row["output_shape"])), "focus_class": focus,
                  "probe_iou_focus": row["probe_iou"][focus], "probe_iou_mean": sum(probe) / len(probe) if probe else None,
                  "rgb_probe_iou_focus": row["rgb_probe_iou"][focus]})
    cells.update(zip(("ablation_images", "ablation_metric", "ablation_baseline", "ablation_top_k", "ablation_random_k",
                      "ablation_taylor_spearman"), _ablation_cells(row["ablation"])))
    cells.update({s.csv: s.from_record(row) for s in catalog.layer_statistics() if s.csv})
    for column, name in csv_intervals().items():
        cells[f"{column}_low"], cells[f"{column}_high"] = row["intervals_90"].get(name, [None, None])
    return cells


def csv_header() -> list[str]:
    return [*csv_fields(), *(f"{column}_{end}" for column in csv_intervals() for end in ("low", "high"))]


def csv_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = csv_header()
    writer.writerow(header)
    for row in rows:
        cells = _cells(row)
        writer.writerow(csv_cell(cells[column]) for column in header)
    return buffer.getvalue()


def _ablation_cells(ablation: dict | None) -> list:
    if not ablation:
        return [None] * 6
    return [ablation["images"], ablation["metric"], ablation["baseline"][0], ablation["top_k"][0],
            ablation["random_k"][0], ablation["spearman"]]


def predictions(report) -> dict:
    """Each image's every output under the output's name: in full up to 1,000 numbers, else summarised."""
    return {
        "outputs": [{"name": spec.name, "kind": spec.kind, "shape": list(spec.shape), "classes": list(spec.classes)}
                    for spec in report.outputs],
        "input_convention": report.options.convention.describe(),
        "images": {
            record.id: {spec.name: outputs.record_values(values[i])
                        for spec, values in zip(report.outputs, report.predictions)}
            for i, record in enumerate(report.records)
        },
    }


def build_time() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    stamp = int(epoch) if epoch and epoch.isdigit() else int(time.time())
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _statistics_facts(report) -> dict | None:
    """What the statistics cover and how they were computed: what a reader checks a number against."""
    targets = report.targets
    if targets is None:
        return None
    return {"images": len(targets), "engine": report.engine, "folds": targets.fold_count,
            "fold_sizes": np.bincount(targets.folds, minlength=targets.fold_count).tolist(),
            "fold_assignment": "by class, then by SHA-256 of the image id, dealt to the folds in turn",
            "mask": targets.mask_source, "classes": targets.class_count,
            "ablation_image_ids": list(report.ablated_ids)}


def manifest(report) -> dict:
    """What produced the build; `report` is a describe.Description."""
    card, options, geometry = report.model, report.options, report.geometry
    return {
        "build_time": build_time(),
        "reportgen": __version__,
        "model": {"description": card.description, "sha256": card.checksum, "file": card.file_name,
                  "parameters": card.parameters, "conv_layers": len(report.layers),
                  "outputs": [spec.describe() for spec in report.outputs],
                  "own_input_layers": report.input_layers},
        "input": {"height": geometry.height, "width": geometry.width, "channels": geometry.channels,
                  "fit": geometry.fit, "interpolation": geometry.interpolation,
                  "convention": options.convention.describe(), "preprocess": options.preprocess,
                  "rescale": list(options.rescale) if options.rescale else None},
        "data": {"dataset": None if options.image_dir else options.dataset,
                 "image_dir": str(options.image_dir) if options.image_dir else None,
                 "split": options.split, "image_ids": [r.id for r in report.records],
                 "class_names": report.class_names},
        "statistics": _statistics_facts(report),
        "warnings": report.warnings,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in sorted(vars(options).items())
                    if k not in ("workers",)},
        "packages": _versions(),
        "command_line": " ".join(["reportgen", *sys.argv[1:]]) if sys.argv else "",
    }


def fingerprint_record(found) -> dict | None:
    """stats.json's `fingerprint`: where the build's fingerprint is, its probe images, and its format
    (every array of data/fingerprint.npz by name); None for a build without one."""
    from reportgen import fingerprint

    if found is None:
        return None
    return {"file": fingerprint.FILE, "format": fingerprint.FORMAT, "probe_ids": list(found.ids),
            "cam_ids": list(found.cam_ids), "arrays": dict(fingerprint.ARRAYS), "rounding": fingerprint.ROUNDING}


def _matrix(values) -> list[list]:
    """A matrix for JSON, to 6 decimals, NaN as null."""
    return [[json_value(round(float(v), 6)) for v in row] for row in values]


def inside_record(inside) -> dict | None:
    """changes.json's `inside`: the layers compared inside the model (representation.Inside), plain."""
    if inside is None:
        return None
    return {"compared": inside.compared, "notes": inside.notes, "findings": inside.findings,
            "estimator": inside.estimator or None, "images": inside.images,
            "cka": None if inside.cka is None else _matrix(inside.cka),
            "layers": [{key: json_value(value) for key, value in row.items()} for row in inside.rows]}


def comparison_record(result) -> dict:
    """`reportgen compare`'s data/compare.json: the models' layers, the A x B CKA (rows: A's spatial
    layers, columns: B's), each A layer's best match and its matched channels ([A, B, r])."""
    return {"images": result.images,
            **{key: {"name": side.name, "layers": list(side.layers), "cka_layers": [k + 1 for k in side.spatial]}
               for key, side in (("a", result.a), ("b", result.b))},
            "cka": _matrix(result.cka),
            "best_match": [{key: json_value(value) for key, value in row.items()} for row in result.best],
            "channels": [{"index": c["index"], "match_index": c["match_index"],
                          "pairs": [[a, b, json_value(round(r, 4))] for a, b, r in c["pairs"]]}
                         for c in result.channels],
            "findings": result.findings}


def timeline_record(found) -> dict:
    """`reportgen timeline`'s data/timeline.json: per layer and checkpoint, CKA with the final self and
    its 90% interval; per layer, the checkpoint it settled at."""
    return {"checkpoints": found.checkpoints, "layers": found.layers, "images": found.images,
            "estimator": found.estimator, "cka": _matrix(found.cka), "low": _matrix(found.low),
            "high": _matrix(found.high), "settled": [found.checkpoints[t] for t in found.settled],
            "findings": found.findings}
