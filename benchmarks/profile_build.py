"""Where a build's time goes: the wall seconds of each stage, and the statistics pass's worker-seconds
by part.

    python benchmarks/profile_build.py [reportgen build options ...]

    e.g. python benchmarks/profile_build.py --images 10 --stats-images all --out /tmp/site -q

Runs `reportgen build` in this process with a timer around each stage of `pipeline._build` (the
model, the statistics images, the Beam pass, the capture of the pictured images, the per-layer work
and pictures, the dataset examples, the pages). The Beam pass's own figures are worker-seconds
summed over its worker processes (`stats_pass.WorkerSeconds`: start-up, reading images, the model
in the sums' pass, the accumulators, the probes' scores, the ablation check), so with two workers
they add up to about twice the pass's wall time. Python's own profilers see little of TensorFlow's
work, which runs on threads of its own; these timers see all of it.
"""

from __future__ import annotations

import functools
import os
import sys
import time

started = time.monotonic()
stages: dict[str, float] = {}
worker_seconds: dict[str, float] = {}


def timed(owner, name: str, stage: str) -> None:
    """Wrap `owner.name` so its wall seconds add to `stages[stage]`."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        begun = time.monotonic()
        try:
            return original(*args, **kwargs)
        finally:
            stages[stage] = stages.get(stage, 0.0) + time.monotonic() - begun

    setattr(owner, name, wrapper)


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # as the command line keeps TensorFlow quiet
    import tensorflow  # noqa: F401  (timed as a stage of its own: every build pays it)

    stages["import TensorFlow"] = time.monotonic() - started
    from reportgen import assets, measure, pipeline, site, stats_pass
    from reportgen.cli import app

    timed(pipeline, "_load_model", "load the model")
    timed(pipeline, "_load_images", "read the pictured images")
    timed(pipeline, "_stats_images", "read the statistics images")
    timed(pipeline, "_statistics_pass", "statistics pass (Beam), wall")
    timed(pipeline, "_capture", "capture the pictured images (forward + backward)")
    timed(measure, "rgb_baselines", "RGB probe baselines")
    timed(pipeline, "_analyse_layers", "per-layer work: finalise, pictures, charts")
    timed(assets.AssetWriter, "image_pictures", "image pictures")
    timed(assets.AssetWriter, "example_pictures", "dataset example pictures")
    timed(site, "write_site", "pages and data files")
    run_beam = stats_pass.run_beam

    def run_beam_measured(*args, **kwargs):
        found = run_beam(*args, **kwargs)
        for part, seconds in found.seconds.items():
            worker_seconds[part] = worker_seconds.get(part, 0.0) + seconds
        if found.ablation is not None and "ablation check" not in found.seconds:  # builds that did not time it apart
            worker_seconds["of which the ablation check"] = found.ablation.seconds
        return found

    stats_pass.run_beam = run_beam_measured
    code = 0
    try:
        app(sys.argv[1:], standalone_mode=False)
    except BaseException:  # the build failed: its figures mean nothing, and say so
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        total = time.monotonic() - started
        print(f"build, wall: {total:.1f} s{'' if code == 0 else ' (FAILED)'}")
        for stage, seconds in stages.items():
            print(f"  {stage:52s} {seconds:7.1f} s  {100 * seconds / total:5.1f} %")
        counted = sum(stages.values())
        print(f"  {'the rest (pipeline glue, describe, swap)':52s} {total - counted:7.1f} s  "
              f"{100 * (total - counted) / total:5.1f} %")
        if worker_seconds:
            spent = sum(worker_seconds.values())
            print(f"statistics pass, worker-seconds: {spent:.1f} s")
            for part, seconds in sorted(worker_seconds.items(), key=lambda item: -item[1]):
                print(f"  {part:52s} {seconds:7.1f} s  {100 * seconds / spent:5.1f} %")
        sys.stdout.flush()
        from reportgen import workers

        workers.discard(wait=True)
        os._exit(code)  # as the console entry does: TensorFlow's own shutdown adds nothing to measure


if __name__ == "__main__":
    main()
