"""The default builds against their floor, and the statistics pass against the forward pass, side by side.

    python benchmarks/bench_floor.py [--images 240] [--pictured 10] [--repeat 3] [--site-repeat 1] [--skip-site]

The floor of a build is what no report of every conv layer with attribution can skip: a fresh
process imports TensorFlow, loads the shipped model, reads the images, and for each batch of 5
runs one forward pass returning every conv output plus one backward pass of the attribution
target to every conv output (what Grad-CAM and the Taylor importances need at least).

The ablation check that `make site` runs on 10 images cannot be skipped either, and it is work of
another kind: its reruns from each layer's output onward add up to about 580 forward passes of the
model over one image (`forward_passes` in the site's stats.json). Its floor is that many forward
passes of the whole model, returning only its output, batched by 5.

Prints, each figure the median of runs alternated with its floor:
- `reportgen build --images 10 --stats-images all` (`make site`) against the floor over the
  statistics images (budget: at most 2x), and against that floor plus the ablation check's passes
  (--site-repeat runs: each is three minutes or more).
- the cold `reportgen build --images 10` against the floor over its 10 images. Budget: at most 2x.
- the statistics pass on Beam (the DirectRunner, two workers) over --images images against the
  forward pass alone on the same images, in throughput, without attribution, with it, and with it
  and the ablation check (the pass of `make site`). Budget: at least 0.45x.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_build import BIN, timed

# The floor: TensorFlow, the shipped model, the images, and per batch one forward and one backward pass.
FLOOR = r"""
import itertools, sys
import keras
import numpy as np
import tensorflow as tf
from reportgen import attribution, capture, model_io, outputs, tfds_source
from reportgen.inputs import InputGeometry

count = int(sys.argv[1])
model = model_io.load(None, None, None, False).model
size = model.inputs[0].shape[1]
geometry = InputGeometry(size, size, 3, "stretch", "nearest")
chosen = list(itertools.islice(tfds_source.tfds_split("synthetic_pets", "test", geometry), count))
target = attribution.decide_target(outputs.describe(model, geometry.size), None,
                                   [outputs.score_activation(t) for t in model.outputs])
convs = capture.find_conv_layers(model, "conv")
probe = capture.probe_model(model, convs)
both = keras.Model(model.inputs, [*probe.outputs, model.outputs[target.output]])


@tf.function
def forward_and_backward(images):
    with tf.GradientTape() as tape:
        found = both(images, training=False)
        y = tf.reduce_sum(target.scores(found[-1]))
    return found[:-1], tape.gradient(y, found[:-1])


images = np.stack([c.image for c in chosen]).astype(np.float32)
for first in range(0, len(images), 5):
    maps, gradients = forward_and_backward(images[first:first + 5])
    [np.asarray(m) for m in maps], [np.asarray(g) for g in gradients]

# The ablation check's passes, when given: whole forward passes to the output, over the images in turn.
passes = round(float(sys.argv[2])) if len(sys.argv) > 2 else 0
forward = tf.function(lambda batch: model(batch, training=False))
for first in range(0, passes, 5):
    rows = np.arange(first, min(first + 5, passes)) % len(images)
    np.asarray(keras.tree.flatten(forward(images[rows]))[0])
"""

# The statistics pass in a fresh process, timed from the images' reading to the last result.
PASS = r"""
import itertools, json, sys, time
import numpy as np
from reportgen import attribution, capture, model_io, outputs, plan, stats_pass, tfds_source
from reportgen.inputs import InputConvention, InputGeometry
from reportgen.targets import Targets

what, count = sys.argv[1], int(sys.argv[2])
loaded = model_io.load(None, None, None, False)
model = loaded.model
size = model.inputs[0].shape[1]
geometry = InputGeometry(size, size, 3, "stretch", "nearest")
chosen = list(itertools.islice(tfds_source.tfds_split("synthetic_pets", "test", geometry), count))
parts = {}
if what == "forward":
    images = np.stack([item.image for item in chosen]).astype("float32")
    model(images[:5], training=False)  # traced once, as the pass's workers do
    start = time.monotonic()
    for first in range(0, len(images), 5):
        model(images[first:first + 5], training=False)
