"""Budgets of the statistics pass (`--stats-images`), measured side by side in one run.

    python benchmarks/bench_stats.py [--images 240] [--small 24] [--batch-size 5] [--skip-memory] [--skip-dask]
                                     [--skip-throughput] [--large N]

Prints:
- throughput of the statistics pass on Beam (the embedded DirectRunner, two worker processes) over
  --images images of synthetic_pets, against the model's forward pass alone on the same images and
  batch size, in one process with TensorFlow's threads on every core; and what each part of the
  pass costs (the sums' pipeline, the probes' fits, the scores' pipeline). Both are timed from
  images in memory to the last batch; the Beam figure includes starting its workers and loading
  the model in each, which a user pays too. Budget: at least 0.45x.
- the same pass on a local Dask cluster of two one-thread workers started here, configured as the
  README asks, against the DirectRunner. Budget: at least 0.8x. And once more on workers as Dask
  starts them unconfigured (glibc trimming freed memory at once), for the README's reason.
- peak memory of `reportgen build --images 10 --stats-images N` at --small and --images, summed over
  the whole process tree (Beam's worker processes included); and the peak of each Dask worker
  during the pass at both sizes. Budget: at most 1.2x.
- with --large N (2400, say): the same build's peak memory from a folder of N rendered synthetic pets
  and their trimaps (`--image-dir`, `--trimap-dir`: the test split has only 240), against the same
  folder's first --images; about half an hour at 2,400.
Each figure comes from a fresh process.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_build import BIN, _tree_rss_mb, folder_mb, largest_layer_page, run_measured

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from dask_cluster import local_cluster  # noqa: E402  (the tests' cluster, started the same way)

# Run in a fresh process: loads the shipped model and the images, then times what is asked.
PROBE = r"""
import itertools, json, sys, time
import numpy as np
from reportgen import capture, model_io, outputs, plan, stats_pass, tfds_source
from reportgen.inputs import InputConvention, InputGeometry
from reportgen.targets import Targets

what, count, batch, options = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), tuple(sys.argv[4:])
loaded = model_io.load(None, None, None, False)
size = loaded.model.inputs[0].shape[1]
geometry = InputGeometry(size, size, 3, "stretch", "nearest")
chosen = list(itertools.islice(tfds_source.tfds_split("synthetic_pets", "test", geometry), count))
images = np.stack([item.image for item in chosen])
parts = {}
if what == "forward":
    model = loaded.model
    model(images[:batch].astype("float32"), training=False)  # traced once, as the pass's workers do
    start = time.monotonic()
    for first in range(0, len(images), batch):
        model(images[first:first + batch].astype("float32"), training=False)
else:
    targets = Targets.decide([item.id for item in chosen], trimaps_given=True)
    convs = capture.find_conv_layers(loaded.model, "conv")
    measured = plan.make(loaded.model, convs, outputs.describe(loaded.model, geometry.size), targets,
                         InputConvention(), geometry, batch_size=batch, executor=what)
    setup = stats_pass.PassSetup(stats_pass.ModelSpec(sha256=loaded.checksum), measured,
                                 tfds_source.DatasetImages("synthetic_pets", "test", geometry))
    start = time.monotonic()
    parts = stats_pass.run_beam(setup, what, options, workers=2).seconds
