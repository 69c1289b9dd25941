"""Find a model's conv layers and stream their outputs, batch by batch.

Conv layers are found by type, never by name, in graph order, including those
inside nested models. One probe model returns all their outputs at once.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from reportgen.errors import InputError

log = logging.getLogger(__name__)

TAPS = ("conv", "activation")


def conv_types():
    """The conv layer classes reportgen reports on (Keras is imported lazily)."""
    from keras import layers

    return (layers.Conv1D, layers.Conv2D, layers.Conv3D, layers.SeparableConv2D,
            layers.DepthwiseConv2D, layers.Conv2DTranspose, layers.SeparableConv1D,
            layers.DepthwiseConv1D, layers.Conv1DTranspose, layers.Conv3DTranspose)


def _follower_types():
    """Layers that belong to a conv block after the conv: normalisation and the nonlinearity."""
    from keras import layers

    return (layers.GroupNormalization, layers.BatchNormalization, layers.LayerNormalization,
            layers.Activation, layers.LeakyReLU, layers.ReLU, layers.ELU, layers.PReLU, layers.Softmax)


@dataclass(frozen=True)
class ConvLayer:
    """One call of a conv layer, the one on the path from the image input, as the report sees it."""

    index: int  # 1-based, in graph order
    name: str  # the layer's own name (and which call, for a layer called more than once), untrusted text
    path: tuple[str, ...]  # names of the nested models that hold it, outermost first
    kind: str  # class name, e.g. Conv2D
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilation: tuple[int, ...]
    filters: int
    params: int
    output_shape: tuple[int, ...]  # without the batch axis, channels last
    tap_name: str  # the layer whose output is captured (the conv itself or its activation)
    is_output: bool = False  # its output (after its own norm and activation) is a model output: the head
    layer_name: str = ""  # the Keras layer's name (`name` without the call number)
    route: tuple[int, ...] = (0,)  # which call of each nested model, then of the conv layer (graph.Call.route)
    tap_node: int = 0  # which call of the tapped layer
    channels_first: bool = False  # data_format="channels_first": the channel axis is moved last at capture
    groups: int = 1

    @property
    def qualified_name(self) -> str:
        return "/".join((*self.path, self.name))

    @property
    def description(self) -> str:
        """The layer's type as the report names it, with what sets it apart from a plain conv."""
        if self.kind == "Dense":
            return "Dense on the maps (a 1x1 conv)"
        extras = [f"groups={self.groups}"] if self.groups > 1 else []
        if self.channels_first:
            extras.append("channels_first")
        return f"{self.kind} ({', '.join(extras)})" if extras else self.kind


def _tuple(value, rank: int) -> tuple[int, ...]:
    if value is None:
        return (1,) * rank
    if isinstance(value, int):
        return (value,) * rank
    return tuple(int(v) for v in value)


def _tap_call(owner, layer, node_index: int, tap: str) -> tuple[object, int]:
    """The call to capture for one conv call: itself, or the end of its norm/activation chain."""
    from reportgen import graph

    if tap == "conv":
        return layer, node_index
    followers = _follower_types()
    current, index = layer, node_index
    while True:
        after = graph.consumers(owner, current._inbound_nodes[index].output_tensors[0])
        if len(after) != 1 or not isinstance(after[0].operation, followers):
            return current, index
        current = after[0].operation
        index = current._inbound_nodes.index(after[0])


def _is_conv(layer, node) -> bool:
    """A conv layer, or a Dense layer applied to maps: a pointwise conv, as ConvNeXt writes them."""
    from keras import layers

    if isinstance(layer, conv_types()):
        return True
    return isinstance(layer, layers.Dense) and len(node.input_tensors[0].shape) >= 4


def _channels_first(layer) -> bool:
    return getattr(layer, "data_format", "channels_last") == "channels_first"


def conv_calls(model, image_index: int = 0) -> tuple[list, list]:
    """The conv calls (graph.Call) fed by the image input, and those it does not reach."""
    from reportgen import graph

    fed, unfed = [], []
    for call, reached in graph.calls(model, [i == image_index for i in range(len(model.inputs))]):
        if _is_conv(call.layer, call.node):
            (fed if reached else unfed).append(call)
    return fed, unfed


def _call_names(found: list) -> list[str]:
    """Each call's name: the layer's, numbered where one layer has several calls on the image's path."""
    from collections import Counter

    counts = Counter((call.path, call.layer.name) for call in found)
    seen: Counter = Counter()
    names = []
    for call in found:
        key = (call.path, call.layer.name)
        seen[key] += 1
        names.append(call.layer.name if counts[key] == 1 else f"{call.layer.name} (call {seen[key]})")
    return names


def unfed_conv_layers(model, image_index: int) -> list[str]:
    """Qualified names of the conv layers that the image input does not reach (a siamese model's other branch)."""
    fed, unfed = conv_calls(model, image_index)
    reached = {(call.path, call.layer.name) for call in fed}
    names = []
    for call in unfed:
        name = "/".join((*call.path, call.layer.name))
        names.append(f"{name} (its other call)" if (call.path, call.layer.name) in reached else name)
    return names


