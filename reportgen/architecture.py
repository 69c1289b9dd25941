"""The architecture map: the model's graph as a picture, every layer call with its merges and skips.

The graph is Keras' own (`graph.nodes`: `keras.ops` steps included), with nested models opened up so
that every conv call the report captured is a node of its own. igraph's Sugiyama layout (longest-path
layering, barycentre crossing reduction, dummy vertices on long edges) gives each node its column, its
depth in the graph, and its order among the nodes of that depth. The rows are the resolution: every
spatial size of the graph's tensors is a band, the largest at the top. An encoder then steps down,
a decoder steps back up, and a U-Net's skip connections run straight across at their own size.

Drawn at build time as SVG, the map needs no script to read; the page script only recolours it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from reportgen import graph

COLUMN = 22  # CSS pixels between the centres of two depths
LANE = 24  # between two parallel nodes of one band
BAND_GAP = 14  # between two bands
LEFT = 64  # room for the bands' sizes
TOP = 16
CONV_RADIUS = 11

MERGES = {"Add": "+", "Multiply": "×", "Concatenate": "‖", "Subtract": "−", "Average": "mean", "Maximum": "max",
          "Minimum": "min", "Dot": "·"}
PADDING = ("ZeroPadding", "Cropping")


@dataclass(frozen=True)
class Node:
    """One call of one operation."""

    key: tuple  # ((nested model name, its call), ...), the operation's name, which of its calls
    name: str  # the operation's name, untrusted text
    operation: str  # its class name
    kind: str  # "conv", "merge", "pool", "up", "input" or "layer"
    spatial: tuple[int, ...]  # its output's height and width (or length), () for a flat output
    shape: str  # its output shape for people, "20x20x256"
    x: float = 0.0
    y: float = 0.0
    conv: int | None = None  # the report's conv index, for the conv calls it captured

    @property
    def size(self) -> int:
        return math.prod(self.spatial) if self.spatial else 1

    @property
    def symbol(self) -> str:
        return MERGES.get(self.operation, "")


@dataclass(frozen=True)
class Edge:
    source: int
    target: int
    points: str  # SVG polyline points, source to target


@dataclass(frozen=True)
class ArchitectureMap:
    nodes: list[Node]
    edges: list[Edge]
    bands: list[tuple[float, str]]  # each band's middle y and its map size
    width: int
    height: int

    def conv_node(self, index: int) -> Node:
        return next(node for node in self.nodes if node.conv == index)


def _kind(operation) -> str:
    from reportgen.capture import conv_types

    name = type(operation).__name__
    if isinstance(operation, conv_types()):
        return "conv"
    if name in MERGES:
        return "merge"
    if "Pooling" in name:
        return "pool"
    if name.startswith(("UpSampling", "Conv2DTranspose", "Resizing")):
        return "up"
    if name == "InputLayer":
        return "input"
    return "layer"


def _channels_first(operation) -> bool:
    return getattr(operation, "data_format", None) == "channels_first"


def _spatial(tensor, channels_first: bool) -> tuple[int, ...]:
    dims = tuple(tensor.shape[1:])
    if len(dims) < 2:
        return ()
    return dims[1:] if channels_first else dims[:-1]


def _shape_text(tensor) -> str:
    return "x".join("?" if d is None else str(d) for d in tensor.shape[1:])


def model_graph(model) -> tuple[list[Node], list[tuple[int, int]]]:
    """Every call of every operation of `model` (nested models opened) and the tensors between them,
    as (source, target) pairs of node indices, each pair once."""
    found: list[Node] = []
    edges: dict[tuple[int, int], None] = {}

    def walk(owner, prefix: tuple, producer: dict[int, int]) -> None:
        for node in graph.nodes(owner):
            operation = node.operation
            outputs = node.output_tensors
            if not node.input_tensors and all(id(t) in producer for t in outputs):
                continue  # a nested model's input: fed by the node outside that produced it
            if graph.is_container(operation):
                call = operation._inbound_nodes.index(node)
                inner = {id(t): producer[id(outer)] for t, outer in zip(operation.inputs, node.input_tensors)}
                walk(operation, (*prefix, (operation.name, call)), inner)
                for t, inner_output in zip(outputs, operation.outputs):
                    producer[id(t)] = inner[id(inner_output)]
                continue
            spatial = tuple(d for d in _spatial(outputs[0], _channels_first(operation)) if d)
            if type(operation).__name__.startswith(PADDING):  # a border, not a new resolution
                spatial = found[producer[id(node.input_tensors[0])]].spatial
            found.append(Node(key=(prefix, operation.name, operation._inbound_nodes.index(node)),
                              name=operation.name, operation=type(operation).__name__, kind=_kind(operation),
                              spatial=spatial, shape=_shape_text(outputs[0])))
            here = len(found) - 1
            for t in node.input_tensors:
                edges[(producer[id(t)], here)] = None
            for t in outputs:
                producer[id(t)] = here

    walk(model, (), {})
    return found, list(edges)


def conv_key(conv) -> tuple:
    """The `Node.key` of a report's conv call (capture.ConvLayer)."""
    return tuple(zip(conv.path, conv.route[:-1])), conv.layer_name, conv.route[-1]


