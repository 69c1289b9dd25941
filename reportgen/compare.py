"""Build-to-build comparison: what changed in the model, the images and the statistics, and inside
the model (representation.between_builds, from the two builds' fingerprints).

The previous build is a folder holding `manifest.json` and `stats.json` (a previous site, its
`data/` folder, or files a CI job downloaded from the live site or the last artifact), and
`fingerprint.npz` where the previous build stored one.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from reportgen import catalog, fingerprint, representation
from reportgen.catalog import focus_class

# The per-layer numbers whose change a reader of a retrained model cares about.
# A build's focus class may be another's (the pet, a binary foreground, the first of N classes not named
# background): its numbers are compared only where both builds name the same class.
PROBE_TRACKED = ("probe IoU (focus class)", lambda row: row["probe_iou"][focus_class(row)], True)


def tracked() -> tuple:
    """(label, value of a row, whether it is of the focus class): the probe's IoU, then the catalog's
    statistics marked `tracked`."""
    return (PROBE_TRACKED, *((s.tracked, s.from_record, "{focus}" in s.label)
                             for s in catalog.layer_statistics() if s.tracked))


NOTABLE = 0.05  # absolute change worth a reader's attention


@dataclass(frozen=True)
class Previous:
    manifest: dict
    stats: dict
    folder: str = ""
    problem: str | None = None  # why the files found are not a build that can be compared with
    fingerprint: fingerprint.Fingerprint | None = None  # its representation fingerprint, where it stored one


@dataclass
class Comparison:
    """Plain data for the site: a summary, and one row per layer present in both builds."""

    first_build: bool
    summary: list[str] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    notable: int = 0
    inside: representation.Inside | None = None  # the layers compared inside the model


def load_previous(path: Path | None) -> Previous | None:
    """Read a previous build's manifest and statistics; None when there is none or it is unreadable."""
    if path is None:
        return None
    for folder in (path / "data", path):
        manifest, stats = folder / "manifest.json", folder / "stats.json"
        if manifest.is_file() and stats.is_file():
            try:
                found = Previous(json.loads(manifest.read_text()), json.loads(stats.read_text()), str(folder),
                             fingerprint=fingerprint.load(folder / fingerprint.FILE))
            except (OSError, ValueError) as error:
                return Previous({}, {}, str(folder), f"its files cannot be read ({error.__class__.__name__})")
            if not (isinstance(found.manifest, dict) and isinstance(found.stats, dict)
                    and isinstance(found.stats.get("layers"), list)):
                return dataclasses.replace(found, problem="its files are not a reportgen build's")
            return found
    return None


def _value(getter, row):
    try:
        value = getter(row)
    except (KeyError, IndexError, TypeError):
        return None
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def _fmt(value) -> str:
    return "undefined" if value is None else f"{value:.3f}"


def compare(previous: Previous | None, manifest: dict, layers: list[dict],
            current: fingerprint.Fingerprint | None = None) -> Comparison:
    """This build (its manifest, stats.json's layers and its fingerprint) against the previous one."""
    if previous is None:
        return Comparison(first_build=True, summary=["First build: there is no previous build to compare with."])
    if previous.problem is None:
        try:
            found = _compare(previous, manifest, layers)
        except (AttributeError, TypeError, KeyError):  # a hand-edited or foreign build
            previous = dataclasses.replace(previous, problem="its files are not a reportgen build's")
        else:
            found.inside = representation.between_builds(current, previous.fingerprint,
                                                         [row["index"] for row in layers])
            return found
    return Comparison(first_build=True, summary=[f"The previous build in {previous.folder} was not compared with: "
                                                 f"{previous.problem}."])


def _compare(previous: Previous, manifest: dict, layers: list[dict]) -> Comparison:
    result = Comparison(first_build=False)
    old_model = previous.manifest.get("model", {})
    new_model = manifest["model"]
    if old_model.get("sha256") == new_model["sha256"]:
        result.summary.append(f"Same model as the previous build (SHA-256 {new_model['sha256'][:12] or 'none'}).")
    else:
        result.summary.append(f"The model changed: SHA-256 {str(old_model.get('sha256'))[:12]} → "
                              f"{new_model['sha256'][:12]}.")
    old_ids = previous.manifest.get("data", {}).get("image_ids", [])
    new_ids = manifest["data"]["image_ids"]
    if old_ids == new_ids:
        result.summary.append(f"Same {len(new_ids)} images.")
    else:
        added = len(set(new_ids) - set(old_ids))
        removed = len(set(old_ids) - set(new_ids))
        result.summary.append(f"The images changed: {added} added, {removed} removed.")
    if previous.manifest.get("build_time"):
        result.summary.append(f"Previous build: {previous.manifest['build_time']}.")
    old_rows = {row.get("name"): row for row in previous.stats.get("layers", [])}
    for row in layers:
        old = old_rows.get(row["name"])
        if old is None:
            continue
        cells = []
        notable = False
        same_focus = focus_class(old) == focus_class(row)
        for label, getter, of_focus in tracked():
            before = _value(getter, old) if same_focus or not of_focus else None
            after = _value(getter, row)
            delta = None if before is None or after is None else after - before
            flag = delta is not None and abs(delta) >= NOTABLE
            notable |= flag
            cells.append({"label": label, "before": _fmt(before), "after": _fmt(after),
                          "delta": "" if delta is None else f"{delta:+.3f}", "notable": flag})
        result.rows.append({"index": row["index"], "name": row["name"], "cells": cells, "notable": notable})
        result.notable += notable
    missing = len(set(old_rows) - {row["name"] for row in layers})
    if missing:
        result.summary.append(f"{missing} layers of the previous build are gone.")
    result.summary.append(f"{result.notable} of {len(result.rows)} layers changed by {NOTABLE} or more in a "
                          "tracked statistic.")
    return result
