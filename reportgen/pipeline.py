"""`build()`: source -> capture -> stats -> render -> site, one direction, one stage per module.

Over 400 lines because the glue between the stages stays beside `_build`, which alone holds the
values it joins (the options, the plan, the capture's outputs): choosing the images, the capture
pass, the layers before their statistics, and the index page's and model card's sentences on them.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections.abc import Callable
from concurrent.futures import as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reportgen import (assets, capture, explanation_checks, input_evidence, layer_stage, measure, model_io, outdir, outputs, plan, render,
                       sources, tfds_source, workers)
from reportgen.describe import describe
from reportgen.errors import BuildInterrupted, InputError, OutputError, ReportgenError
from reportgen.inputs import InputGeometry
from reportgen.layer_stage import ImageRecord, LayerResult
from reportgen.mask_classes import MaskClasses
from reportgen.measure import Measurement
from reportgen.naming import Namer
from reportgen.options import ALL_IMAGES, BuildOptions
from reportgen.options import wants_stats_pass as _wants_stats_pass
from reportgen.plan import BuildPlan
from reportgen.probe import Probe
from reportgen.spill import Spill
from reportgen.targets import MASK_TRIMAP, Targets

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


@dataclass
class BuildResult:
    """What `build` made, for the summary line and the site stage."""

    out: Path
    pages: int
    images: int
    bytes: int
    seconds: float
    skipped: bool = False


def _source(options: BuildOptions, geometry: InputGeometry):
    if options.image_dir is not None:
        return sources.image_folder(options.image_dir, geometry, options.trimap_dir, options.reading)
    return tfds_source.tfds_split(options.dataset, options.split, geometry, data_dir=options.data_dir)


def _load_images(options: BuildOptions, geometry: InputGeometry) -> list[sources.SourceImage]:
    chosen = sources.select(_source(options, geometry), options.images, options.select, options.seed,
                            list(options.ids) or None)
    sources.check_masks(chosen, options.trimap_dir)
    return chosen


def _stats_images(options: BuildOptions, geometry: InputGeometry) -> list[sources.SourceImage]:
    """The statistics images: the first N of the source (all with ALL_IMAGES); the pictured ones come first."""
    import itertools

    count = None if options.stats_images == ALL_IMAGES else options.stats_images
    chosen = list(itertools.islice(_source(options, geometry), count))
    if count is not None and len(chosen) < count:
        raise InputError(f"--stats-images {count}: the source has only {len(chosen)} images")
    sources.check_masks(chosen, options.trimap_dir)
    return chosen


def worker_images(options: BuildOptions, geometry: InputGeometry, count: int):
    """The first `count` statistics images as Beam's workers read them themselves: the job carries file
    paths or a data set's name, not pixels."""
    if options.image_dir is not None:
        return sources.FolderImages.of(options.image_dir, geometry, options.trimap_dir, count, options.reading)
    return tfds_source.DatasetImages(options.dataset, options.split, geometry, options.data_dir)


def _statistics_pass(options: BuildOptions, loaded: model_io.LoadedModel, build_plan: BuildPlan, chosen,
                     progress: Progress) -> Measurement:
    """Every layer's statistics over the statistics images, on Beam, in two passes over the images:
    the sums of every statistic (the probes' fits among them), then the probes' scores, each image
    predicted by the probe fitted without its fold."""
    from reportgen import stats_pass

    stage = f"statistics of {len(chosen)} images (Beam)"
    progress(stage, 0, 1)
    size = options.input_size
    geometry = build_plan.geometry
    images = worker_images(options, geometry, len(chosen))
    model = stats_pass.ModelSpec(options.model_path, options.weights_path, size[0] if size else None,
                                 options.unsafe_load, options.imports, loaded.checksum or None)
    found = stats_pass.run_beam(stats_pass.PassSetup(model, build_plan, images), options.runner,
                                options.beam_options, workers=options.workers)
    progress(stage, 1, 1)
    if build_plan.targets.mask_source == MASK_TRIMAP:
        found = dataclasses.replace(found, masks=np.stack([item.trimap for item in chosen]))
    return found


