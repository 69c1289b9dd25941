"""The command line: the only place that turns errors into messages and exit codes."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from rich.markup import escape

from reportgen.errors import OutputError, ReportgenError
from reportgen.options import BY_NAME, worker_count

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter is not for users
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="See and measure what every convolution layer of a CNN does.")


def _fail(error: ReportgenError) -> None:
    from reportgen.naming import printable

    typer.echo(f"error: {printable(str(error))}", err=True)
    raise typer.Exit(code=error.exit_code)


def _quiet_libraries() -> None:
    logging.getLogger("absl").setLevel(logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass


def opt(name: str):
    """The build command's option `name`, as declared in options.py: flags, default, help and panel.
    Brackets are escaped, or rich's markup would eat them (it printed "pip install 'reportgen'")."""
    declared = BY_NAME[name]
    return typer.Option(declared.cli_default, *declared.flags, help=escape(declared.help),
                        rich_help_panel=declared.panel)


def _shared(name: str):
    """An option the other commands share with build, with its declared flags and help."""
    declared = BY_NAME[name]
    return typer.Option(*declared.flags, help=escape(declared.help))


ModelOpt = Annotated[Optional[Path], _shared("model_path")]
WeightsOpt = Annotated[Optional[Path], _shared("weights_path")]
InputSizeOpt = Annotated[Optional[str], _shared("input_size")]
ImportOpt = Annotated[Optional[list[str]], _shared("imports")]
UnsafeOpt = Annotated[bool, _shared("unsafe_load")]


@app.command()
def build(
    model: Optional[Path] = opt("model_path"),
    weights: Optional[Path] = opt("weights_path"),
    input_size: Optional[str] = opt("input_size"),
    image_input: Optional[str] = opt("image_input"),
    preprocess: str = opt("preprocess"),
    rescale: Optional[str] = opt("rescale"),
    fit: str = opt("fit"),
    interpolation: str = opt("interpolation"),
    imports: Optional[list[str]] = opt("imports"),
    labels: Optional[Path] = opt("labels"),
    tap: str = opt("tap"),
    unsafe_load: bool = opt("unsafe_load"),
    images: int = opt("images"),
    dataset: str = opt("dataset"),
    split: str = opt("split"),
    image_dir: Optional[Path] = opt("image_dir"),
    trimap_dir: Optional[Path] = opt("trimap_dir"),
    depth: str = opt("depth"),
    exif: bool = opt("exif"),
    mask_values: Optional[str] = opt("mask_values"),
    select: str = opt("select"),
    seed: int = opt("seed"),
    ids: Optional[list[str]] = opt("ids"),
    data_dir: Optional[str] = opt("data_dir"),
    statistics: bool = opt("statistics"),
    stats_images: Optional[str] = opt("stats_images"),
    runner: str = opt("runner"),
    beam_options: Optional[list[str]] = opt("beam_options"),
    workers: int = opt("workers"),
    explain_class: Optional[str] = opt("explain_class"),
    attribution: bool = opt("attribution"),
    ablation_images: int = opt("ablation_images"),
    sanity_stages: int = opt("sanity_stages"),
    faithfulness_images: int = opt("faithfulness_images"),
    out: str = opt("out"),
    cmap: str = opt("cmap"),
    scale: str = opt("scale"),
    quiet: bool = opt("quiet"),
    previous: Optional[Path] = opt("previous"),
):
    """Build the report site: every conv layer, every channel, every selected image."""
    given = dict(locals())
    _quiet_libraries()
    from reportgen.naming import printable
    from reportgen.options import from_command_line
    from reportgen.pipeline import build as run_build

    if ids:
        given["images"] = len(ids)
    try:
        options = from_command_line(given)
    except ReportgenError as error:
        _fail(error)
    try:
        if not out.strip():
            raise OutputError("--out is empty; give the folder to build the site in")
        if quiet or not sys.stderr.isatty():
            result = run_build(Path(out), options)
        else:
            result = _build_with_progress(run_build, Path(out), options)
    except ReportgenError as error:
        _fail(error)
    out = printable(out)
    if result.skipped:
        typer.echo(f"up to date: {out} ({result.images} images, {result.bytes / 1e6:.1f} MB) in {result.seconds:.1f} s")
    else:
        typer.echo(f"built {out}: {result.pages} pages, {result.images} images, "
                   f"{result.bytes / 1e6:.1f} MB in {result.seconds:.1f} s")


