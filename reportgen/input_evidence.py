"""What a model says about the input it expects, read from the model itself: the preprocessing layers
at its start (`input_layers`), and whether its first conv's outputs on the given images look like
those of its training inputs (`first_conv_evidence`). The index page's warnings about a wrong input
convention, and the model card's line on the model's own preprocessing, come from these.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from reportgen.capture import ConvLayer

BOUNDED_ACTIVATIONS = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0), "hard_sigmoid": (0.0, 1.0),
                       "softsign": (-1.0, 1.0), "hard_tanh": (-1.0, 1.0)}
SCALE_MISMATCH = 10.0  # conv outputs this many times off the BatchNorm statistics learnt in training


def _conv_output(model, conv: ConvLayer):
    """The conv's owner (the nested model that holds it), the conv layer, and its call's output tensor."""
    from reportgen import graph

    owner = graph.owner(model, conv.path)
    layer = owner.get_layer(conv.layer_name or conv.name)
    return owner, layer, layer._inbound_nodes[conv.route[-1]].output_tensors[0]


def first_conv_evidence(model, conv: ConvLayer, values: np.ndarray) -> str | None:
    """What the first conv's captured output says about the input's scale, in a sentence, or None.

    Two things can be known without the training data: a bounded activation of the conv itself
    that sits at its limits, and, where a BatchNormalization follows the conv, how far the outputs
    are from the moving mean and variance that BatchNorm learnt from the training inputs.
    """
    owner, layer, output = _conv_output(model, conv)
    values = np.asarray(values, np.float32).reshape(-1, values.shape[-1])
    activation = getattr(getattr(layer, "activation", None), "__name__", "")
    if conv.tap_name == conv.layer_name and activation in BOUNDED_ACTIVATIONS:
        low, high = BOUNDED_ACTIVATIONS[activation]
        margin = 0.01 * (high - low)
        share = float(np.mean((values <= low + margin) | (values >= high - margin)))
        if share >= 0.5:
            return (f"the first conv ({conv.qualified_name}) is saturated: {share:.0%} of its {activation} outputs "
                    "sit at the activation's limits")
    if conv.tap_name != conv.layer_name:
        return None
    from keras import layers

    from reportgen import graph

    after = graph.consumers(owner, output)
    if len(after) != 1 or not isinstance(after[0].operation, layers.BatchNormalization):
        return None
    norm = after[0].operation
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


def _normalization_formula(layer) -> str:
    """(x - mean) / sqrt(variance), with the values: given when the layer was built (ConvNeXt's fixed
    ImageNet statistics), or adapted to data with `adapt()`."""
    mean = np.asarray(layer.mean, np.float64).ravel()
    std = np.sqrt(np.asarray(layer.variance, np.float64).ravel())
    origin = "given" if getattr(layer, "input_mean", None) is not None else "adapted to data"
    return f"(x - mean) / std, mean {_few(mean)}, std {_few(std)}, {origin}"


def _few(values) -> str:
    return ", ".join(f"{v:.4g}" for v in values[:4]) + (", ..." if len(values) > 4 else "")


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
            found.append(f"{type(layer).__name__} {layer.name!r} ({_normalization_formula(layer)})")
        elif isinstance(layer, (layers.Resizing, layers.CenterCrop)):
            found.append(f"{type(layer).__name__} {layer.name!r}")
        else:
            break
    return found


def _walk(model, path=()) -> Iterator[tuple[tuple[str, ...], object]]:
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _walk(layer, (*path, layer.name))
        else:
            yield path, layer
