"""A Keras model's graph as Keras built it: every call (node) of every operation, `keras.ops` included.

`model.layers` lists each layer once, however often it is called, and leaves out the operations
written as code (`x + y`, `keras.ops.*`). What the report captures and measures is one call of a
layer: the call on the path from the image input. This module finds those calls.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass


def node_of(tensor):
    """The node (one call of one operation) that produced a symbolic tensor."""
    operation, node_index, _ = tensor._keras_history
    return operation._inbound_nodes[node_index]


def nodes(model) -> list:
    """Every node of `model`'s own graph that leads to its outputs, inputs first (topological order)."""
    order, seen = [], set()
    stack = [(node_of(t), False) for t in reversed(model.outputs)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        stack.extend((node_of(t), False) for t in reversed(node.input_tensors) if id(node_of(t)) not in seen)
    return order


def fed_tensors(model, fed_inputs: Sequence[bool]) -> set[int]:
    """The ids of the symbolic tensors of `model`'s graph that depend on the inputs marked True."""
    fed = {id(t) for t, is_fed in zip(model.inputs, fed_inputs) if is_fed}
    for node in nodes(model):
        if any(id(t) in fed for t in node.input_tensors):
            fed.update(id(t) for t in node.output_tensors)
    return fed


def is_container(operation) -> bool:
    import keras

    return isinstance(operation, keras.Model)


def _operations(model) -> list:
    """The model's operations in the order Keras lists them (creation order for a functional model)."""
    return list(getattr(model, "operations", None) or model.layers)


@dataclass(frozen=True)
class Call:
    """One call of a (possibly nested) layer on the path from the image input.

    `route` locates it: for each nested model that holds the layer, outermost first, which of the
    model's calls in its owner's graph, then which of the layer's calls in the innermost model's graph,
    all as indices into `_inbound_nodes`. Indices, not nodes, so that a Call can be pickled.
    """

    path: tuple[str, ...]  # names of the nested models that hold the layer, outermost first
    layer: object
    route: tuple[int, ...]

    @property
    def node_index(self) -> int:
        return self.route[-1]

    @property
    def node(self):
        return self.layer._inbound_nodes[self.node_index]


def calls(model, fed_inputs: Sequence[bool], path: tuple[str, ...] = (), route: tuple[int, ...] = ()
          ) -> Iterator[tuple[Call, bool]]:
    """Every call of every layer of `model`'s graph, nested models entered, with whether the fed inputs
    reach it. In `model.layers` order, each layer's calls in the order they were made."""
    in_graph = {id(node) for node in nodes(model)}
    fed = fed_tensors(model, fed_inputs)
    for operation in _operations(model):
        for index, node in enumerate(operation._inbound_nodes):
            if id(node) not in in_graph or not node.input_tensors:
                continue
            reached = [id(t) in fed for t in node.input_tensors]
            if is_container(operation):
                yield from calls(operation, reached, (*path, operation.name), (*route, index))
            else:
                yield Call(path, operation, (*route, index)), any(reached)


def consumers(model, tensor) -> list:
    """The nodes of `model`'s graph that take `tensor` as an input."""
    return _consumer_index(model).get(id(tensor), [])


_consumers: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _consumer_index(model) -> dict[int, list]:
    """Tensor id -> the nodes that take it, built once per model: asked once per conv layer, a walk of
    the graph each time made finding EfficientNet's 91 conv layers quadratic."""
    if model not in _consumers:
        index: dict[int, list] = {}
        for node in nodes(model):
            for tensor in node.input_tensors:
                if not index.get(id(tensor)) or index[id(tensor)][-1] is not node:
                    index.setdefault(id(tensor), []).append(node)
        _consumers[model] = index
    return _consumers[model]


def owner(model, path: tuple[str, ...]):
    """The nested model that `path` names."""
    for name in path:
        model = model.get_layer(name)
    return model


def outer_tensor(model, path: tuple[str, ...], route: tuple[int, ...], inner_tensor):
    """`inner_tensor` of a nested model, expressed in `model`'s own graph on the call that `route` names.

    The nested model's graph is applied again, from its inputs to the tensor, on what feeds that call
    in the outer graph, so the probe stays one model of the outer inputs.
    """
    import keras

    if not path:
        return inner_tensor
    nested = model.get_layer(path[0])
    inside = outer_tensor(nested, path[1:], route[1:], inner_tensor)
    feeding = nested._inbound_nodes[route[0]].input_tensors
    sub = keras.Model(nested.inputs, inside)
    return sub(feeding[0] if len(feeding) == 1 else list(feeding))
