"""The built site in real headless Chromium: every link, every image, no errors, keyboard works."""

import functools
import http.server
import threading
from pathlib import Path
from collections import deque
from urllib.parse import unquote, urldefrag, urljoin, urlparse

import numpy as np
import pytest

pytestmark = pytest.mark.browser


@pytest.fixture()
def browser(browser):
    """The session's one Chromium (conftest); named here too because other modules import it from here."""
    return browser


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@pytest.fixture(scope="module")
def http_root(tiny_site):
    handler = functools.partial(_QuietHandler, directory=str(tiny_site.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # Served under a sub-path, as GitHub Pages serves a project site.
    yield f"http://127.0.0.1:{server.server_address[1]}/{tiny_site.name}/"
    server.shutdown()


# True once site.js has drawn every part it draws only when the part comes near the screen, from a
# data script (whenNear: a layer page's architecture map, the index's map colours and channel scatter).
LATE_PARTS_DRAWN = "() => !document.querySelector('[data-script]')"


def show_late_parts(page) -> None:
    """Bring each part that loads its data near the screen into view, wait until all are drawn, and
    scroll back to the top: the page as a reader who has scrolled through it has it."""
    for part in page.query_selector_all("[data-script]"):
        part.scroll_into_view_if_needed()
        page.wait_for_function("part => !part.hasAttribute('data-script')", arg=part, timeout=15000)
    assert page.evaluate(LATE_PARTS_DRAWN)
    page.evaluate("window.scrollTo(0, 0)")


def _crawl(browser, start: str):
    """Visit every internal page reachable from `start`; return problems found and pages seen."""
    base = urlparse(start)
    problems, seen = [], set()
    queue = deque([start])
    page = browser.new_page()
    console = []
    page.on("console", lambda m: console.append(m) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"script error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed request: {r.url}"))

    def on_request(request):
        parsed = urlparse(request.url)
        if parsed.scheme not in ("file", "data") and parsed.netloc != base.netloc:
            problems.append(f"external request: {request.url}")

    page.on("request", on_request)
    while queue:
        url = queue.popleft()
        if url in seen:
            continue
        seen.add(url)
        response = page.goto(url)
        if response is not None and not response.ok:
            problems.append(f"{response.status} for {url}")
            continue
        page.evaluate("document.querySelectorAll('img').forEach(i => i.loading = 'eager')")
        page.wait_for_load_state("load")
        show_late_parts(page)  # their data scripts are requested, and checked, too
        page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=15000)
        broken = page.evaluate("Array.from(document.images).filter(i => !i.naturalWidth).map(i => i.src)")
        problems.extend(f"image does not decode: {src}" for src in broken)
        # getAttribute, not a.href: the architecture map's links are SVG <a>, whose href is an object.
        for href in page.evaluate("Array.from(document.querySelectorAll('a[href]'), "
                                  "a => new URL(a.getAttribute('href'), document.baseURI).href)"):
            target, _ = urldefrag(href)
            parsed = urlparse(target)
            if parsed.scheme in ("http", "https") and parsed.netloc != base.netloc:
                problems.append(f"external link {href} on {url}")
            elif target.endswith(".html") and target not in seen:
                queue.append(target)
            elif target and not target.endswith(".html"):
                check = page.context.request.get(target) if parsed.scheme != "file" else None
                if check is not None and not check.ok:
                    problems.append(f"broken download {target}")
    problems.extend(f"console error: {m.text}" for m in console)
    page.close()
    return problems, seen


@pytest.mark.parametrize("where", ["file", "http"])
def test_every_link_image_and_script_works(browser, tiny_site, http_root, where):
    start = (tiny_site / "index.html").as_uri() if where == "file" else urljoin(http_root, "index.html")
    problems, seen = _crawl(browser, start)
    assert problems == []
    pages = {urlparse(u).path.rsplit("/", 2)[-2] + "/" + urlparse(u).path.rsplit("/", 1)[-1] for u in seen}
    assert sum(p.startswith("layers/") for p in pages) == 51
    assert sum(p.startswith("images/") for p in pages) == 4


@pytest.mark.parametrize("address,script,part", [("index.html", "data/channels.js", "#index-scatter"),
                                                  ("index.html", "data/architecture.js", ".arch-box"),
                                                  ("layers/e3_sa_main_conv1.html", "data/architecture.js", ".arch-box")])
