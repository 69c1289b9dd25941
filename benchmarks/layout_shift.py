"""Cumulative layout shift of every page kind of a built site, at a phone's and a desktop's width.

    python benchmarks/layout_shift.py SITE [--budget 0.05] [--cpu-slowdown 4]

The site is served over HTTP under a project path, as GitHub Pages serves it, and each page is
opened in Debian's headless Chromium at 390 x 844 and 1440 x 900 with the light theme, its CPU
slowed 4 times as Lighthouse's mobile runs slow it: a shift is only counted once the page has been
shown, and on a fast machine a page's scripts often run before that, hiding shifts a reader sees. A
PerformanceObserver collects the page's 'layout-shift' entries (buffered, so those before it was
registered count) and sums those without recent input up to two seconds after load: the shifts a
reader sees while the page settles (Lighthouse's figure, the worst window of them, is at most this
sum). Prints the sum per page kind and width and exits non-zero if any is at or over the budget
(under 0.05 on every page kind).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import shutil
import sys
import threading
from pathlib import Path

from playwright.sync_api import sync_playwright

WIDTHS = {390: 844, 1440: 900}
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SETTLE_MS = 2000

# Resolves, after the page has settled, to the sum of its layout shifts not caused by input.
LAYOUT_SHIFT = """settle => new Promise(resolve => {
  let total = 0;
  new PerformanceObserver(list => {
    for (const entry of list.getEntries()) { if (!entry.hadRecentInput) { total += entry.value; } }
  }).observe({type: "layout-shift", buffered: true});
  setTimeout(() => resolve(total), settle);
})"""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


def page_kinds(site: Path) -> dict[str, str]:
    """One page of each kind (a layer page opened on a channel is the channel view); the small-map layer
    is the first whose channels are drawn as values."""
    layers = sorted((site / "layers").glob("*.html"))
    small = [p for p in layers if 'class="value-strip"' in p.read_text(encoding="utf-8")]
    pictured = [p for p in layers if p not in small]
    layer = f"layers/{pictured[len(pictured) // 2].name}"
    kinds = {"index": "index.html", "layer": layer, "channel view": f"{layer}#c1"}
    if small:
        kinds["small-map layer"] = f"layers/{small[0].name}"
    image = sorted((site / "images").glob("*.html"))[0]
    kinds.update({"image": f"images/{image.name}", "about": "about.html", "changes": "changes.html",
                  "search": "search.html"})
    return kinds


def measure(site: Path, cpu_slowdown: float = 1) -> dict[tuple[str, int], float]:
    handler = functools.partial(_Quiet, directory=str(site.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/{site.name}/"
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    shifts = {}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            for kind, address in page_kinds(site).items():
                for width, height in WIDTHS.items():
                    page = browser.new_page(viewport={"width": width, "height": height}, color_scheme="light")
                    if cpu_slowdown > 1:
                        session = page.context.new_cdp_session(page)
                        session.send("Emulation.setCPUThrottlingRate", {"rate": cpu_slowdown})
                    page.goto(base + address, wait_until="load")
                    shifts[kind, width] = page.evaluate(LAYOUT_SHIFT, SETTLE_MS)
                    page.close()
            browser.close()
    finally:
        server.shutdown()
    return shifts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path, help="a built site")
    parser.add_argument("--budget", type=float, default=0.05, help="the largest shift allowed (exclusive)")
    parser.add_argument("--cpu-slowdown", type=float, default=4,
                        help="Chromium's CPU throttling factor (Lighthouse's mobile runs use 4; 1 is none)")
    args = parser.parse_args()
    shifts = measure(args.site.resolve(), args.cpu_slowdown)
    print(f"{'page kind':18} " + " ".join(f"{f'{w} px':>9}" for w in WIDTHS))
    for kind in dict.fromkeys(k for k, _ in shifts):
        print(f"{kind:18} " + " ".join(f"{shifts[kind, w]:9.3f}" for w in WIDTHS))
    over = [f"{kind} at {width} px" for (kind, width), value in shifts.items() if value >= args.budget]
    if over:
        sys.exit(f"layout shift at or over {args.budget}: " + ", ".join(over))


if __name__ == "__main__":
    main()
