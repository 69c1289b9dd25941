"""The statistics pass over `--stats-images`: the accumulators of `stats.py`, driven by Apache Beam.

One implementation, two drivers. `Activations` runs the model on one batch of consecutive images
and turns its conv outputs into the inputs of the accumulators; `add` and `merge` are the
accumulators' own. `run_in_process` loops over the batches; `run_beam` is a Beam pipeline whose
DoFn loads the model once per worker (`setup`) and whose `StatsCombineFn` is the accumulators as a
CombineFn (create, add_input, merge_accumulators, extract_output).

Two passes: the first sums every statistic (the probes' fits among them); the second, with the
fitted weights as a side input, scores the probes on every image (`probe_scores`), each image
predicted by the probe fitted without its fold. A second forward pass costs less than keeping
each image's pooled features of every layer until the fits are known. The DirectRunner in
multi-processing mode on the machine's cores is the default; `--runner` and `--beam-option` pass
standard pipeline options through, for Flink, Spark or Dataflow.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reportgen import stats
from reportgen.errors import InputError
from reportgen.inputs import InputConvention

log = logging.getLogger(__name__)

CKA_KEY = -1  # the key of the layer x layer CKA among the per-layer keys 0..L-1
BLAS_THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class ModelSpec:
    """How a worker loads the model: plain values, so it pickles to any Beam worker."""

    model_path: Path | None = None
    weights_path: Path | None = None
    input_size: int | None = None
    unsafe: bool = False
    imports: tuple[str, ...] = ()

    def absolute(self) -> "ModelSpec":
        """The same spec with absolute paths: workers may start in another folder."""
        def resolve(path):
            return None if path is None else Path(path).resolve()

        return ModelSpec(resolve(self.model_path), resolve(self.weights_path), self.input_size, self.unsafe,
                         tuple(str(Path(spec).resolve()) if spec.endswith(".py") else spec for spec in self.imports))

    def load(self):
        from reportgen import model_io

        return model_io.load(self.model_path, self.weights_path, self.input_size, self.unsafe, imports=self.imports)


@dataclass(frozen=True)
class PassSetup:
    """What every worker needs besides the images."""

    model: ModelSpec
    tap: str
    image_input: str | None
    convention: InputConvention
    total: int  # statistics images in all: fixes the folds
    input_height: int
    threads: int | None = None  # TensorFlow's threads per worker; None: its default (every core)


@dataclass(frozen=True)
class Batch:
    """Consecutive statistics images `start`, `start + 1`, ...: the unit of work, and of minibatch CKA."""

    start: int
    images: np.ndarray  # B x H x W x C uint8
    masks: np.ndarray | None  # B x H x W trimaps, or None
    labels: np.ndarray | None  # B x K one-hot classes, or None


@dataclass(frozen=True)
class LayerInput:
    """One layer's outputs on one batch, as LayerAccumulator.add takes them."""

    layer: int
    maps: np.ndarray
    batch: Batch
    stride: float


def batches(images, masks, labels, size: int) -> list[Batch]:
    """The statistics images cut into batches of `size` consecutive images."""
    out = []
    for start in range(0, len(images), size):
        end = start + size
        out.append(Batch(start, np.stack(images[start:end]),
                         None if masks is None else np.stack(masks[start:end]),
                         None if labels is None else labels[start:end]))
    return out


_probes: dict = {}  # PassSetup -> (the probe model returning every conv output, the image input's index)


class Activations:
    """The model's conv outputs on a batch, as accumulator inputs; the model loads once (`setup`)."""

    def __init__(self, setup: PassSetup):
        self.config = setup
        self.probe = None

    def setup(self) -> None:
        import keras

        from reportgen import capture

        if self.config.threads:
            import tensorflow as tf

            try:
                tf.config.threading.set_intra_op_parallelism_threads(self.config.threads)
                tf.config.threading.set_inter_op_parallelism_threads(self.config.threads)
            except RuntimeError:  # a worker in this very process (in_memory mode): TensorFlow runs already
                pass

        if self.config not in _probes:  # both passes' DoFns in one worker share the model
            model = self.config.model.load().model
            convs = capture.find_conv_layers(model, self.config.tap)
            probe = capture.probe_model(model, convs)
            _probes.clear()
            _probes[self.config] = (keras.Model(probe.inputs, capture.as_stored(probe.outputs)),
                                    capture.image_input(model, self.config.image_input))
        self.probe, self.image_index = _probes[self.config]

    def __call__(self, batch: Batch) -> list[tuple[int, object]]:
        from reportgen import capture

        if self.probe is None:
            self.setup()
        (_, outputs), = capture.stream_activations(self.probe, batch.images, len(batch.images), self.image_index,
                                                   self.config.convention.apply)
        elements: list[tuple[int, object]] = []
        spatial = []
        for layer, maps in enumerate(outputs):
            if maps.ndim == 4:
                spatial.append(maps)
                elements.append((layer, LayerInput(layer, maps, batch, self.config.input_height / maps.shape[1])))
        elements.append((CKA_KEY, spatial))
        return elements


