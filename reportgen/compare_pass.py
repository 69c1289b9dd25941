"""`reportgen compare --runner R`: the two models over the statistics images on Apache Beam.

The statistics pass's plumbing (stats_pass.py) with another measuring function: the images split
into shards of whole batches (`stats_pass.shards`, so every batch is the batch the in-process
comparison forms: minibatch CKA depends on them), each shard read and summed by a worker that loads
both models once (`model_compare.measure_batch`, the in-process comparison's own), only the sums
crossing the shuffle, merged by key (MinibatchCKA adds its HSIC sums, FingerprintSums joins its
rows), and one leaf writing the one result (`stats_pass.run_to_one_result`).
"""

from __future__ import annotations

from dataclasses import dataclass

from reportgen import stats_pass
from reportgen.plan import BuildPlan


@dataclass(frozen=True)
class OnBeam:
    """How to run a comparison on Beam: the models as the workers load them, the statistics images as
    they read them, and the build's runner, Beam options and workers."""

    models: tuple[stats_pass.ModelSpec, stats_pass.ModelSpec]
    images: object  # sources.FolderImages, tfds_source.DatasetImages or sources.LoadedImages: `read(start, end)`
    runner: str = "DirectRunner"
    options: tuple[str, ...] = ()
    workers: int | None = None
    results_folder: str | None = None  # None: a temporary folder (or the runner's temp_location)


@dataclass(frozen=True)
class CompareSetup:
    """What every worker needs: both models, both plans (decided by the client) and the images."""

    models: tuple[stats_pass.ModelSpec, stats_pass.ModelSpec]
    plans: tuple[BuildPlan, BuildPlan]
    images: object
    threads: int | None = None


def measure_shard(setup: CompareSetup, shard: tuple[int, int]) -> dict:
    """Both models over a shard of the statistics images, summed: model_compare's keys -> sums."""
    from reportgen.model_compare import measure_batch

    stats_pass.limit_threads(setup.threads)
    probes = stats_pass.loaded_once(setup.models, setup.plans, lambda: [
        stats_pass.load_probe(spec, plan) for spec, plan in zip(setup.models, setup.plans)])
    total = len(setup.plans[0].targets)
    found: dict = {}
    for batch in stats_pass.read_batches(setup.images, setup.plans[0], *shard):
        measure_batch(found, probes, setup.plans, batch, total)
    return found


def run_beam(plans, how: OnBeam) -> dict:
    """The comparison's sums over every statistics image, measured on Beam and merged by key."""
    beam = stats_pass._beam()
    runner = stats_pass.runner_class(how.runner)
    processes, threads = stats_pass.worker_layout(runner, how.options, how.workers)
    setup = CompareSetup(tuple(spec.absolute() for spec in how.models), tuple(plans), how.images, threads)
    # Two a worker: a slow one holds up the others by half a shard. (The statistics pass takes one a
    # worker, as its shards' sums grow with the folds they fill; these, HSIC sums and the probe images'
    # fingerprint rows, do not.)
    parts = stats_pass.shards(len(setup.plans[0].targets), setup.plans[0].batch_size, 2 * processes)
    merged_by_key, as_one = stats_pass.beam_helpers(beam)

    def graph(pipeline, sink):
        found = (pipeline
                 | "Shards" >> beam.Create(parts)
                 | "Sums of a shard" >> beam.FlatMap(lambda shard: measure_shard(setup, shard).items())
                 | sink.apart(beam, "Shard sums"))
        _ = as_one(merged_by_key(found, "Sums") | sink.apart(beam, "Sums"), "Result") | sink.write(beam)

    return stats_pass.run_to_one_result(graph, runner, how.options, how.workers, len(parts), threads,
                                        how.results_folder)