def find_conv_layers(model, tap: str = "conv", image_index: int = 0) -> list[ConvLayer]:
    """Every conv call on the image input's path through `model`, in graph order, with what the report
    needs to know of it."""
    from reportgen import graph

    if tap not in TAPS:
        raise InputError(f"unknown tap {tap!r}; choose one of {', '.join(TAPS)}")
    found = []
    fed, _ = conv_calls(model, image_index)
    outputs = {id(t) for t in model.outputs}
    for call, name in zip(fed, _call_names(fed)):
        layer, node = call.layer, call.node
        owner = graph.owner(model, call.path)
        rank = len(node.output_tensors[0].shape) - 2
        tapped, tap_index = _tap_call(owner, layer, call.node_index, tap)
        end, end_index = _tap_call(owner, layer, call.node_index, "activation")
        ends = (node.output_tensors[0], end._inbound_nodes[end_index].output_tensors[0])
        shape = tuple(int(d) if d is not None else -1 for d in tapped._inbound_nodes[tap_index].output_tensors[0].shape[1:])
        channels_first = _channels_first(layer) and len(shape) >= 2
        if channels_first:
            shape = (*shape[1:], shape[0])
        found.append(ConvLayer(
            index=len(found) + 1,
            name=name,
            path=call.path,
            kind=type(layer).__name__,
            kernel=_tuple(getattr(layer, "kernel_size", 1), rank),
            strides=_tuple(getattr(layer, "strides", 1), rank),
            dilation=_tuple(getattr(layer, "dilation_rate", 1), rank),
            filters=int(getattr(layer, "filters", None) or getattr(layer, "units", None) or shape[-1]),
            params=int(layer.count_params()),
            output_shape=shape,
            tap_name=tapped.name,
            is_output=not call.path and any(id(t) in outputs for t in ends),
            layer_name=layer.name,
            route=call.route,
            tap_node=tap_index,
            channels_first=channels_first,
            groups=int(getattr(layer, "groups", 1) or 1),
        ))
    return found


def tapped_tensor(model, conv: ConvLayer, channels_last: bool = True):
    """The symbolic output of a conv's tapped call, in `model`'s own graph, channels last (or as the
    layer lays it out: the tensor the rest of the graph takes, which gradients reach)."""
    import keras

    from reportgen import graph

    owner = graph.owner(model, conv.path)
    inner = owner.get_layer(conv.tap_name)._inbound_nodes[conv.tap_node].output_tensors[0]
    tensor = graph.outer_tensor(model, conv.path, conv.route, inner)
    return keras.ops.moveaxis(tensor, 1, -1) if conv.channels_first and channels_last else tensor


def is_channels_first(shape) -> bool:
    """An image input laid out (batch, channels, height, width): 1 or 3 channels first, and not last."""
    shape = tuple(shape)
    return len(shape) == 4 and shape[1] in (1, 3) and shape[-1] not in (1, 3, None)


def image_shape(shape) -> tuple:
    """(height, width, channels) of an image input's shape, in either layout; None where dynamic."""
    shape = tuple(shape)
    return (shape[2], shape[3], shape[1]) if is_channels_first(shape) else tuple(shape[1:4])


def _is_image_shape(shape) -> bool:
    return len(shape) == 4 and image_shape(shape)[-1] in (1, 3, None)


def image_input(model, name: str | None = None) -> int:
    """Which of the model's inputs takes the images: the one named, the only one, or the only
    RGB-image-shaped one. Every other input is fed zeros, so it must have a fixed shape."""
    names = [tensor.name for tensor in model.inputs]
    if name is not None:
        if name not in names:
            raise InputError(f"the model has no input {name!r}; its inputs are {', '.join(map(repr, names))}")
        index = names.index(name)
    elif len(names) == 1:
        index = 0
    else:
        images = [i for i, tensor in enumerate(model.inputs) if _is_image_shape(tuple(tensor.shape))]
        if len(images) != 1:
            raise InputError(f"the model has {len(names)} inputs ({', '.join(map(repr, names))}); "
                             "name the image input with --input NAME")
        index = images[0]
    for i, tensor in enumerate(model.inputs):
        if i != index and any(d is None for d in tuple(tensor.shape)[1:]):
            raise InputError(f"input {tensor.name!r} has a shape with unknown sizes {tuple(tensor.shape)}; "
                             "reportgen feeds zeros to the inputs other than the image and needs their size")
    return index


def as_stored(tensors) -> list:
    """Symbolic outputs turned, inside the graph and so on every core, into what the spill stores:
    finite float16. Every statistic is measured on these values, in the build and in the Beam pass."""
    import keras

    from reportgen.spill import FLOAT16_MAX

    return [keras.ops.cast(keras.ops.clip(keras.ops.nan_to_num(t), -FLOAT16_MAX, FLOAT16_MAX), "float16")
            for t in tensors]


