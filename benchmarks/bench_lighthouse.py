"""Lighthouse 12 on every page kind of a built site, mobile, each figure beside its budget.

    python benchmarks/bench_lighthouse.py [--site DIR] [--runs 3] [--reports DIR] [--only index,layer]

Without --site it builds the default site with 10 images (no statistics pass: the pages are the
same kinds). The site is served over HTTP under a project path, as GitHub Pages serves it, and each
page is audited with Lighthouse's mobile defaults (a Moto G Power screen, throttled network and
CPU). Every page kind is audited --runs times and the median of each figure is printed: Lighthouse's
performance score moves by several points between runs on a busy machine. Budgets (issue 31):
performance at least 95, accessibility, best practices and SEO 100, cumulative layout shift under
0.05. Largest contentful paint and total blocking time are printed beside them, being what the
performance score is mostly made of. Exits non-zero if any median is over its budget.
Lighthouse is installed by `make benchmark` (npm, beside the venv); Chromium is Debian's.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_build import BIN  # noqa: E402
from layout_shift import page_kinds  # noqa: E402

LIGHTHOUSE = BIN.parent / "node_modules" / ".bin" / "lighthouse"
CATEGORIES = ("performance", "accessibility", "best-practices", "seo")
# The least score allowed per category, and the largest layout shift (exclusive).
SCORE_BUDGETS = {"performance": 95, "accessibility": 100, "best-practices": 100, "seo": 100}
SHIFT_BUDGET = 0.05
# Lighthouse's audits behind each printed figure (its JSON report's `audits`).
METRICS = {"LCP s": ("largest-contentful-paint", 1000), "TBT ms": ("total-blocking-time", 1),
           "CLS": ("cumulative-layout-shift", 1)}


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


def audit(url: str, report: Path) -> dict[str, float]:
    """One Lighthouse run of `url`: its four category scores (0-100) and the metrics of METRICS."""
    env = dict(os.environ, CHROME_PATH=shutil.which("chromium") or "/usr/bin/chromium")
    subprocess.run([str(LIGHTHOUSE), url, "--quiet", "--output=json", f"--output-path={report}",
                    f"--only-categories={','.join(CATEGORIES)}",
                    "--chrome-flags=--headless --no-sandbox --disable-gpu"], check=True, env=env,
                   capture_output=True)
    result = json.loads(report.read_text())
    figures = {name: round(100 * result["categories"][name]["score"]) for name in CATEGORIES}
    for label, (audit_id, unit) in METRICS.items():
        figures[label] = result["audits"][audit_id]["numericValue"] / unit
    return figures


def over_budget(kind: str, figures: dict[str, float]) -> list[str]:
    low = [f"{kind} {name} {figures[name]:.0f} < {least}" for name, least in SCORE_BUDGETS.items()
           if figures[name] < least]
    if figures["CLS"] >= SHIFT_BUDGET:
        low.append(f"{kind} CLS {figures['CLS']:.3f} >= {SHIFT_BUDGET}")
    return low


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, help="a built site (default: build one)")
    parser.add_argument("--runs", type=int, default=3, help="audits per page kind; the median is printed")
    parser.add_argument("--reports", type=Path, help="keep every Lighthouse JSON report in this folder")
    parser.add_argument("--only", help="audit only these page kinds, comma-separated (default: every kind)")
    args = parser.parse_args()
    if not LIGHTHOUSE.is_file():
        sys.exit(f"Lighthouse is missing: `make benchmark` installs it ({LIGHTHOUSE})")
    work = Path(tempfile.mkdtemp(prefix="reportgen-bench-lighthouse-"))
    reports = args.reports or work
    reports.mkdir(parents=True, exist_ok=True)
    try:
        site = args.site
        if site is None:
            site = work / "project" / "site"
            subprocess.run([str(BIN / "reportgen"), "build", "--images", "10", "--out", str(site), "-q"], check=True)
        site = site.resolve()
        handler = functools.partial(_Quiet, directory=str(site.parent))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}/{site.name}/"
        columns = [*CATEGORIES, *METRICS]
        budgets = {**{name: f">={least}" for name, least in SCORE_BUDGETS.items()}, "CLS": f"<{SHIFT_BUDGET}"}
        print(f"median of {args.runs} Lighthouse {'run' if args.runs == 1 else 'runs'} per page kind, mobile")
        print(f"{'page kind':16} " + " ".join(f"{c:>14}" for c in columns))
        print(f"{'budget':16} " + " ".join(f"{budgets.get(c, ''):>14}" for c in columns))
        low = []
        kinds = page_kinds(site)
        if args.only:
            kinds = {kind: kinds[kind] for kind in args.only.split(",")}
        for kind, address in kinds.items():
            runs = [audit(base + address, reports / f"{kind.replace(' ', '-')}-{run}.json")
                    for run in range(args.runs)]
            figures = {name: statistics.median(run[name] for run in runs) for name in columns}
            low += over_budget(kind, figures)
            print(f"{kind:16} " + " ".join(
                f"{figures[c]:>14.0f}" if c in CATEGORIES else f"{figures[c]:>14.3g}" for c in columns))
        server.shutdown()
        print("budgets " + ("met" if not low else "missed: " + "; ".join(low)))
        if low:
            sys.exit(1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
