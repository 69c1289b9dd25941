"""The command line: the only place that turns errors into messages and exit codes."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from reportgen.ablation import ABLATION_IMAGES
from reportgen.errors import OutputError, ReportgenError

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


ModelOpt = Annotated[Optional[Path], typer.Option("--model", help="A Keras model file (.keras or legacy .h5).")]
WeightsOpt = Annotated[Optional[Path], typer.Option("--weights", help="Weights for the built-in SD-UNet (.weights.h5 or legacy .h5).")]
InputSizeOpt = Annotated[Optional[str], typer.Option("--input-size", help="SIZE or HEIGHTxWIDTH, for models with a dynamic input, or a non-default SD-UNet size (multiple of 32).")]
ImportOpt = Annotated[Optional[list[str]], typer.Option("--import", help="A module or .py file to import before loading the model, so the custom Keras classes it defines deserialise (repeatable).")]
UnsafeOpt = Annotated[bool, typer.Option("--unsafe-load", help="Allow model files with Python code (Lambda layers). Only for files you trust.")]


@app.command()
def build(
    images: Annotated[int, typer.Option("--images", help="How many images to report on.")] = 10,
    out: Annotated[str, typer.Option("--out", help="Output folder; its site is replaced only when the build succeeds, and files you put at its top (CNAME, .git/) are kept.")] = "site",
    dataset: Annotated[str, typer.Option("--dataset", help="synthetic_pets (built locally) or oxford_iiit_pet (TFDS download).")] = "synthetic_pets",
    split: Annotated[str, typer.Option("--split", help="Data set split.")] = "test",
    image_dir: Annotated[Optional[Path], typer.Option("--image-dir", help="A folder of JPEG/PNG files instead of a data set.")] = None,
    trimap_dir: Annotated[Optional[Path], typer.Option("--trimap-dir", help="Masks (same stem, .png) for --image-dir: Oxford trimaps (1-3) or binary (0/1, 0/255).")] = None,
    depth: Annotated[str, typer.Option("--depth", help="16-bit images: scale (0-65535 to 0-255 as floats, every level kept) or raw (the stored values; give --rescale).")] = "scale",
    exif: Annotated[bool, typer.Option("--exif/--no-exif", help="Apply the EXIF orientation of photos (default: ignored, as Keras' image_dataset_from_directory does).")] = False,
    mask_values: Annotated[Optional[str], typer.Option("--mask-values", help="What the mask values mean: 0=background,255=foreground, 0=background,1-4=foreground,255=ignore, the model's class names (0=background,255=pet), or classes,255=ignore (value k is the segmentation's class k).")] = None,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    input_size: InputSizeOpt = None,
    image_input: Annotated[Optional[str], typer.Option("--input", help="For models with several inputs: the name of the one that takes the images; the others are fed zeros.")] = None,
    preprocess: Annotated[str, typer.Option("--preprocess", help="Input convention as the `mode` of Keras' preprocess_input: none (raw 0-255), tf (-1..1), torch (ImageNet mean/std) or caffe (BGR, ImageNet mean).")] = "none",
    rescale: Annotated[Optional[str], typer.Option("--rescale", help="Input convention as keras.layers.Rescaling: SCALE[,OFFSET], x * scale + offset, e.g. 0.0078125,-0.99609375.")] = None,
    fit: Annotated[str, typer.Option("--fit", help="How images of another shape fit the input: stretch, crop (centre, to the aspect ratio) or pad (black).")] = "stretch",
    interpolation: Annotated[str, typer.Option("--interpolation", help="Resize filter: nearest (how the shipped SD-UNet was trained), bilinear (image_dataset_from_directory's default), bicubic or area.")] = "nearest",
    imports: ImportOpt = None,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="Class names of the model's class output, one per line.")] = None,
    select: Annotated[str, typer.Option("--select", help="first (in the source's stable order) or random (seeded).")] = "first",
    seed: Annotated[int, typer.Option("--seed", help="Seed for --select random.")] = 0,
    ids: Annotated[Optional[list[str]], typer.Option("--id", help="Report on these image ids (repeatable).")] = None,
    tap: Annotated[str, typer.Option("--tap", help="conv: the conv output itself; activation: after the block's norm and nonlinearity.")] = "conv",
    cmap: Annotated[str, typer.Option("--cmap", help="Matplotlib colormap for feature maps; gray gives the notebook look.")] = "viridis",
    scale: Annotated[str, typer.Option("--scale", help="Colour range: channel (each channel on each image its own) or layer (one range for the whole layer).")] = "channel",
    data_dir: Annotated[Optional[str], typer.Option("--data-dir", help="TensorFlow Datasets folder (default ~/tensorflow_datasets).")] = None,
    unsafe_load: UnsafeOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar; only the summary line.")] = False,
    previous: Annotated[Optional[Path], typer.Option("--previous", help="A previous build (site folder or folder with manifest.json and stats.json) to compare with; default: the site already in --out.")] = None,
    statistics: Annotated[bool, typer.Option("--stats/--no-stats", help="Compute the abstraction statistics (probe, CKA, IoU, nTV...).")] = True,
    stats_images: Annotated[Optional[str], typer.Option("--stats-images", help="Statistics over the first N images of the source, or all (default: the pictured images). Runs on Apache Beam (pip install 'reportgen[beam]').")] = None,
    runner: Annotated[str, typer.Option("--runner", help="Beam runner of the statistics pass: DirectRunner (default, this machine's cores), dask (with --beam-option dask_client_address=HOST:PORT), FlinkRunner, SparkRunner, DataflowRunner.")] = "DirectRunner",
    beam_options: Annotated[Optional[list[str]], typer.Option("--beam-option", help="A Beam pipeline option KEY=VALUE for the statistics pass (repeatable), e.g. project=my-project.")] = None,
    explain_class: Annotated[Optional[str], typer.Option("--explain-class", help="The class (a name from --labels) that Grad-CAM and the channel importances explain; default: the class the model predicts for each image.")] = None,
    attribution: Annotated[bool, typer.Option("--attribution/--no-attribution", help="Grad-CAM of every layer, Taylor importance of every channel and, with --stats-images, the ablation check.")] = True,
    ablation_images: Annotated[int, typer.Option("--ablation-images", help="Statistics images the ablation check runs on, with --stats-images (0: no check).")] = ABLATION_IMAGES,
    workers: Annotated[Optional[int], typer.Option("--workers", help="Worker processes for the layers and for the Beam statistics pass (default and most: one per core; at most 4 by default); 1 runs the layers in this process.")] = None,
):
    """Build the report site: every conv layer, every channel, every selected image."""
    _quiet_libraries()
    from reportgen.inputs import MaskValues, parse_rescale, parse_size
    from reportgen.naming import printable
    from reportgen.pipeline import BuildOptions, build as run_build

    if ids:
        images = len(ids)
    try:
        options = BuildOptions(
            images=images, dataset=dataset, split=split, image_dir=image_dir, trimap_dir=trimap_dir,
            mask_values=MaskValues.parse(mask_values), depth=depth, exif=exif,
            model_path=model, weights_path=weights, input_size=parse_size(input_size), image_input=image_input,
            preprocess=preprocess, rescale=parse_rescale(rescale), fit=fit, interpolation=interpolation,
            imports=tuple(imports or ()), labels=labels, select=select, seed=seed,
            ids=tuple(ids or ()), tap=tap, cmap=cmap, scale=scale, data_dir=data_dir, unsafe_load=unsafe_load,
            workers=_workers(workers),
            statistics=statistics, previous=previous, stats_images=_stats_images(stats_images), runner=runner,
            beam_options=tuple(beam_options or ()), explain_class=explain_class, ablation_images=ablation_images,
            attribution=attribution,
        )
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


def _workers(requested: int | None) -> int:
    """--workers, at most one per core: more only share the cores and multiply the memory."""
    from reportgen.errors import InputError

    cores = os.cpu_count() or 1
    if requested is None:
        return max(1, min(4, cores))
    if requested < 1:
        raise InputError(f"--workers must be at least 1, got {requested}")
    return min(requested, cores)


def _stats_images(text: str | None) -> int | None:
    from reportgen.errors import InputError
    from reportgen.pipeline import ALL_IMAGES

    if text is None:
        return None
    if text.strip().lower() == "all":
        return ALL_IMAGES
    if not text.strip().isdigit():
        raise InputError(f"--stats-images takes a number or all, got {text!r}")
    return int(text)


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
):
    """Train the SD-UNet with the notebook's recipe (rmsprop, cross-entropy, early stopping, best checkpoint)."""
    _quiet_libraries()
    from reportgen import training

    config = training.TrainConfig(dataset=dataset, width=width, epochs=epochs, batch_size=batch_size,
                                  max_train_examples=max_examples, validation_examples=validation, seed=seed)
    try:
        best = training.train(config, run_dir, data_dir=data_dir, progress=sys.stdout.isatty())
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