PreprocessOpt = Annotated[str, _shared("preprocess")]
RescaleOpt = Annotated[Optional[str], _shared("rescale")]
FitOpt = Annotated[str, _shared("fit")]
InterpolationOpt = Annotated[str, _shared("interpolation")]
DatasetOpt = Annotated[str, _shared("dataset")]
SplitOpt = Annotated[str, _shared("split")]
ImageDirOpt = Annotated[Optional[Path], _shared("image_dir")]
DataDirOpt = Annotated[Optional[str], _shared("data_dir")]
ProbeImagesOpt = Annotated[Optional[str], typer.Option(
    "--stats-images", help="Over the first N images of the source, or all (default: 64).")]


def _image_options(given: dict, out: str):
    """BuildOptions of the model and image options `compare` and `timeline` share with build, checked."""
    from reportgen.options import BuildOptions

    parsed = {name: BY_NAME[name].parse(given[name]) for name in ("input_size", "rescale", "stats_images", "imports")}
    plain = {name: given[name] for name in ("preprocess", "fit", "interpolation", "unsafe_load", "dataset", "split",
                                            "image_dir", "data_dir")}
    options = BuildOptions(**plain, **parsed)
    options.check()
    if not out.strip():
        raise OutputError("--out is empty; give the folder to write the site in")
    return options


@app.command()
def compare(
    model_a: Annotated[Path, typer.Argument(help="The first Keras model file (A).", exists=True, dir_okay=False)],
    model_b: Annotated[Path, typer.Argument(help="The second Keras model file (B), on the same input.", exists=True,
                                            dir_okay=False)],
    input_size: InputSizeOpt = None,
    preprocess: PreprocessOpt = BY_NAME["preprocess"].default,
    rescale: RescaleOpt = None,
    fit: FitOpt = BY_NAME["fit"].default,
    interpolation: InterpolationOpt = BY_NAME["interpolation"].default,
    imports: ImportOpt = None,
    unsafe_load: UnsafeOpt = False,
    dataset: DatasetOpt = BY_NAME["dataset"].default,
    split: SplitOpt = BY_NAME["split"].default,
    image_dir: ImageDirOpt = None,
    data_dir: DataDirOpt = None,
    stats_images: ProbeImagesOpt = None,
    runner: Annotated[Optional[str], typer.Option(
        "--runner", help="Run the comparison on Apache Beam with this runner, as build's statistics pass: "
        "DirectRunner (this machine's cores), dask (with --beam-option dask_client_address=HOST:PORT), ... "
        "Default: in this process.")] = None,
    beam_options: Annotated[Optional[list[str]], typer.Option(
        "--beam-option", help="With --runner: a Beam pipeline option KEY=VALUE (repeatable), as for build's "
        "statistics pass.")] = None,
    workers: Annotated[int, typer.Option(
        "--workers", help="With --runner DirectRunner: worker processes, at most one per core, each holding "
        "both models.")] = BY_NAME["workers"].default,
    out: Annotated[str, typer.Option("--out", help="Output folder of the comparison's site.")] = "compare-site",
):
    """Compare two models layer by layer on the same images: cross-model CKA, best matches, matched channels."""
    given = dict(locals())
    _quiet_libraries()
    import dataclasses

    from reportgen import model_compare
    from reportgen.errors import InputError
    from reportgen.naming import printable

    try:
        options = _image_options(given, out)
        if runner is None and beam_options:
            raise InputError("--beam-option needs --runner: the comparison runs in this process without it")
        if runner is not None:
            from reportgen.stats_pass import pipeline_options

            options = dataclasses.replace(options, runner=runner, beam_options=BY_NAME["beam_options"].parse(
                beam_options), workers=workers)
            pipeline_options(options.runner, options.beam_options)  # Beam installed, runner and options known
        result = model_compare.run(model_a, model_b, options, Path(out), runner)
    except ReportgenError as error:
        _fail(error)
    typer.echo(printable(f"compared {model_a.name} and {model_b.name} on {result.images} images: {out}/index.html"))


