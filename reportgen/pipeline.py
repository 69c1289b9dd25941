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
    prediction: np.ndarray | None  # class ids at input size; None when the model does not segment
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
    shape: tuple[int, ...]  # the captured output, without the batch axis
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


def _input_size(model, requested: int | None) -> int:
    """The square image size to feed: the model's own, or --input-size for a dynamic one."""
    if len(model.inputs) != 1:
        raise InputError(f"the model has {len(model.inputs)} inputs; reportgen feeds one image input")
    shape = tuple(model.inputs[0].shape)
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


class _Spill:
    """Activations of every layer on disk as float16, so memory does not grow with --images.

    Files are created on the first batch, from the shapes the model really produced, so models
    with a dynamic input size work too. Reads and writes are plain file I/O, not memory maps,
    whose touched pages would stay resident and make memory grow with the number of images.
    """

    def __init__(self, folder: Path, count: int):
        self.folder, self.count = folder, count
        self.paths: list[Path] = []
        self._offsets: list[int] = []
        self._shapes: list[tuple[int, ...]] = []

    def write(self, layer: int, start: int, values: np.ndarray) -> None:
        values = np.ascontiguousarray(np.clip(values, -65000, 65000), dtype=np.float16)
        if layer == len(self.paths):
            path = self.folder / f"layer{layer:03d}.npy"
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)), "fortran_order": False,
                      "shape": (self.count, *values.shape[1:])}
            with open(path, "wb") as handle:
                np.lib.format.write_array_header_1_0(handle, header)
                self._offsets.append(handle.tell())
            self.paths.append(path)
            self._shapes.append(tuple(values.shape[1:]))
        per_image = values[0].nbytes
        with open(self.paths[layer], "r+b") as handle:
            handle.seek(self._offsets[layer] + start * per_image)
            handle.write(values.tobytes())

    def image(self, layer: int, index: int) -> np.ndarray:
        """One image's activations of one layer, read into memory (float32)."""
        shape = self._shapes[layer]
        count = int(np.prod(shape))
        with open(self.paths[layer], "rb") as handle:
            handle.seek(self._offsets[layer] + index * count * 2)
            data = np.frombuffer(handle.read(count * 2), dtype=np.float16)
        return data.reshape(shape).astype(np.float32)


def _segmentation(output: np.ndarray, input_size: int) -> np.ndarray | None:
    """Class ids per pixel when the model's output is a per-pixel class map at the input size."""
    if output.ndim == 4 and output.shape[1:3] == (input_size, input_size) and output.shape[-1] >= 2:
        return np.argmax(output, axis=-1).astype(np.uint8)
    return None


@dataclass
class _Captured:
    """What the capture pass leaves: spilled activations, accumulated statistics, predictions."""

    spill: _Spill
    accumulators: list
    cross: stats.CrossLayerAccumulator | None
    spatial: list[int]
    predictions: list


def _capture(model, probe, convs, selected, input_size: int, options: BuildOptions, work: Path,
             progress: Progress) -> _Captured:
    """Stream the images through the probe once: spill activations, accumulate statistics."""
    import keras

    full_probe = keras.Model(model.inputs, [*probe.outputs, model.outputs[0]])
    total = len(selected)
    trimaps_known = all(s.trimap is not None for s in selected)
    captured = _Captured(_Spill(work, total), [None] * len(convs), None, [], [])
    images = np.stack([s.image for s in selected])
    for start, batch_outputs in capture.stream_activations(full_probe, images, options.batch_size):
        layer_outputs, model_output = batch_outputs[:-1], batch_outputs[-1]
        predicted = _segmentation(model_output, input_size)
        captured.predictions.extend(list(predicted) if predicted is not None else [None] * len(model_output))
        indices = list(range(start, start + len(model_output)))
        if trimaps_known:
            masks = np.stack([selected[i].trimap for i in indices])
        elif predicted is not None:
            masks = predicted + 1
        else:  # no ground truth and no segmentation output: nothing stands in for the mask
            masks = None
        if start == 0:
            captured.spatial = [i for i, v in enumerate(layer_outputs) if v.ndim == 4]
            if options.statistics and captured.spatial:
                captured.cross = stats.CrossLayerAccumulator([layer_outputs[i].shape[-1] for i in captured.spatial])
        for layer, values in enumerate(layer_outputs):
            captured.spill.write(layer, start, values)
            if values.ndim != 4:
                continue
            if captured.accumulators[layer] is None:
                captured.accumulators[layer] = stats.LayerAccumulator(values.shape[-1], input_size / values.shape[1])
            captured.accumulators[layer].add(values, masks, indices, total,
                                             measures=options.statistics and masks is not None)
        if captured.cross is not None:
            captured.cross.add([layer_outputs[i] for i in captured.spatial])
        progress("capturing activations", min(start + len(model_output), total), total)
    for layer in range(len(captured.spill.paths)):
        if captured.accumulators[layer] is None:  # 1-D and 3-D convs: descriptive numbers only
            values = np.stack([captured.spill.image(layer, k) for k in range(total)])
            flat = values.reshape(len(values), -1, values.shape[-1])
            accumulator = stats.LayerAccumulator(values.shape[-1], 1.0)
            accumulator.add(flat[:, :, None, :], None, list(range(total)), total, measures=False)
            captured.accumulators[layer] = accumulator
    return captured


def _layer_results(convs, captured: _Captured, fields, slugs, input_size: int) -> list[LayerResult]:
    from reportgen.models.sd_unet import describe_role

    results = []
    for i, conv in enumerate(convs):
        layer_stats = stats.finalise(captured.accumulators[i])
        order = np.argsort(-np.nan_to_num(layer_stats.channel_strength, nan=-1.0), kind="stable")
        first = captured.spill.image(i, 0)
        maps = assets.as_image_maps(first[None])
        results.append(LayerResult(
            conv=conv, slug=slugs[i], role=describe_role(conv.name) if not conv.path else "",
            receptive_field=fields.get(conv.qualified_name, float("nan")),
            stride=input_size / max(maps.shape[1], 1) if first.ndim == 3 else float("nan"),
            stats=layer_stats, order=order,
            layout=render.GridLayout.for_maps(maps.shape[1], maps.shape[2], maps.shape[3]),
            shape=tuple(int(d) for d in first.shape),
        ))
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

    progress("loading model", 0, 1)
    loaded = model_io.load(options.model_path, options.weights_path, options.input_size, options.unsafe_load)
    model = loaded.model
    input_size = _input_size(model, options.input_size)
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
        captured = _capture(model, probe, convs, selected, input_size, options, work, progress)
        records = [
            ImageRecord(s.id, image_namer(s.id), s.image, s.trimap, captured.predictions[i],
                        mask_is_prediction=s.trimap is None and captured.predictions[i] is not None)
            for i, s in enumerate(selected)
        ]
        results = _layer_results(convs, captured, fields, layer_slugs, input_size)
        layer_cka = np.full((len(convs), len(convs)), np.nan)
        if captured.cross is not None:
            layer_cka[np.ix_(captured.spatial, captured.spatial)] = captured.cross.finalise()
        captured.accumulators = captured.cross = None
        spill = captured.spill

        writer = assets.AssetWriter(staging, options.cmap, options.scale)
        done = [0]

        def render_layer(i: int) -> None:
            writer.layer_pictures(results[i], lambda k, layer=i: spill.image(layer, k), records, input_size)
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