def probe_scores(elements, weights: dict) -> list[tuple[int, stats.ProbeScores]]:
    """One batch's leave-out probe scores per layer, from the elements `Activations` emits for it.

    `weights`: layer -> (folds, mask probe weights, class probe weights), from the first pass.
    """
    found = []
    for key, element in elements:
        if not isinstance(element, LayerInput) or key not in weights:
            continue
        scores = stats.ProbeScores(*weights[key])
        batch = element.batch
        for k, maps in enumerate(element.maps):
            truth = None if batch.masks is None else \
                (lambda h, w, mask=batch.masks[k]: stats.grid_truth(mask[None], h, w)[0])
            label = None if batch.labels is None else int(np.argmax(batch.labels[k]))
            scores.add_image(maps, batch.start + k, truth, label)
        found.append((key, scores))
    return found


def add(accumulator, element, total: int):
    """Add one element to an accumulator (created lazily: its size comes from the first element)."""
    if isinstance(element, stats.ProbeScores):  # the second pass: per-batch scores, merged
        return element if accumulator is None else accumulator.merge(element)
    if isinstance(element, LayerInput):
        if accumulator is None:
            accumulator = stats.LayerAccumulator(element.maps.shape[-1], element.stride)
        batch = element.batch
        indices = list(range(batch.start, batch.start + len(element.maps)))
        accumulator.add(element.maps, batch.masks, indices, total, measures=True, labels=batch.labels)
        return accumulator
    if accumulator is None:
        accumulator = stats.MinibatchCKA(len(element))
    accumulator.add(element)
    return accumulator


def merge(accumulators):
    merged = None
    for accumulator in accumulators:
        if accumulator is not None:
            merged = accumulator if merged is None else merged.merge(accumulator)
    return merged


@dataclass
class PassResult:
    """Per conv layer (graph order, spatial layers only) its accumulator and its probes' scores, and
    the layer x layer CKA."""

    layers: dict  # layer index -> stats.LayerAccumulator
    cka: stats.MinibatchCKA | None
    scores: dict = dataclasses.field(default_factory=dict)  # layer index -> stats.ProbeScores


def probe_fits(key: int, accumulator):
    """A layer's probe weights per fold, (key, (folds, the mask probe's, the class probe's)), fitted
    from its sums; nothing where the layer has no probe."""
    if key != CKA_KEY:
        fitted = (accumulator.fold_count, stats.probe_weights(accumulator.folds),
                  stats.probe_weights(accumulator.class_folds))
        if fitted[1] or fitted[2]:
            yield key, fitted


def run_in_process(setup: PassSetup, work: list[Batch]) -> PassResult:
    """The reference driver: every batch in this process, one after the other, twice: the sums of
    every statistic, then the probes fitted from them scored on every image."""
    activations = Activations(setup)
    found: dict = {}
    for batch in work:
        for key, element in activations(batch):
            found[key] = add(found.get(key), element, setup.total)
    weights = dict(fit for key, acc in found.items() for fit in probe_fits(key, acc))
    scores: dict = {}
    for batch in work if weights else ():
        for key, element in probe_scores(activations(batch), weights):
            scores[key] = add(scores.get(key), element, setup.total)
    return PassResult({k: v for k, v in found.items() if k != CKA_KEY}, found.get(CKA_KEY), scores)


def _beam():
    try:
        import apache_beam as beam
    except ImportError:
        raise InputError("--stats-images beyond the pictured images runs on Apache Beam, which is not installed; "
                         "install the extra: pip install 'reportgen[beam]'") from None
    for name in ("apache_beam", "apache_beam.runners", "apache_beam.utils", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)  # the workers' INFO lines are not for users
    return beam


def pipeline_options(runner: str, options: tuple[str, ...] = (), workers: int | None = None):
    """Standard Beam pipeline options: the runner, the embedded default's processes, and each KEY=VALUE."""
    _beam()
    from apache_beam.options.pipeline_options import PipelineOptions

    args = [f"--runner={runner}"]
    if runner == "DirectRunner":
        args += [f"--direct_num_workers={workers or os.cpu_count() or 1}", "--direct_running_mode=multi_processing",
                 "--default_sdk_harness_log_level=ERROR"]
    for option in options:
        if "=" not in option:
            raise InputError(f"--beam-option takes KEY=VALUE, got {option!r}")
        key, value = option.split("=", 1)
        args.append(f"--{key.lstrip('-')}={value}")
    return PipelineOptions(args)


