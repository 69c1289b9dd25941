"""`BuildPlan`: every decision about what a build measures, made once, before any image is measured.

The geometry and input convention, the model's outputs, the targets (mask source and classes, the
focus class, each statistics image's class and fold), the layers measured (where each is tapped,
whether it gets the spatial statistics, whether its importance is fed), the graded outputs, the
ablated images and the executor: the capture, the Beam workers and the pages read these, and none
decides them again.
"""

from __future__ import annotations

from dataclasses import dataclass

from reportgen import capture, outputs, sources
from reportgen.errors import InputError
from reportgen.inputs import InputConvention, InputGeometry, MaskValues
from reportgen.mask_classes import OXFORD, MaskClasses
from reportgen.targets import MASK_TRIMAP, Targets

IN_PROCESS = "in process"


@dataclass(frozen=True)
class Graded:
    """Which of the model's outputs are graded over the statistics images (indices into model.outputs):
    a class output against the images' classes, a segmentation output against their trimaps."""

    class_output: int | None = None
    mask_output: int | None = None

    @property
    def outputs(self) -> tuple[int, ...]:
        return tuple(k for k in (self.class_output, self.mask_output) if k is not None)


@dataclass(frozen=True)
class MeasuredLayer:
    """One conv layer as the build measures it."""

    conv: capture.ConvLayer  # where it is tapped: `conv.tap_name`
    spatial: bool  # H x W x C maps: it gets the spatial statistics (else the descriptive ones and importance)
    attributed: bool  # Grad-CAM and Taylor importance are taken and fed: the target depends on it
    attributed_after: str = ""  # the normalisation they are taken after (attribution.attribution_source)
    not_attributed: str = ""  # why it has no Grad-CAM and importance, where it has none (a page's sentence)


@dataclass(frozen=True, eq=False)
class BuildPlan:
    """What is measured, on which images, by which executor: one value for the whole build.

    Plain values, so it pickles to any Beam worker.
    """

    geometry: InputGeometry
    convention: InputConvention
    image_index: int  # the model input the images feed
    tap: str  # capture.TAPS
    specs: tuple[outputs.OutputSpec, ...]
    targets: Targets
    layers: tuple[MeasuredLayer, ...]
    graded: Graded = Graded()
    ablated: tuple[str, ...] = ()  # the ids of the statistics images the ablation check runs on
    ablation_classes: tuple | None = None  # per statistics image, its class among the model's (None: predicted)
    executor: str = IN_PROCESS  # IN_PROCESS, or the Beam runner's class
    batch_size: int = 5  # images per forward pass, and per minibatch of the layer x layer CKA

    @property
    def on_beam(self) -> bool:
        return self.executor != IN_PROCESS

    @property
    def spatial(self) -> list[int]:
        """The layers of the layer x layer CKA: those with the spatial statistics."""
        return [k for k, layer in enumerate(self.layers) if layer.spatial]

    @property
    def ablated_starts(self) -> set[int]:
        """The starts of the batches the ablation check runs on."""
        index = {image_id: k for k, image_id in enumerate(self.targets.ids)}
        return {index[image_id] for image_id in self.ablated[::self.batch_size]}

    @property
    def input_height(self) -> int:
        return self.geometry.height


def geometry(model, requested: tuple[int, int] | None, index: int, options) -> InputGeometry:
    """The picture size and channels to feed: the model's own, or --input-size for a dynamic one."""
    shape = tuple(model.inputs[index].shape)
    if len(shape) != 4:
        raise InputError(f"the model's input shape {shape} is not an image (batch, height, width, channels)")
    *fixed, channels = capture.image_shape(shape)
    channels = channels if channels is not None else 3
    if requested is not None:
        if any(d is not None and d != r for d, r in zip(fixed, requested)):
            raise InputError(f"the model takes {fixed[0]}x{fixed[1]} images; it cannot take --input-size "
                             f"{requested[0]}x{requested[1]}")
        height, width = requested
    elif None in fixed:
        raise InputError(f"the model's input shape {shape} has no fixed height and width; "
                         "give --input-size HEIGHTxWIDTH")
    else:
        height, width = int(fixed[0]), int(fixed[1])
    found = InputGeometry(height, width, int(channels), options.fit, options.interpolation)
    options.convention.check_channels(found.channels)
    return found


def decide_targets(statistics_images, specs: list[outputs.OutputSpec], options, activations=None) -> Targets:
    """What every statistic is measured against, once for the build: the folds, each image's class,
    the mask (the trimaps, or the model's 3-class segmentation standing in), whether to measure, and
    the decision that Grad-CAM and the importances explain."""
    from reportgen.attribution import Target, decide_target

    class_names = sources.class_names(statistics_images)
    labels = [class_names.index(item.label) if item.label is not None else None for item in statistics_images] \
        if class_names else None
    segmenting = next((k for k, spec in enumerate(specs) if spec.gives_mask), None)
    trimaps_given = all(item.trimap is not None for item in statistics_images)
    if trimaps_given:
        mask_classes = given_mask_classes(statistics_images, specs, options.mask_values)
    else:
        mask_classes = specs[segmenting].mask_classes() if segmenting is not None else OXFORD
    return Targets.decide([item.id for item in statistics_images], labels, trimaps_given=trimaps_given,
                          prediction_output=segmenting, measures=options.statistics, class_names=class_names,
                          explained=decide_target(specs, options.explain_class, activations) if options.attribution
                          else Target(reason="the build ran with --no-attribution"), mask_classes=mask_classes)


