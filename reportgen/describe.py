"""The description: what a build learned, as plain data (numbers, names, text, file paths), for the site.

`describe` is the one place where the site's facts are read off the live model (its parameter count,
its inputs, its graph for the architecture map). What it returns holds no Keras object, so every page
can be built, and tested, without TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from reportgen.architecture import ArchitectureMap
from reportgen.inputs import InputGeometry
from reportgen.mask_classes import OXFORD, MaskClasses

if TYPE_CHECKING:
    from reportgen import compare, fingerprint, model_io, outputs, targets
    from reportgen.layer_stage import ImageRecord, LayerResult
    from reportgen.options import BuildOptions


@dataclass(frozen=True)
class ModelCard:
    """The model as its card on the index and the manifest state it."""

    description: str  # where the model came from, in words
    parameters: int
    checksum: str  # sha256 of the weights or model file; "" for initialised weights
    trained: bool
    meta: dict  # the shipped model card's facts, or {}
    file_name: str | None  # the model file's name, where it came from a file
    image_input: str = ""  # the input that takes the images
    other_inputs: tuple[str, ...] = ()  # the model's other inputs (fed zeros); empty for a one-input model
    unfed_convs: tuple[str, ...] = ()  # conv layer calls that the image input does not reach


@dataclass(frozen=True)
class Description:
    """Everything the pipeline learned, as the site needs it."""

    model: ModelCard
    architecture: ArchitectureMap  # laid out, its conv nodes numbered as `layers`
    options: BuildOptions
    records: list[ImageRecord]  # one per pictured image
    layers: list[LayerResult]  # in graph order
    key: str  # the incremental build key
    geometry: InputGeometry
    colorbar: str  # path of the colour scale picture
    previous: compare.Previous | None
    layer_cka: np.ndarray  # L x L
    outputs: list[outputs.OutputSpec]  # per model output
    predictions: list  # per output, one array per image
    class_names: list[str]  # classes of labelled images (class folders); empty otherwise
    warnings: list[str]  # signs of a wrong input convention
    input_layers: tuple[str, ...]  # the model's own Rescaling / Normalization layers at its start
    original_sizes: list  # (height, width) of each image before fitting, where known
    examples: dict = field(default_factory=dict)  # statistics image index -> its id, picture and page
    targets: targets.Targets | None = None  # the statistics images, their folds, classes and mask
    ablated_ids: tuple[str, ...] = ()  # the statistics images the ablation check reran, in the plan's order
    mask_conventions: tuple[str, ...] = ()  # how the given masks' stored values were read
    stored_form_note: str = ""  # what became of 16-bit images and EXIF orientations
    picture_note: str = ""  # how the pictures were reduced to fit the site's budget, if they were
    accuracy: str = ""  # the model's own accuracy on the labelled pictured images, in a sentence
    segmentation: str = ""  # the model's own IoU per class against the trimaps, over the statistics images
    engine: str = "in process"  # where the statistics ran: "in process" or the Beam runner
    localisation_baselines: dict = field(default_factory=dict)  # localisation.Baselines.summary(), or {}
    sanity: dict = field(default_factory=dict)  # sanity.record: the Grad-CAM sanity checks, or {}
    faithfulness: dict = field(default_factory=dict)  # faithfulness.record: the pixel-removal test, or {}
    fingerprint: fingerprint.Fingerprint | None = None  # what comparing layers with a later build needs
    training: object = None  # timeline.Timeline of the fingerprints kept beside the model's file, or None

    @property
    def mask_classes(self) -> MaskClasses:
        return self.targets.mask_classes if self.targets is not None else OXFORD

    @property
    def has_mask(self) -> bool:
        return any(r.mask is not None for r in self.records)

    @property
    def has_classes(self) -> bool:
        return any(np.isfinite(r.class_accuracy) for r in self.layers)

    @property
    def has_importance(self) -> bool:
        return any(r.stats is not None and r.stats.importance is not None for r in self.layers)

    @property
    def explained(self) -> str:
        """What Grad-CAM and the importances explain, in words (attribution.Target.describe)."""
        return self.targets.explained.describe() if self.targets is not None else ""


def model_card(loaded: model_io.LoadedModel, image_input: str | None) -> ModelCard:
    """The card's facts, read off the loaded model; `image_input` is --input (None: the only image input)."""
    from reportgen.capture import image_input as image_input_index
    from reportgen.capture import unfed_conv_layers

    model = loaded.model
    chosen = image_input_index(model, image_input) if len(model.inputs) > 1 else 0
    others = tuple(t.name for i, t in enumerate(model.inputs) if i != chosen)
    return ModelCard(description=loaded.description, parameters=int(model.count_params()),
                     checksum=loaded.checksum, trained=loaded.trained, meta=loaded.meta,
                     file_name=Path(loaded.source_path).name if loaded.source_path else None,
                     image_input=model.inputs[chosen].name, other_inputs=others,
                     unfed_convs=tuple(unfed_conv_layers(model, chosen)) if others else ())


def describe(loaded: model_io.LoadedModel, *, options: BuildOptions, layers: list[LayerResult],
             **learned) -> Description:
    """The build's description: the model card and the architecture map read off `loaded` here, once;
    `learned` is the rest of `Description`'s fields, already plain data."""
    from reportgen import architecture

    return Description(model=model_card(loaded, options.image_input),
                       architecture=architecture.build_map(loaded.model, [r.conv for r in layers]),
                       options=options, layers=layers, **learned)
