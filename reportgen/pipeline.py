"""`build()`: source -> capture -> stats -> render -> site, one direction, one stage per module."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reportgen import assets, capture, layer_stage, model_io, render, sources, stats, workers
from reportgen.errors import InputError, OutputError, ReportgenError
from reportgen.layer_stage import ImageRecord, LayerResult
from reportgen.naming import Namer
from reportgen.spill import FLOAT16_MAX, Spill

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
    image_input: str | None = None  # the input that takes the images, for models with several
    select: str = "first"
    seed: int = 0
    ids: tuple[str, ...] = ()
    tap: str = "conv"
    cmap: str = render.DEFAULT_CMAP
    scale: str = "channel"  # colour range per channel and image, or one range per layer
    batch_size: int = 5  # --images 10 runs as two full batches: no padded images to compute
    unsafe_load: bool = False
    data_dir: str | None = None
    workers: int = 2
    statistics: bool = True  # False: pictures and descriptive numbers only
    previous: Path | None = None  # a previous build to compare with; default: the site in --out


@dataclass
class BuildResult:
    """What `build` made, for the summary line and the site stage."""

    out: Path
    pages: int
    images: int
    bytes: int
    seconds: float
    skipped: bool = False


def _input_size(model, requested: int | None, index: int = 0) -> int:
    """The square image size to feed: the model's own, or --input-size for a dynamic one."""
    shape = tuple(model.inputs[index].shape)
    if len(shape) != 4 or shape[-1] not in (3, None):
        raise InputError(f"the model's input shape {shape} is not an RGB image (batch, height, width, 3)")
    fixed = [d for d in shape[1:3] if d is not None]
    if requested is not None:
        if requested < 8 or any(d != requested for d in fixed):
            raise InputError(f"the model takes {shape[1]}x{shape[2]} images; it cannot take --input-size {requested}")
        return requested
    if len(fixed) != 2 or fixed[0] != fixed[1]:
        raise InputError(f"the model's input shape {shape} is not a fixed square image; "
                         "give --input-size for models with a dynamic size")
    return int(fixed[0])


def _load_images(options: BuildOptions, input_size: int) -> list[sources.SourceImage]:
    if options.image_dir is not None:
        items = sources.image_folder(options.image_dir, input_size, options.trimap_dir)
    else:
        items = sources.tfds_split(options.dataset, options.split, input_size, data_dir=options.data_dir)
    return sources.select(items, options.images, options.select, options.seed, list(options.ids) or None)


def _segmentation(output: np.ndarray, input_size: int) -> np.ndarray | None:
    """Class ids per pixel when the model's output is a per-pixel class map at the input size."""
    if output.ndim == 4 and output.shape[1:3] == (input_size, input_size) and output.shape[-1] >= 2:
        return np.argmax(output, axis=-1).astype(np.uint8)
    return None


@dataclass
class _Captured:
    """What the capture pass leaves: spilled activations, the layer x layer CKA sums, predictions."""

    spill: Spill
    cross: stats.CrossLayerAccumulator | None
    spatial: list[int]
    predictions: list


def _capture(model, probe, selected, input_size: int, image_index: int, options: BuildOptions, work: Path,
             progress: Progress) -> _Captured:
    """Stream the images through the probe once: spill every layer's activations to disk."""
    import keras

    # The graph itself turns the activations into what the spill stores, on every core.
    stored = [keras.ops.cast(keras.ops.clip(keras.ops.nan_to_num(out), -FLOAT16_MAX, FLOAT16_MAX), "float16")
              for out in probe.outputs]
    full_probe = keras.Model(model.inputs, [*stored, model.outputs[0]])
    total = len(selected)
    captured = _Captured(Spill(work, total), None, [], [])
    images = np.stack([s.image for s in selected])
    for start, batch_outputs in capture.stream_activations(full_probe, images, options.batch_size, image_index):
        layer_outputs, model_output = batch_outputs[:-1], batch_outputs[-1]
        predicted = _segmentation(model_output, input_size)
        captured.predictions.extend(list(predicted) if predicted is not None else [None] * len(model_output))
        if start == 0:
            captured.spatial = [i for i, v in enumerate(layer_outputs) if v.ndim == 4]
            if options.statistics and captured.spatial:
                captured.cross = stats.CrossLayerAccumulator([layer_outputs[i].shape[-1] for i in captured.spatial])
        for layer, values in enumerate(layer_outputs):
            captured.spill.write(layer, start, values)
        if captured.cross is not None and start < stats.CKA_MAX_IMAGES:
            keep = stats.CKA_MAX_IMAGES - start
            captured.cross.add([layer_outputs[i][:keep] for i in captured.spatial])
        progress("capturing activations", min(start + len(model_output), total), total)
    return captured


