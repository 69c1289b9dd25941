"""The one probe model: a batch of images in, every measured value out, by name.

`Probe(model, convs, plan)(images)` returns a `Named` batch: each layer's activations (finite float16,
what the spill stores and every statistic is measured on), what storing them changed, every model
output, and, where the plan attributes, each layer's Grad-CAM map and Taylor importances and the
target y. The capture, the in-process measurement and the Beam workers all run this one model, so
no consumer slices a list of outputs by position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reportgen import capture


@dataclass
class Named:
    """One batch's values, by name; per-layer lists are in the plan's layer order."""

    activations: list  # per layer, B x ... x C float16
    damage: list  # per layer, B x 3 (capture.stored_damage)
    outputs: list  # per model output, B x ...
    cams: list | None = None  # per layer, B x H x W Grad-CAM maps (B x 1 x 1 zeros: none); None: not attributed
    taylor: list | None = None  # per layer, B x C Taylor importances, None where the layer is not attributed
    y: np.ndarray | None = None  # B: the explained target


class Probe:
    """The model's measured values on a batch, traced once; with `attributed`, one backward pass too."""

    def __init__(self, model, convs, plan):
        import keras

        self.plan, self.model, self.convs = plan, model, convs
        layers = len(convs)
        tapped = capture.probe_model(model, convs).outputs
        base = [*capture.as_stored(tapped), *capture.stored_damage(tapped), *model.outputs]
        self._layers = layers
        self._plain = keras.Model(model.inputs, base)
        self._attributed = None
        if plan.targets.attributes:
            from reportgen import attribution

            self._attributed = attribution.attributed_probe(model, convs, base, plan.targets.explained,
                                                            plan.image_index)

    def rerun(self):
        """The ablation check's rerun of the model (ablation.Rerun), where the plan ablates images."""
        if not (self.plan.ablated and self.plan.targets.attributes):
            return None
        from reportgen.ablation import Rerun

        return Rerun(self.model, self.convs, self.plan.targets.explained)

    @property
    def inputs(self):
        return self._plain.inputs

    def stream(self, images, batch_size: int, attributed: bool = True):
        """(start, Named) for each batch of `images` (0-255 pixels), the last one padded to the size of
        the others so the graph is traced once."""
        model = self._attributed if attributed and self._attributed is not None else self._plain
        for start, values in capture.stream_activations(model, images, batch_size, self.plan.image_index,
                                                        self.plan.convention.apply):
            yield start, self._named(values, model is self._attributed)

    def __call__(self, images, total: int, attributed: bool = True) -> Named:
        """One batch of the plan's batches: padded as `stream` pads it among `total` images."""
        batch_size = self.plan.batch_size if len(images) < self.plan.batch_size < total else len(images)
        padded = list(images) + [np.zeros_like(images[0])] * (batch_size - len(images))
        (_, found), = self.stream(np.stack(padded), batch_size, attributed)
        return _first(found, len(images))

    def _named(self, values: list, attributed: bool) -> Named:
        layers, outputs = self._layers, len(self._plain.outputs) - 2 * self._layers
        found = Named(values[:layers], values[layers:2 * layers], values[2 * layers:2 * layers + outputs])
        if attributed:
            rest = values[2 * layers + outputs:]
            found.cams = rest[:layers]
            found.taylor = [t if layer.attributed else None for t, layer in zip(rest[layers:2 * layers],
                                                                                 self.plan.layers)]
            found.y = rest[-1]
        return found


def _first(found: Named, count: int) -> Named:
    """The first `count` images of a batch (what padding added dropped)."""
    def cut(values):
        return None if values is None else [None if v is None else v[:count] for v in values]

    return Named(cut(found.activations), cut(found.damage), cut(found.outputs), cut(found.cams), cut(found.taylor),
                 None if found.y is None else found.y[:count])
