"""The checks of every layer's Grad-CAM that run on the pictured images beside the statistics pass (as
the ablation check does): the sanity checks (sanity.py) and, where asked for, the faithfulness test
(faithfulness.py). Their numbers are catalog rows measured on the pictured images; `layer_view` says
them, with the localisation (localisation.py), on a layer page."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from reportgen import faithfulness, sanity
from reportgen.prose import fmt, fmt_interval


@dataclass(frozen=True)
class Checked:
    """What the checks found: per layer (plan order) catalog numbers and intervals, and as plain data."""

    numbers: list[dict]
    intervals: list[dict]
    sanity: dict  # sanity.record, or {}
    faithfulness: dict  # faithfulness.record, or {}

    def joined(self, results: list) -> list:
        """Each layer result (layer_stage.LayerResult) with the checks' numbers among its statistics'."""
        return [dataclasses.replace(r, stats=r.stats.joined(self.numbers[k], self.intervals[k]))
                if r.stats is not None else r for k, r in enumerate(results)]


def run(options, build_plan, model, convs, probe, images: np.ndarray, cams: list, specs, progress) -> Checked | None:
    """Both checks where the build runs them: with the statistics pass, a target to explain, and the
    options asking (`--sanity-stages`, `--faithfulness-images`); None where none runs."""
    targets = build_plan.targets
    if not (build_plan.on_beam and targets.attributes and cams is not None):
        return None
    layers = len(convs)
    numbers, intervals = [{} for _ in range(layers)], [{} for _ in range(layers)]
    found_sanity, found_faithfulness = {}, {}
    if options.sanity_stages:
        progress("sanity checks of Grad-CAM", 0, 1)
        checked = sanity.check(model, convs, probe, images, cams, targets.explained, specs, build_plan.batch_size,
                               options.sanity_stages)
        for k in range(layers):
            numbers[k].update(checked.numbers[k])
            intervals[k].update(checked.intervals[k])
        found_sanity = sanity.record(checked)
    if options.faithfulness_images:
        progress("faithfulness of Grad-CAM", 0, 1)
        count = min(options.faithfulness_images, len(images))
        target_of = faithfulness.target_function(model, targets.explained, build_plan.convention,
                                                 build_plan.image_index)
        measured = faithfulness.measure(target_of, images[:count], [np.asarray(c[:count]) for c in cams],
                                        [layer.attributed for layer in build_plan.layers])
        values, spans = faithfulness.numbers(measured)
        for k in range(layers):
            numbers[k].update(values[k])
            intervals[k].update(spans[k])
        found_faithfulness = faithfulness.record(measured)
    if not (found_sanity or found_faithfulness):
        return None
    return Checked(numbers, intervals, found_sanity, found_faithfulness)


def layer_view(description, conv: int, s) -> dict:
    """What a layer page says of conv `conv`'s (from 1) Grad-CAM: localisation, sanity check and
    faithfulness, each None where the build did not measure it (`s`: its stats.LayerStats, or None)."""
    return {"localisation": _localisation(description, s), "sanity": _sanity(description, conv, s),
            "faithfulness": _faithfulness(description, conv - 1, s)}


CURVE_BOX = (160, 64)  # the MoRF / LeRF chart's plot area, in CSS pixels


def _faithfulness(description, layer: int, s) -> dict | None:
    """The pixel-removal test of layer `layer`'s Grad-CAM (0-based): its score beside the baselines, and
    its mean MoRF and LeRF curves as polylines of a small chart."""
    found = description.faithfulness
    if s is None or not found or not np.isfinite(s.value("faithfulness")) or found["curves"][layer] is None:
        return None
    fractions = [0.0, *found["fractions"]]
    curves = {name: [found["y0"], *found["curves"][layer][name]] for name in ("morf", "lerf")}
    values = [v for curve in curves.values() for v in curve if v is not None]
    low, high = min(values), max(values)
    span = high - low or 1.0
    width, height = CURVE_BOX

    def points(curve):
        return " ".join(f"{width * f / fractions[-1]:.1f},{height - height * (v - low) / span:.1f}"
                        for f, v in zip(fractions, curve) if v is not None)

    def baseline(name):
        value, lower, upper = found["baselines"][name]
        return fmt_interval(value, (lower, upper))

    return {"score": fmt_interval(s.value("faithfulness"), s.interval("faithfulness")), "images": found["images"],
            "random": baseline("random"), "edges": baseline("edges"), "imputation": found["imputation"],
            "largest": f"{fractions[-1]:.0%}", "morf": points(curves["morf"]), "lerf": points(curves["lerf"]),
            "high": fmt(high), "low": fmt(low), "width": width, "height": height}


def _sanity(description, conv: int, s) -> dict | None:
    """The Grad-CAM sanity checks of conv `conv` (from 1) in words: what randomising the layers after it,
    and explaining another target, did to its map."""
    found = description.sanity
    if s is None or not found or not np.isfinite(s.value("sanity_rank")):
        return None
    rank = s.value("sanity_rank")
    verdict = ("hardly changes: it shows this layer's own structure more than the decision" if rank >= 0.7 else
               "changes: it depends on the layers that make the decision" if rank <= 0.3 else "changes in part")
    later = [first for first in found["randomised_from"] if first > conv]
    swap = s.value("swap_rank")
    return {"from": later[-1] if later else None, "images": found["images"], "verdict": verdict,
            "rank": fmt_interval(rank, s.interval("sanity_rank")),
            "ssim": fmt_interval(s.value("sanity_ssim"), s.interval("sanity_ssim")),
            "swapped": found["swapped"], "swap": fmt_interval(swap, s.interval("swap_rank")) if np.isfinite(swap) else None}


def _localisation(description, s) -> dict | None:
    """How well the layer's Grad-CAM falls on the focus class, beside what a uniform map and the edges score."""
    baselines = description.localisation_baselines
    if s is None or not baselines or not np.isfinite(s.value("cam_mass_focus")):
        return None
    shown = {name: fmt_interval(found["value"], found["interval"]) for name, found in baselines.items()}
    return {"focus": description.mask_classes.focus_name, "images": int(s.images),
            "mass": fmt_interval(s.value("cam_mass_focus"), s.interval("cam_mass_focus")),
            "rank": fmt_interval(s.value("cam_rank_focus"), s.interval("cam_rank_focus")), **shown}