def _layer_skeletons(convs, spill: Spill, fields, slugs, input_size: int) -> list[LayerResult]:
    """What is known of each layer before its statistics: name, role, shape, grid layout."""
    from reportgen.models.sd_unet import describe_role

    results = []
    for conv, spilled, slug in zip(convs, spill.layers, slugs):
        maps_shape = assets.as_image_maps(np.zeros((1, *spilled.shape), np.float16)).shape
        results.append(LayerResult(
            conv=conv, slug=slug, role=describe_role(conv.name) if not conv.path else "",
            receptive_field=fields.get(conv.qualified_name, float("nan")),
            stride=input_size / max(maps_shape[1], 1) if len(spilled.shape) == 3 else float("nan"),
            layout=render.GridLayout.for_maps(*maps_shape[1:]),
            shape=spilled.shape,
        ))
    return results


def _analyse_layers(executor, skeletons, spill: Spill, records_path: Path, staging: Path, input_size: int,
                    options: BuildOptions, progress: Progress) -> list[LayerResult]:
    """Statistics and pictures of every layer, spread over the worker processes."""
    # Biggest layers first, so no worker is left with a big layer while the others have finished.
    by_size = sorted(range(len(skeletons)), key=lambda i: -int(np.prod(spill.layers[i].shape)))
    futures = {
        executor.submit(layer_stage.run, layer_stage.LayerJob(
            skeletons[i], spill.layers[i], records_path, staging, input_size, options.cmap, options.scale,
            options.statistics)): i
        for i in by_size
    }
    results: list[LayerResult | None] = [None] * len(futures)
    for done, future in enumerate(as_completed(futures), start=1):
        results[futures[future]] = future.result()
        progress("measuring and rendering layers", done, len(futures))
    return results


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

    executor = workers.pool(options.workers)  # its processes start while TensorFlow loads
    progress("loading model", 0, 1)
    loaded = model_io.load(options.model_path, options.weights_path, options.input_size, options.unsafe_load)
    model = loaded.model
    image_index = capture.image_input(model, options.image_input)
    input_size = _input_size(model, options.input_size, image_index)
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

    work = Path(tempfile.mkdtemp(prefix=".reportgen-", dir=out.parent if out.parent.exists() else None))
    try:
        staging = work / "site"
        staging.mkdir()
        captured = _capture(model, probe, selected, input_size, image_index, options, work, progress)
        records = [
            ImageRecord(s.id, image_namer(s.id), s.image, s.trimap, captured.predictions[i],
                        mask_is_prediction=s.trimap is None and captured.predictions[i] is not None)
            for i, s in enumerate(selected)
        ]
        records_path = layer_stage.save_records(records, work / "records.pickle")
        skeletons = _layer_skeletons(convs, captured.spill, fields, layer_slugs, input_size)
        results = _analyse_layers(executor, skeletons, captured.spill, records_path, staging, input_size, options,
                                  progress)
        layer_cka = np.full((len(convs), len(convs)), np.nan)
        if captured.cross is not None:
            layer_cka[np.ix_(captured.spatial, captured.spatial)] = captured.cross.finalise()
        captured.cross = None

        writer = assets.AssetWriter(staging, options.cmap, options.scale)
        writer.image_pictures(records)
        colorbar = writer.colorbar()

        progress("writing pages", 0, 1)
        from reportgen import compare

        previous = compare.load_previous(options.previous if options.previous is not None else out)
        pages = site.write_site(staging, loaded, options, records, results, key, input_size, colorbar, previous,
                                layer_cka, executor)
        site.swap_in(staging, out)
    except KeyboardInterrupt:
        from reportgen.errors import BuildInterrupted

        workers.discard()
        raise BuildInterrupted("interrupted; the previous site was left as it was") from None
    except BrokenProcessPool:
        workers.discard()
        raise ReportgenError("a worker process died (out of memory?); --workers 1 runs the build in one process") from None
    except OSError as error:
        raise OutputError(f"cannot write the site: {error.strerror or error}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return BuildResult(out, pages, len(records), site.folder_size(out), time.monotonic() - started)
