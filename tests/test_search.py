"""The channel search page and the channel view as a dialog, in headless Chromium."""

import base64
import json
import re

import numpy as np
import pytest

import conftest  # noqa: F401  (environment before TensorFlow loads)
from reportgen import catalog
from test_browser import browser  # noqa: F401  (fixture)

pytestmark = pytest.mark.browser


def search_data(site) -> dict:
    text = (site / "data" / "channels.js").read_text()
    data = json.loads(re.fullmatch(r"window\.reportgenChannels = (.*);\n", text, re.S).group(1))
    data["columns"] = {c["key"]: np.frombuffer(base64.b64decode(c["values"]), "<" + c["dtype"]).astype(np.float32)
                       for c in data["columns"]}
    return data


def stats_columns(site) -> dict[str, np.ndarray]:
    """Every channel's numbers from stats.json, in layer order, by their catalog key (stats.json's
    `channels` names them so too)."""
    rows = json.loads((site / "data" / "stats.json").read_text())["layers"]
    return {s.key: np.array([np.nan if v is None else v for row in rows for v in row["channels"][s.key]], float)
            for s in catalog.channel_statistics()}


def test_every_channel_is_a_row_with_the_numbers_of_stats_json(tiny_site):
    data = search_data(tiny_site)
    rows = json.loads((tiny_site / "data" / "stats.json").read_text())["layers"]
    assert [layer["channels"] for layer in data["layers"]] == [row["output_shape"][-1] for row in rows]
    expected = stats_columns(tiny_site)
    for name, values in expected.items():
        found = data["columns"][name].astype(float)
        assert found.shape == values.shape, name
        assert np.array_equal(np.isnan(found), np.isnan(values)), name
        finite = np.isfinite(values)
        assert finite.sum() > 0
        # Four significant digits (channels._numbers, as the channel view), then float16 where it holds
        # every value as a normal number: within half a float16 step (2^-11) of that.
        np.testing.assert_allclose(found[finite], values[finite], rtol=5e-4 + 2.0 ** -11, atol=1e-12, err_msg=name)


def test_thresholds_layer_range_sort_and_open(browser, tiny_site):  # noqa: F811
    expected = stats_columns(tiny_site)
    data = search_data(tiny_site)
    layer_of = np.repeat([layer["index"] for layer in data["layers"]], [layer["channels"] for layer in data["layers"]])
    iou = expected["best_iou_focus"]
    threshold = float(np.nanpercentile(iou, 80))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((tiny_site / "search.html").as_uri())
    total = len(iou)
    assert page.locator("#search-count").inner_text().startswith(f"{total} of {total} channels match")
    keys = [c["key"] for c in json.loads(re.search(r"= (.*);", (tiny_site / "data" / "channels.js").read_text(),
                                                     re.S).group(1))["columns"]]
    k = keys.index("best_iou_focus")
    # The threshold in four digits, as a person types it; the page compares with its own rounded numbers.
    typed = f"{threshold:.4g}"
    page.fill(f"#t{k}-min", typed)
    page.fill("#layer-from", "10")
    page.fill("#layer-to", "40")
    shown = data["columns"]["best_iou_focus"]
    kept = (shown.astype(float) >= float(typed)) & (layer_of >= 10) & (layer_of <= 40)
    assert 0 < kept.sum() < total
    assert page.locator("#search-count").inner_text().startswith(f"{kept.sum()} of {total} channels match")
    # One click sorts a statistic highest first: the first row is the best kept channel.
    page.locator("#search-head button", has_text="Best IoU, pet").click()
    assert page.locator("#search-head th").nth(k + 2).get_attribute("aria-sort") == "descending"
    best = int(np.argmax(np.where(kept, shown, -np.inf)))  # the first of equals, as the page breaks ties
    first = page.locator("#search-table tbody tr").first
    assert float(first.locator("td").nth(k + 2).inner_text()) == pytest.approx(float(shown[best]), rel=2e-3)
    layer = int(layer_of[best])
    channel = int(best - np.flatnonzero(layer_of == layer)[0])
    assert first.locator("td").nth(0).inner_text().startswith(f"{layer}. ")
    first.locator("td").nth(1).locator("a").click()
    page.wait_for_selector("#channel-view:not([hidden])")
    assert page.locator("#channel-view").get_attribute("data-channel") == str(channel)
    assert not errors
    page.close()


@pytest.mark.parametrize("address,canvas", [("search.html", "#scatter"), ("index.html", "#index-scatter")])
def test_the_scatter_names_a_channel_on_hover_and_opens_it(browser, tiny_site, address, canvas):  # noqa: F811
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.goto((tiny_site / address).as_uri())
    canvas = page.locator(canvas)
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    assert box["width"] <= 390
    # Sweep the plot until a point answers: the tip names a conv layer and a channel.
    for y in range(int(box["y"]) + 14, int(box["y"] + box["height"]) - 40, 6):
        for x in range(int(box["x"]) + 50, int(box["x"] + box["width"]) - 12, 6):
            page.mouse.move(x, y)
            if page.locator("#scatter-tip").is_visible():
                break
        else:
            continue
        break
    text = page.locator("#scatter-tip").inner_text()
    found = re.match(r"Conv (\d+) (\S+), channel (\d+):", text)
    assert found, text
    page.mouse.click(x, y)
    page.wait_for_selector("#channel-view:not([hidden])")
    assert page.url.endswith(f"#c{found.group(3)}")
    assert found.group(2) in page.locator("#channel-title").inner_text()
    page.close()


