"""The site stage: view models (plain data) -> Jinja templates -> files, swapped in atomically."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import platform
import shutil
import sys
import time
from concurrent.futures import Executor
from importlib import metadata, resources
from pathlib import Path

import jinja2
import numpy as np

from reportgen import __version__, assets, compare, findings
from reportgen.errors import OutputError
from reportgen.stats import CLASSES

SITE_MARKER = ".reportgen-site"
KEY_FILE = "data/build-key.txt"
PACKAGES = ("reportgen", "tensorflow-cpu", "keras", "numpy", "pillow", "matplotlib", "jinja2",
            "tensorflow-datasets", "typer")


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


def _json_value(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _environment() -> jinja2.Environment:
    """The one Jinja environment: autoescape on, undefined variables are errors."""
    loader = jinja2.FileSystemLoader(str(resources.files("reportgen.templates")))
    env = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    return env


def check_output(out: Path) -> None:
    """Refuse an output path that is a file, unwritable, or a folder that is not a reportgen site."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"output path {str(out)!r} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / SITE_MARKER).exists():
        raise OutputError(f"output folder {str(out)!r} is not empty and was not made by reportgen; "
                          "choose another --out")
    parent = out.parent if out.parent != Path("") else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create {str(parent)!r}: {error.strerror}") from None
    if not os.access(parent, os.W_OK):
        raise OutputError(f"output folder {str(parent)!r} is not writable")


def build_key(loaded, options, selected) -> str:
    """Content hash of everything that decides the site's bytes."""
    digest = hashlib.sha256()
    digest.update(f"reportgen {__version__}\n{loaded.description}\n{loaded.checksum}\n".encode())
    for name, value in sorted(vars(options).items()):
        if name not in ("workers",):
            digest.update(f"{name}={value!r}\n".encode())
    for item in selected:
        digest.update(item.id.encode("utf-8", "surrogatepass"))
        digest.update(item.image.tobytes())
        if item.trimap is not None:
            digest.update(item.trimap.tobytes())
    if not loaded.trained:  # initialised weights: the key is the weights themselves
        for weight in loaded.model.weights:
            digest.update(np.asarray(weight).tobytes())
    return digest.hexdigest()


def is_up_to_date(out: Path, key: str) -> bool:
    key_file = out / KEY_FILE
    return key_file.is_file() and key_file.read_text().strip() == key and (out / "index.html").is_file()