def run_beam(setup: PassSetup, work: list[Batch], runner: str = "DirectRunner", options: tuple[str, ...] = (),
             workers: int | None = None, results_folder: str | None = None) -> PassResult:
    """The same as `run_in_process`, on Beam, in one pipeline: a DoFn per batch and a CombineFn per
    layer; the probes' weights, fitted from the combined sums, reach the second pass as a side input."""
    beam = _beam()

    class ActivationsDoFn(beam.DoFn):
        """Loads the model once per worker, in `setup`, and emits each layer's outputs by layer key."""

        def __init__(self, config: PassSetup):
            self.config = config

        def setup(self):
            self.activations = Activations(self.config)
            self.activations.setup()

        def process(self, batch, weights=None):
            elements = self.activations(batch)
            if weights is None:
                yield from elements
            elif weights:
                yield from probe_scores(elements, weights)

    class StatsCombineFn(beam.CombineFn):
        """A stats.py accumulator as a CombineFn: create, add, merge, extract."""

        def __init__(self, total: int):
            self.total = total

        def create_accumulator(self):
            return None

        def add_input(self, accumulator, element):
            return add(accumulator, element, self.total)

        def merge_accumulators(self, accumulators):
            return merge(accumulators)

        def extract_output(self, accumulator):
            return accumulator

    class WriteResult(beam.DoFn):
        """Each finished accumulator into the results folder, through Beam's file systems (local, gs://, ...)."""

        def __init__(self, folder: str, kind: str):
            self.folder, self.kind = folder, kind

        def process(self, keyed):
            import pickle

            from apache_beam.io.filesystems import FileSystems

            key, accumulator = keyed
            with FileSystems.create(FileSystems.join(self.folder, f"{self.kind}_{key}.pickle")) as handle:
                handle.write(pickle.dumps(accumulator, protocol=pickle.HIGHEST_PROTOCOL))

    remote = next((o.split("=", 1)[1] for o in options if o.lstrip("-").startswith("temp_location=")), None)
    local = results_folder is None and remote is None
    # Remote runners' workers cannot write into this machine's /tmp: results go to their temp_location.
    folder = results_folder or (f"{remote.rstrip('/')}/reportgen-stats-{os.getpid()}-{time.time_ns()}" if remote
                                else tempfile.mkdtemp(prefix="reportgen-beam-"))
    setup = dataclasses.replace(setup, model=setup.model.absolute())
    if runner == "DirectRunner":
        # One worker per core: TensorFlow's own threads in each would only fight over the same cores.
        processes = workers or os.cpu_count() or 1
        setup = dataclasses.replace(setup, threads=max(1, (os.cpu_count() or 1) // processes))
    # Beam's local workers start as `python -m ...` in this process's folder, which puts that folder
    # first on their path: in a reportgen checkout they would import its source tree, not the
    # installed package. They start in an empty folder instead.
    here = os.getcwd()
    neutral = tempfile.mkdtemp(prefix="reportgen-beam-cwd-")
    os.chdir(neutral)
    saved_environment = dict(os.environ)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # the workers' TensorFlow start-up lines are not for users
    if setup.threads:
        # The same for numpy's BLAS in the workers, which read this when they start: with a thread
        # per core in each worker, the accumulators' matrix products ran twice as slow.
        os.environ.update({name: str(setup.threads) for name in BLAS_THREADS})
    try:
        with beam.Pipeline(options=pipeline_options(runner, options, workers)) as pipeline:
            batches = pipeline | "Batches" >> beam.Create(work)
            sums = (batches
                    | "Activations" >> beam.ParDo(ActivationsDoFn(setup))
                    | "Statistics" >> beam.CombinePerKey(StatsCombineFn(setup.total)))
            _ = sums | "Write statistics" >> beam.ParDo(WriteResult(folder, "stats"))
            weights = (sums
                       | "Fit probes" >> beam.FlatMapTuple(probe_fits)
                       | "Probe weights" >> beam.combiners.ToDict())
            _ = (batches
                 | "Activations again" >> beam.ParDo(ActivationsDoFn(setup), weights=beam.pvalue.AsSingleton(weights))
                 | "Probe scores" >> beam.CombinePerKey(StatsCombineFn(setup.total))
                 | "Write probe scores" >> beam.ParDo(WriteResult(folder, "scores")))
    finally:
        os.chdir(here)
        os.environ.clear()
        os.environ.update(saved_environment)
        shutil.rmtree(neutral, ignore_errors=True)
    try:
        return _read_results(folder)
    finally:
        if local:
            shutil.rmtree(folder, ignore_errors=True)


def _read_results(folder: str) -> PassResult:
    import pickle

    from apache_beam.io.filesystems import FileSystems

    found: dict = {"stats": {}, "scores": {}}
    for match in FileSystems.match([FileSystems.join(folder, "*.pickle")])[0].metadata_list:
        kind, key = Path(match.path).stem.rsplit("_", 1)
        with FileSystems.open(match.path) as handle:
            found[kind][int(key)] = pickle.loads(handle.read())
    sums = found["stats"]
    return PassResult({k: v for k, v in sums.items() if k != CKA_KEY}, sums.get(CKA_KEY), found["scores"])
