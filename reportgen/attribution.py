"""What the model's decision depends on: Grad-CAM of every conv layer and each channel's Taylor
importance, from one backward pass per batch.

The target y of an image is the model's own decision, as one number:
- a classifier: the score of its predicted class (or of the class asked for);
- a segmentation with a foreground (the shipped SD-UNet's pet, a sigmoid's foreground): the summed
  foreground score over the pixels predicted foreground (Seg-Grad-CAM, Vinogradova et al. 2020);
- any other segmentation: the summed score of each pixel's predicted class.

A score is the class's log-odds where the model outputs probabilities: log p_c - log(sum of the
other classes' p) after a softmax, log p - log(1 - p) after a sigmoid (its logit). Grad-CAM's
score is the one before the softmax for a reason: a probability near 1 has a vanishing gradient, so
a sure model would show no evidence and every channel no importance. The log-odds' gradient with
respect to the class's own logit is 1 however sure the model is. Outputs that are not
probabilities are taken as they are.

With a = a layer's output on one image and g = dy/da (the same shape):
- Grad-CAM (Selvaraju et al. 2017): channel weights w_c = mean over positions of g_c, and the map
  ReLU(sum_c w_c a_c), one value per position of the layer's grid;
- Taylor importance (Molchanov et al. 2017): |sum over positions of a_c g_c|, the first-order estimate
  of how much y changes when channel c is zeroed; averaged over images by the statistics.

Both are computed inside the traced graph, beside the stored activations, so only a map per layer
and a number per channel leave it, never the gradients themselves.

Where a conv's output is renormalised channel by channel (GroupNormalization with one channel a
group, that is instance normalisation: the SD-UNet's 32-filter blocks, every block of a slim one),
y does not change when a channel is shifted or scaled. Then sum over positions of g_c is 0 and
sum of a_c g_c is 0 (up to the normalisation's epsilon): Grad-CAM's weights and the Taylor
importances vanish by construction, and what a computation returns is rounding, different on
every machine and thread count. Both are therefore taken at the normalisation's output, the first
tensor that carries the channel's strength, and the ablation check zeroes the same tensor
(`attribution_source`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASS = "class"
FOREGROUND = "foreground"
PIXEL_CLASSES = "pixel classes"


@dataclass(frozen=True)
class Target:
    """The number each image's attributions explain; `output` None: the model has none (`reason` says why)."""

    output: int | None = None  # index into model.outputs
    kind: str = ""  # CLASS, FOREGROUND or PIXEL_CLASSES
    channel: int | None = None  # CLASS: the class asked for (None: the predicted one); FOREGROUND: its channel
    binary: bool = False  # FOREGROUND of a one-channel sigmoid: foreground where p > 0.5
    activation: str = ""  # the output's "softmax" or "sigmoid" (outputs.score_activation): scores are log-odds
    name: str = ""  # the class or foreground's name, for sentences
    reason: str = ""
    rank: int = 1  # CLASS without a channel, PIXEL_CLASSES: the class ranked so (1: the predicted one)

    @property
    def defined(self) -> bool:
        return self.output is not None

    def describe(self) -> str:
        if not self.defined:
            return self.reason
        score = "log-odds" if self.activation else "score"
        place = {2: "second", 3: "third"}.get(self.rank, f"number {self.rank}")
        if self.kind == CLASS:
            if self.channel is not None:
                return f"the {score} of the class {self.name}"
            ranked = "predicts" if self.rank == 1 else f"ranks {place}"
            return f"the {score} of the class the model {ranked} for the image"
        if self.kind == FOREGROUND:
            return f"the summed {self.name} {score} over the pixels predicted {self.name} (Seg-Grad-CAM)"
        return f"the summed {score} of each pixel's {'predicted' if self.rank == 1 else place + '-ranked'} class"

    def scores(self, output):
        """y per image (a vector), from the target output's symbolic or eager batch, in keras.ops."""
        from keras import ops

        output = ops.cast(output, "float32")
        classes = output.shape[-1]
        if self.kind == CLASS and self.channel is not None:
            chosen = ops.one_hot(ops.full(ops.shape(output)[:-1], self.channel, "int32"), classes)
        elif self.kind == FOREGROUND and self.binary:
            chosen = ops.ones_like(output)
        elif self.kind == FOREGROUND:
            chosen = ops.one_hot(ops.full(ops.shape(output)[:-1], self.channel, "int32"), classes)
        elif self.rank == 1:
            chosen = ops.one_hot(ops.argmax(output, axis=-1), classes)
        else:
            chosen = ops.one_hot(ops.argsort(output, axis=-1)[..., -self.rank], classes)
        score = self._score(output, ops.stop_gradient(chosen))
        if self.kind == CLASS:
            return score
        if self.kind == FOREGROUND:
            region = output[..., 0] > 0.5 if self.binary else ops.equal(ops.argmax(output, axis=-1), self.channel)
            score = score * ops.stop_gradient(ops.cast(region, "float32"))
        return ops.sum(score, axis=(1, 2))

    def _score(self, output, chosen):
        """The chosen class's score: its log-odds where the output is probabilities, else the output.
        The other classes' probabilities are summed, never taken as 1 - p: near p = 1 that difference
        would lose every digit in float32."""
        from keras import ops

        tiny = 1e-30  # only where a probability underflowed to 0
        mine = ops.sum(output * chosen, axis=-1)
        if self.activation == "sigmoid":
            return ops.log(mine + tiny) - ops.log(ops.sum((1.0 - output) * chosen, axis=-1) + tiny)
        if self.activation == "softmax":
            return ops.log(mine + tiny) - ops.log(ops.sum(output * (1.0 - chosen), axis=-1) + tiny)
        return mine


