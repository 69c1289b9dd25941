"""Receptive fields from the graph (STATS.md, item 8).

r_l = r_{l-1} + (k' - 1) * j_{l-1},  j_l = j_{l-1} * stride,  k' = d (k - 1) + 1.
Pooling counts as a kernel; upsampling divides the jump (bilinear also reaches one input further);
where paths merge
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
        # Bilinear interpolation mixes two neighbouring inputs; nearest copies one.
        reach = j if getattr(layer, "interpolation", "nearest") == "bilinear" else 0.0
        return Field(r + reach, j / _first(getattr(layer, "size", 2)))
    return Field(r, j)


def receptive_field_map(model) -> dict[str, float]:
    """Receptive field size of every layer's first call on the graph, keyed by qualified name."""
    found: dict[str, float] = {}
    for (name, _), size in receptive_fields_by_call(model).items():
        found.setdefault(name, size)
    return found


def receptive_fields_by_call(model) -> dict[tuple[str, tuple[int, ...]], float]:
    """Receptive field size of every call of every layer, keyed by (qualified name, graph.Call.route).

    The walk is over the graph's nodes, so operations written as code (`x + y`, `keras.ops.*`) pass the
    field on like any elementwise layer, and a nested model called twice gets each call's own fields.
    """
    sizes: dict = {}
    _propagate(model, [Field(1.0, 1.0)] * len(model.inputs), (), (), sizes)
    return sizes


def _propagate(model, seeds: list[Field], path: tuple[str, ...], route: tuple[int, ...], sizes: dict) -> list[Field]:
    from reportgen import graph

    known = {id(tensor): seed for tensor, seed in zip(model.inputs, seeds)}
    for node in graph.nodes(model):
        incoming = [known[id(t)] for t in node.input_tensors if id(t) in known]
        if not incoming:
            continue  # an input, or a branch that starts from a constant
        operation = node.operation
        call = (*route, operation._inbound_nodes.index(node))
        if graph.is_container(operation):
            fed = [known.get(id(t), Field(1.0, 1.0)) for t in node.input_tensors]
            results = _propagate(operation, fed, (*path, operation.name), call, sizes)
        else:
            result = layer_field(operation, max(incoming, key=lambda f: f.size))
            results = [result] * len(node.output_tensors)
            sizes["/".join((*path, operation.name)), call] = result.size
        for tensor, result in zip(node.output_tensors, results):
            known[id(tensor)] = result
    return [known.get(id(t), Field(float("nan"), 1.0)) for t in model.outputs]