def _quality_notes(specs, quality, graded, statistics_images, class_names: list[str], where: str,
                   mask_classes: MaskClasses) -> tuple[str, str]:
    """The model card's sentences on the model's own results over `where`: accuracy, and IoU per class."""
    accuracy = iou = ""
    if quality is None:
        return accuracy, iou
    ranked = quality.stacked_ranks()
    if graded.class_output is not None and ranked is not None:
        found = outputs.ranked_accuracy(specs[graded.class_output], ranked,
                                        [class_names.index(item.label) for item in statistics_images], class_names)
        accuracy = f"on {where}, {found.describe()}" if found is not None else ""
    if quality.iou is not None:
        ratio = quality.iou.ratio()
        from reportgen.site import fmt_interval

        parts = [f"{name} {fmt_interval(ratio[k], quality.iou.interval(lambda r, k=k: float(r[k])))}"
                 for k, name in enumerate(mask_classes.names) if np.isfinite(ratio[k])]
        iou = f"IoU against the masks on {where}: {', '.join(parts)} (90% intervals, jackknife over folds)"
    return accuracy, iou


def stats_pass_engine(options: BuildOptions) -> str:
    from reportgen.stats_pass import runner_class

    return f"Apache Beam, {runner_class(options.runner)}"


@dataclass
class _Captured:
    """What the capture pass leaves: spilled activations, every output, what storing changed, and,
    where the plan attributes, each layer's Grad-CAM maps."""

    spill: Spill
    outputs: list[list[np.ndarray]]  # per model output, one array per image
    damage: np.ndarray  # per layer: capture.stored_damage summed (counts) and maximised
    cams: list | None = None  # per layer, N x H x W float16 Grad-CAM maps (N x 1 x 1 zeros: none)


def _capture(probe: Probe, build_plan: BuildPlan, selected, work: Path,
             progress: Progress) -> tuple[_Captured, Measurement | None]:
    """Stream the pictured images through the probe once: spill every layer's activations to disk,
    keep the outputs and the Grad-CAM maps. In process, the same batches are measured
    (measure.in_process), and the probes scored on what that pass kept."""
    total, layers = len(selected), len(build_plan.layers)
    captured = _Captured(Spill(work, total), [[] for _ in build_plan.specs], np.zeros((layers, 3)))
    cams = [[] for _ in range(layers)] if build_plan.targets.attributes else None

    def keep(start: int, named) -> None:
        for layer, found in enumerate(named.damage):
            found = np.asarray(found, np.float64)
            captured.damage[layer, :2] += found[:, :2].sum(axis=0)
            captured.damage[layer, 2] = max(captured.damage[layer, 2], found[:, 2].max(initial=0))
        for kept, values in zip(captured.outputs, named.outputs):
            kept.extend(np.asarray(values, np.float32))
        if cams is not None:
            for layer in range(layers):
                cams[layer].append(np.asarray(named.cams[layer], np.float16))
        for layer, values in enumerate(named.activations):
            captured.spill.write(layer, start, values)
        progress("capturing activations", min(start + len(named.activations[0]), total), total)

    measured = None
    if build_plan.on_beam:
        for start, named in probe.stream(np.stack([s.image for s in selected]), build_plan.batch_size):
            keep(start, named)
    else:
        measured = measure.in_process(build_plan, probe, measure.batches_of(build_plan, selected),
                                      lambda batch, named: keep(batch.start, named))
    if cams is not None:
        captured.cams = [np.concatenate(parts) for parts in cams]
    return captured, measured


def _image_records(selected, specs: list[outputs.OutputSpec], captured: _Captured, class_names: list[str],
                   targets: Targets):
    """One record per image: its picture as shown, its mask, the model's segmentation, its class."""
    segmenting = next((k for k, spec in enumerate(specs) if spec.kind == "segmentation"), None)
    namer = Namer()
    records = []
    for i, item in enumerate(selected):
        prediction = mask_classes = None
        if segmenting is not None and targets.compares(specs[segmenting]):  # in the mask's classes, 0-based
            prediction = outputs.as_mask(captured.outputs[segmenting][i]).astype(np.int64) - 1
            mask_classes = targets.mask_classes
        elif segmenting is not None:
            prediction = outputs.pixel_classes(captured.outputs[segmenting][i]).astype(np.uint8)
        shown = render.as_rgb(item.picture)
        label = class_names.index(item.label) if item.label is not None and class_names else None
        records.append(ImageRecord(item.id, namer(item.id), shown, item.trimap, prediction,
                                   label=label, mask_classes=mask_classes))
    return records