def build_map(model, convs) -> ArchitectureMap:
    """The laid-out map of `model`, its conv nodes numbered as the report numbers `convs`."""
    import igraph

    nodes, pairs = model_graph(model)
    number = {conv_key(c): c.index for c in convs}
    layout = igraph.Graph(n=len(nodes), edges=pairs, directed=True).layout_sugiyama()
    coords = layout.coords  # (order within the depth, depth), the dummy vertices after the nodes
    sizes = sorted({n.size for n in nodes}, reverse=True)
    named = {n.size: n.spatial for n in nodes}
    band_of = [sizes.index(n.size) for n in nodes]

    # Each edge's dummy vertices carry its source's tensor, so they sit in the source's band, on one
    # line: a long skip connection is one straight run across.
    routes = []
    for (source, _), points in zip(pairs, layout.edge_routing):
        order = sorted(p[0] for p in points)
        routes.append((band_of[source], order[len(order) // 2] if order else None, [p[1] for p in points]))
    spread: dict[int, list[float]] = defaultdict(list)
    for i in range(len(nodes)):
        spread[band_of[i]].append(coords[i][0])
    for band, lane, _ in routes:
        if lane is not None:
            spread[band].append(lane)
    top, bands, y = {}, [], TOP
    for band in range(len(sizes)):
        low, high = min(spread[band]), max(spread[band])
        top[band] = y - low * LANE
        bands.append((y + (high - low) * LANE / 2, "x".join(map(str, named[sizes[band]])) or "flat"))
        y += (high - low) * LANE + CONV_RADIUS * 2 + BAND_GAP

    def place(lane: float, depth: float, band: int) -> tuple[float, float]:
        return LEFT + depth * COLUMN, top[band] + lane * LANE

    placed = [_placed(n, *place(coords[i][0], coords[i][1], band_of[i]), number.get(n.key))
              for i, n in enumerate(nodes)]
    missing = set(number) - {n.key for n in placed}
    if missing:
        raise ValueError(f"the architecture map lost {len(missing)} conv calls")
    edges = []
    for (source, target), (band, lane, depths) in zip(pairs, routes):
        points = [(placed[source].x, placed[source].y), *(place(lane, d, band) for d in depths),
                  (placed[target].x, placed[target].y)]
        edges.append(Edge(source, target, " ".join(f"{x:.0f},{y:.0f}" for x, y in points)))
    width = int(LEFT + max(c[1] for c in coords) * COLUMN + CONV_RADIUS * 2 + 8)
    return ArchitectureMap(placed, edges, bands, width, int(y - BAND_GAP + TOP))


def _placed(node: Node, x: float, y: float, conv: int | None) -> Node:
    return Node(**{**node.__dict__, "x": round(x, 1), "y": round(y, 1), "conv": conv})
