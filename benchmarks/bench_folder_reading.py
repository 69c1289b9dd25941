"""Reading a folder costs what is used: `--images 2` from a folder of 2 small and 150 large photos,
against the same build from a folder of the 2 alone.

    python benchmarks/bench_folder_reading.py [--photos 150] [--repeat 3]

The photos are 3000x2000 JPEGs (a phone's 6 megapixels), sorted after the two small ones, so the
build chooses the small ones and, reading only what it uses, never decodes a photo. Builds from the
two folders alternate so both see the same machine load; prints each median and their ratio (the
budget is 1.5x).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

BIN = Path(sys.executable).parent


def _folders(root: Path, photos: int) -> tuple[Path, Path]:
    few, many = root / "two", root / "two-and-photos"
    few.mkdir()
    many.mkdir()
    rng = np.random.default_rng(0)
    for k in range(2):
        small = Image.fromarray(rng.integers(0, 255, (160, 160, 3), dtype=np.uint8))
        small.save(few / f"a_small_{k}.jpg", quality=90)
        small.save(many / f"a_small_{k}.jpg", quality=90)
    # One photo's bytes, written many times: a real photo's entropy without generating each.
    texture = rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)
    photo = Image.fromarray(texture).resize((3000, 2000), Image.Resampling.BICUBIC)
    photo.save(many / "photo_000.jpg", quality=92)
    data = (many / "photo_000.jpg").read_bytes()
    for k in range(1, photos):
        (many / f"photo_{k:03d}.jpg").write_bytes(data)
    return few, many


def _seconds(images: Path, out: Path) -> float:
    started = time.perf_counter()
    subprocess.run([str(BIN / "reportgen"), "build", "--images", "2", "--image-dir", str(images), "--no-stats",
                    "--out", str(out), "-q"], check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=150)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        few, many = _folders(root, args.photos)
        times = {"two": [], "many": []}
        for k in range(args.repeat):
            times["two"].append(_seconds(few, root / f"site-two-{k}"))
            times["many"].append(_seconds(many, root / f"site-many-{k}"))
        two, lots = statistics.median(times["two"]), statistics.median(times["many"])
        print(f"--images 2 from 2 files:                    {two:.1f} s (median of {args.repeat})")
        print(f"--images 2 from 2 files and {args.photos} 6-MP photos: {lots:.1f} s")
        print(f"ratio: {lots / two:.2f}x (budget 1.5x)")


if __name__ == "__main__":
    main()