def _warnings(loaded, convs, captured: _Captured, specs, options: BuildOptions, own: tuple[str, ...]) -> list[str]:
    """Signs of a wrong input convention, said on the index page in sentences; `own` are the model's
    own preprocessing layers (input_evidence.input_layers)."""
    convention = options.convention.describe().split(":")[0]
    found = outputs.warnings_for(specs, [np.stack(v) for v in captured.outputs], convention, own)
    shown = range(min(captured.spill.count, 10))
    first = np.stack([captured.spill.layers[0].image(k) for k in shown])
    evidence = input_evidence.first_conv_evidence(loaded.model, convs[0], first)
    if evidence:
        found.append(f"{evidence[0].upper()}{evidence[1:]}; {outputs.preprocessing_hint(convention, own)}.")
    if own and not options.convention.is_identity:
        found.append(f"The model preprocesses its own input ({'; '.join(own)}) and this build also applied "
                     f"{convention}: make sure the input is not converted twice.")
    if options.image_dir is not None:
        found += sources.unread_files_note(options.image_dir)
    damaged = [f"conv {conv.index} ({conv.qualified_name})" for conv, changed in zip(convs, captured.damage)
               if changed[:2].any()]
    if damaged:
        found.append(f"{len(damaged)} conv layers give values that cannot be stored as they are (NaN, infinite, or "
                     f"beyond float16's range): {', '.join(damaged[:5])}{' and more' if len(damaged) > 5 else ''}. "
                     "Their pages say what became of them.")
    return found


def _accuracy(specs, captured: _Captured, records, class_names: list[str]) -> str:
    """The model's own accuracy on the pictured images where they are labelled, for the model card."""
    for k, spec in enumerate(specs):
        found = outputs.accuracy(spec, np.stack(captured.outputs[k]), [r.label for r in records], class_names)
        if found is not None:
            return f"on the pictured images, {found.describe()}"
    return ""


def _stored_form_note(items, depth: str, exif: bool) -> str:
    """What became of 16-bit images and of EXIF orientations, for the model card; empty when every
    image had 8 bits and none an orientation."""
    said = []
    deep = sum(1 for item in items if item.bit_depth > 8)
    if deep:
        values = ("scaled from 0-65535 to 0-255 as floats, every level kept (--depth scale)" if depth == "scale"
                  else "passed with their stored values, 0-65535 (--depth raw)")
        said.append(f"{deep} of the {len(items)} images have 16 bits per pixel: {values}; they are shown "
                    "stretched to each image's brightest pixel")
    rotated = sum(1 for item in items if item.exif_rotated)
    if rotated:
        said.append(f"{rotated} of the {len(items)} images have an EXIF orientation: "
                    + ("it was applied (--exif)" if exif else
                       "it was ignored, as in Keras image_dataset_from_directory (--exif applies it)"))
    return ". ".join(said)


def _layer_skeletons(convs, spill: Spill, fields, slugs, input_height: int, damage: np.ndarray,
                     class_count: int) -> list[LayerResult]:
    """What is known of each layer before its statistics: name, role, shape, grid layout, and what
    storing its values changed."""
    from reportgen import profiles

    roles = profiles.for_model([c.name for c in convs], [c.path for c in convs],
                               [c.output_shape for c in convs]).roles
    results = []
    for conv, spilled, slug, changed, role in zip(convs, spill.layers, slugs, damage, roles):
        maps_shape = (1, *assets.image_maps_shape(spilled.shape))
        results.append(LayerResult(
            conv=conv, slug=slug, role=role,
            receptive_field=fields.get(conv.qualified_name, float("nan")),
            stride=input_height / max(maps_shape[1], 1) if len(spilled.shape) == 3 else float("nan"),
            layout=render.GridLayout.for_maps(*maps_shape[1:]),
            shape=spilled.shape,
            stored_note=capture.damage_note(changed, spilled.count * int(np.prod(spilled.shape))),
            probe_iou=np.full(class_count, np.nan), rgb_probe_iou=np.full(class_count, np.nan),
        ))
    return results


