"""Cold builds of this reportgen against another install of it, alternated in one run.

    python benchmarks/bench_against.py OTHER_REPORTGEN [--repeat 5] [-- BUILD ARGS...]

OTHER_REPORTGEN is the `reportgen` executable of the version to compare with, e.g. one installed
from an earlier commit into its own venv:

    git worktree add /tmp/old <commit>
    python3.11 -m venv /tmp/venv_old
    .venv/bin/python -c "import site; print(site.getsitepackages()[0])" \\
        > /tmp/venv_old/lib/python3.11/site-packages/deps.pth     # reuse this venv's packages
    /tmp/venv_old/bin/pip install --no-deps --no-build-isolation /tmp/old

Builds alternate (this, other, this, other, ...) so both see the same machine load; each is a
fresh process into a fresh folder. Prints each median and the ratio this / other: this machine's
absolute times drift by a third between runs, the ratio in one run does not.
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

THIS = Path(sys.executable).parent / "reportgen"


def _cold_build(executable: Path, args: list[str]) -> float:
    out = Path(tempfile.mkdtemp(prefix="bench-against-")) / "site"
    started = time.perf_counter()
    subprocess.run([str(executable), "build", "--out", str(out), "-q", *args], check=True,
                   stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    shutil.rmtree(out.parent, ignore_errors=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, help="the other version's reportgen executable")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("build_args", nargs="*", default=["--images", "10"])
    options = parser.parse_args()
    _cold_build(THIS, options.build_args)  # warm the disk cache and the TFDS data for both
    times = {"this": [], "other": []}
    for _ in range(options.repeat):
        times["this"].append(_cold_build(THIS, options.build_args))
        times["other"].append(_cold_build(options.other, options.build_args))
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        print(f"{name:<6} median {medians[name]:5.1f} s   ({', '.join(f'{v:.1f}' for v in values)})")
    print(f"ratio this / other: {medians['this'] / medians['other']:.3f}  "
          f"(build args: {' '.join(options.build_args)})")


if __name__ == "__main__":
    main()
