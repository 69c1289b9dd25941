"""Budgets of the statistics pass (`--stats-images`), measured side by side in one run.

    python benchmarks/bench_stats.py [--images 240] [--small 24] [--batch-size 5]

Prints:
- throughput of the statistics pass on Beam (the embedded DirectRunner, this machine's cores) over
  --images images of synthetic_pets, against the model's forward pass alone on the same images and
  batch size, in one process with TensorFlow's threads on every core. Both are timed from images in
  memory to the last batch; the Beam figure includes starting its workers and loading the model in
  each, which a user pays too. Budget: at least 0.5x.
- peak memory of `reportgen build --images 10 --stats-images N` at --small and --images, summed over
  the whole process tree (Beam's worker processes included). Budget: at most 1.2x.
Each figure comes from a fresh process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

from bench_build import BIN, folder_mb, largest_layer_page, run_measured

# Run in a fresh process: loads the shipped model and the images, then times what is asked.
PROBE = r"""
import itertools, json, sys, time
import numpy as np
from reportgen import model_io, sources, stats_pass
from reportgen.inputs import InputConvention, InputGeometry

what, count, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
loaded = model_io.load(None, None, None, False)
size = loaded.model.inputs[0].shape[1]
geometry = InputGeometry(size, size, 3, "stretch", "nearest")
chosen = list(itertools.islice(sources.tfds_split("synthetic_pets", "test", geometry), count))
images = np.stack([item.image for item in chosen])
if what == "forward":
    model = loaded.model
    model(images[:batch].astype("float32"), training=False)  # traced once, as the pass's workers do
    start = time.monotonic()
    for first in range(0, len(images), batch):
        model(images[first:first + batch].astype("float32"), training=False)
else:
    setup = stats_pass.PassSetup(stats_pass.ModelSpec(), "conv", None, InputConvention(), len(images), size)
    work = stats_pass.batches(list(images), [item.trimap for item in chosen], None, batch)
    start = time.monotonic()
    stats_pass.run_beam(setup, work)
print(json.dumps({"seconds": time.monotonic() - start, "images": len(images)}))
"""


def timed_probe(what: str, images: int, batch: int) -> float:
    done = subprocess.run([str(BIN / "python"), "-c", PROBE, what, str(images), str(batch)], check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--small", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=5)
    parser.add_argument("--skip-memory", action="store_true", help="throughput only")
    args = parser.parse_args()
    reportgen = str(BIN / "reportgen")
    with tempfile.TemporaryDirectory(prefix="reportgen-bench-") as work:
        subprocess.run([reportgen, "build", "--images", "1", "--out", f"{work}/warmup", "-q"], check=True,
                       capture_output=True)  # prepares the TFDS test split once, outside the timings
        forward_s = timed_probe("forward", args.images, args.batch_size)
        pass_s = timed_probe("pass", args.images, args.batch_size)
        peaks, sites = {}, {}
        for count in () if args.skip_memory else (args.small, args.images):
            _, peaks[count] = run_measured([reportgen, "build", "--images", "10", "--stats-images", str(count),
                                            "--out", f"{work}/site{count}", "-q"])
            sites[count] = Path(work) / f"site{count}"
            sites[count] = (folder_mb(sites[count]), *largest_layer_page(sites[count]))
    print(f"forward pass alone, {args.images} images:    {forward_s:6.1f} s")
    print(f"statistics pass on Beam, {args.images} images: {pass_s:6.1f} s")
    print(f"throughput, pass / forward:          {forward_s / pass_s:6.2f} x  (budget at least 0.5 x)")
    if args.skip_memory:
        return
    print(f"peak memory, --stats-images {args.small}:     {peaks[args.small]:6.0f} MB  (all processes)")
    print(f"peak memory, --stats-images {args.images}:    {peaks[args.images]:6.0f} MB  "
          f"(ratio {peaks[args.images] / peaks[args.small]:.2f}; budget at most 1.2)")
    site_mb, layer_mb, layer_name = sites[args.images]
    print(f"site, --stats-images {args.images}:           {site_mb:6.1f} MB  (budget 50 MB, dataset examples on)")
    print(f"largest layer page with its files:   {layer_mb:6.2f} MB  (budget 2 MB; {layer_name})")


if __name__ == "__main__":
    main()