def test_a_data_script_waits_until_its_part_is_near_the_screen(browser, tiny_site, http_root, address, script, part):
    """The index's channel numbers (its largest file) and the architecture map's data are loaded when the
    scatter or the map comes within a screen of view, not before the first screen is shown: Lighthouse
    found a phone's first screen of the index waiting for them (largest contentful paint 3.6 s), and
    drawing the scatter was the index's longest task (0.7 s on a slowed CPU)."""
    page = browser.new_page(viewport={"width": 390, "height": 844})
    requested = []
    page.on("request", lambda request: requested.append(urlparse(request.url).path))
    page.goto(urljoin(http_root, address), wait_until="load")
    page.wait_for_timeout(300)
    assert not [path for path in requested if path.endswith(script)]
    page.locator(part).scroll_into_view_if_needed()
    page.wait_for_function("part => !document.querySelector(part).hasAttribute('data-script')", arg=part,
                           timeout=15000)
    assert [path for path in requested if path.endswith(script)]
    if part == ".arch-box":  # the drawing's links, written from the site's root, lead from this page
        # An SVG link's `href` is an animated string, not its address: its attribute, resolved from the page.
        hrefs = page.eval_on_selector_all(".arch-box svg.arch a.conv", "links => links.map(a => a.getAttribute('href'))")
        assert len(hrefs) == 51
        within = [unquote(urljoin(page.url, href)[len(http_root):]) for href in hrefs]
        assert all((tiny_site / path).is_file() for path in within), within[:3]
    page.close()


def test_a_classifier_site_without_masks_works_too(browser, classifier_site):
    problems, seen = _crawl(browser, (classifier_site / "index.html").as_uri())
    assert problems == []
    layer_pages = [u for u in seen if "/layers/" in u]
    assert len(layer_pages) == len(list((classifier_site / "layers").glob("*.html"))) == 52
    page = browser.new_page()
    page.goto((classifier_site / "index.html").as_uri())
    said = page.evaluate("Array.from(document.querySelectorAll('#images .said')).map(e => e.textContent)")
    assert len(said) == 4 and all("cat" in line and "<b>bird</b>" in line for line in said)  # top classes, as text
    assert page.evaluate("document.querySelectorAll('#images .said b').length") == 0
    card = page.text_content("dl.card")
    assert "cat, dog, <b>bird</b>" in card and "--preprocess tf" in card and "pet, background" not in card
    headings = page.evaluate("Array.from(document.querySelectorAll('#layer-table th')).map(e => e.textContent)")
    assert "Class probe acc." in headings and "Probe IoU" not in headings
    page.close()


def test_arrow_keys_move_between_layers(browser, tiny_site):
    page = browser.new_page()
    first = sorted((tiny_site / "layers").glob("*.html"))[0]
    page.goto(first.as_uri())
    start_title = page.title()
    next_href = page.get_attribute('a[data-key="next"]', "href")
    with page.expect_navigation():
        page.keyboard.press("ArrowRight" if next_href else "ArrowLeft")  # the first file may be the last layer
    assert page.title() != start_title
    moved = page.url
    with page.expect_navigation():
        page.keyboard.press("ArrowLeft" if next_href else "ArrowRight")
    assert page.url.endswith(first.name) and page.url != moved
    page.close()


def test_layer_table_sorts_and_filters(browser, tiny_site):
    page = browser.new_page()
    page.goto((tiny_site / "index.html").as_uri())
    first_cells = "Array.from(document.querySelectorAll('#layer-table tbody tr')).map(r => r.cells[0].textContent)"
    assert page.evaluate(first_cells)[:3] == ["1", "2", "3"]
    page.click("#layer-table th:nth-child(1) button")
    page.click("#layer-table th:nth-child(1) button")
    assert page.evaluate(first_cells)[0] == "51"
    page.fill("#layer-filter", "daspp")
    visible = page.evaluate("Array.from(document.querySelectorAll('#layer-table tbody tr')).filter(r => !r.hidden).length")
    assert visible == 6
    assert "6 of 51" in page.text_content("#layer-count")
    page.fill("#layer-filter", "")
    page.click("#layer-table th:nth-child(5) button")  # Output: by the map's size, then channels
    shapes = page.evaluate("Array.from(document.querySelectorAll('#layer-table tbody tr'))"
                           ".map(r => r.cells[4].textContent)")
    dims = [[int(d) for d in shape.split("x")] for shape in shapes]
    sizes = [(int(np.prod(d[:-1])) if len(d) > 1 else 0, d[-1]) for d in dims]
    assert sizes == sorted(sizes) and sizes[0] != sizes[-1]
    page.close()


