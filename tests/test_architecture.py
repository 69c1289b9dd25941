"""The architecture map: every conv call once, the model's own connections, a readable U-Net, and on
the site every conv node a link that resolves."""

import html
import re
from collections import defaultdict

import numpy as np
import pytest

import conftest  # noqa: F401  (environment before TensorFlow loads)


def _histories(value):
    """Every keras_history [layer, node, tensor] inside a serialised call's arguments."""
    if isinstance(value, dict):
        if "keras_history" in value.get("config", {}):
            yield tuple(value["config"]["keras_history"][:2])
        for item in value.values():
            yield from _histories(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _histories(item)


def config_edges(model) -> set[tuple]:
    """The model's connections as its saved config states them, independently of reportgen.graph:
    (source layer, its call, target layer, its call)."""
    edges = set()
    for layer in model.get_config()["layers"]:
        for call, node in enumerate(layer["inbound_nodes"]):
            for source, source_call in _histories(node):
                edges.add((source, source_call, layer["name"], call))
    return edges


def map_edges(arch) -> set[tuple]:
    return {(arch.nodes[e.source].name, arch.nodes[e.source].key[2], arch.nodes[e.target].name, arch.nodes[e.target].key[2])
            for e in arch.edges}


def _check_convs_once(arch, convs):
    numbered = [n.conv for n in arch.nodes if n.conv is not None]
    assert sorted(numbered) == [c.index for c in convs]
    for conv in convs:
        node = arch.conv_node(conv.index)
        assert node.name == conv.layer_name


@pytest.mark.parametrize("which", ["sd_unet", "resnet50", "mobilenet_v2"])
def test_every_conv_once_and_the_models_own_connections(which):
    import keras

    from reportgen import architecture, capture
    from reportgen.profiles.sd_unet import build_sd_unet

    model = {"sd_unet": lambda: build_sd_unet(64, 3, 0.125),
             "resnet50": lambda: keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3)),
             "mobilenet_v2": lambda: keras.applications.MobileNetV2(weights=None, input_shape=(64, 64, 3),
                                                                    alpha=0.35)}[which]()
    convs = capture.find_conv_layers(model)
    arch = architecture.build_map(model, convs)
    _check_convs_once(arch, convs)
    assert len(arch.nodes) == len(model.layers)  # one call each: every layer, the input included
    assert map_edges(arch) == config_edges(model)
    for node in arch.nodes:  # inside the picture
        assert 0 < node.x < arch.width and 0 < node.y < arch.height


def test_the_sd_unet_is_a_u_with_straight_skips():
    """The bands are the resolutions, largest at the top: the encoder's convs step down, the decoder's
    step back up, and each skip connection runs across at its own size."""
    from reportgen import architecture, capture
    from reportgen.profiles.sd_unet import build_sd_unet

    model = build_sd_unet(64, 3, 0.125)
    convs = capture.find_conv_layers(model)
    arch = architecture.build_map(model, convs)
    ys = defaultdict(set)
    for conv in convs:
        ys[conv.output_shape[0]].add(arch.conv_node(conv.index).y)
    sides = sorted(ys, reverse=True)
    for larger, smaller in zip(sides, sides[1:]):
        assert max(ys[larger]) < min(ys[smaller]), (larger, smaller)
    # The encoder's main-path convs go down, the decoder's come back up, along x (depth).
    main = [(arch.conv_node(c.index).x, c.output_shape[0]) for c in convs if "main" in c.name or "up" in c.name]
    main.sort()
    deepest = min(side for _, side in main)
    bottom = [x for x, side in main if side == deepest]
    assert all(side >= deepest for _, side in main)
    assert main[0][1] > deepest and main[-1][1] > deepest and min(bottom) > main[0][0]
    # The four skips (each encoder's SA output into the decoder's concatenation) are straight.
    concatenations = {i for i, n in enumerate(arch.nodes) if n.operation == "Concatenate"}
    skips = [e for e in arch.edges if e.target in concatenations and arch.nodes[e.source].operation == "Add"
             and arch.nodes[e.target].x - arch.nodes[e.source].x > 10 * architecture.COLUMN]
    assert len(skips) == 4
    for edge in skips:
        inner = [float(p.split(",")[1]) for p in edge.points.split()[1:-1]]
        assert inner and len(set(inner)) == 1, edge.points


