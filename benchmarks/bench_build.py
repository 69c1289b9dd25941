"""Budgets of DESIGN.md, measured side by side in one run on this machine.

    python benchmarks/bench_build.py [--images 10] [--large 100] [--skip-notebook]

Prints: cold build wall time (TensorFlow import included), the ratio against the notebook way
on the same model and images, peak memory at --images 10 and --large, site and index sizes, the
incremental rebuild time, and the cost of the statistics. Each figure comes from a fresh process.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
# What the browser loads for the page: images, scripts and the stylesheet, not download links.
INDEX_ASSET = re.compile(r'(?:src="([^"#:]+)"|<link rel="stylesheet" href="([^"#:]+)")')


def peak_of(command: list[str]) -> float:
    """Peak memory of one command, measured by GNU time when present, else by a wrapper process."""
    wrapper = [sys.executable, "-c",
               "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True);"
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)", *command]
    output = subprocess.run(wrapper, capture_output=True, text=True, check=True).stdout
    return int(output.strip().splitlines()[-1]) / 1024


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def index_mb(site: Path) -> float:
    """The index page with everything it loads (lazy images included)."""
    html = (site / "index.html").read_text()
    refs = {a or b for a, b in INDEX_ASSET.findall(html)}
    files = {site / "index.html"} | {site / ref for ref in refs if (site / ref).is_file()}
    return sum(f.stat().st_size for f in files) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--large", type=int, default=100)
    parser.add_argument("--skip-notebook", action="store_true")
    args = parser.parse_args()
    reportgen = str(BIN / "reportgen")
    work = Path(tempfile.mkdtemp(prefix="reportgen-bench-"))
    try:
        subprocess.run([reportgen, "build", "--images", "1", "--out", str(work / "warmup"), "-q"], check=True,
                       capture_output=True)  # prepares the TFDS test split once, outside the timings
        site = work / "site"
        cold = [reportgen, "build", "--images", str(args.images), "--out", str(site), "-q"]
        start = time.monotonic()
        peak_small = peak_of(cold)
        cold_s = time.monotonic() - start
        start = time.monotonic()
        subprocess.run(cold, check=True, capture_output=True)
        rebuild_s = time.monotonic() - start
        no_stats = [reportgen, "build", "--images", str(args.images), "--out", str(work / "nostats"), "-q",
                    "--no-stats"]
        start = time.monotonic()
        subprocess.run(no_stats, check=True, capture_output=True)
        no_stats_s = time.monotonic() - start
        large = [reportgen, "build", "--images", str(args.large), "--out", str(work / "large"), "-q"]
        start = time.monotonic()
        peak_large = peak_of(large)
        large_s = time.monotonic() - start

        print(f"machine: {os.cpu_count()} cores")
        print(f"cold build, --images {args.images}:        {cold_s:6.1f} s   (budget 15 s)")
        print(f"statistics cost:                   {cold_s - no_stats_s:6.1f} s   (budget 5 s; "
              f"build without statistics {no_stats_s:.1f} s)")
        print(f"rebuild, nothing changed:          {rebuild_s:6.1f} s   (budget 3 s)")
        print(f"peak memory, --images {args.images}:         {peak_small:6.0f} MB  (budget 2500 MB)")
        print(f"peak memory, --images {args.large}:        {peak_large:6.0f} MB  "
              f"(ratio {peak_large / peak_small:.2f}; flat means close to 1; build took {large_s:.1f} s)")
        print(f"site size:                         {folder_mb(site):6.1f} MB  (budget 50 MB)")
        print(f"index page with its images:        {index_mb(site):6.2f} MB  (budget 2 MB)")
        if not args.skip_notebook:
            start = time.monotonic()
            subprocess.run([sys.executable, str(Path(__file__).with_name("notebook_way.py")), str(work / "nb"),
                            str(args.images)], check=True, capture_output=True)
            notebook_s = time.monotonic() - start
            print(f"notebook way (32 channels/layer):  {notebook_s:6.1f} s")
            print(f"speed-up over the notebook way:    {notebook_s / cold_s:6.1f} x  (budget 10 x; reportgen "
                  f"renders every channel, the notebook 32 per layer)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