@app.command()
def timeline(
    checkpoints: Annotated[Optional[Path], typer.Option(
        "--checkpoints", help="A folder of one run's checkpoints (.keras or .h5 model files), in the order of their "
        "names; each is measured over the images.")] = None,
    fingerprints: Annotated[Optional[Path], typer.Option(
        "--fingerprints", help="Instead of --checkpoints: a folder of one run's fingerprints (.npz files, as "
        "reportgen.FingerprintCallback or reportgen train --fingerprints write them), in the order of their "
        "names; no model is loaded and the image options are not used.")] = None,
    input_size: InputSizeOpt = None,
    preprocess: PreprocessOpt = BY_NAME["preprocess"].default,
    rescale: RescaleOpt = None,
    fit: FitOpt = BY_NAME["fit"].default,
    interpolation: InterpolationOpt = BY_NAME["interpolation"].default,
    imports: ImportOpt = None,
    unsafe_load: UnsafeOpt = False,
    dataset: DatasetOpt = BY_NAME["dataset"].default,
    split: SplitOpt = BY_NAME["split"].default,
    image_dir: ImageDirOpt = None,
    data_dir: DataDirOpt = None,
    stats_images: ProbeImagesOpt = None,
    out: Annotated[str, typer.Option("--out", help="Output folder of the timeline's site.")] = "timeline-site",
):
    """A training run's checkpoints or fingerprints in order: each layer's CKA with its final self, and which
    layers settled first."""
    given = dict(locals())
    _quiet_libraries()
    from reportgen import timeline as timelines
    from reportgen.errors import InputError
    from reportgen.naming import printable

    try:
        if (checkpoints is None) == (fingerprints is None):
            raise InputError("give exactly one of --checkpoints DIR and --fingerprints DIR")
        options = _image_options(given, out)
        found = timelines.run(checkpoints, options, Path(out)) if checkpoints is not None else \
            timelines.run_fingerprints(fingerprints, Path(out))
    except ReportgenError as error:
        _fail(error)
    what = "checkpoints" if checkpoints is not None else "fingerprints"
    typer.echo(printable(f"timeline of {len(found.checkpoints)} {what} on {found.images} images: {out}/index.html"))


def _workers(requested: int | None) -> int:
    """--workers, at most one per core (options.worker_count)."""
    return worker_count(requested)


def _build_with_progress(run_build, out, options):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True) as bar:
        task = bar.add_task("starting", total=1)

        def report(stage: str, done: int, total: int) -> None:
            bar.update(task, description=stage, completed=done, total=max(total, 1))

        return run_build(out, options, report)


@app.command()
def inspect(
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    input_size: InputSizeOpt = None,
    unsafe_load: UnsafeOpt = False,
    imports: ImportOpt = None,
):
    """List a model's conv layers: index, name, type, kernel, dilation, output shape, parameters, receptive field."""
    _quiet_libraries()
    from reportgen import capture, model_io
    from reportgen.inputs import parse_size
    from reportgen.naming import printable

    try:
        size = parse_size(input_size)
        loaded = model_io.load(model, weights, size[0] if size else None, unsafe_load, imports=tuple(imports or ()))
        convs = capture.find_conv_layers(loaded.model)
        if not convs:
            raise ReportgenError("the model has no convolution layers")
        fields = capture.receptive_fields(loaded.model, convs)
    except ReportgenError as error:
        _fail(error)
    typer.echo(printable(f"{loaded.description}: {len(convs)} conv layers, {loaded.model.count_params():,} parameters"))
    header = f"{'#':>3}  {'name':<28} {'type':<22} {'kernel':<7} {'dil':<5} {'output':<14} {'params':>10} {'RF px':>7}"
    typer.echo(header)
    for c in convs:
        kernel = "x".join(map(str, c.kernel))
        shape = "x".join(map(str, c.output_shape))
        field = fields.get(c.qualified_name, float("nan"))
        typer.echo(f"{c.index:>3}  {printable(c.qualified_name)[:28]:<28} {printable(c.description)[:22]:<22} "
                   f"{kernel:<7} {c.dilation[0]:<5} {shape:<14} {c.params:>10,} {field:>7.0f}")


