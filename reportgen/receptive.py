"""Receptive fields from the graph (STATS.md, item 8).

r_l = r_{l-1} + (k' - 1) * j_{l-1},  j_l = j_{l-1} * stride,  k' = d (k - 1) + 1.
Pooling counts as a kernel; upsampling divides the jump; where paths merge
(concatenate, add, multiply) the widest path wins.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Field:
    """Receptive field size r and jump j (input pixels between neighbouring outputs)."""

    size: float
    jump: float


def _first(value) -> int:
    if isinstance(value, (tuple, list)):
        return int(value[0]) if value and value[0] is not None else 1
    return int(value) if value is not None else 1


def layer_field(layer, incoming: Field) -> Field:
    """How one layer changes the receptive field of its widest input."""
    from keras import layers

    r, j = incoming.size, incoming.jump
    if isinstance(layer, (layers.Conv2DTranspose, layers.Conv1DTranspose, layers.Conv3DTranspose)):
        stride = _first(layer.strides)
        k = _first(layer.kernel_size)
        return Field(r + (k - 1) * j / stride, j / stride)
    if hasattr(layer, "kernel_size") and hasattr(layer, "strides"):
        k = _first(layer.kernel_size)
        d = _first(getattr(layer, "dilation_rate", 1))
        effective = d * (k - 1) + 1
        return Field(r + (effective - 1) * j, j * _first(layer.strides))
    if hasattr(layer, "pool_size"):
        pool = _first(layer.pool_size)
        stride = _first(layer.strides) if getattr(layer, "strides", None) is not None else pool
        return Field(r + (pool - 1) * j, j * stride)
    if isinstance(layer, (layers.GlobalAveragePooling2D, layers.GlobalMaxPooling2D,
                          layers.GlobalAveragePooling1D, layers.GlobalMaxPooling1D)):
        return Field(float("inf"), j)
    if isinstance(layer, (layers.UpSampling2D, layers.UpSampling1D, layers.UpSampling3D)):
        return Field(r, j / _first(getattr(layer, "size", 2)))
    return Field(r, j)


def receptive_field_map(model, seeds: list[Field] | None = None, prefix: tuple[str, ...] = ()) -> dict[str, float]:
    """Receptive field size of every layer's (first) output, keyed by qualified name."""
    fields, _ = _propagate(model, seeds, prefix)
    return fields


def _propagate(model, seeds, prefix):
    import keras

    known: dict[int, Field] = {}
    for tensor, seed in zip(model.inputs, seeds or [Field(1.0, 1.0)] * len(model.inputs)):
        known[id(tensor)] = seed
    sizes: dict[str, float] = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue  # inputs are seeded above
        for node in layer._inbound_nodes:
            incoming = [known[id(t)] for t in node.input_tensors if id(t) in known]
            if not incoming:
                continue
            widest = max(incoming, key=lambda f: f.size)
            if isinstance(layer, keras.Model):
                inner, outputs = _propagate(layer, [widest] * len(layer.inputs), (*prefix, layer.name))
                sizes.update(inner)
                results = outputs
            else:
                result = layer_field(layer, widest)
                results = [result] * len(node.output_tensors)
                sizes["/".join((*prefix, layer.name))] = result.size
            for tensor, result in zip(node.output_tensors, results):
                known[id(tensor)] = result
    outputs = [known.get(id(t), Field(float("nan"), 1.0)) for t in model.outputs]
    return sizes, outputs