def decide_target(specs, explain_class: str | None = None, activations=None) -> Target:
    """The target of the first output that has one: a segmentation before a classifier, as the
    report's masks are; `explain_class` names a class of the class output (--explain-class).
    `activations`: each output's outputs.score_activation (default: none, scores as they are)."""
    import dataclasses

    activations = tuple(activations or ("",) * len(specs))
    target = _decide(specs, explain_class)
    return dataclasses.replace(target, activation=activations[target.output]) if target.defined else target


def _decide(specs, explain_class: str | None) -> Target:
    from reportgen.errors import InputError

    if explain_class is not None:
        found = next((k for k, spec in enumerate(specs) if spec.kind == "classification"), None)
        if found is None:
            raise InputError(f"--explain-class {explain_class!r}: the model has no class output")
        names = specs[found].classes
        if explain_class not in names:
            raise InputError(f"--explain-class {explain_class!r} is not one of the classes --labels names"
                             if names else f"--explain-class {explain_class!r} needs --labels to name the classes")
        return Target(found, CLASS, channel=names.index(explain_class), name=explain_class)
    for k, spec in enumerate(specs):
        if spec.kind == "segmentation" and spec.gives_mask:
            if spec.binary:
                return Target(k, FOREGROUND, channel=0, binary=True, name=spec.class_name(1))
            focus = spec.mask_classes().focus  # the class the mask statistics' headline numbers are about
            return Target(k, FOREGROUND, channel=focus, name=spec.class_name(focus))
        if spec.kind == "segmentation":
            return Target(k, PIXEL_CLASSES)
    for k, spec in enumerate(specs):
        if spec.kind == "classification":
            return Target(k, CLASS)
    return Target(reason="the model's outputs are neither class scores nor a segmentation, so there is no "
                         "decision to explain: Grad-CAM and channel importance need one")


def on_path(model, tensors, output) -> list[bool]:
    """Whether each symbolic tensor of `model`'s own graph is one the output depends on; a tensor
    re-applied from inside a nested model (capture.tapped_tensor) never is."""
    from reportgen import graph

    needed = {id(output)}
    for node in reversed(graph.nodes(model)):
        if any(id(t) in needed for t in node.output_tensors):
            needed.update(id(t) for t in node.input_tensors)
    return [id(t) in needed for t in tensors]


def attribution_source(model, conv) -> tuple[object, str]:
    """The symbolic tensor of `model`'s graph that a conv layer's Grad-CAM and importance are taken at
    (laid out as the layer lays it out), and the name of the normalisation it is, or "" where it is
    the tapped output itself."""
    from reportgen import capture, graph

    tensor = capture.tapped_tensor(model, conv, channels_last=False)
    if conv.path:
        return tensor, ""
    after = graph.consumers(model, tensor)
    if len(after) == 1 and _normalises_each_channel(after[0].operation, conv, len(tensor.shape)):
        return after[0].output_tensors[0], after[0].operation.name
    return tensor, ""


def _normalises_each_channel(operation, conv, rank: int) -> bool:
    """Whether `operation` normalises each of the conv's channels on its own, over the positions."""
    import keras

    if not isinstance(operation, keras.layers.GroupNormalization):
        return False
    channels = conv.output_shape[-1]
    groups = channels if operation.groups == -1 else operation.groups
    channel_axis = 1 if conv.channels_first else rank - 1
    return groups == channels and operation.axis % rank == channel_axis