def test_channel_grids_expand_and_theme_toggles(browser, tiny_site):
    page = browser.new_page()
    layer = next(p for p in (tiny_site / "layers").glob("*.html") if "e5_sa_main_conv1" in p.name)
    page.goto(layer.as_uri())
    clipped = page.evaluate("document.querySelector('.grid .clip').getBoundingClientRect().height")
    label = page.text_content("button.expand")
    page.click("button.expand")
    expanded = page.evaluate("document.querySelector('.grid .clip').getBoundingClientRect().height")
    assert expanded > clipped
    assert page.get_attribute("button.expand", "aria-expanded") == "true"
    assert page.text_content("button.expand") != label
    page.click("button.expand")
    assert page.text_content("button.expand") == label  # the same words after collapsing
    page.click("button.expand")
    page.click("#theme-toggle")
    assert page.evaluate("document.documentElement.getAttribute('data-theme')") in ("dark", "light")
    page.close()


def test_charts_follow_the_theme(browser, tiny_site):
    page = browser.new_page(color_scheme="light")
    page.goto((tiny_site / "index.html").as_uri())
    # Lazy pictures have no currentSrc until they load: load them all.
    page.evaluate("document.querySelectorAll('img.chart').forEach(i => i.loading = 'eager')")
    page.wait_for_function("Array.from(document.querySelectorAll('img.chart')).every(i => i.complete)")
    shown = "Array.from(document.querySelectorAll('img.chart')).filter(i => i.offsetParent).map(i => i.currentSrc)"
    assert all(src.endswith("-light.svg") for src in page.evaluate(shown)) and page.evaluate(shown)
    page.click("#theme-toggle")
    assert page.evaluate("document.documentElement.getAttribute('data-theme')") == "dark"
    assert all(src.endswith("-dark.svg") for src in page.evaluate(shown)) and page.evaluate(shown)
    page.close()


def test_every_page_has_its_own_meta_description(tiny_site):
    import html
    import re

    found = {}
    for page in tiny_site.rglob("*.html"):
        match = re.search(r'<meta name="description" content="([^"]+)">', page.read_text())
        assert match and len(match.group(1)) > 40, page
        found[page.relative_to(tiny_site).as_posix()] = html.unescape(match.group(1))
    layers = [v for k, v in found.items() if k.startswith("layers/")]
    assert len(set(layers)) == len(layers) and all("every channel on every image" in v for v in layers)