@app.command()
def train(
    run_dir: Annotated[Path, typer.Option("--run-dir", help="Checkpoints, log and best model; an existing run resumes.")] = Path("runs/sd_unet"),
    dataset: Annotated[str, typer.Option("--dataset", help="synthetic_pets or oxford_iiit_pet.")] = "synthetic_pets",
    width: Annotated[float, typer.Option("--width", help="Width multiplier of the SD-UNet.")] = 1.0,
    epochs: Annotated[int, typer.Option("--epochs")] = 30,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 8,
    max_examples: Annotated[Optional[int], typer.Option("--max-examples", help="Use only this many training examples.")] = None,
    validation: Annotated[int, typer.Option("--validation", help="Examples held out from train for validation.")] = 200,
    data_dir: Annotated[Optional[str], typer.Option("--data-dir")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 1337,
    export: Annotated[Optional[Path], typer.Option("--export", help="Write the best model's weights here in float16.")] = None,
    fingerprints: Annotated[Optional[Path], typer.Option(
        "--fingerprints", help="Write the model's fingerprint after every epoch into this folder (over the first "
        "64 validation images), for reportgen timeline --fingerprints.")] = None,
):
    """Train the SD-UNet with the notebook's recipe (rmsprop, cross-entropy, early stopping, best checkpoint)."""
    _quiet_libraries()
    from reportgen import training

    config = training.TrainConfig(dataset=dataset, width=width, epochs=epochs, batch_size=batch_size,
                                  max_train_examples=max_examples, validation_examples=validation, seed=seed)
    try:
        best = training.train(config, run_dir, data_dir=data_dir, progress=sys.stdout.isatty(),
                              fingerprints=fingerprints)
        if export is not None:
            training.export_float16(best, export)
            typer.echo(f"exported float16 weights to {export}")
    except ReportgenError as error:
        _fail(error)
    typer.echo(f"best model: {best}")


@app.command()
def evaluate(
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    dataset: Annotated[str, typer.Option("--dataset")] = "synthetic_pets",
    split: Annotated[str, typer.Option("--split")] = "test",
    limit: Annotated[Optional[int], typer.Option("--limit", help="Evaluate on the first N examples only.")] = None,
    data_dir: Annotated[Optional[str], typer.Option("--data-dir")] = None,
    unsafe_load: UnsafeOpt = False,
):
    """Per-class IoU, mean IoU and pixel accuracy of a model on a split."""
    _quiet_libraries()
    from reportgen import model_io, training

    try:
        loaded = model_io.load(model, weights, None, unsafe_load)
        metrics = training.evaluate(loaded.model, dataset, split, data_dir=data_dir, limit=limit)
    except ReportgenError as error:
        _fail(error)
    typer.echo(f"{loaded.description} on {dataset}/{split} ({metrics.images} images)")
    for name, value in zip(training.CLASS_NAMES, metrics.class_iou):
        typer.echo(f"  IoU {name:<11} {value:.4f}")
    typer.echo(f"  mean IoU       {metrics.mean_iou:.4f}")
    typer.echo(f"  pixel accuracy {metrics.pixel_accuracy:.4f}")


def main() -> None:
    """The console entry. Once TensorFlow is loaded, the interpreter's own shutdown (TensorFlow's
    thread pools and native destructors) takes about a second after the work is done and its
    output flushed; a command that loaded it ends at once instead."""
    try:
        app()
        code = 0
    except KeyboardInterrupt:  # outside a build's own handling: before it started, or after it ended
        print("error: interrupted", file=sys.stderr)
        code = 130
    except SystemExit as done:
        if done.code is None or isinstance(done.code, int):
            code = done.code or 0
        else:
            print(done.code, file=sys.stderr)
            code = 1
    if "tensorflow" not in sys.modules:
        sys.exit(code)
    from reportgen import workers

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the work is done: a Ctrl-C now only ends it sooner
    workers.discard(wait=True)  # os._exit skips the atexit hooks that would end the workers
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
