"""The statistics pass over `--stats-images`: the accumulators of `stats.py`, driven by Apache Beam.

An executor of the one measuring function: `accumulate` runs the plan's probe on a shard of batches
of consecutive images through `measure.measure_batch`, the function the in-process executor calls;
`score` scores the leave-out probes through `measure.score_batch`, and `ablate` runs a share of an
ablated batch's ablation check through `measure.ablate_batch`. `run_beam` runs them on Beam, the
model loaded once per worker process.

Two passes: the first sums every statistic (the probes' fits among them); the client fits the
probes from the sums, and the second pass scores them on every image, each image predicted by the
probe fitted without its fold. The second pass reads what the first kept of each batch on the
workers' local disk (the maps pooled to the probe's grid: a few MB an image, `measure.probe_inputs`),
so the model runs once over each image; a worker that cannot see what was kept (another machine)
runs the model again. Each pass is a pipeline that ends in one step
writing one result, checked on arrival. Only accumulators are made, summed per shard inside the
DoFn, so no runner's way with combiners (the Dask runner lifts none) and no bundle size decides how
much there is; and they cross the shuffles as paths: a worker writes each into the results folder
(`ResultSink.apart`) and the step that merges them reads them. The DirectRunner in multi-processing mode on the machine's cores is the
default; `--runner dask` with `--beam-option dask_client_address=HOST:PORT` runs on a Dask cluster,
and `--runner` with `--beam-option` pass standard options through for Flink, Spark or Dataflow.

Over 400 lines because the runner's side stays here with the pipeline: naming runners, their
options, the Dask cluster's size, the workers' environment and the result's one file.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import io
import logging
import os
import pickle
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reportgen import outdir
from reportgen import workers as workers_module  # `workers` is run_beam's worker count
from reportgen.errors import InputError, ReportgenError
from reportgen.measure import (SECONDS_KEY, Batch, Measurement, ablate_batch, batches_of, check_scores, check_sums,
                               layer_fit, measure_batch, merge, probe_inputs, probe_inputs_bytes, score_batch)
from reportgen.measure import result as measurement_of
from reportgen.plan import BuildPlan
from reportgen.probe import Probe
from reportgen.spill import BatchStore

log = logging.getLogger(__name__)

BLAS_THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class ModelSpec:
    """How a worker loads the model: plain values, so it pickles to any Beam worker.

    Paths are strings that Beam's `FileSystems` read (a local path, gs://, s3://, hdfs:// where their
    extras are installed); a worker copies what is not local into its own temporary folder. The
    client's SHA-256 of the model (or weights) file travels along, and a worker whose copy differs,
    or that would build an untrained SD-UNet where the client had the trained one, stops.
    """

    model_path: str | None = None
    weights_path: str | None = None
    input_size: int | None = None
    unsafe: bool = False
    imports: tuple[str, ...] = ()
    sha256: str | None = None  # what the client loaded; None: not checked

    def __post_init__(self):
        for name in ("model_path", "weights_path"):  # a Path would turn gs://b/m into gs:/b/m
            if getattr(self, name) is not None:
                object.__setattr__(self, name, str(getattr(self, name)))

    def absolute(self) -> "ModelSpec":
        """The same spec with local paths made absolute (workers may start in another folder);
        paths with a scheme (gs://...) are left as they are."""
        return dataclasses.replace(self, model_path=_absolute(self.model_path), weights_path=_absolute(self.weights_path),
                                   imports=tuple(_absolute(spec) if spec.endswith(".py") else spec
                                                 for spec in self.imports))

    def load(self):
        from reportgen import model_io

        folder = None
        try:
            model_path, weights_path, imports = self.model_path, self.weights_path, self.imports
            if any(_remote(p) for p in (model_path, weights_path, *imports)):
                folder = tempfile.mkdtemp(prefix="reportgen-model-")
                model_path, weights_path = _local_copy(model_path, folder), _local_copy(weights_path, folder)
                imports = tuple(_local_copy(spec, folder) if spec.endswith(".py") else spec for spec in imports)
            loaded = model_io.load(None if model_path is None else Path(model_path),
                                   None if weights_path is None else Path(weights_path), self.input_size,
                                   self.unsafe, imports=imports)
        finally:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
        if self.sha256 is not None and loaded.checksum != self.sha256:
            found = loaded.checksum[:12] or "no weights file (an untrained SD-UNet)"
            raise ReportgenError(f"a statistics worker loaded a different model than this build: SHA-256 "
                                 f"{found}, expected {self.sha256[:12]}; install the same reportgen and model "
                                 "files on the workers")
        return loaded


def _remote(path: str | None) -> bool:
    return path is not None and "://" in path


def _absolute(path) -> str | None:
    if path is None:
        return None
    return str(path) if _remote(str(path)) else str(Path(path).resolve())


def _local_copy(path: str | None, folder: str) -> str | None:
    """A file read through Beam's FileSystems, copied into `folder` (local paths are used as they are)."""
    if not _remote(path):
        return path
    from apache_beam.io.filesystems import FileSystems

    target = Path(folder) / path.rstrip("/").rsplit("/", 1)[-1]
    with FileSystems.open(path) as source, open(target, "wb") as handle:
        shutil.copyfileobj(source, handle, 1 << 20)
    return str(target)


@dataclass(frozen=True)
class PassSetup:
    """What every worker needs: the model, the plan (what to measure, decided once by the client) and
    the statistics images, which it reads itself."""

    model: ModelSpec
    plan: BuildPlan
    images: object = None  # sources.FolderImages, tfds_source.DatasetImages or sources.LoadedImages: `read(start, end)`
    threads: int | None = None  # TensorFlow's threads per worker; None: its default (every core)
    kept: str | None = None  # the folder of the probes' inputs between the passes (spill.BatchStore); None: none


def shards(total: int, batch_size: int, count: int) -> list[tuple[int, int]]:
    """The statistics images 0..total-1 as `count` ranges of whole batches: a worker's unit.

    A worker reads a shard's images itself and sums the whole shard before anything leaves it, so
    only paths go into the job and only accumulators cross a shuffle, on any runner (the Dask runner
    lifts no combiner, and drops what `finish_bundle` emits). Ranges start on a batch boundary, so
    every executor forms the same batches (the minibatch CKA depends on them).
    """
    batches = -(-total // batch_size)
    count = max(1, min(count, batches))
    edges = (np.linspace(0, batches, count + 1).round().astype(int) * batch_size).clip(max=total)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def read_batches(images, plan: BuildPlan, start: int, end: int) -> list[Batch]:
    """A shard's images (PassSetup.images: `read(start, end)`), read where this runs, in the plan's
    batches; images other than the client's are an error."""
    items = images.read(start, end)
    ids = tuple(item.id for item in items)
    if ids != plan.targets.ids[start:end]:
        raise ReportgenError(f"a statistics worker read other images than this build at {start}-{end} "
                             f"({len(ids)} images, the first {ids[:1]}); it must see the same image folder or "
                             "prepared data set")
    return batches_of(plan, items, start)


_loaded: dict = {}  # (models, plans' digest) -> what this worker process made of them (`loaded_once`)


def loaded_once(models, plans, make):
    """What `make()` builds from the models `models` probed as `plans` say, built once per worker process
    and kept for the job's later shards and passes (one job's at a time: the last one is dropped). The
    plans are in the key, as a probe carries its plan's batches."""
    key = (models, hashlib.sha256(pickle.dumps(plans, protocol=pickle.HIGHEST_PROTOCOL)).hexdigest())
    if key not in _loaded:
        _loaded.clear()
        _loaded[key] = make()
    return _loaded[key]


class Worker:
    """A Beam worker's model: the plan's one probe, and the ablation check's rerun; loaded once (`setup`)."""

    def __init__(self, setup: PassSetup):
        self.config = setup
        self.probe = None
        self.rerun = None

    def setup(self) -> None:
        plan = self.config.plan
        limit_threads(self.config.threads)

        def make():
            probe = load_probe(self.config.model, plan)
            return probe, probe.rerun()

        self.probe, self.rerun = loaded_once(self.config.model, plan, make)  # both passes share the model


def limit_threads(threads: int | None) -> None:
    """TensorFlow's threads in this worker (None: its default, every core)."""
    if not threads:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # a worker in this very process (in_memory mode): TensorFlow runs already
        pass


def load_probe(spec: ModelSpec, plan: BuildPlan) -> Probe:
    """The model `spec` loads, probed as `plan` says; other conv layers than the client's are an error."""
    from reportgen import capture

    model = spec.load().model
    convs = capture.find_conv_layers(model, plan.tap, plan.image_index)
    if [c.qualified_name for c in convs] != [layer.conv.qualified_name for layer in plan.layers]:
        raise ReportgenError(f"a statistics worker found {len(convs)} conv layers, the build "
                             f"{len(plan.layers)}, or others")
    return Probe(model, convs, plan)


def accumulate(worker: Worker, shard: tuple[int, int]) -> dict:
    """Every statistic's sums over a shard (a range of statistics images), by `measure.measure_batch`;
    each batch's `measure.probe_inputs` kept for `score`, where the setup has a folder for them.
    SECONDS_KEY -> what each part took (`WorkerSeconds`)."""
    took = WorkerSeconds()
    with took.part("start-up (model load and trace)"):
        if worker.probe is None:
            worker.setup()
    plan = worker.config.plan
    kept = BatchStore(worker.config.kept)
    found: dict = {}
    with took.part("reading images"):
        batches = read_batches(worker.config.images, worker.config.plan, *shard)
    for batch in batches:
        with took.part("model (sums' pass)"):
            named = worker.probe(batch.images, len(plan.targets))
        with took.part("accumulators"):
            inputs = measure_batch(plan, found, named, batch)
        with took.part("keeping the probes' inputs"):
            kept.put(batch.start, inputs)
    found[SECONDS_KEY] = took
    return found


def score(worker: Worker, shard: tuple[int, int], fits: dict) -> dict:
    """The leave-out probes scored on a shard by `measure.score_batch`: conv index -> ProbeScores;
    SECONDS_KEY -> what each part took.

    The probes read what `accumulate` kept of each batch; a batch it did not keep (a worker on
    another machine, no folder) runs through the model again. `fits`: conv index -> (folds, mask
    probe weights, class probe weights, Taylor importances), fitted from every image.
    """
    plan = worker.config.plan
    kept = BatchStore(worker.config.kept)
    took = WorkerSeconds()
    found: dict = {}
    start, end = shard
    for first in range(start, end, plan.batch_size):
        inputs = kept.take(first)
        if inputs is None:
            with took.part("start-up (model load and trace)"):
                if worker.probe is None:
                    worker.setup()
            with took.part("reading images"):
                batch, = read_batches(worker.config.images, plan, first, min(first + plan.batch_size, end))
            with took.part("model again (scores' pass)"):
                inputs = probe_inputs(plan, worker.probe(batch.images, len(plan.targets), attributed=False), batch)
        with took.part("scores"):
            score_batch(plan, found, inputs, fits)
    found[SECONDS_KEY] = took
    return found


def ablate(worker: Worker, task: tuple[int, int, int], fits: dict) -> dict:
    """The ablation check of one ablated batch, (its first image, the share of its layers, shares):
    ABLATION_KEY -> AblationSums, SECONDS_KEY -> what it took. A batch's check is split by layers
    (`ablation.shares`) so that every worker takes a part of the batch with the single channels."""
    first, share, count = task
    plan = worker.config.plan
    took = WorkerSeconds()
    found: dict = {}
    with took.part("start-up (model load and trace)"):
        if worker.probe is None:
            worker.setup()
    with took.part("reading images"):
        batch, = read_batches(worker.config.images, plan, first, min(first + plan.batch_size, len(plan.targets)))
    with took.part("ablation check"):
        ablate_batch(plan, found, worker.probe, worker.rerun, batch, fits, {}, share, count)
    found[SECONDS_KEY] = took
    return found


@dataclass
class WorkerSeconds:
    """Seconds spent in each part of the pass, summed over workers: what the benchmark prints."""

    seconds: dict = dataclasses.field(default_factory=dict)

    @contextlib.contextmanager
    def part(self, name: str):
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.monotonic() - started

    def merge(self, other: "WorkerSeconds") -> "WorkerSeconds":
        return WorkerSeconds({k: self.seconds.get(k, 0.0) + other.seconds.get(k, 0.0)
                              for k in {*self.seconds, *other.seconds}})


def _beam():
    try:
        with _root_logger_untouched():
            import apache_beam as beam
    except ImportError:
        raise InputError("--stats-images beyond the pictured images runs on Apache Beam, which is not installed; "
                         "install the extra: pip install 'reportgen[beam]'") from None
    for name in ("apache_beam", "apache_beam.runners", "apache_beam.utils", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)  # the workers' INFO lines are not for users
    return beam


@contextlib.contextmanager
def _root_logger_untouched():
    """Beam warns on the root logger as it is imported, which also gives the root logger a handler
    (logging.basicConfig): its warning is not for users, and every later log line would print."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        root.setLevel(level)


DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"


def installed_runners() -> dict[str, str]:
    """The runners a user can name, short name -> class path: Beam's own (but its test runners), and
    dask where dask.distributed is installed."""
    import importlib.util

    from apache_beam.options.pipeline_options import StandardOptions

    internal = ("Test", "BundleBased", "Switching")  # Beam's test runners and the DirectRunner's own parts
    found = {path.rsplit(".", 1)[-1]: path for path in StandardOptions.ALL_KNOWN_RUNNERS}
    found = {name: path for name, path in found.items() if not name.startswith(internal)}
    if importlib.util.find_spec("distributed") is not None:
        found["dask"] = DASK_RUNNER
    return found


def runner_class(runner: str) -> str:
    """The runner as Beam is given it: its short name (DirectRunner, FlinkRunner, ...), the Dask runner's
    class path for `dask`, or a full class path as given. Names are case-insensitive and the `Runner`
    suffix optional, as Beam reads them; any other name is one line that lists the runners installed."""
    _beam()
    installed = installed_runners()
    by_lower = {name.lower(): name for name in installed}
    name = by_lower.get(runner.lower()) or by_lower.get(runner.lower() + "runner")
    if name is not None:
        return installed[name] if name == "dask" else name
    if "." in runner:
        import importlib.util

        try:
            if importlib.util.find_spec(runner.rsplit(".", 1)[0]) is not None:
                return runner
        except (ImportError, ValueError):
            pass
    raise InputError(f"unknown --runner {runner!r}; the runners installed are {', '.join(sorted(installed))} "
                     "(or a runner's full class path)")


def _option_pairs(options: tuple[str, ...]) -> dict[str, str]:
    pairs = {}
    for option in options:
        key, _, value = option.partition("=")
        key = key.strip().lstrip("-")
        if "=" not in option or not key.isidentifier():
            raise InputError(f"--beam-option takes KEY=VALUE, got {option!r}")
        pairs[key] = value
    return pairs


def pipeline_options(runner: str, options: tuple[str, ...] = (), workers: int | None = None,
                     partitions: int | None = None):
    """Standard Beam pipeline options: the runner, the embedded default's processes, the Dask
    partitions (one per shard, so the shards spread over the workers), and each KEY=VALUE."""
    _beam()
    from apache_beam.options.pipeline_options import PipelineOptions

    runner = runner_class(runner)
    pairs = _option_pairs(options)
    args = [f"--runner={runner}"]
    if runner == "DirectRunner":
        args += [f"--direct_num_workers={workers or os.cpu_count() or 1}", "--direct_running_mode=multi_processing",
                 "--default_sdk_harness_log_level=ERROR"]
    if runner == DASK_RUNNER and partitions and "dask_npartitions" not in pairs and "dask_partition_size" not in pairs:
        args.append(f"--dask_npartitions={partitions}")
    args += [f"--{key}={value}" for key, value in pairs.items()]
    parsed = PipelineOptions(args)
    refusal = io.StringIO()
    try:
        with contextlib.redirect_stderr(refusal):  # argparse prints its whole usage, then exits
            parsed.get_all_options(retain_unknown_options=True)
    except SystemExit:
        reason = (refusal.getvalue().strip().splitlines() or ["refused"])[-1].split("error: ", 1)[-1]
        raise InputError(f"Beam refuses the --beam-option values: {reason}") from None
    return parsed


def _dask_workers(options: tuple[str, ...]) -> tuple[int, int] | None:
    """The Dask cluster's (workers, threads of the smallest worker), asked of its scheduler."""
    address = _option_pairs(options).get("dask_client_address")
    if not address:
        return None
    try:
        from distributed.comm.addressing import get_address_host_port
    except ImportError:
        raise InputError("--runner dask needs the dask extra: pip install 'apache-beam[dask]'") from None
    try:
        get_address_host_port(address)
    except ValueError:
        raise InputError(f"--beam-option dask_client_address={address!r} is not HOST:PORT") from None
    try:
        found, asked = _ask_dask_cluster(address)
    except OSError as error:
        raise InputError(f"cannot reach the Dask scheduler at {address}: {error}") from None
    if not found:
        raise InputError(f"the Dask scheduler at {address} has no workers")
    trimming = sorted({value for value in asked if isinstance(value, str)})
    if trimming:
        log.warning("the Dask workers hand freed memory back at once (MALLOC_TRIM_THRESHOLD_=%s, Dask's default), "
                    "which makes the statistics pass about 1.35x slower; the README's 'On a Dask cluster' "
                    "says how to turn it off", ", ".join(trimming))
    return len(found), min(int(w.get("nthreads", 1)) for w in found)


def _ask_dask_cluster(address: str) -> tuple[list[dict], list]:
    """The scheduler's description of each worker, and each worker's `_trim_threshold` (a worker that
    cannot import reportgen is left out: the pass itself says so).

    An asynchronous client on an event loop of our own: a synchronous one starts its loop in a thread
    and fails outright when that thread has not run within 10 s, which a loaded machine sometimes
    brings about. The connection waits as Dask's configuration says (distributed.comm.timeouts.connect)."""
    from distributed import Client

    async def ask():
        async with Client(address, asynchronous=True) as client:
            identity = await client.scheduler.identity(n_workers=-1)
            asked = await client.run(_trim_threshold, on_error="ignore")
        return list(identity["workers"].values()), list(asked.values())

    # In a thread of its own: the caller's thread may be running an event loop already (a notebook's).
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dask-scheduler") as pool:
        return pool.submit(asyncio.run, ask()).result()


def _trim_threshold() -> str | None:
    """Run on each Dask worker: glibc's trim threshold as the worker's environment sets it. Dask's nanny
    sets it, so that a worker's memory shrinks as soon as it is freed; glibc then maps every array
    over 128 kB afresh, and the accumulators, which make and drop large arrays on every batch, take
    about twice as long."""
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def worker_layout(runner: str, options: tuple[str, ...] = (), workers: int | None = None) -> tuple[int, int | None]:
    """(worker processes, TensorFlow's threads in each; None: its default) of a job on `runner` (a class
    as runner_class gives it): the DirectRunner's `workers` (default one per core), a Dask cluster's own."""
    processes = workers or os.cpu_count() or 1
    if runner == "DirectRunner":
        # One worker per core: TensorFlow's own threads in each would only fight over the same cores.
        return processes, max(1, (os.cpu_count() or 1) // processes)
    if runner == DASK_RUNNER:
        cluster = _dask_workers(options)
        if cluster is not None:
            return cluster
    return processes, None


def beam_helpers(beam):
    """The steps every pipeline here is made of: `merged_by_key` (each key's accumulators merged,
    measure.merge, those kept apart read first), `as_one` (every (key, value) as one dict, one element, so one step consumes it all)."""

    def merged_by_key(pcoll, name: str):
        return (pcoll
                | f"{name} by key" >> beam.GroupByKey()
                | f"{name} merged" >> beam.MapTuple(lambda key, parts: (key, merge(map(_with_kept_loaded, parts)))))

    def as_one(pcoll, name: str):
        return (pcoll
                | f"{name} to one key" >> beam.Map(lambda pair: (None, pair))
                | f"{name} together" >> beam.GroupByKey()
                | f"{name} as a dict" >> beam.MapTuple(lambda _, pairs: dict(pairs)))

    return merged_by_key, as_one


@dataclass(frozen=True)
class Kept:
    """A value of the result that its worker wrote to a file of its own in the results folder
    (`ResultSink.apart`): only this path crosses the runner's shuffles, and the client reads it."""

    path: str

    def load(self):
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(self.path) as handle:
            return pickle.loads(handle.read())


def _with_kept_loaded(found):
    """The result with every `Kept` value, at any depth of its dicts, read back."""
    if isinstance(found, Kept):
        return found.load()
    if isinstance(found, dict):
        return {key: _with_kept_loaded(value) for key, value in found.items()}
    return found


@dataclass(frozen=True)
class ResultSink:
    """Where a pipeline's result goes: `write`, the one leaf, writes the one result; `apart(name)` writes
    each (key, value) of a collection to a file of its own, where it is made, and passes on (key, Kept).

    The statistics' sums are hundreds of MB, and each of the runner's shuffles decodes and encodes what
    crosses it (the DirectRunner's run in the client's process): as values, each shard's sums crossed
    the shuffle that merged them, and the merged sums two more, a third of the pass's wall time. Kept
    apart, only paths cross; `merged_by_key` reads what it merges. The workers and the client must
    see the results folder: this machine's temporary folder for the local runners, the runner's
    `temp_location` (gs://, s3://, ...) for the others."""

    folder: str

    @property
    def path(self) -> str:
        return f"{self.folder.rstrip('/')}/result.pickle"

    def write(self, beam):
        path = self.path

        def written(found):
            _write(path, found)
            yield path

        return "Write" >> beam.FlatMap(written)

    def apart(self, beam, name: str):
        folder = self.folder.rstrip("/")

        def kept(key, value):
            path = f"{folder}/{name}-{uuid.uuid4().hex}.pickle"
            _write(path, value)
            return key, Kept(path)

        return f"{name} apart" >> beam.MapTuple(kept)


def _write(path: str, value) -> None:
    """`value` pickled into `path`, through Beam's file systems (local, gs://, ...)."""
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.create(path) as handle:
        handle.write(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


def run_to_one_result(graph, runner: str, options: tuple[str, ...] = (), workers: int | None = None,
                      partitions: int | None = None, threads: int | None = None,
                      results_folder: str | None = None):
    """Run the pipeline `graph(pipeline, sink)` makes, whose one leaf is `sink.write` (a ResultSink)
    applied to its one element (the result); that result, read back with what `sink.apart` kept.
    Runners that compute only the last leaf (Dask) compute all of it. The workers run in
    _worker_environment(threads); `graph` is called inside it, so the temporary folders it makes go
    with it."""
    beam = _beam()

    with _worker_environment(threads):
        remote = _option_pairs(options).get("temp_location")
        local = results_folder is None and remote is None
        # Remote runners' workers cannot write into this machine's /tmp: results go to their temp_location.
        folder = results_folder or (f"{remote.rstrip('/')}/reportgen-stats-{os.getpid()}-{time.time_ns()}" if remote
                                    else tempfile.mkdtemp(prefix="reportgen-beam-"))
        sink = ResultSink(folder)
        pipeline = beam.Pipeline(options=pipeline_options(runner, options, workers, partitions))
        graph(pipeline, sink)
        try:
            # A local job's result is a file here: once it is written, its workers get a few seconds to stop.
            with workers_module.bounded_shutdown(lambda: local and os.path.exists(sink.path)) as shutdown:
                try:
                    result = pipeline.run()
                    try:
                        result.wait_until_finish()
                    finally:
                        client = getattr(result, "client", None)  # the Dask runner's; left open, it logs the cluster's end
                        if client is not None:
                            client.close()
                except Exception:
                    if shutdown.interrupted:  # Beam's clean-up failed as its workers were ended: still an interrupt
                        raise KeyboardInterrupt from None
                    if not shutdown.fired:
                        raise
            return _with_kept_loaded(_read_result(sink.path))
        finally:
            if local:
                shutil.rmtree(folder, ignore_errors=True)


def run_beam(setup: PassSetup, runner: str = "DirectRunner", options: tuple[str, ...] = (),
             workers: int | None = None, results_folder: str | None = None) -> Measurement:
    """The statistics of the plan on Beam: one pipeline for the sums, the probes fitted from them
    here, a second pipeline for the probes' scores. Each pipeline ends in one leaf that writes one
    result, checked on arrival: runners that compute only the last leaf (Dask) compute everything."""
    beam = _beam()
    runner = runner_class(runner)
    processes, threads = worker_layout(runner, options, workers)
    setup = dataclasses.replace(setup, model=setup.model.absolute(), threads=threads)
    # One a worker: every shard's accumulators cross the runner's process (the DirectRunner's shuffle
    # runs there), and past 10 images a shard fills every fold's sums, so what crosses is bounded by
    # the workers, not the images. Two a worker crossed twice as much, and grew from 24 to 240 images
    # (a shard of 6 fills 6 folds): the build's peak memory 1.24x.
    parts = shards(len(setup.plan.targets), setup.plan.batch_size, processes)

    class SumsDoFn(beam.DoFn):
        """A shard's batches through the model (loaded once per worker process, on its first shard),
        summed: it emits only accumulators, by key, and the worker-seconds it took."""

        def __init__(self, config: PassSetup):
            self.config = config

        def setup(self):
            self.worker = Worker(self.config)

        def process(self, keyed_shard):
            yield from accumulate(self.worker, keyed_shard[1]).items()

    class ScoresDoFn(SumsDoFn):
        """The probes, fitted from every image's sums, scored on a shard from what the sums' pass kept;
        or a share of an ablated batch's ablation check."""

        def process(self, joined):
            _, found = joined
            fits = found["fits"][0] if found["fits"] else {}
            if not fits:  # no probe and no ablation: no second pass
                return
            for task in found["task"]:
                done = score(self.worker, task[1], fits) if task[0] == "scores" else \
                    ablate(self.worker, task[1], fits)
                yield from done.items()

    merged_by_key, as_one = beam_helpers(beam)

    # The second pass's tasks: each shard's scores, and each ablated batch's check in a share a worker.
    tasks = [("scores", part) for part in parts] + [("ablation", (first, share, processes))
                                                    for first in sorted(setup.plan.ablated_starts)
                                                    for share in range(processes)]

    def fan_out(fits: dict):
        return [(k, fits) for k in range(len(tasks))]

    def graph(pipeline, sink: ResultSink):
        # One DAG with one leaf, and no side input (Dask's would compute the sums again inside every
        # task): the fits meet each task of the second pass through a CoGroupByKey.
        kept = dataclasses.replace(setup, kept=_probe_inputs_folder(setup.plan))
        shards_in = pipeline | "Shards" >> beam.Create(list(enumerate(parts)))
        sums = merged_by_key(shards_in | "Sums of a shard" >> beam.ParDo(SumsDoFn(kept))
                             | sink.apart(beam, "Shard sums"), "Sums")
        # Each layer fitted where its sums are; only the fits, a few MB, come together.
        fits = (as_one(sums | "Fit probes" >> beam.FlatMapTuple(layer_fit), "Fits")
                | "To every shard" >> beam.FlatMap(fan_out))
        tasks_in = pipeline | "Tasks" >> beam.Create(list(enumerate(tasks)))
        scores = merged_by_key({"task": tasks_in, "fits": fits}
                               | "Fits meet tasks" >> beam.CoGroupByKey()
                               | "Scores of a shard" >> beam.ParDo(ScoresDoFn(kept)), "Scores")
        # Each layer's sums are written apart where they were merged: only their paths come together.
        tagged = ((as_one(sums | sink.apart(beam, "Sums"), "All sums") | "Tag sums" >> beam.Map(lambda found: ("sums", found))),
                  (as_one(scores, "All scores") | "Tag scores" >> beam.Map(lambda found: ("scores", found))))
        _ = as_one(tagged | "Both" >> beam.Flatten(), "Result") | sink.write(beam)

    found = run_to_one_result(graph, runner, options, workers, len(parts), threads, results_folder)
    sums, scores = found.get("sums", {}), found.get("scores", {})
    check_sums(sums, setup.plan)
    check_scores(scores, sums, setup.plan)
    return measurement_of(sums, scores)


def _probe_inputs_folder(plan: BuildPlan) -> str | None:
    """A folder here for what the first pass keeps for the second (spill.BatchStore), where the disk
    holds twice what it may take; else None, and the second pass runs the model again."""
    folder = tempfile.mkdtemp(prefix="reportgen-probe-inputs-")
    if shutil.disk_usage(folder).free > 2 * probe_inputs_bytes(plan) * len(plan.targets):
        return folder
    log.info("the disk cannot hold the probes' inputs of %d images: the probes are scored on a second forward "
             "pass", len(plan.targets))
    return None


@contextlib.contextmanager
def _worker_environment(threads: int | None):
    """Beam's local workers start as `python -m ...` in this process's folder, which puts that folder
    first on their path: they start in an empty folder instead, with quiet TensorFlow and, where the
    threads per worker are known, as many BLAS threads (numpy reads them when it starts: with a
    thread per core in each worker, the accumulators' matrix products ran twice as slow)."""
    here = os.getcwd()
    neutral = str(outdir.owned_folder("reportgen-beam-", Path(tempfile.gettempdir())))
    saved, saved_tempdir = dict(os.environ), tempfile.tempdir
    os.chdir(neutral)
    # Beam's own scratch (beam-temp*, its requirements cache) goes here too, and goes with it.
    tempfile.tempdir = os.environ["TMPDIR"] = neutral
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if threads:
        os.environ.update({name: str(threads) for name in BLAS_THREADS})
    try:
        with _workers_stderr(os.path.join(neutral, "workers.log")):
            yield
    finally:
        os.chdir(here)
        os.environ.clear()
        os.environ.update(saved)
        tempfile.tempdir = saved_tempdir
        shutil.rmtree(neutral, ignore_errors=True)


@contextlib.contextmanager
def _workers_stderr(log_path: str):
    """The workers' start-up lines (Beam's 'apitools not found', 'Logging handler created', TensorFlow's
    native notices) are not for users: the workers inherit a standard error that goes to a log. When
    the pass fails, the log's end goes to this module's logger (at INFO)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(log_path, "wb") as log_file:
            os.dup2(log_file.fileno(), 2)
        yield
    except Exception:
        with open(log_path, "rb") as log_file:
            tail = log_file.read()[-4000:].decode("utf-8", "replace")
        log.info("the statistics workers' last output:\n%s", tail)
        raise
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _read_result(path: str) -> dict:
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(path):
        raise ReportgenError("the statistics pass finished without writing its result; the runner did not run "
                             "the pipeline's last step")
    with FileSystems.open(path) as handle:
        return pickle.loads(handle.read())