def _with_ablation(results: list[LayerResult], found) -> list[LayerResult]:
    """Each layer's ablation check, in numbers and sentences (ablation.layer_summary)."""
    from reportgen.ablation import layer_summary

    return [dataclasses.replace(r, ablation=layer_summary(found, k, found.plans[k], r.stats.importance,
                                                          f"conv {r.conv.index}"))
            if k in found.plans and r.stats is not None and r.stats.importance is not None else r
            for k, r in enumerate(results)]


def _attribution_notes(skeletons: list[LayerResult], build_plan: BuildPlan) -> list[LayerResult]:
    """Each layer's sentence on why it has no Grad-CAM and importance, where it has none, and the
    normalisation they are taken after, where they are: as the plan decided."""
    return [dataclasses.replace(s, attribution_note=layer.not_attributed, attributed_after=layer.attributed_after)
            for s, layer in zip(skeletons, build_plan.layers)]


# Lossless grid pixels an image may store at 256 colour levels: the shipped SD-UNet stores 1.3
# million; EfficientNetV2B0 at 224 px stores 3.9 million, which at 10 images passed the 50 MB budget.
LOSSLESS_PIXELS_PER_IMAGE = 2_500_000


def _fit_pictures(skeletons: list[LayerResult]) -> tuple[list[LayerResult], str]:
    """The layers' grids made to fit the site's budget: a model with very many small maps (stored
    exactly, as palette PNGs) has them drawn in fewer colour levels. Returns the layers and the
    model card's sentence on it, empty when nothing was reduced."""
    exact = [s for s in skeletons if s.layout.lossless]
    pixels = sum(s.layout.width * s.layout.height for s in exact)
    levels = render.grid_levels(pixels, LOSSLESS_PIXELS_PER_IMAGE)
    if levels == 256:
        return skeletons, ""
    fitted = [dataclasses.replace(s, layout=dataclasses.replace(s.layout, levels=levels)) if s.layout.lossless else s
              for s in skeletons]
    return fitted, (f"the grids of the {len(exact)} layers with small maps are drawn in {levels} colour levels, "
                    f"not 256, to keep the site near 50 MB ({pixels / 1e6:.1f} million stored pixels an image); "
                    "every number on the pages is exact")


def _analyse_layers(executor, skeletons, captured: _Captured, records_path: Path, staging: Path,
                    build_plan: BuildPlan, options: BuildOptions, progress: Progress, measured: Measurement,
                    rgb: dict) -> list[LayerResult]:
    """Statistics read from the measurement and pictures of every layer, spread over the worker processes."""
    spill = captured.spill
    cams = captured.cams or [None] * len(skeletons)
    # Biggest layers first, so no worker is left with a big layer while the others have finished.
    by_size = sorted(range(len(skeletons)), key=lambda i: -int(np.prod(spill.layers[i].shape)))
    futures = {
        executor.submit(layer_stage.run, layer_stage.LayerJob(
            skeletons[i], spill.layers[i], records_path, staging, *build_plan.geometry.size, options.cmap,
            options.scale, build_plan.targets, measured.layers[i], measured.scores.get(i), rgb.get(i), cams[i])): i
        for i in by_size
    }
    results: list[LayerResult | None] = [None] * len(futures)
    for done, future in enumerate(as_completed(futures), start=1):
        results[futures[future]] = future.result()
        progress("measuring and rendering layers", done, len(futures))
    return results


@dataclass(frozen=True)
class InMemory:
    """A model and images handed over in Python (the notebook API) instead of files."""

    model: object  # keras.Model
    images: list  # arrays of 0-255 pixel values or PIL images
    masks: list | None = None  # Oxford-style trimaps (1 pet, 2 background, 3 border) of the same sizes
    labels: list | None = None  # a class name per image, for the class probe
    class_names: tuple[str, ...] = ()  # names of the model's output classes (what --labels gives)


def build(out: Path, options: BuildOptions, progress: Progress | None = None,
          in_memory: InMemory | None = None) -> BuildResult:
    """Build the whole site into `out`, replacing it only when everything succeeded. An interruption
    (Ctrl-C, SIGTERM) ends the processes the build started and leaves the previous site as it was."""
    started = time.monotonic()
    shown = Path(out)
    out = outdir.real_path(shown)
    outdir.check_output(out)
    options.check()  # and the labels file, read once: all before TensorFlow loads
    before = workers.descendants()
    with outdir.lock(out), workers.interruptible() as interruption:
        try:
            result = _build(out, options, progress or (lambda stage, done, total: None), in_memory, started)
        except KeyboardInterrupt:
            workers.discard(terminate=True)
            workers.end_processes(workers.descendants() - before)
            raise BuildInterrupted("interrupted; the previous site was left as it was",
                                   interruption.exit_code) from None
    return dataclasses.replace(result, out=shown)