def test_a_nested_model_is_opened_and_numbered_as_the_report():
    import keras

    from reportgen import architecture, capture

    inner_in = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="tower_conv1")(inner_in)
    x = keras.layers.Conv2D(4, 3, padding="same", name="tower_conv2")(keras.layers.ReLU(name="tower_relu")(x))
    tower = keras.Model(inner_in, x, name="tower")
    image = keras.Input((16, 16, 3))
    merged = keras.layers.Add(name="merge")([tower(image), keras.layers.Conv2D(4, 1, name="side")(image)])
    y = keras.layers.Conv2D(6, 1, name="head_conv")(merged)
    model = keras.Model(image, y)
    convs = capture.find_conv_layers(model)
    assert {c.layer_name for c in convs} == {"tower_conv1", "tower_conv2", "side", "head_conv"}
    arch = architecture.build_map(model, convs)
    _check_convs_once(arch, convs)
    assert not any(n.name == "tower" for n in arch.nodes)  # opened up, not one box
    names = {(arch.nodes[e.source].name, arch.nodes[e.target].name) for e in arch.edges}
    assert {("tower_conv1", "tower_relu"), ("tower_relu", "tower_conv2"), ("tower_conv2", "merge"),
            ("side", "merge"), ("merge", "head_conv")} <= names
    assert any(target == "tower_conv1" and arch.nodes[[n.name for n in arch.nodes].index(source)].kind == "input"
               for source, target in names)


def test_the_sites_map_links_every_conv_once_and_marks_the_layer(tiny_site):
    """The index and every layer page draw one map from data/architecture.js: its links start at the
    site's root (`@root/`), which each page's script makes its own way there; no page inlines it."""
    svg = _architecture_data(tiny_site)["svg"]
    assert svg.startswith('<svg class="arch"')
    links = re.findall(r'<a href="@root/([^"]+)" class="conv[^"]*"[^>]*data-conv="(\d+)"', svg)
    layers = sorted((tiny_site / "layers").glob("*.html"))
    assert sorted(int(k) for _, k in links) == list(range(1, len(layers) + 1))
    assert all((tiny_site / html.unescape(href)).is_file() for href, _ in links)
    assert {html.unescape(href) for href, _ in links} == {f"layers/{p.name}" for p in layers}
    assert len(re.findall(r'href="', svg)) == len(links)  # every link starts at the root
    edges = re.findall(r'<polyline points="[^"]+" data-from="(\d+)" data-to="(\d+)"', svg)
    assert len(edges) > len(links)
    index = (tiny_site / "index.html").read_text()
    box = re.search(r'<div class="arch-box"[^>]*>', index).group(0)
    assert 'data-script="data/architecture.js"' in box and 'data-root=""' in box and "data-current" not in box
    page = next(p for p in layers if p.name.startswith("e3_sa_main_conv1"))
    box = re.search(r'<div class="arch-box"[^>]*>', page.read_text()).group(0)
    assert f'data-current="{_conv_index(page)}"' in box and 'data-root="../"' in box
    assert '<svg class="arch"' not in page.read_text() and '<svg class="arch"' not in index


def _architecture_data(site) -> dict:
    import json

    text = (site / "data" / "architecture.js").read_text()
    prefix = "window.reportgenArchitecture = "
    assert text.startswith(prefix) and text.endswith(";\n")
    return json.loads(text[len(prefix):-2])


def _conv_index(page) -> int:
    return int(re.search(r"<h1>Conv (\d+):", page.read_text()).group(1))


def test_the_map_is_coloured_by_the_chosen_statistic(tiny_site):
    """The default colouring is the layer table's first statistic, the mask probe's pet IoU, on the
    site's colour map: the layer where stats.json's value is highest is viridis' last colour, the
    lowest its first; every other choice carries a colour for every conv layer."""
    import json

    index = (tiny_site / "index.html").read_text()
    rows = json.loads((tiny_site / "data" / "stats.json").read_text())["layers"]
    probe = [np.nan if row["probe_iou"]["pet"] is None else row["probe_iou"]["pet"] for row in rows]
    data = _architecture_data(tiny_site)
    drawn = [int(k) for k in re.findall(r'<a href="[^"]+" class="conv[^"]*"[^>]*data-conv="(\d+)"', data["svg"])]
    fills = {k: data["fills"][0][k - 1] for k in drawn}  # what site.js paints for the first choice
    assert len(fills) == len(rows)
    assert fills[rows[int(np.nanargmax(probe))]["index"]] == "#fde725"
    assert fills[rows[int(np.nanargmin(probe))]["index"]] == "#440154"
    choice = re.search(r'<select id="arch-statistic">(.*?)</select>', index, re.S).group(1)
    assert re.findall(r">([^<]+)</option>", choice)[0] == "Mask decodability (probe IoU, pet)"
    assert len(data["fills"]) == choice.count("<option") > 3
    assert all(len(fill) == len(rows) for fill in data["fills"])