def stored_damage(tensors) -> list:
    """What `as_stored` changes, per layer and image: [values that are NaN or infinite, finite values
    beyond float16's range (clipped), the largest finite magnitude], as float32."""
    import keras

    from reportgen.spill import FLOAT16_MAX

    found = []
    for tensor in tensors:
        values = keras.ops.cast(tensor, "float32")
        per_image = tuple(range(1, len(tensor.shape)))
        finite = keras.ops.isfinite(values)
        magnitude = keras.ops.where(finite, keras.ops.abs(values), 0.0)
        found.append(keras.ops.stack([
            keras.ops.sum(keras.ops.cast(keras.ops.logical_not(finite), "float32"), axis=per_image),
            keras.ops.sum(keras.ops.cast(magnitude > FLOAT16_MAX, "float32"), axis=per_image),
            keras.ops.max(magnitude, axis=per_image)], axis=1))
    return found


def damage_note(damage: np.ndarray, values: int) -> str:
    """A layer page's sentence on what storing changed, from `stored_damage` summed over the images
    (counts) and maximised (magnitude); empty when nothing changed."""
    from reportgen.spill import FLOAT16_MAX

    broken, beyond, largest = float(damage[0]), float(damage[1]), float(damage[2])
    said = []
    if broken:
        said.append(f"{broken:,.0f} of its {values:,} values on the pictured images are NaN or infinite "
                    f"({broken / values:.1%}): they are stored, shown and measured as 0")
    if beyond:
        said.append(f"{beyond:,.0f} values reach beyond float16's range (the largest is {largest:.3g}): they are "
                    f"stored, shown and measured as ±{FLOAT16_MAX:,.0f}, so this layer's statistics understate them")
    return "; ".join(said)


def probe_model(model, convs: Sequence[ConvLayer]):
    """One model from the inputs to every tapped conv output."""
    import keras

    if not convs:
        raise InputError("the model has no convolution layers to report on")
    outputs = [tapped_tensor(model, conv) for conv in convs]
    return keras.Model(model.inputs, outputs, name="reportgen_probe")


def stream_activations(probe, images: np.ndarray | Sequence[np.ndarray], batch_size: int = 4,
                       image_index: int = 0, prepare=None) -> Iterator[tuple[int, list[np.ndarray]]]:
    """Yield (first image index, one array per conv layer, in the probe's output dtype) for each batch.

    `prepare` turns a batch of 0-255 pixels into what the model takes (the input convention).
    `predict_on_batch` runs the probe as one traced graph, a third faster than calling it eagerly
    layer by layer, including the tracing. A short last batch is padded so the graph is traced once.
    """
    with _graph_optimizer_off():
        yield from _batches(probe, images, batch_size, image_index, prepare)


@contextlib.contextmanager
def _graph_optimizer_off():
    """Grappler's rewrites cost ~0.4 s when the probe is traced and gain nothing per batch on CPU
    (measured on the SD-UNet); the user's setting is restored afterwards."""
    import tensorflow as tf

    saved = tf.config.optimizer.get_experimental_options()
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": False, **saved})


def model_feeds(probe, batch: np.ndarray, image_index: int):
    """The probe's inputs for one batch: the images, and zeros for any other input."""
    if is_channels_first(probe.inputs[image_index].shape):
        batch = np.moveaxis(batch, -1, 1)
    if len(probe.inputs) == 1:
        return [batch]
    return [batch if i == image_index else
            np.zeros((len(batch), *tuple(tensor.shape)[1:]), dtype=getattr(tensor, "dtype", "float32"))
            for i, tensor in enumerate(probe.inputs)]


def _batches(probe, images, batch_size: int, image_index: int, prepare) -> Iterator[tuple[int, list[np.ndarray]]]:
    total = len(images)
    traced = True
    for start in range(0, total, batch_size):
        batch = np.stack([np.asarray(img, np.float32) for img in images[start:start + batch_size]])
        if prepare is not None:
            batch = prepare(batch)
        real = len(batch)
        if real < batch_size < total:
            batch = np.concatenate([batch, np.zeros((batch_size - real, *batch.shape[1:]), batch.dtype)])
        outputs = None
        if traced:
            try:
                outputs = probe.predict_on_batch(model_feeds(probe, batch, image_index))
            except ValueError:  # TensorFlow cannot trace every layer name (e.g. '<' is no scope name)
                traced = False
        if outputs is None:
            outputs = probe(model_feeds(probe, batch, image_index), training=False)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        yield start, [np.asarray(out[:real]) for out in outputs]


def receptive_fields(model, convs: Sequence[ConvLayer]) -> dict[str, float]:
    """Receptive field in input pixels per conv layer, from the graph (STATS.md, item 8)."""
    from reportgen.receptive import receptive_fields_by_call

    fields = receptive_fields_by_call(model)
    return {conv.qualified_name: fields.get(("/".join((*conv.path, conv.layer_name)), conv.route), float("nan"))
            for conv in convs}