def image_count(out: Path) -> int:
    try:
        return len(json.loads((out / "data" / "manifest.json").read_text())["data"]["image_ids"])
    except (OSError, ValueError, KeyError):
        return 0


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def swap_in(staging: Path, out: Path) -> None:
    """Replace `out` with `staging` in two renames; the old site survives until the new one is in place."""
    (staging / SITE_MARKER).write_text("built by reportgen\n")
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        if old.exists():
            shutil.rmtree(old)
        out.rename(old)
    try:
        staging.rename(out)
    except OSError:
        if old is not None:
            old.rename(out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _build_time() -> str:
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


def _iou(truth: np.ndarray | None, predicted_trimap: np.ndarray, cls: int = 1) -> float:
    if truth is None:
        return float("nan")
    valid = truth != 3  # Oxford's border is "not classified"
    a, b = (truth == cls) & valid, (predicted_trimap == cls) & valid
    union = np.sum(a | b)
    return float(np.sum(a & b) / union) if union else float("nan")


def _layer_row(result, thumb_image_slug: str) -> dict:
    s = result.stats
    iou_max, iou_p90, iou_frac = s.iou_summary(0)
    conv = result.conv
    return {
        "index": conv.index,
        "name": conv.qualified_name,
        "href": f"layers/{result.slug}.html",
        "role": result.role,
        "kind": conv.kind,
        "shape": "x".join(str(d) for d in result.shape),
        "channels": result.shape[-1],
        "rf": fmt(result.receptive_field, 4),
        "rf_value": _json_value(float(result.receptive_field)),
        "probe_pet": fmt(result.probe_iou[0]),
        "cka_mask": fmt(s.cka_mask),
        "best_iou": fmt(iou_max),
        "ntv": fmt(s.ntv_median),
        "area": fmt(_median(s.effective_area)),
        "participation": fmt(s.participation),
        "thumb": assets.top_path(result.slug, thumb_image_slug),
        "sort": {
            "probe": _sortable(result.probe_iou[0]), "cka": _sortable(s.cka_mask), "iou": _sortable(iou_max),
            "ntv": _sortable(s.ntv_median), "rf": _sortable(result.receptive_field),
        },
    }


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


def stats_records(results, records) -> list[dict]:
    """Every statistic of every layer, as plain JSON-ready data (the downloadable record)."""
    rows = []
    for r in results:
        s = r.stats
        rows.append({
            "index": r.conv.index,
            "name": r.conv.qualified_name,
            "type": r.conv.kind,
            "role": r.role,
            "output_shape": list(r.shape),
            "stride": _json_value(r.stride),
            "receptive_field": _json_value(float(r.receptive_field)),
            "mean": _json_value(s.mean),
            "std": _json_value(s.std),
            "near_zero_fraction": _json_value(s.near_zero_fraction),
            "cka_mask": _json_value(s.cka_mask),
            "participation_ratio_over_c": _json_value(s.participation),
            "probe_iou": {c: _json_value(float(v)) for c, v in zip(CLASSES, r.probe_iou)},
            "rgb_probe_iou": {c: _json_value(float(v)) for c, v in zip(CLASSES, r.rgb_probe_iou)},
            "ntv_p10_p50_p90": [_json_value(v) for v in s.band(s.ntv)],
            "effective_area_p10_p50_p90": [_json_value(v) for v in s.band(s.effective_area)],
            "best_channel_iou": {
                c: dict(zip(("max", "p90", "fraction_above_0_5"), (_json_value(v) for v in s.iou_summary(k))))
                for k, c in enumerate(CLASSES)
            },
            "channel_ranking": [int(c) for c in r.order],
            "channels": {
                "strength": [_json_value(float(v)) for v in s.channel_strength],
                "ntv": [_json_value(float(v)) for v in s.ntv],
                "effective_area": [_json_value(float(v)) for v in s.effective_area],
                "best_iou_pet": [_json_value(float(v)) for v in s.best_iou[0]],
            },
        })
    return rows


CSV_FIELDS = ("index", "name", "type", "role", "output_shape", "stride", "receptive_field", "mean", "std",
              "near_zero_fraction", "cka_mask", "participation_ratio_over_c", "probe_iou_pet", "probe_iou_mean",
              "rgb_probe_iou_pet", "ntv_median", "effective_area_median", "best_channel_iou_pet_max",
              "best_channel_iou_pet_p90", "best_channel_iou_pet_fraction_above_0_5")


def _csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for row in rows:
        probe = [v for v in row["probe_iou"].values() if v is not None]
        writer.writerow([
            row["index"], row["name"], row["type"], row["role"], "x".join(map(str, row["output_shape"])),
            row["stride"], row["receptive_field"], row["mean"], row["std"], row["near_zero_fraction"],
            row["cka_mask"], row["participation_ratio_over_c"], row["probe_iou"]["pet"],
            sum(probe) / len(probe) if probe else None, row["rgb_probe_iou"]["pet"],
            row["ntv_p10_p50_p90"][1], row["effective_area_p10_p50_p90"][1],
            *row["best_channel_iou"]["pet"].values(),
        ])
    return buffer.getvalue()


def _other_inputs_note(model, image_input: str | None) -> str:
    """What the report fed to a multi-input model's other inputs, said on the index."""
    from reportgen.capture import image_input as image_input_index

    if len(model.inputs) == 1:
        return ""
    chosen = image_input_index(model, image_input)
    others = [t.name for i, t in enumerate(model.inputs) if i != chosen]
    return (f" (input {model.inputs[chosen].name!r}; the other inputs, {', '.join(map(repr, others))}, "
            "were fed zeros)")


def write_site(root: Path, loaded, options, records, results, key: str, input_size: int, colorbar: str,
               previous: compare.Previous | None = None, layer_cka: np.ndarray | None = None,
               executor: Executor | None = None) -> int:
    """Render every page and data file into `root`; returns the number of HTML pages.

    The charts, one drawing per theme, are drawn by `executor` (worker processes) while this process
    writes the pages.
    """
    from reportgen import charts, workers

    env = _environment()
    pages = 0
    stats_rows = stats_records(results, records)
    if layer_cka is None:
        layer_cka = np.full((len(results), len(results)), np.nan)
    executor = executor or workers.InProcess()
    drawn = [executor.submit(charts.write_charts, root, results, stats_rows, layer_cka, theme)
             for theme in charts.THEMES]
    chart_files = charts.CHART_FILES
    found = findings.compute(results, records)

    def page(template: str, relative: str, **context) -> None:
        nonlocal pages
        depth = relative.count("/")
        context.setdefault("root", "../" * depth)
        html = env.get_template(template).render(**context, site=site_context)
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(html, encoding="utf-8")
        pages += 1

    card = loaded.meta
    total_params = int(loaded.model.count_params())
    manifest = {
        "build_time": _build_time(),
        "reportgen": __version__,
        "model": {"description": loaded.description, "sha256": loaded.checksum,
                  "file": Path(loaded.source_path).name if loaded.source_path else None,
                  "parameters": total_params, "conv_layers": len(results)},
        "data": {"dataset": None if options.image_dir else options.dataset,
                 "image_dir": str(options.image_dir) if options.image_dir else None,
                 "split": options.split, "image_ids": [r.id for r in records]},
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in sorted(vars(options).items())
                    if k not in ("workers",)},
        "packages": _versions(),
        "command_line": " ".join(["reportgen", *sys.argv[1:]]) if sys.argv else "",
    }
    changes = compare.compare(previous, manifest, stats_rows)
    site_context = {
        "title": "reportgen",
        "model": loaded.description,
        "version": __version__,
        "trained": loaded.trained,
        "mask_is_prediction": any(r.mask_is_prediction for r in records),
    }
    image_views = []
    for record in records:
        segmented = record.prediction is not None
        image_views.append({
            "id": record.id,
            "href": f"images/{record.slug}.html",
            "input": assets.image_path(record.slug, "input"),
            "trimap": assets.image_path(record.slug, "trimap") if record.trimap is not None else None,
            "prediction": assets.image_path(record.slug, "prediction") if segmented else None,
            "error": assets.image_path(record.slug, "error") if segmented and record.trimap is not None else None,
            "iou": fmt(_iou(record.trimap, record.prediction + 1)) if segmented else "undefined",
            "slug": record.slug,
        })
    thumb_slug = records[0].slug
    rows = [_layer_row(r, thumb_slug) for r in results]
    model_view = {
        "description": loaded.description,
        "parameters": f"{total_params:,}",
        "conv_layers": len(results),
        "input": f"{input_size} x {input_size} x 3" + _other_inputs_note(loaded.model, options.image_input),
        "classes": "pet, background, border (Oxford trimap classes 1, 2, 3)",
        "checksum": loaded.checksum or "none (initialised weights)",
        "trained_on": card.get("trained_on", "not trained" if not loaded.trained else "unknown"),
        "metrics": _card_metrics(card),
        "command": card.get("command", ""),
        "tap": "conv output (before normalisation and activation)" if options.tap == "conv"
               else "block output after normalisation and activation",
    }
    page("index.html", "index.html", model=model_view, images=image_views, layers=rows,
         charts=chart_files, findings=found, colorbar=colorbar, changes=changes)
    page("changes.html", "changes.html", changes=changes)

    cka_by_layer = [float(r.stats.cka_mask) for r in results]
    probe_by_layer = [float(r.probe_iou[0]) for r in results]
    ntv_by_layer = [float(r.stats.ntv_median) for r in results]
    for i, result in enumerate(results):
        prev_result = results[i - 1] if i > 0 else None
        next_result = results[i + 1] if i + 1 < len(results) else None
        s = result.stats
        shown = min(result.shape[-1], result.layout.columns * 2)
        stat_rows = [
            ("Receptive field", f"{fmt(result.receptive_field, 4)} input pixels"),
            ("Stride", f"{fmt(result.stride)} input pixels per map pixel"),
            ("Mask decodability (probe IoU pet / mean)",
             f"{fmt(result.probe_iou[0])} / {fmt(np.nanmean(result.probe_iou) if np.isfinite(result.probe_iou).any() else float('nan'))}"
             f" (RGB baseline {fmt(result.rgb_probe_iou[0])})"),
            ("Linear CKA with the mask", fmt(s.cka_mask)),
            ("Best single-channel IoU, pet (max / p90 / share > 0.5)", " / ".join(fmt(v) for v in s.iou_summary(0))),
            ("Best single-channel IoU, background (max)", fmt(s.iou_summary(1)[0])),
            ("nTV per input pixel (p10 / median / p90)", " / ".join(fmt(v) for v in s.band(s.ntv))),
            ("Effective area fraction (p10 / median / p90)", " / ".join(fmt(v) for v in s.band(s.effective_area))),
            ("Participation ratio / C", fmt(s.participation)),
            ("Mean / std / near-zero share", f"{fmt(s.mean)} / {fmt(s.std)} / {fmt(s.near_zero_fraction)}"),
        ]
        top = [int(c) for c in result.order[:assets.TOP_OVERLAYS]]
        page("layer.html", f"layers/{result.slug}.html",
             layer=rows[i], stat_rows=stat_rows, channels=result.shape[-1], shown=shown,
             grid_width=result.layout.width, grid_height=result.layout.height,
             display_width=result.layout.width * result.layout.scale,
             visible_height=result.layout.height_of(math.ceil(shown / result.layout.columns)),
             top_channels=", ".join(str(c) for c in top), colorbar=colorbar,
             grids=[{"image": v, "grid": assets.grid_path(result.slug, v["slug"], result.layout.lossless),
                     "overlay": assets.overlay_path(result.slug, v["slug"])} for v in image_views],
             has_overlays=result.layout.tile_h > 1, depth_note=_depth_note(result.shape),
             depth_charts=[
                 {"title": "Linear CKA with the mask", "bars": _depth_bars(cka_by_layer, i)},
                 {"title": "Mask decodability (probe IoU, pet)", "bars": _depth_bars(probe_by_layer, i)},
                 {"title": "Median nTV (detail)", "bars": _depth_bars(ntv_by_layer, i)},
             ],
             prev=rows[i - 1] if prev_result else None, next=rows[i + 1] if next_result else None,
             columns=result.layout.columns, per_layer_scale=options.scale == "layer")

    for i, view in enumerate(image_views):
        strip = [{"layer": row, "src": assets.top_path(r.slug, view["slug"])} for row, r in zip(rows, results)]
        page("image.html", f"images/{view['slug']}.html", image=view, strip=strip,
             prev=image_views[i - 1] if i > 0 else None,
             next=image_views[i + 1] if i + 1 < len(image_views) else None)

    page("about.html", "about.html")
    page("404.html", "404.html", root="")
    (root / ".nojekyll").write_text("")
    static = resources.files("reportgen.templates") / "static"
    (root / "assets").mkdir(exist_ok=True)
    for name in ("style.css", "site.js"):
        (root / "assets" / name).write_bytes((static / name).read_bytes())

    data = root / "data"
    data.mkdir(exist_ok=True)
    cka_rows = [[_json_value(round(float(v), 6)) for v in row] for row in layer_cka]
    (data / "stats.json").write_text(json.dumps({"layers": stats_rows, "layer_cka": cka_rows},
                                                indent=1, sort_keys=True) + "\n")
    (data / "layers.csv").write_text(_csv(stats_rows))
    (data / "changes.json").write_text(json.dumps(
        {"first_build": changes.first_build, "summary": changes.summary, "layers": changes.rows},
        indent=1, sort_keys=True) + "\n")
    (data / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True, default=str) + "\n")
    (root / KEY_FILE).write_text(key + "\n")
    for job in drawn:
        job.result()
    return pages