def given_mask_classes(statistics_images, specs: list[outputs.OutputSpec], mask_values: MaskValues):
    """The classes of the masks given with the images: the segmentation's (--mask-values classes, or
    values named by its class names), an Oxford trimap's, or a binary mask's, its foreground named
    as a binary output's is."""
    from reportgen.inputs import TRIMAP_CONVENTION

    if mask_values.of_segmentation:
        return next(spec for spec in specs if spec.gives_mask).mask_classes()
    if all(item.mask_convention in (None, TRIMAP_CONVENTION) for item in statistics_images):
        return OXFORD  # a data set's trimaps say no convention
    binary = next((spec for spec in specs if spec.binary), None)
    return binary.mask_classes() if binary is not None else MaskClasses.binary()


def graded(specs: list[outputs.OutputSpec], targets: Targets, statistics_images) -> Graded:
    """The model's outputs whose own results the statistics images can grade: the first class output
    when the images have classes, the first segmentation when they have trimaps."""
    labelled = bool(targets.class_names) and all(item.label is not None for item in statistics_images)
    classes = next((k for k, spec in enumerate(specs) if spec.kind == "classification"), None) if labelled else None
    masks = next((k for k, spec in enumerate(specs) if targets.compares(spec)), None) \
        if targets.mask_source == MASK_TRIMAP else None
    return Graded(classes, masks)


def model_classes(specs, targets: Targets, chosen) -> tuple | None:
    """Each statistics image's class among the explained class output's (by the folder's name, which
    --labels must give), for the ablation check's metric; None when they are not all known."""
    explained = targets.explained
    if explained.kind != "class" or not targets.class_names:
        return None
    names = specs[explained.output].classes
    if not names or any(item.label not in names for item in chosen):
        return None
    return tuple(names.index(item.label) for item in chosen)


def measured_layers(model, convs, targets: Targets) -> tuple[MeasuredLayer, ...]:
    """Each conv layer's measurement: spatial or not, and attributed or not, with the reason."""
    from reportgen.attribution import attribution_source, not_attributed_note, on_path

    connected = [False] * len(convs)
    if targets.attributes:
        sources_ = [attribution_source(model, conv)[0] for conv in convs]
        connected = on_path(model, sources_, model.outputs[targets.explained.output])
    found = []
    for conv, linked in zip(convs, connected):
        note = not_attributed_note(conv, linked, targets.explained) if targets.measures else \
            "the build ran with --no-stats"
        found.append(MeasuredLayer(conv, Targets.measured(tuple(conv.output_shape)), targets.attributes and not note,
                                   "" if note else attribution_source(model, conv)[1], note))
    return tuple(found)


def ablated_ids(targets: Targets, images: int, batch_size: int) -> tuple[str, ...]:
    """The ablation check's images: `images` in whole batches, spread evenly over the statistics
    images, so that every worker takes its share; the first batch always, since it alone gets the
    single-channel ablations."""
    if not images or not targets.attributes:
        return ()
    total = -(-len(targets) // batch_size)
    wanted = min(total, -(-images // batch_size))
    starts = sorted({int(k * total // wanted) * batch_size for k in range(wanted)})
    return tuple(image_id for start in starts for image_id in targets.ids[start:start + batch_size])


def for_items(models, items, convention: InputConvention, batch_size: int) -> tuple[list, list, Targets]:
    """Per model, its conv layers and the plan of measuring them on `items` (sources.SourceImage of the
    size every model takes), and the targets (their ids, no masks) the plans share: what the fingerprint
    and the comparison of models measure."""
    image = items[0].image
    geometry_ = InputGeometry(image.shape[0], image.shape[1], image.shape[2] if image.ndim == 3 else 1)
    targets = Targets.decide([item.id for item in items])
    convs, plans = [], []
    for model in models:
        found = capture.find_conv_layers(model)
        if not found:
            raise InputError("a model has no convolution layers")
        convs.append(found)
        plans.append(make(model, found, outputs.describe(model, geometry_.size), targets, convention, geometry_,
                          batch_size=batch_size))
    return convs, plans, targets


def make(model, convs, specs, targets: Targets, convention: InputConvention, geometry_: InputGeometry,
         image_index: int = 0, tap: str = "conv", graded_: Graded = Graded(), ablation_images: int = 0,
         ablation_classes: tuple | None = None, executor: str = IN_PROCESS, batch_size: int = 5) -> BuildPlan:
    """The plan of measuring `model`'s `convs` against `targets`, with the ablation check on `ablation_images`."""
    return BuildPlan(geometry_, convention, image_index, tap, tuple(specs), targets,
                     measured_layers(model, convs, targets), graded_, ablated_ids(targets, ablation_images, batch_size),
                     ablation_classes, executor, batch_size)


def for_build(options, model, convs, specs, image_index: int, geometry_: InputGeometry, statistics_images,
              executor: str) -> BuildPlan:
    """The plan of a build, from its options and the statistics images' ids, classes and masks. The
    ablation check runs with the statistics pass only: on the pictured images alone it would add a
    rerun of the model per layer to every small build."""
    targets = decide_targets(statistics_images, specs, options,
                             [outputs.score_activation(tensor) for tensor in model.outputs])
    return make(model, convs, specs, targets, options.convention, geometry_, image_index, options.tap,
                graded(specs, targets, statistics_images), options.ablation_images if executor != IN_PROCESS else 0,
                model_classes(specs, targets, statistics_images), executor, options.batch_size)