print(json.dumps({"seconds": time.monotonic() - start, "images": len(images), "parts": parts}))
"""


def timed_probe(what: str, images: int, batch: int, options: tuple[str, ...] = (),
                watch: list[int] | None = None) -> dict:
    """The probe's figures; with `watch`, also the peak memory (MB) of each of those processes' trees."""
    command = [str(BIN / "python"), "-c", PROBE, what, str(images), str(batch), *options]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=tempfile.gettempdir())
    peaks = [0.0] * len(watch or [])

    def sample() -> None:
        while process.poll() is None:
            for k, pid in enumerate(watch or []):
                peaks[k] = max(peaks[k], _tree_rss_mb(pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, errors = process.communicate()
    sampler.join()
    if process.returncode:
        raise SystemExit(f"{what} probe failed: {errors[-2000:]}")
    return {**json.loads(out.strip().splitlines()[-1]), "peaks": peaks}


def render_folder(folder: Path, count: int) -> None:
    """`count` synthetic pets as JPEG files with their trimaps as PNG files of the same names, rendered
    on every core (a seed of their own, apart from the data set's splits)."""
    import multiprocessing

    from PIL import Image

    (folder / "images").mkdir(parents=True)
    (folder / "trimaps").mkdir()
    with multiprocessing.Pool() as pool:
        for index, example in enumerate(pool.imap(_render_one, range(count), chunksize=16)):
            Image.fromarray(example.image).save(folder / "images" / f"pet_{index:05d}.jpg", quality=90)
            Image.fromarray(example.trimap).save(folder / "trimaps" / f"pet_{index:05d}.png")


def _render_one(index: int):
    from reportgen.datasets.synthetic_pets import render

    return render.render_example(seed=2400, index=index)


def main() -> None:
    # SIGTERM unwinds like Ctrl-C, so the Dask cluster started here is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--small", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=5)
    parser.add_argument("--skip-memory", action="store_true", help="no memory figures of whole builds")
    parser.add_argument("--skip-dask", action="store_true", help="no Dask cluster")
    parser.add_argument("--skip-throughput", action="store_true", help="no timed passes (memory figures only)")
    parser.add_argument("--large", type=int, default=0, help="also the memory over a folder of this many images")
    args = parser.parse_args()
    reportgen = str(BIN / "reportgen")
    with tempfile.TemporaryDirectory(prefix="reportgen-bench-") as work:
        subprocess.run([reportgen, "build", "--images", "1", "--out", f"{work}/warmup", "-q"], check=True,
                       capture_output=True)  # prepares the TFDS test split once, outside the timings
        forward = direct = None
        if not args.skip_throughput:
            forward = timed_probe("forward", args.images, args.batch_size)
            direct = timed_probe("DirectRunner", args.images, args.batch_size)
        dask = {}
        if not args.skip_dask and not args.skip_throughput:
            with local_cluster(2, Path(work)) as (address, pids):
                option = (f"dask_client_address={address}",)
                for count in (args.small, args.images):
                    dask[count] = timed_probe("dask", count, args.batch_size, option, watch=pids[1:])
            with local_cluster(2, Path(work) / "defaults", dask_defaults=True) as (address, _):
                unconfigured = timed_probe("dask", args.images, args.batch_size, (f"dask_client_address={address}",))
        peaks, sites = {}, {}
        for count in () if args.skip_memory else (args.small, args.images):
            peaks[count] = run_measured([reportgen, "build", "--images", "10", "--stats-images", str(count),
                                         "--out", f"{work}/site{count}", "-q"]).tree_mb
            sites[count] = Path(work) / f"site{count}"
            sites[count] = (folder_mb(sites[count]), *largest_layer_page(sites[count]))
        folder_peaks = {}
        if args.large:
            render_folder(Path(work) / "pets", args.large)
            for count in (args.images, args.large):
                folder_peaks[count] = run_measured(
                    [reportgen, "build", "--images", "10", "--stats-images", str(count),
                     "--image-dir", f"{work}/pets/images", "--trimap-dir", f"{work}/pets/trimaps",
                     "--out", f"{work}/folder{count}", "-q"]).tree_mb
    n = args.images
    if direct:
        print(f"forward pass alone, {n} images:           {forward['seconds']:6.1f} s")
        print(f"statistics pass, DirectRunner, {n} images: {direct['seconds']:6.1f} s  "
              + ", ".join(f"{part} {seconds:.1f} s" for part, seconds in direct["parts"].items()))
        print(f"throughput, pass / forward:                {forward['seconds'] / direct['seconds']:6.2f} x  "
              "(budget at least 0.45 x)")
    if dask:
        print(f"statistics pass, Dask (2 workers), {n} images: {dask[n]['seconds']:6.1f} s  "
              + ", ".join(f"{part} {seconds:.1f} s" for part, seconds in dask[n]["parts"].items()))
        print(f"throughput, Dask / DirectRunner:           {direct['seconds'] / dask[n]['seconds']:6.2f} x  "
              "(budget at least 0.8 x)")
        print(f"the same on workers as Dask starts them unconfigured (freed memory trimmed): "
              f"{unconfigured['seconds']:6.1f} s, {direct['seconds'] / unconfigured['seconds']:.2f} x  accumulators "
              f"{unconfigured['parts'].get('accumulators', float('nan')):.1f} s")
        small, large = max(dask[args.small]["peaks"]), max(dask[n]["peaks"])
        print(f"peak memory of a Dask worker, {args.small} / {n} images: {small:6.0f} / {large:6.0f} MB  "
              f"(ratio {large / small:.2f}; budget at most 1.2)")
    if folder_peaks:
        small, large = folder_peaks[args.images], folder_peaks[args.large]
        print(f"peak memory from a folder, --stats-images {args.images} / {args.large}: {small:6.0f} / {large:6.0f} MB  "
              f"(ratio {large / small:.2f}; budget at most 1.2)")
    if args.skip_memory:
        return
    print(f"peak memory, --stats-images {args.small}:     {peaks[args.small]:6.0f} MB  (all processes)")
    print(f"peak memory, --stats-images {n}:    {peaks[n]:6.0f} MB  "
          f"(ratio {peaks[n] / peaks[args.small]:.2f}; budget at most 1.2)")
    site_mb, layer_mb, layer_name = sites[n]
    print(f"site, --stats-images {n}:           {site_mb:6.1f} MB  (budget 50 MB, dataset examples on)")
    print(f"largest layer page with its files:   {layer_mb:6.2f} MB  (budget 2 MB; {layer_name})")


if __name__ == "__main__":
    main()
