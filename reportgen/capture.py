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
    """One conv layer as the report sees it."""

    index: int  # 1-based, in graph order
    name: str  # the layer's own name, untrusted text
    path: tuple[str, ...]  # names of the nested models that hold it, outermost first
    kind: str  # class name, e.g. Conv2D
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilation: tuple[int, ...]
    filters: int
    params: int
    output_shape: tuple[int, ...]  # without the batch axis
    tap_name: str  # the layer whose output is captured (the conv itself or its activation)
    is_output: bool = False  # its output (after its own norm and activation) is a model output: the head

    @property
    def qualified_name(self) -> str:
        return "/".join((*self.path, self.name))


def _tuple(value, rank: int) -> tuple[int, ...]:
    if value is None:
        return (1,) * rank
    if isinstance(value, int):
        return (value,) * rank
    return tuple(int(v) for v in value)


def _walk(model, path=()) -> Iterator[tuple[tuple[str, ...], object]]:
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _walk(layer, (*path, layer.name))
        else:
            yield path, layer


def _consumers(model, layer) -> list:
    """The layers of `model` that take `layer`'s output as an input."""
    return [other for other in model.layers
            if any(layer.output is t for node in other._inbound_nodes for t in node.input_tensors)]


def _tap_layer(model, conv, tap: str):
    """The layer to capture for `conv`: itself, or the end of its norm/activation chain."""
    if tap == "conv":
        return conv
    followers = _follower_types()
    current = conv
    while True:
        consumers = _consumers(model, current)
        if len(consumers) != 1 or not isinstance(consumers[0], followers):
            return current
        current = consumers[0]


def find_conv_layers(model, tap: str = "conv") -> list[ConvLayer]:
    """Every conv layer of `model`, in graph order, with what the report needs to know of it."""
    if tap not in TAPS:
        raise InputError(f"unknown tap {tap!r}; choose one of {', '.join(TAPS)}")
    found = []
    containers = {(): model}
    kinds = conv_types()
    for path, layer in _walk(model):
        if not isinstance(layer, kinds):
            continue
        owner = containers.get(path)
        if owner is None:
            owner = model
            for name in path:
                owner = owner.get_layer(name)
            containers[path] = owner
        rank = len(layer.output.shape) - 2
        tapped = _tap_layer(owner, layer, tap)
        block_end = _tap_layer(owner, layer, "activation")
        is_output = not path and any(end.output is t for end in (layer, block_end) for t in model.outputs)
        filters = getattr(layer, "filters", None) or int(layer.output.shape[-1])
        found.append(ConvLayer(
            index=len(found) + 1,
            name=layer.name,
            path=path,
            kind=type(layer).__name__,
            kernel=_tuple(getattr(layer, "kernel_size", 1), rank),
            strides=_tuple(getattr(layer, "strides", 1), rank),
            dilation=_tuple(getattr(layer, "dilation_rate", 1), rank),
            filters=int(filters),
            params=int(layer.count_params()),
            output_shape=tuple(int(d) if d is not None else -1 for d in tapped.output.shape[1:]),
            tap_name=tapped.name,
            is_output=is_output,
        ))
    return found


BOUNDED_ACTIVATIONS = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0), "hard_sigmoid": (0.0, 1.0),
                       "softsign": (-1.0, 1.0), "hard_tanh": (-1.0, 1.0)}
SCALE_MISMATCH = 10.0  # conv outputs this many times off the BatchNorm statistics learnt in training


def _layer_of(model, conv: ConvLayer):
    owner = model
    for name in conv.path:
        owner = owner.get_layer(name)
    return owner, owner.get_layer(conv.name)


