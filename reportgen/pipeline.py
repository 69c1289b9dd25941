"""`build()`: source -> capture -> stats -> render -> site, one direction, one stage per module."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reportgen import assets, capture, model_io, render, sources, stats
from reportgen.errors import InputError, OutputError
from reportgen.naming import Namer

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class BuildOptions:
    """Everything the user chose; recorded in the manifest and part of the incremental key."""

    images: int = 10
    dataset: str = "synthetic_pets"
    split: str = "test"
    image_dir: Path | None = None
    trimap_dir: Path | None = None
    model_path: Path | None = None
    weights_path: Path | None = None
    input_size: int | None = None
    select: str = "first"
    seed: int = 0
    ids: tuple[str, ...] = ()
    tap: str = "conv"
    cmap: str = render.DEFAULT_CMAP
    scale: str = "channel"  # colour range per channel and image, or one range per layer
    batch_size: int = 4
    unsafe_load: bool = False
    data_dir: str | None = None
    workers: int = 2
    statistics: bool = True  # False: pictures and descriptive numbers only
    previous: Path | None = None  # a previous build to compare with; default: the site in --out


@dataclass
class ImageRecord:
    """One selected image and what the model made of it."""

    id: str
    slug: str
    image: np.ndarray
    trimap: np.ndarray | None
    prediction: np.ndarray  # class ids 0..2 at input size
    mask_is_prediction: bool  # no ground truth: the prediction stands in for the mask


@dataclass
class LayerResult:
    """One conv layer with its statistics and the files rendered for it."""

    conv: capture.ConvLayer
    slug: str
    role: str
    receptive_field: float
    stride: float
    stats: stats.LayerStats
    order: np.ndarray  # channels ranked strongest first
    layout: render.GridLayout
    probe_iou: np.ndarray = field(default_factory=lambda: np.full(3, np.nan))
    rgb_probe_iou: np.ndarray = field(default_factory=lambda: np.full(3, np.nan))


@dataclass
class BuildResult:
    """What `build` made, for the summary line and the site stage."""

    out: Path
    pages: int
    images: int
    bytes: int
    seconds: float
    skipped: bool = False


def _input_size(model) -> int:
    shape = model.inputs[0].shape
    if len(shape) != 4 or shape[1] is None or shape[1] != shape[2]:
        raise InputError(f"the model's input shape {tuple(shape)} is not a fixed square image; "
                         "give --input-size for models with a dynamic size")
    return int(shape[1])


def _load_images(options: BuildOptions, input_size: int) -> list[sources.SourceImage]:
    if options.image_dir is not None:
        items = sources.image_folder(options.image_dir, input_size, options.trimap_dir)
    else:
        items = sources.tfds_split(options.dataset, options.split, input_size, data_dir=options.data_dir)
    return sources.select(items, options.images, options.select, options.seed, list(options.ids) or None)


def _stride(input_size: int, conv: capture.ConvLayer) -> float:
    height = conv.output_shape[0] if conv.output_shape else 1
    return input_size / max(height, 1)


class _Spill:
    """Activations of every layer on disk as float16, so memory does not grow with --images."""

    def __init__(self, folder: Path, convs, count: int):
        self.arrays = [
            np.lib.format.open_memmap(folder / f"layer{c.index:03d}.npy", mode="w+", dtype=np.float16,
                                      shape=(count, *c.output_shape))
            for c in convs
        ]

    def write(self, layer: int, start: int, values: np.ndarray) -> None:
        self.arrays[layer][start:start + len(values)] = np.clip(values, -65000, 65000)


def build(out: Path, options: BuildOptions, progress: Progress | None = None) -> BuildResult:
    """Build the whole site into `out`, replacing it only when everything succeeded."""
    from reportgen import site

    started = time.monotonic()
    progress = progress or (lambda stage, done, total: None)
    out = Path(out)
    site.check_output(out)
    if options.images < 1:
        raise InputError(f"--images must be at least 1, got {options.images}")

    from reportgen import buildkey

    key = buildkey.input_key(options, model_io.models_dir() / model_io.DEFAULT_WEIGHTS)
    if key is not None and site.is_up_to_date(out, key):
        return BuildResult(out, 0, site.image_count(out), site.folder_size(out), time.monotonic() - started,
                           skipped=True)

    progress("loading model", 0, 1)
    loaded = model_io.load(options.model_path, options.weights_path, options.input_size, options.unsafe_load)
    model = loaded.model
    input_size = options.input_size or _input_size(model)
    convs = capture.find_conv_layers(model, options.tap)
    if not convs:
        raise InputError("the model has no convolution layers to report on")
    render.colormap_lut(options.cmap)  # fail early on a bad colormap name
    if options.scale not in ("channel", "layer"):
        raise InputError(f"unknown --scale {options.scale!r}; use channel or layer")

    progress("reading images", 0, 1)
    selected = _load_images(options, input_size)
    if key is None:  # inputs that cannot be hashed cheaply: key on what was loaded instead
        key = site.build_key(loaded, options, selected)
        if site.is_up_to_date(out, key):
            return BuildResult(out, 0, len(selected), site.folder_size(out), time.monotonic() - started,
                               skipped=True)

    probe = capture.probe_model(model, convs)
    fields = capture.receptive_fields(model, convs)
    namer = Namer()
    layer_slugs = [namer(c.qualified_name) for c in convs]
    image_namer = Namer()
    images_np = np.stack([s.image for s in selected])

    work = Path(tempfile.mkdtemp(prefix=".reportgen-", dir=out.parent if out.parent.exists() else None))
    try:
        staging = work / "site"
        staging.mkdir()
        spill = _Spill(work, convs, len(selected))
        accumulators = [stats.LayerAccumulator(c.output_shape[-1], _stride(input_size, c)) for c in convs]
        spatial = [i for i, c in enumerate(convs) if len(c.output_shape) == 3]
        cross = stats.CrossLayerAccumulator([convs[i].output_shape[-1] for i in spatial]) if options.statistics else None
        predictions = []
        outputs = [*probe.outputs, *model.outputs[:1]]
        import keras

        full_probe = keras.Model(model.inputs, outputs)
        trimaps_known = all(s.trimap is not None for s in selected)
        total = len(selected)
        for start, batch_outputs in capture.stream_activations(full_probe, images_np, options.batch_size):
            probs = batch_outputs[-1]
            predicted = np.argmax(probs, axis=-1).astype(np.uint8) if probs.ndim == 4 else None
            predictions.extend(predicted if predicted is not None else [None] * len(probs))
            indices = list(range(start, start + len(probs)))
            masks = np.stack([
                selected[i].trimap if trimaps_known else (predicted[k] + 1 if predicted is not None else
                                                           np.full((input_size, input_size), 2, np.uint8))
                for k, i in enumerate(indices)
            ])
            for layer, values in enumerate(batch_outputs[:-1]):
                spill.write(layer, start, values)
                if values.ndim == 4:
                    accumulators[layer].add(values, masks, indices, total, measures=options.statistics)
            if cross is not None and spatial:
                cross.add([batch_outputs[i] for i in spatial])
            progress("capturing activations", min(start + len(probs), total), total)

        records = [
            ImageRecord(s.id, image_namer(s.id), s.image, s.trimap,
                        predictions[i] if predictions[i] is not None else np.zeros((input_size, input_size), np.uint8),
                        mask_is_prediction=not trimaps_known)
            for i, s in enumerate(selected)
        ]
        from reportgen.models.sd_unet import describe_role

        results = []
        for i, conv in enumerate(convs):
            layer_stats = stats.finalise(accumulators[i])
            order = np.argsort(-np.nan_to_num(layer_stats.channel_strength, nan=-1.0), kind="stable")
            results.append(LayerResult(
                conv=conv, slug=layer_slugs[i], role=describe_role(conv.name) if not conv.path else "",
                receptive_field=fields.get(conv.qualified_name, float("nan")),
                stride=_stride(input_size, conv), stats=layer_stats, order=order,
                layout=render.GridLayout.for_layer(conv.output_shape[0], conv.output_shape[-1]),
            ))
        del accumulators
        layer_cka = np.full((len(convs), len(convs)), np.nan)
        if cross is not None and spatial:
            layer_cka[np.ix_(spatial, spatial)] = cross.finalise()
            del cross

        writer = assets.AssetWriter(staging, options.cmap, options.scale)
        done = [0]

        def render_layer(i: int) -> None:
            writer.layer_pictures(results[i], spill.arrays[i], records, input_size)
            done[0] += 1
            progress("rendering feature maps", done[0], len(results))

        with ThreadPoolExecutor(max_workers=max(1, options.workers)) as pool:
            list(pool.map(render_layer, range(len(results))))
        writer.image_pictures(records)
        colorbar = writer.colorbar()

        progress("writing pages", 0, 1)
        from reportgen import compare

        previous = compare.load_previous(options.previous if options.previous is not None else out)
        pages = site.write_site(staging, loaded, options, records, results, key, input_size, colorbar, previous,
                                layer_cka)
        site.swap_in(staging, out)
    except KeyboardInterrupt:
        from reportgen.errors import BuildInterrupted

        raise BuildInterrupted("interrupted; the previous site was left as it was") from None
    except OSError as error:
        raise OutputError(f"cannot write the site: {error.strerror or error}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return BuildResult(out, pages, len(records), site.folder_size(out), time.monotonic() - started)
