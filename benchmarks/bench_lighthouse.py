"""Lighthouse 12 on every page kind of a built site, mobile: performance, accessibility, best
practices and SEO, each at least 95 (DESIGN.md).

    python benchmarks/bench_lighthouse.py [--site DIR]

Without --site it builds the default site with 10 images (no statistics pass: the pages are the
same kinds). The site is served over HTTP under a project path, as GitHub Pages serves it, and each
page is audited with Lighthouse's mobile defaults (a Moto G Power screen, throttled network and
CPU). Lighthouse is installed by `make benchmark` (npm, beside the venv); Chromium is Debian's.
Scores are Lighthouse's own and vary by a point or two between runs on a busy machine.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_build import BIN  # noqa: E402

LIGHTHOUSE = BIN.parent / "node_modules" / ".bin" / "lighthouse"
CATEGORIES = ("performance", "accessibility", "best-practices", "seo")
BUDGET = 95


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


def page_kinds(site: Path) -> dict[str, str]:
    layers = sorted((site / "layers").glob("*.html"))
    small = next((p for p in layers if "pool_conv" in p.name), layers[-1])
    image = sorted((site / "images").glob("*.html"))[0]
    return {"index": "index.html", "layer": f"layers/{layers[len(layers) // 2].name}",
            "small-map layer": f"layers/{small.name}", "channel view": f"layers/{layers[len(layers) // 2].name}#c1",
            "image": f"images/{image.name}", "about": "about.html", "search": "search.html",
            "changes": "changes.html"}


def audit(url: str, work: Path) -> dict[str, int]:
    report = work / "report.json"
    env = dict(os.environ, CHROME_PATH=shutil.which("chromium") or "/usr/bin/chromium")
    subprocess.run([str(LIGHTHOUSE), url, "--quiet", "--output=json", f"--output-path={report}",
                    f"--only-categories={','.join(CATEGORIES)}",
                    "--chrome-flags=--headless --no-sandbox --disable-gpu"], check=True, env=env,
                   capture_output=True)
    categories = json.loads(report.read_text())["categories"]
    return {name: round(100 * categories[name]["score"]) for name in CATEGORIES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, help="a built site (default: build one)")
    args = parser.parse_args()
    if not LIGHTHOUSE.is_file():
        sys.exit(f"Lighthouse is missing: `make benchmark` installs it ({LIGHTHOUSE})")
    work = Path(tempfile.mkdtemp(prefix="reportgen-bench-lighthouse-"))
    try:
        site = args.site
        if site is None:
            site = work / "project" / "site"
            subprocess.run([str(BIN / "reportgen"), "build", "--images", "10", "--out", str(site), "-q"], check=True)
        handler = functools.partial(_Quiet, directory=str(site.parent))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}/{site.name}/"
        print(f"{'page kind':18} " + " ".join(f"{c:>14}" for c in CATEGORIES))
        low = []
        for kind, address in page_kinds(site).items():
            scores = audit(base + address, work)
            low += [f"{kind} {name} {score}" for name, score in scores.items() if score < BUDGET]
            print(f"{kind:18} " + " ".join(f"{scores[c]:>14}" for c in CATEGORIES))
        server.shutdown()
        print(f"budget: at least {BUDGET} in every category" + (f"; below it: {', '.join(low)}" if low else ": met"))
        if low:
            sys.exit(1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