def first_conv_evidence(model, conv: ConvLayer, values: np.ndarray) -> str | None:
    """What the first conv's captured output says about the input's scale, in a sentence, or None.

    Two things can be known without the training data: a bounded activation of the conv itself
    that sits at its limits, and, where a BatchNormalization follows the conv, how far the outputs
    are from the moving mean and variance that BatchNorm learnt from the training inputs.
    """
    owner, layer = _layer_of(model, conv)
    values = np.asarray(values, np.float32).reshape(-1, values.shape[-1])
    activation = getattr(getattr(layer, "activation", None), "__name__", "")
    if conv.tap_name == conv.name and activation in BOUNDED_ACTIVATIONS:
        low, high = BOUNDED_ACTIVATIONS[activation]
        margin = 0.01 * (high - low)
        share = float(np.mean((values <= low + margin) | (values >= high - margin)))
        if share >= 0.5:
            return (f"the first conv ({conv.qualified_name}) is saturated: {share:.0%} of its {activation} outputs "
                    "sit at the activation's limits")
    if conv.tap_name != conv.name:
        return None
    from keras import layers

    consumers = _consumers(owner, layer)
    if len(consumers) != 1 or not isinstance(consumers[0], layers.BatchNormalization):
        return None
    norm = consumers[0]
    mean = np.asarray(norm.moving_mean, np.float32)
    variance = np.asarray(norm.moving_variance, np.float32)
    if mean.shape != (values.shape[-1],):
        return None
    z = (values - mean) / np.sqrt(variance + norm.epsilon)
    ratio = float(np.median(np.sqrt(np.mean(z * z, axis=0))))
    if ratio >= SCALE_MISMATCH or 0 < ratio <= 1 / SCALE_MISMATCH:
        return (f"the first conv's outputs ({conv.qualified_name}) are {ratio:.3g} times the spread its "
                f"BatchNormalization learnt in training (about 1 when the input matches training)")
    return None


def input_layers(model) -> list[str]:
    """Rescaling or Normalization layers at the start of the model: it preprocesses its own input."""
    from keras import layers

    found = []
    for _, layer in _walk(model):
        if isinstance(layer, layers.InputLayer):
            continue
        if isinstance(layer, layers.Rescaling):
            found.append(f"{type(layer).__name__} {layer.name!r} (x * {np.asarray(layer.scale).ravel()[0]:g} "
                         f"+ {np.asarray(layer.offset).ravel()[0]:g})")
        elif isinstance(layer, layers.Normalization):
            found.append(f"{type(layer).__name__} {layer.name!r} (learnt mean and variance)")
        elif isinstance(layer, (layers.Resizing, layers.CenterCrop)):
            found.append(f"{type(layer).__name__} {layer.name!r}")
        else:
            break
    return found


def _outer_tensor(model, path: tuple[str, ...], layer_name: str):
    """The symbolic output of a (possibly nested) layer, expressed in `model`'s own graph."""
    import keras

    if not path:
        return model.get_layer(layer_name).output
    nested = model.get_layer(path[0])
    inner_output = _inner_output(nested, path[1:], layer_name)
    # Re-apply the nested model's graph from its input up to the tapped layer, on the
    # tensor that feeds it in the outer graph, so the probe stays one model.
    node_inputs = nested._inbound_nodes[-1].input_tensors
    sub = keras.Model(nested.inputs, inner_output)
    return sub(node_inputs[0] if len(node_inputs) == 1 else node_inputs)


def _inner_output(model, path, layer_name):
    if not path:
        return model.get_layer(layer_name).output
    return _outer_tensor(model, path, layer_name)


def _is_image_shape(shape) -> bool:
    return len(shape) == 4 and shape[-1] in (1, 3, None)


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


def probe_model(model, convs: Sequence[ConvLayer]):
    """One model from the inputs to every tapped conv output."""
    import keras

    if not convs:
        raise InputError("the model has no convolution layers to report on")
    outputs = [_outer_tensor(model, conv.path, conv.tap_name) for conv in convs]
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


def _feed(probe, batch: np.ndarray, image_index: int):
    """The probe's inputs for one batch: the images, and zeros for any other input."""
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
                outputs = probe.predict_on_batch(_feed(probe, batch, image_index))
            except ValueError:  # TensorFlow cannot trace every layer name (e.g. '<' is no scope name)
                traced = False
        if outputs is None:
            outputs = probe(_feed(probe, batch, image_index), training=False)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        yield start, [np.asarray(out[:real]) for out in outputs]


def receptive_fields(model, convs: Sequence[ConvLayer]) -> dict[str, float]:
    """Receptive field in input pixels per conv layer, from the graph (STATS.md, item 8)."""
    from reportgen.receptive import receptive_field_map

    fields = receptive_field_map(model)
    return {conv.qualified_name: fields.get(conv.qualified_name, float("nan")) for conv in convs}