@pytest.mark.parametrize("width,height,theme", [(390, 844, "light"), (1440, 900, "dark")])
def test_the_channel_view_is_a_modal_dialog(browser, tiny_site, width, height, theme):  # noqa: F811
    page = browser.new_page(viewport={"width": width, "height": height}, color_scheme=theme)
    layer = "e4_sa_main_conv1"
    page.goto((tiny_site / "layers" / f"{layer}.html").as_uri() + "#c2")
    view = page.locator("#channel-view")
    assert view.get_attribute("role") == "dialog" and view.get_attribute("aria-modal") == "true"
    label = page.locator("#" + view.get_attribute("aria-labelledby")).inner_text()
    assert "Channel 2 of" in label and layer in label
    assert page.evaluate("document.querySelector('main').inert") is True
    # Tab and Shift+Tab never leave the dialog.
    for key in ["Tab"] * 30 + ["Shift+Tab"] * 30:
        page.keyboard.press(key)
        assert page.evaluate("document.getElementById('channel-view').contains(document.activeElement)"), key
    # Scrolled, the toolbar is still on top: each button is the element under its own centre.
    page.evaluate("document.getElementById('channel-view').scrollTop = 2000")
    for selector in ("[data-channel-step='1']", "#channel-close"):
        hit = page.evaluate("""s => { const b = document.querySelector(s).getBoundingClientRect();
            return document.elementFromPoint(b.x + b.width / 2, b.y + b.height / 2) === document.querySelector(s); }""",
                            selector)
        assert hit, selector
    assert page.evaluate("document.getElementById('channel-view').scrollWidth") <= width
    page.click("#channel-close")
    assert view.is_hidden()
    assert page.evaluate("document.querySelector('main').inert") is False
    page.close()


def test_a_layer_of_1x1_maps_shows_its_channels_as_values(browser, tiny_site):  # noqa: F811
    """daspp_pool_conv's maps are 1x1: each image's channels are bars, highest first, named on hover
    and opened on click; the values are the layer's own (its stats.json-independent colour ranges)."""
    from test_channel_explorer import channel_data

    layer = tiny_site / "layers" / "daspp_pool_conv.html"
    data = channel_data(layer)
    assert data["positions"] == 1
    values = np.array(data["ranges"])  # image x channel x (low, high); low == high for a 1x1 map
    np.testing.assert_array_equal(values[..., 0], values[..., 1])
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.goto(layer.as_uri())
    strips = page.locator(".value-strip")
    assert strips.count() == len(data["images"])
    for i in range(strips.count()):  # one bar a channel: a rectangle of the strip's path of bars
        bars = page.evaluate("i => document.querySelectorAll('.value-strip')[i].querySelector('svg path.bars').getAttribute('d')", i)
        assert len(re.findall(r"M[\d.]+ [\d.]+h0\.8v[\d.]+h-0\.8z", bars)) == data["channels"]
    # The first bar of the first image is its highest channel; hovering names it, clicking opens it.
    highest = int(np.argmax(values[0, :, 1]))
    strip = strips.first
    strip.scroll_into_view_if_needed()
    box = strip.locator("svg").bounding_box()
    page.mouse.move(box["x"] + box["width"] / data["channels"] / 2, box["y"] + box["height"] / 2)
    assert page.locator("#tile-tip").get_attribute("data-channel") == str(highest)
    assert "one value an image" in page.locator("#tile-tip").inner_text()
    page.mouse.click(box["x"] + box["width"] / data["channels"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_selector("#channel-view:not([hidden])")
    assert page.url.endswith(f"#c{highest}")
    # By keyboard: focus the second image's chart, End picks its lowest channel, Enter opens it.
    page.click("#channel-close")
    strips.nth(1).focus()
    page.keyboard.press("End")
    lowest = int(np.lexsort((np.arange(data["channels"]), -values[1, :, 1]))[-1])
    assert page.locator("#tile-tip").get_attribute("data-channel") == str(lowest)
    page.keyboard.press("Enter")
    page.wait_for_selector("#channel-view:not([hidden])")
    assert page.url.endswith(f"#c{lowest}")
    assert page.evaluate("document.scrollingElement.scrollWidth") <= 390
    page.close()


def test_a_layer_page_draws_the_map_and_rings_its_own_node(browser, tiny_site):  # noqa: F811
    """The layer page takes the map from data/architecture.js: its node is ringed, is the link to the
    page itself, and is scrolled into the map's box; another statistic recolours every conv node."""
    page = browser.new_page(viewport={"width": 390, "height": 844})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    address = tiny_site / "layers" / "u3_sa_main_conv2.html"
    page.goto(address.as_uri())
    index = int(re.search(r"<h1>Conv (\d+):", address.read_text()).group(1))
    page.locator(".arch-box").scroll_into_view_if_needed()  # the map is drawn when it comes near the screen
    page.wait_for_selector("svg.arch")
    ringed = page.locator('svg.arch a[aria-current="page"]')
    assert ringed.count() == 1 and ringed.get_attribute("data-conv") == str(index)
    assert (address.parent / ringed.get_attribute("href")).resolve() == address.resolve()
    assert page.locator("svg.arch a.conv").count() == len(list((tiny_site / "layers").glob("*.html")))
    node, box = ringed.locator("circle").bounding_box(), page.locator(".arch-box").bounding_box()
    assert box["x"] <= node["x"] and node["x"] + node["width"] <= box["x"] + box["width"]
    before = page.eval_on_selector_all("svg.arch a.conv circle", "cs => cs.map(c => c.getAttribute('fill'))")
    page.select_option("#arch-statistic", index=2)
    after = page.eval_on_selector_all("svg.arch a.conv circle", "cs => cs.map(c => c.getAttribute('fill'))")
    assert before != after and all(f.startswith("#") for f in after)
    assert not errors
    page.close()