else:
    specs = outputs.describe(model, geometry.size)
    explained = attribution.decide_target(specs, None, [outputs.score_activation(t) for t in model.outputs]) \
        if what != "plain" else None
    targets = Targets.decide([item.id for item in chosen], trimaps_given=True, explained=explained)
    convs = capture.find_conv_layers(model, "conv")
    measured = plan.make(model, convs, specs, targets, InputConvention(), geometry, batch_size=5,
                         executor="DirectRunner", ablation_images=10 if what == "ablation" else 0)
    setup = stats_pass.PassSetup(stats_pass.ModelSpec(sha256=loaded.checksum), measured,
                                 tfds_source.DatasetImages("synthetic_pets", "test", geometry))
    start = time.monotonic()
    parts = stats_pass.run_beam(setup, "DirectRunner", workers=2).seconds
print(json.dumps({"seconds": time.monotonic() - start, "parts": parts}))
"""


def probe(code: str, *args: str) -> dict:
    found = subprocess.run([str(BIN / "python"), "-c", code, *args], capture_output=True, text=True,
                           cwd=tempfile.gettempdir())
    if found.returncode:
        raise SystemExit(f"the probe {args} failed: {found.stderr[-2000:]}")
    return json.loads(found.stdout.strip().splitlines()[-1])


def alternated(build: list[str], floor: list[str], repeat: int, site: Path) -> tuple[list[float], list[float]]:
    """Wall seconds of the build and of its floor, run in turn `repeat` times."""
    builds, floors = [], []
    for _ in range(repeat):
        shutil.rmtree(site, ignore_errors=True)
        builds.append(timed(build))
        floors.append(timed(floor))
    return builds, floors


def ablation_passes(site: Path) -> float:
    """What the site's ablation check cost, in forward passes of the model over one image."""
    layers = json.loads((site / "data" / "stats.json").read_text())["layers"]
    return max((layer.get("ablation") or {}).get("forward_passes", 0.0) for layer in layers)


def site_against_floors(build: list[str], floor: list[str], repeat: int, site: Path) -> None:
    """`make site`'s build against its floor, and against its floor with the ablation check's passes."""
    builds, floors, with_check, passes = [], [], [], 0.0
    for _ in range(repeat):
        shutil.rmtree(site, ignore_errors=True)
        builds.append(timed(build))
        passes = ablation_passes(site)
        floors.append(timed(floor))
        with_check.append(timed([*floor, str(passes)]))
    say(f"make site ({' '.join(build[1:-3])})", builds, floors)
    say(f"make site, against the floor with the ablation check's {passes:.0f} forward passes", builds, with_check)


def say(name: str, builds: list[float], floors: list[float]) -> None:
    build, floor = statistics.median(builds), statistics.median(floors)
    print(f"{name}: {build:7.1f} s, floor {floor:6.1f} s: {build / floor:5.2f} x  (budget at most 2 x; medians of "
          f"{len(builds)}: builds {', '.join(f'{t:.1f}' for t in builds)}, floors "
          f"{', '.join(f'{t:.1f}' for t in floors)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=240, help="statistics images (the synthetic_pets test split)")
    parser.add_argument("--pictured", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--site-repeat", type=int, default=1, help="runs of the `make site` figures")
    parser.add_argument("--skip-site", action="store_true", help="no `make site` build (the longest figure)")
    args = parser.parse_args()
    reportgen = str(BIN / "reportgen")
    work = Path(tempfile.mkdtemp(prefix="reportgen-bench-"))
    try:
        subprocess.run([reportgen, "build", "--images", "1", "--out", str(work / "warmup"), "-q"], check=True,
                       capture_output=True)  # prepares the TFDS test split once, outside the timings
        site = work / "site"
        floor = [sys.executable, "-c", FLOOR]
        if not args.skip_site:
            site_against_floors([reportgen, "build", "--images", str(args.pictured), "--stats-images", str(args.images),
                                 "--out", str(site), "-q"], [*floor, str(args.images)], args.site_repeat, site)
        say(f"cold build --images {args.pictured}",
            *alternated([reportgen, "build", "--images", str(args.pictured), "--out", str(site), "-q"],
                        [*floor, str(args.pictured)], args.repeat, site))
        forward = probe(PASS, "forward", str(args.images))["seconds"]
        print(f"forward pass alone, {args.images} images: {forward:.1f} s")
        for what, name in (("plain", "without attribution"), ("attributed", "with attribution"),
                           ("ablation", "with attribution and the ablation check (make site's)")):
            found = probe(PASS, what, str(args.images))
            print(f"statistics pass {name}: {found['seconds']:.1f} s, throughput {forward / found['seconds']:.2f} x "
                  "the forward pass (budget at least 0.45 x); worker-seconds "
                  + ", ".join(f"{part} {seconds:.1f}" for part, seconds in found["parts"].items()))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
