"""The channel explorer: every tile names its channel, every channel has a view with a link, and the
dataset examples are each channel's strongest images, checked against the model's own output."""

import base64
import json
import re
from pathlib import Path
from urllib.parse import urljoin, urlparse

import keras
import numpy as np
import pytest
from keras import layers
from PIL import Image
from playwright.sync_api import expect

from reportgen.cli import app
from reportgen.render import GridLayout
from test_browser import browser, http_root  # noqa: F401  (fixtures)

LAYER = "e4_sa_main_conv1"  # 8 x 8 x 32 in the tiny model: four rows of tiles


def channel_data(page: Path) -> dict:
    """A layer page's channel data, its packed numbers read back: `ranges` as per image, per channel
    (low, high), and the examples' `items` as per channel [value, image slot, top, left]."""
    found = re.search(r'<script type="application/json" id="channel-data"[^>]*>(.*?)</script>', page.read_text(),
                      re.S)
    data = json.loads(found.group(1))
    data["ranges"] = [_words(text).view(np.float16).astype(float).reshape(-1, 2).tolist() for text in data["ranges"]]
    if data["examples"]:
        words = _words(data["examples"]["items"]).reshape(-1, 4)
        rows = [[float(np.uint16(w[0]).view(np.float16)), int(w[1]), int(w[2]), int(w[3])] for w in words]
        ends = np.cumsum([0, *data["examples"]["counts"]])
        data["examples"]["items"] = [rows[a:b] for a, b in zip(ends[:-1], ends[1:])]
    return data


