"""A bigger model than the shipped one: the build of EfficientNetV2B0 at 224 px against its floor.

    python benchmarks/bench_big_model.py [--images 10] [--repeat 3]

The floor is what no report of the model can avoid, in a fresh process: importing TensorFlow,
loading the model, and one forward pass returning every conv output for the same images. Builds
and floors alternate so both see the same machine load; prints each median, their ratio (the
budget is 3x), and the site's size (the budget is 50 MB for 10 images).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent

FLOOR = """
import sys, numpy as np
from PIL import Image
from reportgen import capture, model_io
keras = model_io.import_keras()
model = keras.models.load_model(sys.argv[1])
probe = capture.probe_model(model, capture.find_conv_layers(model))
files = sorted(__import__("pathlib").Path(sys.argv[2]).iterdir())
images = np.stack([np.asarray(Image.open(f).convert("RGB").resize((224, 224)), np.float32) for f in files])
probe.predict(images, batch_size=5, verbose=0)
"""


def _prepare(root: Path, count: int) -> tuple[Path, Path]:
    subprocess.run([str(BIN / "python"), "-c", (
        "import sys, keras; keras.applications.EfficientNetV2B0(weights=None, input_shape=(224, 224, 3))"
        ".save(sys.argv[1])"), str(root / "model.keras")], check=True, capture_output=True)
    images = root / "images"
    images.mkdir()
    subprocess.run([str(BIN / "python"), "-c", (
        "import sys\nfrom PIL import Image\nfrom reportgen.datasets.synthetic_pets.render import render_example\n"
        "for i in range(int(sys.argv[2])):\n"
        "    Image.fromarray(render_example(7, i).image).save(f'{sys.argv[1]}/pet_{i}.jpg', quality=90)"),
        str(images), str(count)], check=True, capture_output=True)
    return root / "model.keras", images


def _seconds(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def _folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-big-"))
    try:
        model, images = _prepare(root, args.images)
        builds, floors, size = [], [], 0.0
        for run in range(args.repeat):
            out = root / f"site{run}"
            builds.append(_seconds([str(BIN / "reportgen"), "build", "--model", str(model), "--image-dir",
                                    str(images), "--images", str(args.images), "--out", str(out), "-q"]))
            size = _folder_mb(out)
            shutil.rmtree(out)
            floors.append(_seconds([str(BIN / "python"), "-c", FLOOR, str(model), str(images)]))
        build, floor = statistics.median(builds), statistics.median(floors)
        print(f"EfficientNetV2B0 224 px, {args.images} images, median of {args.repeat}")
        print(f"  build {build:.1f} s, floor (import, load, one forward pass of every conv output) {floor:.1f} s")
        print(f"  build / floor = {build / floor:.2f}x (budget 3x)")
        print(f"  site {size:.1f} MB (budget 50 MB)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