def _build(out: Path, options: BuildOptions, progress: Progress, in_memory: InMemory | None,
           started: float) -> BuildResult:
    from reportgen import site

    labels = outputs.read_labels(options.labels) if options.labels is not None else ()
    if in_memory is not None and in_memory.class_names:
        labels = tuple(str(name) for name in in_memory.class_names)

    from reportgen import buildkey

    key = None if in_memory else buildkey.input_key(options, model_io.models_dir() / model_io.DEFAULT_WEIGHTS)
    if key is not None and outdir.is_up_to_date(out, key):
        return BuildResult(out, 0, outdir.image_count(out), outdir.site_size(out), time.monotonic() - started,
                           skipped=True)

    from reportgen import timeline

    # Read before the long passes: kept fingerprints that cannot be read stop the build at once.
    training = None if in_memory else timeline.kept_timeline(model_file(options))
    executor = workers.pool(options.workers)  # its processes start while TensorFlow loads
    progress("loading model", 0, 1)
    loaded = _load_model(options, in_memory)
    model = loaded.model
    image_index = capture.image_input(model, options.image_input)
    geometry = plan.geometry(model, options.input_size, image_index, options)
    specs = outputs.describe(model, geometry.size, labels, shipped=bool(loaded.meta))
    segmentation = next((spec for spec in specs if spec.gives_mask), None)
    options = dataclasses.replace(options, mask_values=options.mask_values.for_classes(
        segmentation.mask_classes().names if segmentation is not None else None,
        binary=segmentation is not None and segmentation.binary))
    options.mask_values.check_names()
    convs = capture.find_conv_layers(model, options.tap, image_index)
    from reportgen import platform_support

    platform_support.check_convs_run_here(convs)
    if not convs:
        raise InputError("the model has no convolution layers to report on")

    progress("reading images", 0, 1)
    if in_memory is not None:
        selected = sources.select(sources.from_arrays(in_memory.images, in_memory.masks, in_memory.labels, geometry),
                                  options.images, options.select, options.seed, list(options.ids) or None)
    else:
        selected = _load_images(options, geometry)
    if key is None:  # inputs that cannot be hashed cheaply: key on what was loaded instead
        key = buildkey.loaded_key(loaded, options, selected)
        if outdir.is_up_to_date(out, key):
            return BuildResult(out, 0, len(selected), outdir.site_size(out), time.monotonic() - started,
                               skipped=True)

    fields = capture.receptive_fields(model, convs)
    namer = Namer()
    layer_slugs = [namer(c.qualified_name) for c in convs]
    statistics_images = selected
    if _wants_stats_pass(options):
        if in_memory is not None:
            raise InputError("statistics beyond the pictured images load the model in Beam workers: save the model "
                             "and use the command line, or leave stats_images unset")
        statistics_images = _stats_images(options, geometry)
    build_plan = plan.for_build(options, model, convs, specs, image_index, geometry, statistics_images,
                                stats_pass_engine(options) if _wants_stats_pass(options) else plan.IN_PROCESS)
    targets = build_plan.targets
    class_names = list(targets.class_names)
    probe = Probe(model, convs, build_plan)
    outcome = _statistics_pass(options, loaded, build_plan, statistics_images, progress) if build_plan.on_beam \
        else None

    work = outdir.scratch_folder(out)
    try:
        staging = work / "site"
        staging.mkdir()
        captured, measured = _capture(probe, build_plan, selected, work, progress)
        measured = outcome if outcome is not None else measured
        graded_on = f"the {len(statistics_images)} statistics images" if outcome is not None else \
            "the pictured images"
        statistics_accuracy, segmentation = _quality_notes(specs, measured.quality, build_plan.graded,
                                                           statistics_images, class_names, graded_on,
                                                           targets.mask_classes)
        records = _image_records(selected, specs, captured, class_names, targets)
        records_path = layer_stage.save_records(records, work / "records.pickle")
        skeletons, picture_note = _fit_pictures(
            _layer_skeletons(convs, captured.spill, fields, layer_slugs, geometry.height, captured.damage,
                             targets.mask_classes.count))
        skeletons = _attribution_notes(skeletons, build_plan)
        rgb = measure.rgb_baselines(build_plan, [render.as_rgb(item.picture) for item in statistics_images],
                                    measured.masks, [s.shape for s in skeletons])
        results = _analyse_layers(executor, skeletons, captured, records_path, staging, build_plan, options,
                                  progress, measured, rgb)
        if measured.ablation is not None:
            results = _with_ablation(results, measured.ablation)
        checked = explanation_checks.run(options, build_plan, model, convs, probe,
                                         np.stack([s.image for s in selected]), captured.cams, specs, progress)
        if checked is not None:
            results = checked.joined(results)
        layer_cka = np.full((len(convs), len(convs)), np.nan)
        if measured.cka is not None:
            layer_cka[np.ix_(build_plan.spatial, build_plan.spatial)] = measured.cka.finalise()

        from reportgen import fingerprint

        representation = fingerprint.of_build(measured.fingerprint, targets.ids, [c.qualified_name for c in convs],
                                              [r.id for r in records], captured.cams)

        writer = assets.AssetWriter(staging, options.cmap, options.scale)
        writer.image_pictures(records, targets.mask_classes)
        used = {i for r in results if r.stats is not None and r.stats.examples is not None
                for i in r.stats.examples.used_images()}
        examples = writer.example_pictures(statistics_images, used, records)
        colorbar = writer.colorbar()

        progress("writing pages", 0, 1)
        from reportgen import compare

        previous = compare.load_previous(options.previous if options.previous is not None else out)
        own_input = tuple(input_evidence.input_layers(model))
        description = describe(
            loaded, options=options, records=records, layers=results, key=key, geometry=geometry,
            colorbar=colorbar, previous=previous, layer_cka=layer_cka, outputs=specs,
            predictions=captured.outputs, class_names=class_names, warnings=_warnings(
                loaded, convs, captured, specs, options, own_input),
            input_layers=own_input, original_sizes=[s.original_size for s in selected],
            examples=examples, targets=targets, ablated_ids=tuple(build_plan.ablated),
            mask_conventions=tuple(sorted({item.mask_convention for item in statistics_images if item.mask_convention})),
            stored_form_note=_stored_form_note(statistics_images, options.depth, options.exif),
            picture_note=picture_note,
            accuracy="; ".join(filter(None, (_accuracy(specs, captured, records, class_names),
                                             statistics_accuracy if outcome is not None else ""))),
            segmentation=segmentation, engine=build_plan.executor,
            localisation_baselines=measured.baselines.summary() if measured.baselines is not None else {},
            sanity=checked.sanity if checked is not None else {},
            faithfulness=checked.faithfulness if checked is not None else {}, fingerprint=representation,
            training=training)
        pages = site.write_site(staging, description, executor)
        outdir.swap_in(staging, out, work)
    except BrokenProcessPool:
        workers.discard()
        raise ReportgenError("a worker process died (out of memory?); --workers 1 runs the build in one process") from None
    except OSError as error:
        workers.discard(terminate=True)  # as below
        raise OutputError(f"cannot write the site: {error.strerror or error}") from None
    except BaseException:
        # The workers may still be rendering into `work`: removed under them, it would be left with
        # what they wrote after (a Ctrl-C on a loaded machine did). They end first.
        workers.discard(terminate=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return BuildResult(out, pages, len(records), outdir.site_size(out), time.monotonic() - started)


def model_file(options: BuildOptions) -> Path:
    """The file the model's weights come from: --weights, else --model, else the shipped weights."""
    return options.weights_path or options.model_path or model_io.models_dir() / model_io.DEFAULT_WEIGHTS


def _load_model(options: BuildOptions, in_memory: InMemory | None) -> model_io.LoadedModel:
    if in_memory is not None:
        return model_io.from_memory(in_memory.model)
    size = options.input_size
    if options.model_path is None and size is not None and size[0] != size[1]:
        raise InputError(f"the built-in SD-UNet takes square images; --input-size {size[0]}x{size[1]} is not square")
    return model_io.load(options.model_path, options.weights_path, size[0] if size else None, options.unsafe_load,
                         imports=options.imports)
