"""Budget of `reportgen compare`: two SD-UNets over the statistics images against one statistics pass.

    python benchmarks/bench_compare.py [--images 240] [--batch-size 5] [--modes beam,in_process]

The two models are the shipped SD-UNet and a copy whose last block (the u4_ layers and the head) has
its weights moved by noise of twice their standard deviation, as tests/test_compare.py moves a last
block (half of it left every layer at CKA 0.98 or above); both saved as .keras files, as a user
hands them to `reportgen compare`. Prints, over the
first --images images of synthetic_pets' test split, each timed in a fresh process from images in
memory and models loaded to the result (the Beam figures include starting the workers and loading
the models in each, which a user pays too):
- the statistics pass on Beam (bench_stats.py's figure: the embedded DirectRunner, two workers);
- the comparison on Beam (`--runner DirectRunner --workers 2`) and in process;
- each comparison against the pass. Budget: at most 2x.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

from bench_build import BIN
from bench_stats import timed_probe

# In a fresh process: the shipped model, and its copy with the last block moved, saved as .keras files.
MAKE_MODELS = r"""
import sys
import numpy as np
from reportgen import model_io

model = model_io.load(None, None, None, False).model
model.save(sys.argv[1])
rng = np.random.default_rng(0)
for layer in model.layers:
    if layer.name.startswith("u4_") or layer.name == "head":
        layer.set_weights([w + rng.normal(size=w.shape).astype(w.dtype) * 2 * np.std(w)
                           for w in layer.get_weights()])
model.save(sys.argv[2])
"""

# In a fresh process: the comparison of the two files over the first images, timed as bench_stats times the pass.
COMPARE = r"""
import itertools, json, sys, time
from pathlib import Path
from reportgen import compare_pass, model_compare, model_io, stats_pass, tfds_source
from reportgen.inputs import InputConvention, InputGeometry

mode, count, batch, paths = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), [Path(p) for p in sys.argv[4:6]]
loaded = [model_io.load(path, None, None, False) for path in paths]
size = loaded[0].model.inputs[0].shape[1]
geometry = InputGeometry(size, size, 3, "stretch", "nearest")
chosen = list(itertools.islice(tfds_source.tfds_split("synthetic_pets", "test", geometry), count))
beam = None
if mode == "beam":
    specs = tuple(stats_pass.ModelSpec(str(path), sha256=one.checksum) for path, one in zip(paths, loaded))
    beam = compare_pass.OnBeam(specs, tfds_source.DatasetImages("synthetic_pets", "test", geometry), "DirectRunner",
                               workers=2)
start = time.monotonic()
result = model_compare.compare_models(loaded[0].model, loaded[1].model, chosen, InputConvention(), batch,
                                      beam=beam)
seconds = time.monotonic() - start
print(json.dumps({"seconds": seconds, "images": result.images, "findings": result.findings}))
"""


def timed_compare(mode: str, images: int, batch: int, paths: list[Path]) -> dict:
    command = [str(BIN / "python"), "-c", COMPARE, mode, str(images), str(batch), *map(str, paths)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tempfile.gettempdir())
    if done.returncode:
        raise SystemExit(f"compare ({mode}) failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--batch-size", type=int, default=5)
    parser.add_argument("--modes", default="beam,in_process",
                        help="comparisons to time, comma-separated: beam, in_process")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - {"beam", "in_process"})
    if unknown or not modes:
        raise SystemExit(f"--modes takes beam and in_process, got {args.modes!r}")
    if args.images < 4:
        raise SystemExit(f"--images must be at least 4 (minibatch CKA), got {args.images}")
    reportgen = str(BIN / "reportgen")
    with tempfile.TemporaryDirectory(prefix="reportgen-bench-") as work:
        subprocess.run([reportgen, "build", "--images", "1", "--out", f"{work}/warmup", "-q"], check=True,
                       capture_output=True)  # prepares the TFDS test split once, outside the timings
        paths = [Path(work) / "shipped.keras", Path(work) / "last_block_moved.keras"]
        subprocess.run([str(BIN / "python"), "-c", MAKE_MODELS, *map(str, paths)], check=True, capture_output=True,
                       cwd=tempfile.gettempdir())
        stats = timed_probe("DirectRunner", args.images, args.batch_size)
        compared = {mode: timed_compare(mode, args.images, args.batch_size, paths) for mode in modes}
    n = args.images
    print(f"statistics pass, DirectRunner (2 workers), {n} images: {stats['seconds']:7.1f} s")
    for mode, found in compared.items():
        how = "on Beam, DirectRunner (2 workers)" if mode == "beam" else "in process"
        print(f"compare, two SD-UNets, {how}, {found['images']} images: {found['seconds']:7.1f} s  "
              f"({found['seconds'] / stats['seconds']:.2f} x the pass; budget at most 2 x)")
    for line in next(iter(compared.values()))["findings"]:
        print(f"  {line}")


if __name__ == "__main__":
    main()
