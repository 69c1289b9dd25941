"""The checks of every layer's Grad-CAM that run on the pictured images beside the statistics pass (as
the ablation check does): the sanity checks (sanity.py) and, where asked for, the faithfulness test
(faithfulness.py). Their numbers are catalog rows measured on the pictured images."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from reportgen import faithfulness, sanity


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
