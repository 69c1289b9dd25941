"""What Grad-CAM, Taylor importance and the ablation check cost, measured side by side in one run.

    python benchmarks/bench_attribution.py [--repeat 3] [--skip-site] [--keep DIR]

1. `reportgen build --images 10` against the same build with --no-attribution: each a fresh
   process, taken in turns, the ratio of the medians (budget 1.5x).
2. The `make site` build (10 pictured, every statistics image of the test split) with the ablation
   check against the same build with --ablation-images 0 (budget 2x), and the site's size (budget 50 MB).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_build import BIN, folder_mb, timed  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-site", action="store_true", help="only the --images 10 pair")
    parser.add_argument("--keep", type=Path, help="copy the default site (with the ablation check) here")
    args = parser.parse_args()
    reportgen = str(BIN / "reportgen")
    work = Path(tempfile.mkdtemp(prefix="reportgen-bench-attribution-"))
    try:
        subprocess.run([reportgen, "build", "--images", "1", "--out", str(work / "warmup"), "-q"], check=True,
                       capture_output=True)  # prepares the test split once, outside the timings
        runs = {"with": [], "without": []}
        for k in range(args.repeat):  # in turns, so drift on a shared machine hits both alike
            for kind, extra in (("with", []), ("without", ["--no-attribution"])):
                out = work / f"{kind}{k}"
                runs[kind].append(timed([reportgen, "build", "--images", "10", "--out", str(out), "-q", *extra]))
        with_s, without_s = statistics.median(runs["with"]), statistics.median(runs["without"])
        print(f"build --images 10 with Grad-CAM and importance: {with_s:6.1f} s, without: {without_s:6.1f} s "
              f"(medians of {args.repeat}) -> {with_s / without_s:.2f} x   (budget 1.5 x)")
        print(f"  site with attribution: {folder_mb(work / 'with0'):.1f} MB, without: "
              f"{folder_mb(work / 'without0'):.1f} MB")
        if args.skip_site:
            return
        common = [reportgen, "build", "--images", "10", "--stats-images", "all", "-q"]
        ablated_s = timed([*common, "--out", str(work / "site")])
        plain_s = timed([*common, "--ablation-images", "0", "--out", str(work / "site-no-ablation")])
        print(f"make site build with the ablation check: {ablated_s:6.1f} s, without: {plain_s:6.1f} s "
              f"-> {ablated_s / plain_s:.2f} x   (budget 2 x)")
        print(f"  default site: {folder_mb(work / 'site'):.1f} MB   (budget 50 MB)")
        if args.keep:
            shutil.copytree(work / "site", args.keep, dirs_exist_ok=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
