"""Every build option declared once: its field, flags, default, choices, help and --help panel.

`BuildOptions` takes its defaults from here, the command line builds its `build` options from here
(cli.py), the Python API takes its defaults from here (api.py), `BuildOptions.check` checks the
declared choices, and the build key leaves out what is declared unhashed (buildkey.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reportgen import capture, render, sources, tfds_source
from reportgen.ablation import ABLATION_IMAGES
from reportgen.sanity import SANITY_STAGES
from reportgen.errors import InputError
from reportgen.inputs import (FITS, INTERPOLATIONS, PREPROCESS_MODES, InputConvention, MaskValues, check_choice,
                              parse_rescale, parse_size)

ALL_IMAGES = -1  # --stats-images all

MODEL = "Model and input"
IMAGES = "Images"
STATISTICS = "Statistics and engines"
ATTRIBUTION = "Attribution"
OUTPUT = "Output"
PANELS = (MODEL, IMAGES, STATISTICS, ATTRIBUTION, OUTPUT)


def parse_stats_images(text: str | None) -> int | None:
    """`--stats-images N` or `all`."""
    if text is None:
        return None
    if text.strip().lower() == "all":
        return ALL_IMAGES
    if not text.strip().isdigit():
        raise InputError(f"--stats-images takes a number or all, got {text!r}")
    return int(text)


def _repeated(given: list[str] | None) -> tuple[str, ...]:
    return tuple(given or ())


@dataclass(frozen=True)
class Option:
    """One option. `parse` turns the command line's text into the field's value; an option with a
    `parse` is None on the command line until given, and `parse(None)` is its default."""

    name: str  # the BuildOptions field, or, with `field=False`, the build command's own parameter
    flags: tuple[str, ...]  # () for a field the command line does not set
    default: object
    help: str
    panel: str | None = None
    choices: tuple[str, ...] | None = None
    parse: Callable | None = None
    param: str | None = None  # the build command's parameter, where its name is not the field's
    hashed: bool = True  # part of the incremental build key
    field: bool = True  # a BuildOptions field; --out and --quiet are the command's, not the site's

    @property
    def flag(self) -> str:
        return self.flags[0].split("/")[0] if self.flags else self.name

    @property
    def cli_param(self) -> str:
        return self.param or self.name

    @property
    def cli_default(self):
        return None if self.parse is not None else self.default


DECLARED: tuple[Option, ...] = (
    Option("images", ("--images",), 10, "How many images to report on.", IMAGES),
    Option("dataset", ("--dataset",), "synthetic_pets",
           "synthetic_pets (built locally) or oxford_iiit_pet (TFDS download).", IMAGES),
    Option("split", ("--split",), "test", "Data set split.", IMAGES),
    Option("image_dir", ("--image-dir",), None, "A folder of JPEG/PNG files instead of a data set.", IMAGES),
    Option("trimap_dir", ("--trimap-dir",), None,
           "Masks (same stem, .png) for --image-dir: Oxford trimaps (1-3) or binary (0/1, 0/255).", IMAGES),
    Option("mask_values", ("--mask-values",), MaskValues(),
           "What the mask values mean: 0=background,255=foreground, 0=background,1-4=foreground,255=ignore, "
           "the model's class names (0=background,255=pet), or classes,255=ignore (value k is the "
           "segmentation's class k).", IMAGES, parse=MaskValues.parse),
    Option("depth", ("--depth",), "scale",
           "16-bit images: scale (0-65535 to 0-255 as floats, every level kept) or raw (the stored values; "
           "give --rescale).", IMAGES, choices=sources.DEPTHS),
    Option("exif", ("--exif/--no-exif",), False,
           "Apply the EXIF orientation of photos (default: ignored, as Keras' image_dataset_from_directory "
           "does).", IMAGES),
    Option("model_path", ("--model",), None, "A Keras model file (.keras or legacy .h5).", MODEL, param="model"),
    Option("weights_path", ("--weights",), None,
           "Weights for the built-in SD-UNet (.weights.h5 or legacy .h5).", MODEL, param="weights"),
    Option("input_size", ("--input-size",), None,
           "SIZE or HEIGHTxWIDTH, for models with a dynamic input, or a non-default SD-UNet size "
           "(multiple of 32).", MODEL, parse=parse_size),
    Option("image_input", ("--input",), None,
           "For models with several inputs: the name of the one that takes the images; the others are fed "
           "zeros.", MODEL),
    Option("preprocess", ("--preprocess",), "none",
           "Input convention as the `mode` of Keras' preprocess_input: none (raw 0-255), tf (-1..1), torch "
           "(ImageNet mean/std) or caffe (BGR, ImageNet mean).", MODEL, choices=PREPROCESS_MODES),
    Option("rescale", ("--rescale",), None,
           "Input convention as keras.layers.Rescaling: SCALE[,OFFSET], x * scale + offset, e.g. "
           "0.0078125,-0.99609375.", MODEL, parse=parse_rescale),
    Option("fit", ("--fit",), "stretch",
           "How images of another shape fit the input: stretch, crop (centre, to the aspect ratio) or pad "
           "(black).", MODEL, choices=FITS),
    Option("interpolation", ("--interpolation",), "nearest",
           "Resize filter: nearest (how the shipped SD-UNet was trained), bilinear "
           "(image_dataset_from_directory's default), bicubic or area.", MODEL, choices=tuple(INTERPOLATIONS)),
    Option("imports", ("--import",), (),
           "A module or .py file to import before loading the model, so the custom Keras classes it defines "
           "deserialise (repeatable).", MODEL, parse=_repeated),
    Option("labels", ("--labels",), None, "Class names of the model's class output, one per line.", MODEL),
    Option("select", ("--select",), "first", "first (in the source's stable order) or random (seeded).", IMAGES,
           choices=("first", "random")),
    Option("seed", ("--seed",), 0, "Seed for --select random.", IMAGES),
    Option("ids", ("--id",), (), "Report on these image ids (repeatable).", IMAGES, parse=_repeated),
    Option("tap", ("--tap",), "conv",
           "conv: the conv output itself; activation: after the block's norm and nonlinearity.", MODEL,
           choices=capture.TAPS),
    Option("cmap", ("--cmap",), render.DEFAULT_CMAP,
           "Matplotlib colormap for feature maps; gray gives the notebook look.", OUTPUT),
    Option("scale", ("--scale",), "channel",
           "Colour range: channel (each channel on each image its own) or layer (one range for the whole "
           "layer).", OUTPUT, choices=("channel", "layer")),
    # Not on the command line: --images 10 runs as two full batches, no padded images to compute.
    Option("batch_size", (), 5, "Images per batch through the model."),
    Option("unsafe_load", ("--unsafe-load",), False,
           "Allow model files with Python code (Lambda layers). Only for files you trust.", MODEL),
    Option("data_dir", ("--data-dir",), None, "TensorFlow Datasets folder (default ~/tensorflow_datasets).",
           IMAGES),
    # 4, and never more than the cores: each worker holds its own TensorFlow and model, so more
    # workers cost memory faster than they save time; unhashed, it changes how a site is made, not the site.
    Option("workers", ("--workers",), 4,
           "Worker processes for the layers and for the Beam statistics pass, at most one per core; 1 runs "
           "the layers in this process.", STATISTICS, hashed=False),
    Option("statistics", ("--stats/--no-stats",), True,
           "Compute the abstraction statistics (probe, CKA, IoU, nTV...).", STATISTICS),
    Option("stats_images", ("--stats-images",), None,
           "Statistics over the first N images of the source, or all (default: the pictured images). Runs on "
           "Apache Beam (pip install 'reportgen[beam]').", STATISTICS, parse=parse_stats_images),
    Option("runner", ("--runner",), "DirectRunner",
           "Beam runner of the statistics pass: DirectRunner (default, this machine's cores), dask (with "
           "--beam-option dask_client_address=HOST:PORT), FlinkRunner, SparkRunner, DataflowRunner.", STATISTICS),
    Option("beam_options", ("--beam-option",), (),
           "A Beam pipeline option KEY=VALUE for the statistics pass (repeatable), e.g. project=my-project.",
           STATISTICS, parse=_repeated),
    Option("previous", ("--previous",), None,
           "A previous build (site folder or folder with manifest.json and stats.json) to compare with; "
           "default: the site already in --out.", OUTPUT, hashed=False),
    Option("explain_class", ("--explain-class",), None,
           "The class (a name from --labels) that Grad-CAM and the channel importances explain; default: the "
           "class the model predicts for each image.", ATTRIBUTION),
    Option("ablation_images", ("--ablation-images",), ABLATION_IMAGES,
           "Statistics images the ablation check runs on, with --stats-images (0: no check).", ATTRIBUTION),
    Option("sanity_stages", ("--sanity-stages",), SANITY_STAGES,
           "Steps of the Grad-CAM sanity check's cascading randomisation (head first), on the pictured images, "
           "with --stats-images (0: no check).", ATTRIBUTION),
    Option("faithfulness_images", ("--faithfulness-images",), 0,
           "Pictured images on which every layer's Grad-CAM is tested by removing the pixels it ranks highest and "
           "lowest, with --stats-images (8 forward passes an image and layer; 0: no test).", ATTRIBUTION),
    Option("attribution", ("--attribution/--no-attribution",), True,
           "Grad-CAM of every layer, Taylor importance of every channel and, with --stats-images, the "
           "ablation check.", ATTRIBUTION),
    Option("out", ("--out",), "site",
           "Output folder; its site is replaced only when the build succeeds, and files you put at its top "
           "(CNAME, .git/) are kept.", OUTPUT, field=False),
    Option("quiet", ("--quiet", "-q"), False, "No progress bar; only the summary line.", OUTPUT, field=False),
)

BY_NAME = {option.name: option for option in DECLARED}
UNHASHED = tuple(option.name for option in DECLARED if not option.hashed)


def _default(name: str):
    return BY_NAME[name].default


def worker_count(requested: int | None) -> int:
    """--workers (None: the declared default), at most one per core: more only share the cores and
    multiply the memory."""
    if requested is None:
        requested = _default("workers")
    if requested < 1:
        raise InputError(f"--workers must be at least 1, got {requested}")
    return min(requested, os.cpu_count() or 1)


@dataclass(frozen=True)
class BuildOptions:
    """Everything the user chose; recorded in the manifest and, but for UNHASHED, part of the
    incremental key. What each field means, and its default, is declared in DECLARED above."""

    images: int = _default("images")
    dataset: str = _default("dataset")
    split: str = _default("split")
    image_dir: Path | None = _default("image_dir")
    trimap_dir: Path | None = _default("trimap_dir")
    mask_values: MaskValues = _default("mask_values")
    depth: str = _default("depth")
    exif: bool = _default("exif")
    model_path: Path | None = _default("model_path")
    weights_path: Path | None = _default("weights_path")
    input_size: tuple[int, int] | None = _default("input_size")  # height, width
    image_input: str | None = _default("image_input")
    preprocess: str = _default("preprocess")
    rescale: tuple[float, float] | None = _default("rescale")  # keras.layers.Rescaling(scale, offset)
    fit: str = _default("fit")
    interpolation: str = _default("interpolation")
    imports: tuple[str, ...] = _default("imports")
    labels: Path | None = _default("labels")
    select: str = _default("select")
    seed: int = _default("seed")
    ids: tuple[str, ...] = _default("ids")
    tap: str = _default("tap")
    cmap: str = _default("cmap")
    scale: str = _default("scale")
    batch_size: int = _default("batch_size")
    unsafe_load: bool = _default("unsafe_load")
    data_dir: str | None = _default("data_dir")
    workers: int = _default("workers")
    statistics: bool = _default("statistics")
    stats_images: int | None = _default("stats_images")  # ALL_IMAGES: all
    runner: str = _default("runner")
    beam_options: tuple[str, ...] = _default("beam_options")
    previous: Path | None = _default("previous")
    explain_class: str | None = _default("explain_class")
    ablation_images: int = _default("ablation_images")
    sanity_stages: int = _default("sanity_stages")
    faithfulness_images: int = _default("faithfulness_images")
    attribution: bool = _default("attribution")

    def __post_init__(self):
        # Capped here, so the command line, the API and options made by hand run the same count.
        object.__setattr__(self, "workers", worker_count(self.workers))

    @property
    def convention(self) -> InputConvention:
        return InputConvention(self.preprocess, self.rescale)

    @property
    def reading(self) -> sources.Reading:
        return sources.Reading(self.mask_values, self.depth, self.exif)

    def check(self) -> None:
        """Everything that can be checked before TensorFlow loads: a typo costs no 10 s wait."""
        if self.images < 1:
            raise InputError(f"--images must be at least 1, got {self.images}")
        if self.seed < 0:
            raise InputError(f"--seed must be 0 or more, got {self.seed}")
        if self.image_dir is None:
            tfds_source.check_split(self.dataset, self.split)
        if self.ablation_images < 0:
            raise InputError(f"--ablation-images must be 0 or more, got {self.ablation_images}")
        if self.faithfulness_images < 0:
            raise InputError(f"--faithfulness-images must be 0 or more, got {self.faithfulness_images}")
        if self.sanity_stages < 0:
            raise InputError(f"--sanity-stages must be 0 or more, got {self.sanity_stages}")
        if self.stats_images is not None and self.stats_images != ALL_IMAGES and self.stats_images < 1:
            raise InputError(f"--stats-images must be at least 1 or all, got {self.stats_images}")
        if wants_stats_pass(self) or self.runner != BuildOptions.runner:
            from reportgen.stats_pass import runner_class

            runner_class(self.runner)  # Beam installed, and a runner it has
        if wants_stats_pass(self) and (self.select != "first" or self.ids):
            raise InputError("--stats-images takes the first images of the source, so the pictured ones must be "
                             "the first too: use --select first and no --id")
        if wants_stats_pass(self) or self.beam_options:
            from reportgen.stats_pass import pipeline_options

            pipeline_options(self.runner, self.beam_options)  # Beam installed, options well formed
        self.convention  # noqa: B018  (validates the mode, in its own words, and the combination)
        for option in DECLARED:
            if option.choices is not None:
                check_choice(getattr(self, option.name), option.choices, option.flag)
        render.colormap_lut(self.cmap)
        for spec in self.imports:
            if spec.endswith(".py") and not Path(spec).is_file():
                raise InputError(f"--import file {spec!r} does not exist")


def wants_stats_pass(options: BuildOptions) -> bool:
    return options.statistics and options.stats_images is not None and (
        options.stats_images == ALL_IMAGES or options.stats_images > options.images)


def from_command_line(given: dict) -> BuildOptions:
    """BuildOptions from the build command's parameters, named as there, each parsed as declared."""
    values = {}
    for option in DECLARED:
        if option.field and option.flags:
            value = given[option.cli_param]
            values[option.name] = option.parse(value) if option.parse is not None else value
    return BuildOptions(**values)
