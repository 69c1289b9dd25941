"""Budgets of DESIGN.md, measured side by side in one run on this machine.

    python benchmarks/bench_build.py [--images 10] [--large 100] [--repeat 3] [--skip-notebook]

Prints: cold build wall time (TensorFlow import included; the median of --repeat builds, since a
shared machine is noisy), the ratio against the notebook way on the same model and images, peak
memory at --images 10 and --large (summed over the whole process tree, worker processes
included), site and index sizes, the incremental rebuild time, and the cost of the statistics.
Each figure comes from a fresh process.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import NamedTuple

BIN = Path(sys.executable).parent
# What the browser loads for the page: images, scripts and the stylesheet, not download links.
PAGE_ASSET = re.compile(r'(?:src="([^"#:]+)"|<link rel="stylesheet" href="([^"#:]+)")')


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found.extend(int(child) for child in (task / "children").read_text().split())
        except OSError:
            continue
    return found


def _tree_rss(pid: int) -> list[float]:
    """The resident memory (MB) of each process of the tree under `pid`, itself included."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        found.append(next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
                     / 1024)
        pending.extend(_children(current))
    return found


def _tree_rss_mb(pid: int) -> float:
    return sum(_tree_rss(pid))


class Measured(NamedTuple):
    seconds: float
    tree_mb: float  # the peak of the whole tree's sum
    process_mb: float  # the peak of its largest process


def timed(command: list[str]) -> float:
    """Wall seconds of a command, with nothing else of ours running beside it."""
    start = time.monotonic()
    subprocess.run(command, check=True, capture_output=True)
    return time.monotonic() - start


def run_measured(command: list[str]) -> Measured:
    """Wall seconds and peak memory (MB) of a command: summed over its whole process tree
    (reportgen's worker processes included), and of its largest process; sampled every 50 ms. The
    sampling costs CPU, so the speed figures come from `timed` runs instead."""
    start = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = [0.0, 0.0]

    def sample() -> None:
        while process.poll() is None:
            each = _tree_rss(process.pid)
            peak[:] = max(peak[0], sum(each)), max([peak[1], *each])
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, errors = process.communicate()
    seconds = time.monotonic() - start
    sampler.join()
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} failed: {errors.decode()[-2000:]}")
    return Measured(seconds, *peak)


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def page_mb(page: Path) -> float:
    """A page with everything it loads (lazy images included)."""
    html = page.read_text()
    refs = {a or b for a, b in PAGE_ASSET.findall(html)}
    files = {page} | {(page.parent / ref).resolve() for ref in refs if (page.parent / ref).is_file()}
    return sum(f.stat().st_size for f in files) / 1e6


def largest_layer_page(site: Path) -> tuple[float, str]:
    """The heaviest layer page with what it loads, and its name."""
    return max((page_mb(page), page.name) for page in (site / "layers").glob("*.html"))


# The floor of a cold build: what no report of every conv layer can skip. A fresh process imports
# TensorFlow, loads the model and the images, and runs one forward pass returning every conv output.
FLOOR = r"""
import itertools, sys
import numpy as np
from reportgen import capture, model_io, tfds_source
from reportgen.inputs import InputGeometry

count = int(sys.argv[1])
model = model_io.load(None, None, None, False).model
size = model.inputs[0].shape[1]
chosen = list(itertools.islice(tfds_source.tfds_split("synthetic_pets", "test",
                                                  InputGeometry(size, size, 3, "stretch", "nearest")), count))
probe = capture.probe_model(model, capture.find_conv_layers(model, "conv"))
for batch in capture.stream_activations(probe, np.stack([c.image for c in chosen]), 5, 0, lambda x: x):
    pass
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--large", type=int, default=100)
    parser.add_argument("--skip-notebook", action="store_true")
    parser.add_argument("--repeat", type=int, default=3, help="cold builds to take the median of")
    args = parser.parse_args()
    reportgen = str(BIN / "reportgen")
    work = Path(tempfile.mkdtemp(prefix="reportgen-bench-"))
    try:
        subprocess.run([reportgen, "build", "--images", "1", "--out", str(work / "warmup"), "-q"], check=True,
                       capture_output=True)  # prepares the TFDS test split once, outside the timings
        site = work / "site"
        cold = [reportgen, "build", "--images", str(args.images), "--out", str(site), "-q"]
        colds = []
        for _ in range(args.repeat):  # a shared machine is noisy: the median of a few cold builds
            shutil.rmtree(site, ignore_errors=True)
            colds.append(timed(cold))
        cold_s = statistics.median(colds)
        shutil.rmtree(site, ignore_errors=True)
        small = run_measured(cold)
        start = time.monotonic()
        subprocess.run(cold, check=True, capture_output=True)
        rebuild_s = time.monotonic() - start
        floors = [timed([sys.executable, "-c", FLOOR, str(args.images)]) for _ in range(args.repeat)]
        floor_s = statistics.median(floors)
        no_stats_times = [timed([reportgen, "build", "--images", str(args.images), "--out",
                                 str(work / f"nostats{k}"), "-q", "--no-stats"])
                          for k in range(args.repeat)]
        no_stats_s = statistics.median(no_stats_times)
        large = run_measured([reportgen, "build", "--images", str(args.large), "--out", str(work / "large"), "-q"])

        print(f"machine: {os.cpu_count()} cores")
        print(f"cold build, --images {args.images}:        {cold_s:6.1f} s   (median of "
              f"{args.repeat}: {', '.join(f'{t:.1f}' for t in colds)}; bench_floor.py has its budget's floor)")
        print(f"floor: TF + model + one forward:   {floor_s:6.1f} s   (median of {args.repeat}; cold build / floor "
              f"{cold_s / floor_s:.2f} x; the floor without the attribution's backward pass)")
        print(f"statistics cost:                   {cold_s - no_stats_s:6.1f} s   (build without statistics "
              f"{no_stats_s:.1f} s)")
        print(f"rebuild, nothing changed:          {rebuild_s:6.1f} s   (budget 1 s)")
        print(f"peak memory, --images {args.images}:         {small.process_mb:6.0f} MB  (budget 2500 MB a process; "
              f"all processes {small.tree_mb:.0f} MB)")
        print(f"peak memory, --images {args.large}:        {large.process_mb:6.0f} MB  "
              f"(ratio {large.process_mb / small.process_mb:.2f}, all processes {large.tree_mb / small.tree_mb:.2f}; "
              f"flat means close to 1; build took {large.seconds:.1f} s)")
        print(f"site size:                         {folder_mb(site):6.1f} MB  (budget 50 MB)")
        print(f"index page with its images:        {page_mb(site / 'index.html'):6.2f} MB  (budget 2 MB)")
        layer_mb, layer_name = largest_layer_page(site)
        print(f"largest layer page with its files: {layer_mb:6.2f} MB  (budget 2 MB; {layer_name})")
        if not args.skip_notebook:
            start = time.monotonic()
            subprocess.run([sys.executable, str(Path(__file__).with_name("notebook_way.py")), str(work / "nb"),
                            str(args.images)], check=True, capture_output=True)
            notebook_s = time.monotonic() - start
            print(f"notebook way (32 channels/layer):  {notebook_s:6.1f} s")
            print(f"speed-up over the notebook way:    {notebook_s / cold_s:6.1f} x  (budget 15 x; reportgen "
                  f"renders every channel, the notebook 32 per layer)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