def cam_and_taylor(values, gradients, channels_first: bool):
    """Grad-CAM maps (N x spatial, or None for a layer without two spatial axes) and Taylor importances
    (N x C) of one layer's batch, in keras.ops."""
    from keras import ops

    values, gradients = ops.cast(values, "float32"), ops.cast(gradients, "float32")
    if channels_first:
        values, gradients = ops.moveaxis(values, 1, -1), ops.moveaxis(gradients, 1, -1)
    spatial = tuple(range(1, len(values.shape) - 1))
    taylor = ops.abs(ops.sum(values * gradients, axis=spatial)) if spatial else ops.abs(values * gradients)
    if len(spatial) != 2:
        return None, taylor
    weights = ops.mean(gradients, axis=spatial, keepdims=True)
    return ops.relu(ops.sum(weights * values, axis=-1)), taylor


class AttributedProbe:
    """A probe model's outputs on a batch, then each conv layer's Grad-CAM map and Taylor importances
    and the target y: one forward and one backward pass, traced once.

    It answers like a Keras model to `capture.stream_activations` (`inputs`, `predict_on_batch`,
    a call), returning [*probe outputs, *maps, *taylors, y]; a layer without a map gives N x 1 x 1 zeros.
    """

    def __init__(self, probe, sources: list, channels_first: list[bool], target: Target, target_tensor,
                 image_index: int, connected: list[bool]):
        import keras

        self.layers = len(sources)
        self.inputs = probe.inputs
        self._model = keras.Model(probe.inputs, [*probe.outputs, *sources, target_tensor])
        self._kept = len(probe.outputs)
        self._channels_first = channels_first
        self._target = target
        self._image_index = image_index
        self.connected = connected
        self._traced = None

    def _run(self, feeds):
        import tensorflow as tf

        feeds = [tf.convert_to_tensor(x) for x in feeds]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(feeds[self._image_index])
            results = self._model(feeds, training=False)
            y = self._target.scores(results[-1])
            total = tf.reduce_sum(y)  # images are independent at inference: d total / d a_i = d y_i / d a_i
        sources = results[self._kept:self._kept + self.layers]
        gradients = tape.gradient(total, sources, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        maps, taylors = [], []
        for values, grads, first in zip(sources, gradients, self._channels_first):
            cam, taylor = cam_and_taylor(values, grads, first)
            maps.append(cam if cam is not None else tf.zeros((tf.shape(values)[0], 1, 1)))
            taylors.append(taylor)
        return [*results[:self._kept], *maps, *taylors, y]

    def predict_on_batch(self, feeds):
        """The batch's results, run one image at a time. The backward pass holds every intermediate
        tensor of what it is given: for the SD-UNet, 190 MB an image against 40 MB of conv outputs.
        One at a time, `build --images 10` peaked at 1.7 GiB instead of 2.3-2.4 GiB, in the same time
        (batches of 5). The images are independent at inference, so the results are the batch's, up to
        float32 rounding of kernels that block by batch size."""
        import tensorflow as tf

        if self._traced is None:
            # No autograph: nothing here branches on tensors, and autograph writes its converted code to
            # the temporary folder, which a build leaves as it found it.
            self._traced = tf.function(self._run, reduce_retracing=True, autograph=False)
        each = [[np.asarray(v) for v in self._traced([x[k:k + 1] for x in feeds])] for k in range(len(feeds[0]))]
        return [np.concatenate(found) for found in zip(*each)]

    def __call__(self, feeds, training=False):
        return [np.asarray(v) for v in self._run(list(feeds))]


def attributed_probe(model, convs, outputs: list, target: Target, image_index: int) -> AttributedProbe:
    """An AttributedProbe of `model` whose probe outputs are `outputs` (symbolic tensors of its graph),
    explaining `target`, a defined one."""
    import keras

    sources = [attribution_source(model, conv)[0] for conv in convs]
    target_tensor = model.outputs[target.output]
    probe = keras.Model(model.inputs, outputs)
    return AttributedProbe(probe, sources, [conv.channels_first for conv in convs], target, target_tensor,
                           image_index, on_path(model, sources, target_tensor))


def not_attributed_note(conv, connected: bool, target: Target) -> str:
    """Why a layer has no Grad-CAM and importance, in a sentence; empty when it has them."""
    if not target.defined:
        return target.reason
    if conv.path:
        return (f"it is inside the nested model {conv.path[0]!r}, whose inner outputs Keras does not expose to "
                "gradients of the whole model")
    if not connected:
        return "the target output does not depend on it (it feeds another output only)"
    return ""