def _contrast(rgb_a: str, rgb_b: str) -> float:
    """WCAG 2 contrast ratio of two CSS rgb() colours, written out."""
    def luminance(text):
        channels = [int(v) / 255 for v in text[text.index("(") + 1:text.index(")")].split(",")[:3]]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    high, low = sorted((luminance(rgb_a), luminance(rgb_b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_the_error_map_legend_meets_aa_contrast(browser, tiny_site, theme):
    page = browser.new_page()
    image = sorted((tiny_site / "images").glob("*.html"))[0]
    page.goto(image.as_uri())
    page.evaluate(f"document.documentElement.setAttribute('data-theme', '{theme}')")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    for word in (".blue", ".orange"):
        colour = page.evaluate(f"getComputedStyle(document.querySelector('figcaption {word}')).color")
        assert _contrast(colour, background) >= 4.5, (theme, word, colour, background)
    page.close()


def test_no_page_scrolls_sideways_on_a_phone(browser, runner, tmp_path):
    """390 px wide: a model of 70 conv layers (its depth charts have 70 bars) and an image whose file
    name is one long word. No page kind is wider than the screen."""
    import keras
    from keras import layers
    from PIL import Image

    from reportgen.cli import app

    inputs = keras.Input((16, 16, 3))
    x = inputs
    for k in range(70):
        x = layers.Conv2D(4, 1, activation="relu", name=f"c{k}")(x)
    model = keras.Model(inputs, layers.Conv2D(3, 1, activation="softmax", name="head")(x))
    model.save(tmp_path / "deep.keras")
    images = tmp_path / "images"
    images.mkdir()
    pixels = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(images / f"{'a_very_long_unbroken_file_name_' * 3}.png")
    Image.fromarray(pixels[::-1]).save(images / "short.png")
    out = tmp_path / "site"
    result = runner.invoke(app, ["build", "--model", str(tmp_path / "deep.keras"), "--image-dir", str(images),
                                 "--images", "2", "--out", str(out), "-q", "--workers", "1"])
    assert result.exit_code == 0, result.output
    pages = [out / "index.html", out / "about.html", out / "changes.html", out / "search.html",
             out / "layers" / "c35.html", *sorted((out / "images").glob("*.html"))]
    for width, height, theme in ((390, 844, "light"), (390, 844, "dark"), (1440, 900, "light"), (1440, 900, "dark")):
        page = browser.new_page(viewport={"width": width, "height": height}, color_scheme=theme)
        for url in [path.as_uri() for path in pages] + [(out / "layers" / "c35.html").as_uri() + "#c1"]:
            page.goto(url)
            page.wait_for_timeout(50)
            assert page.evaluate("document.scrollingElement.scrollWidth") <= width, (width, theme, url)
            assert page.evaluate("document.getElementById('channel-view')?.scrollWidth ?? 0") <= width, (width, theme, url)
        page.close()


@pytest.mark.parametrize("width,height,theme", [(390, 844, "light"), (1440, 900, "dark")])
def test_chart_text_is_between_11_px_and_the_body_text(browser, tiny_site, width, height, theme):
    """Each chart the page shows, in the drawing the browser picked for this width: every text's
    size on the screen, from the SVG's own font sizes and viewBox and the picture's shown width."""
    import re
    from urllib.parse import unquote, urlparse

    from reportgen.charts import NARROW_BELOW

    # The stylesheet sizes the narrow drawings below the width at which the pages switch to them.
    assert f"@media (max-width: {NARROW_BELOW - 1}px)" in (tiny_site / "assets" / "style.css").read_text()
    page = browser.new_page(viewport={"width": width, "height": height}, color_scheme=theme)
    page.goto((tiny_site / "index.html").as_uri())
    page.evaluate("document.querySelectorAll('img.chart').forEach(i => i.loading = 'eager')")
    page.wait_for_function("Array.from(document.querySelectorAll('img.chart')).every(i => i.complete)")
    shown = page.evaluate("""Array.from(document.querySelectorAll('img.chart')).filter(i => i.offsetParent)
        .map(i => [i.currentSrc, i.getBoundingClientRect().width])""")
    assert len(shown) == 2  # the metrics and the CKA heatmap; the channel scatter is drawn by the page
    for src, displayed in shown:
        assert src.endswith(f"-{theme}{'-narrow' if width < 600 else ''}.svg"), src
        svg = Path(unquote(urlparse(src).path)).read_text()
        view_width = float(re.search(r'viewBox="0 0 ([\d.]+) ', svg).group(1))
        sizes = {float(v) for v in re.findall(r"font-size: ([\d.]+)px", svg)}
        assert sizes, src
        on_screen = [size * displayed / view_width for size in sizes]
        assert 10.9 <= min(on_screen) and max(on_screen) <= 15.1, (src, sorted(on_screen))
    page.close()


def test_a_layer_pages_first_screen_shows_a_feature_grid(browser, tiny_site):
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto((tiny_site / "layers" / "e3_sa_main_conv1.html").as_uri())
    box = page.locator(".grid img").first.bounding_box()
    assert box["height"] > 20 and box["y"] + box["height"] / 2 < 900, box
    page.close()


@pytest.mark.parametrize("width, height", [(390, 844), (1440, 900)])
def test_the_small_map_page_does_not_move_when_its_charts_are_drawn(browser, tiny_site, width, height):
    """The value strips are drawn by site.js after the page is shown: the space they take must be there
    before, or the text below jumps down (Lighthouse counted a layout shift of 0.394 on desktop). Whether
    a shift is seen depends on when the script runs, so the layout without scripts is compared too."""
    layer = (tiny_site / "layers" / "daspp_pool_conv.html").as_uri()
    below = "['#stats-h', '.small-pictures'].map(s => document.querySelector(s).getBoundingClientRect().top)"
    still = browser.new_page(viewport={"width": width, "height": height}, java_script_enabled=False)
    still.goto(layer)
    strips = still.locator(".value-strip").count()
    assert strips > 0
    unscripted = still.evaluate(below)
    still.close()
    page = browser.new_page(viewport={"width": width, "height": height}, color_scheme="light")
    page.context.new_cdp_session(page).send("Emulation.setCPUThrottlingRate", {"rate": 4})
    page.goto(layer)
    shift = page.evaluate("""() => new Promise(resolve => {
      let total = 0;
      new PerformanceObserver(list => list.getEntries().forEach(e => { if (!e.hadRecentInput) total += e.value; }))
        .observe({type: "layout-shift", buffered: true});
      setTimeout(() => resolve(total), 1000);
    })""")
    assert page.locator(".value-strip svg").count() == strips  # the charts were drawn
    assert page.evaluate(below) == unscripted
    assert shift < 0.05
    page.close()