def _words(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<u2")


def _layer_stats(site: Path, slug: str) -> dict:
    rows = json.loads((site / "data" / "stats.json").read_text())["layers"]
    return next(row for row in rows if row["name"] == slug)


def _tile_centre(page, layout: GridLayout, rank: int) -> tuple[float, float]:
    """Where the tile of `rank` is on the screen, from the grid picture's layout alone."""
    box = page.locator(".tiles img").first.bounding_box()
    column, row = rank % layout.columns, rank // layout.columns
    scale = box["width"] / layout.width
    return (box["x"] + (column * (layout.tile_w + layout.gap) + layout.tile_w / 2) * scale,
            box["y"] + (row * (layout.tile_h + layout.gap) + layout.tile_h / 2) * scale)


def _open(browser, url: str):
    """A page that records every request that leaves the site."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    base = urlparse(url)
    page.outside = []
    page.errors = []
    page.on("request", lambda r: page.outside.append(r.url) if urlparse(r.url).scheme not in ("file", "data")
            and urlparse(r.url).netloc != base.netloc else None)
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(url)
    return page


@pytest.mark.browser
@pytest.mark.parametrize("where", ["file", "http"])
def test_hover_focus_click_keys_and_back(browser, tiny_site, http_root, where):  # noqa: F811
    row = _layer_stats(tiny_site, LAYER)
    ranking = row["channel_ranking"]
    layout = GridLayout.for_maps(*row["output_shape"])
    url = (tiny_site / "layers" / f"{LAYER}.html").as_uri() if where == "file" else \
        urljoin(http_root, f"layers/{LAYER}.html")
    page = _open(browser, url)
    page.click("button.expand")  # every tile visible
    for rank in (0, 1, layout.columns, len(ranking) - 1):
        page.mouse.move(*_tile_centre(page, layout, rank))
        expect(page.locator("#tile-tip")).to_have_attribute("data-channel", str(ranking[rank]))
        expect(page.locator("#tile-tip")).to_contain_text(f"Channel {ranking[rank]} · rank {rank + 1} of")

    view = page.locator("#channel-view")

    def showing(channel: int) -> None:
        """The view shows `channel` and the address names it (navigation events may come later: wait)."""
        expect(page).to_have_url(re.compile(rf"#c{channel}$"))
        expect(view).to_be_visible()
        expect(view).to_have_attribute("data-channel", str(channel))

    page.mouse.click(*_tile_centre(page, layout, 2))
    showing(ranking[2])
    assert page.text_content("#channel-title").startswith(f"Channel {ranking[2]} of {len(ranking)}")
    page.keyboard.press("ArrowRight")
    showing(ranking[3])
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    showing(ranking[1])
    page.go_back()
    showing(ranking[2])
    page.keyboard.press("Escape")
    expect(view).to_be_hidden()
    assert "#" not in page.url
    page.go_back()  # Back after Esc reopens the channel it closed
    showing(ranking[2])
    page.keyboard.press("Escape")
    expect(view).to_be_hidden()

    page.focus(".tiles")  # the keyboard way: focus a grid, move with the arrows, Enter opens
    expect(page.locator("#tile-tip")).to_have_attribute("data-channel", str(ranking[0]))
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowRight")
    expect(page.locator("#tile-tip")).to_have_attribute("data-channel", str(ranking[layout.columns + 1]))
    page.keyboard.press("Enter")
    showing(ranking[layout.columns + 1])
    assert page.outside == [] and page.errors == []
    page.close()


@pytest.mark.browser
def test_deep_link_opens_the_view_with_every_picture_decoding(browser, tiny_site):  # noqa: F811
    row = _layer_stats(tiny_site, LAYER)
    channel = row["channel_ranking"][5]
    page = _open(browser, (tiny_site / "layers" / f"{LAYER}.html").as_uri() + f"#c{channel}")
    expect(page.locator("#channel-view")).to_have_attribute("data-channel", str(channel))
    expect(page.locator("#channel-view")).to_be_visible()
    stats_text = page.text_content("#channel-stats")
    assert "6 of 32" in stats_text and f"{row['channels']['strength'][channel]:.3g}"[:4] in stats_text
    assert page.locator("#channel-images figure").count() == 4
    assert page.locator("#channel-examples figure").count() == 4  # 4 statistics images: 4 examples
    # The packed numbers, read back by the page, are the page's own numbers (read back here independently).
    data = channel_data(tiny_site / "layers" / f"{LAYER}.html")
    low, high = data["ranges"][0][channel]
    assert low < high and page.text_content("#channel-images figcaption") \
        .endswith(f"range {float(f'{low:.3g}'):g} to {float(f'{high:.3g}'):g}")
    first_value = data["examples"]["items"][channel][0][0]
    assert page.text_content("#channel-examples figcaption").startswith(f"{float(f'{first_value:.3g}'):g} · ")
    # Every picture the channel data refers to decodes: the examples' images and each tile's grid.
    sources = page.evaluate("""Array.from(document.querySelectorAll('[data-src]')).map(e => e.dataset.src)
        .concat(Array.from(document.querySelectorAll('.tiles img')).map(i => i.src))""")
    sizes = page.evaluate("""srcs => Promise.all(srcs.map(src => new Promise(done => {
        const image = new Image(); image.onload = () => done(image.naturalWidth);
        image.onerror = () => done(0); image.src = src; })))""", sources)
    assert len(sizes) >= 8 and all(sizes)
    assert page.outside == [] and page.errors == []
    page.close()


def test_index_and_filmstrip_link_strongest_channels(tiny_site):
    row = _layer_stats(tiny_site, LAYER)
    index = (tiny_site / "index.html").read_text()
    assert f'href="layers/{LAYER}.html#c{row["channel_ranking"][0]}"' in index
    assert f'href="layers/{LAYER}.html#c{row["channel_ranking"][2]}"' in index
    image_page = sorted((tiny_site / "images").glob("*.html"))[0]
    assert f'href="../layers/{LAYER}.html#c{row["channel_ranking"][0]}"' in image_page.read_text()


def test_channel_data_matches_stats_json(tiny_site):
    row = _layer_stats(tiny_site, LAYER)
    data = channel_data(tiny_site / "layers" / f"{LAYER}.html")
    assert data["order"] == row["channel_ranking"]
    strength = next(m["values"] for m in data["stats"] if m["name"].startswith("Strength"))
    np.testing.assert_allclose(strength, row["channels"]["strength"], rtol=1e-3)
    assert len(data["ranges"]) == 4 and all(low <= high for image in data["ranges"] for low, high in image)


# --- a model whose channel K fires only on a red patch ----------------------------------------------------

RED = 2  # the detecting channel
PATCH_AT = (10, 30)  # top left of the 6 x 6 red patch, in a 32 x 48 image


@pytest.fixture(scope="module")
def red_detector(tmp_path_factory):
    """Channel RED of conv `detect` is relu(R - G - B) at the centre tap: zero on every grey pixel,
    255 on pure red. Eleven grey noise images and, not among the 4 pictured, one with a red patch."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((32, 48, 3))
    detect = layers.Conv2D(4, 3, padding="same", activation="relu", name="detect")
    x = detect(inputs)
    model = keras.Model(inputs, layers.Conv2D(2, 1, activation="softmax", name="head")(x))
    kernel, bias = detect.get_weights()
    kernel[..., RED] = 0.0
    kernel[1, 1, :, RED] = (1.0, -1.0, -1.0)
    bias[RED] = 0.0
    detect.set_weights([kernel, bias])
    root = tmp_path_factory.mktemp("red")
    model.save(root / "red.keras")
    rng = np.random.default_rng(0)
    folder = root / "images"
    folder.mkdir()
    for i in range(12):
        grey = np.repeat(rng.integers(0, 256, (32, 48, 1), dtype=np.uint8), 3, axis=-1)
        if i == 9:
            grey[PATCH_AT[0]:PATCH_AT[0] + 6, PATCH_AT[1]:PATCH_AT[1] + 6] = (255, 0, 0)
        Image.fromarray(grey).save(folder / f"img{i:02d}.png")
    return model, root


@pytest.mark.parametrize("stats_images", [None, "all"])
def test_the_channel_that_fires_on_a_patch_finds_it_first(red_detector, runner, tmp_path, stats_images):
    model, root = red_detector
    args = ["build", "--model", str(root / "red.keras"), "--image-dir", str(root / "images"), "--images", "4",
            "--out", str(tmp_path / "site"), "-q", "--workers", "1"]
    if stats_images:
        args += ["--stats-images", stats_images]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    examples = channel_data(tmp_path / "site" / "layers" / "detect.html")["examples"]
    items = examples["items"][RED]
    first = examples["images"][items[0][1]]
    red = np.asarray(Image.open(root / "images" / "img09.png"), np.float32)
    own_peak = float(keras.Model(model.inputs, model.get_layer("detect").output)(red[None])[0, ..., RED].numpy().max())
    if stats_images is None:  # the 4 pictured images are all grey: the channel is zero on all of them
        assert all(value == 0.0 for value, *_ in items) and first["id"] != "img09.png"
        return
    assert first["id"] == "img09.png" and first["href"] is None  # not pictured: shown by its id
    download = next(row for row in json.loads((tmp_path / "site" / "data" / "stats.json").read_text())["layers"]
                    if row["name"] == "detect")["dataset_examples"]
    slot, value = download["per_channel"][RED][0]
    assert download["images"][slot] == "img09.png" and value == pytest.approx(255.0, rel=1e-3)
    assert items[0][0] == pytest.approx(own_peak, rel=1e-3) and own_peak == pytest.approx(255.0)
    assert all(value == 0.0 for value, *_ in items[1:])
    top, left, side = items[0][2], items[0][3], examples["side"]
    assert PATCH_AT[0] - side < top <= PATCH_AT[0] + 6 and PATCH_AT[1] - side < left <= PATCH_AT[1] + 6
    picture = Image.open(tmp_path / "site" / first["src"]).convert("RGB")
    assert picture.size == (48, 32)
    crop = np.asarray(picture, np.int32)[top:top + side, left:left + side]
    assert (crop[..., 0] - crop[..., 1] > 150).any()  # the crop shows the red patch


def test_page_numbers_keep_four_significant_digits():
    from reportgen.channels import _numbers

    values = np.random.default_rng(0).standard_normal(2000) * 10.0 ** np.random.default_rng(1).integers(-8, 8, 2000)
    assert _numbers(values) == [float(f"{v:.4g}") for v in values]
    assert _numbers([np.nan, np.inf, 0.0]) == [None, None, 0.0]


@pytest.mark.browser
def test_a_constant_channel_is_not_given_a_rank(red_detector, runner, tmp_path, browser):  # noqa: F811
    """On the 4 grey images the red detector's channel is 0 everywhere: its view says it is constant
    rather than ranking it among the others; a ranked channel keeps its rank."""
    model, root = red_detector
    out = tmp_path / "site"
    result = runner.invoke(app, ["build", "--model", str(root / "red.keras"), "--image-dir", str(root / "images"),
                                 "--images", "4", "--out", str(out), "-q", "--workers", "1"])
    assert result.exit_code == 0, result.output
    row = _layer_stats(out, "detect")
    assert row["channels"]["strength"][RED] == 0
    page = _open(browser, (out / "layers" / "detect.html").as_uri() + f"#c{RED}")
    expect(page.locator("#channel-view")).to_be_visible()
    assert page.text_content("#channel-heading") == f"Channel {RED} of 4 · constant on every image, not ranked"
    strongest = row["channel_ranking"][0]
    if row["channels"]["strength"][strongest] > 0:
        page.goto((out / "layers" / "detect.html").as_uri() + f"#c{strongest}")
        expect(page.locator("#channel-title")).to_contain_text(f"Channel {strongest} of 4 · rank 1")
    index = _open(browser, (out / "index.html").as_uri())
    boxes = index.evaluate("Array.from(document.querySelectorAll('td.strongest a')).map(a => "
                           "[a.getBoundingClientRect().width, a.getBoundingClientRect().height])")
    assert boxes and min(min(box) for box in boxes) >= 24  # WCAG 2.2 target size
    assert page.errors == [] and index.errors == []
    page.close()
    index.close()


@pytest.mark.browser
@pytest.mark.parametrize("where", ["file", "http"])
def test_grad_cam_filmstrip_and_the_most_important_channels(browser, tiny_site, http_root, where):  # noqa: F811
    """An image page's Grad-CAM tile leads to its layer's Grad-CAM; the layer's most important
    channel, by the Taylor importances of stats.json, opens in the channel view ranked first."""
    image = sorted((tiny_site / "images").glob("*.html"))[0].name
    url = (tiny_site / "images" / image).as_uri() if where == "file" else urljoin(http_root, f"images/{image}")
    page = _open(browser, url)
    strip = page.locator("ol.filmstrip").nth(1).locator("img")
    assert strip.count() == 51
    assert page.evaluate("Array.from(document.querySelectorAll('ol.filmstrip')[1].querySelectorAll('img'))"
                         ".every(i => (i.loading = 'eager') && true)")
    page.wait_for_function("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    page.locator("ol.filmstrip").nth(1).locator("a").nth(45).click()
    assert page.url.endswith("#gradcam-h")
    assert page.locator("#gradcam-h").is_visible()
    layer = urlparse(page.url).path.rsplit("/", 1)[-1][:-len(".html")]
    importance = np.array(_layer_stats(tiny_site, layer)["channels"]["taylor_importance"], np.float64)
    first = page.locator("section[aria-labelledby=gradcam-h] a.channel-link").first
    assert first.inner_text() == str(int(np.argmax(importance)))
    first.click()
    expect(page.locator("#channel-view")).to_be_visible()
    expect(page.locator("#channel-stats")).to_contain_text("Taylor importance")
    row = page.locator("#channel-stats tr", has_text="Taylor importance")
    expect(row).to_contain_text("1st highest of the layer")
    assert page.outside == [] and page.errors == []
