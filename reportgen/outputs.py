"""What the model says: its outputs described, each image's output summarised, and the warnings
that a model's outputs give when its input was probably preprocessed wrongly."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reportgen.errors import InputError
from reportgen.inputs import stored_classes
from reportgen.intervals import wilson_interval
from reportgen.mask_classes import OXFORD, MaskClasses

TOP_K = 5
FULL_VALUES = 1000  # outputs of at most this many numbers per image are recorded in full
SATURATED = 0.999  # a top-class probability this close to 1 on every image says nothing about the image
CONSTANT_SPREAD = 1e-4  # relative spread across images below which an output is constant
SHIPPED_CLASSES = ("pet", "background", "border")
BINARY_CLASSES = ("background", "foreground")  # a sigmoid segmentation's classes 0 and 1, unless --labels names them


@dataclass(frozen=True)
class OutputSpec:
    """One of the model's outputs, as the report treats it."""

    name: str
    shape: tuple[int | None, ...]  # without the batch axis
    kind: str  # "segmentation" (class per input pixel), "classification" (a vector of class scores), "other"
    classes: tuple[str, ...] = ()  # class names, from --labels or the shipped model; empty: use indices

    @property
    def binary(self) -> bool:
        """A one-channel sigmoid segmentation: class 1 (the foreground) where p > 0.5, else class 0."""
        return self.kind == "segmentation" and self.shape[-1] == 1

    @property
    def class_count(self) -> int:
        if self.binary:
            return 2
        return int(self.shape[-1]) if self.kind in ("segmentation", "classification") else 0

    @property
    def gives_mask(self) -> bool:
        """Whether its prediction can stand in for the mask (`as_mask`): binary (the foreground as the
        pet), or two classes or more."""
        return self.kind == "segmentation" and self.class_count >= 2

    def mask_classes(self):
        """The classes of the mask its prediction stands in for (`as_mask`): a binary output's
        foreground and background (as --labels names them), three unnamed classes in the Oxford
        order (pet, background, border: the Keras tutorial's trimap - 1); else its own, in order,
        the first not named background in focus."""
        if self.binary:
            return MaskClasses.binary(self.class_name(1), self.class_name(0))
        if self.class_count == 3 and not self.classes:
            return OXFORD
        return MaskClasses.named([self.class_name(k) for k in range(self.class_count)])

    def class_name(self, index: int) -> str:
        return self.classes[index] if index < len(self.classes) else f"class {index}"

    def describe(self) -> str:
        shape = " x ".join("?" if d is None else str(d) for d in self.shape)
        shape = f"{shape} values" if len(self.shape) == 1 else shape
        if self.kind == "segmentation":
            what = f"per-pixel scores over {self.class_count} classes"
        elif self.kind == "classification":
            what = f"scores over {self.class_count} classes"
        else:
            what = "summarised per image"
        named = f"; classes {_list(self.classes)}" if self.classes else ""
        return f"{self.name}: {shape}, {what}{named}"


def _list(names, limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def output_names(model) -> list[str]:
    """The names Keras gives the outputs (the producing layers' names), also for Sequential models."""
    names = getattr(model, "output_names", None)
    if names:
        return [str(n) for n in names]
    return [tensor._keras_history[0].name for tensor in model.outputs]


def read_labels(path: Path) -> tuple[str, ...]:
    """One class name per line (blank lines at the end ignored), as Keras' label files are; a
    byte-order mark (Windows editors write one) is not part of the first name."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise InputError(f"labels file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read labels file {str(path)!r}: {error.__class__.__name__}") from None
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise InputError(f"labels file {str(path)!r} is empty")
    return tuple(line.strip() for line in lines)


def score_activation(tensor) -> str:
    """The activation that the layer making `tensor` ends in, "softmax" or "sigmoid" (class scores),
    or "" (regression values, logits, or a log_softmax)."""
    layer = tensor._keras_history[0]
    activation = getattr(getattr(layer, "activation", None), "__name__", "")
    if activation == "softmax" or type(layer).__name__ == "Softmax":
        return "softmax"
    return "sigmoid" if activation == "sigmoid" else ""


def _ends_in_scores(tensor) -> bool:
    """Whether the layer making `tensor` ends in softmax or sigmoid: class scores, not regression values."""
    layer = tensor._keras_history[0]
    activation = getattr(getattr(layer, "activation", None), "__name__", "")
    return activation == "log_softmax" or bool(score_activation(tensor))


def describe(model, image_size: tuple[int, int], labels: tuple[str, ...] = (),
             shipped: bool = False) -> list[OutputSpec]:
    """Each output's kind; `labels` name the classes of the first class output (count checked).

    A vector output is a classification when it ends in softmax or sigmoid; a vector of logits is
    one when --labels names as many classes as it has values.
    """
    specs = []
    for name, tensor in zip(output_names(model), model.outputs):
        shape = tuple(None if d is None else int(d) for d in tuple(tensor.shape)[1:])
        if len(shape) == 3 and shape[:2] == image_size and ((shape[-1] or 0) >= 2 or
                                                            (shape[-1] == 1 and _ends_in_scores(tensor))):
            kind = "segmentation"
        elif len(shape) == 1 and (shape[0] or 0) >= 2 and _ends_in_scores(tensor):
            kind = "classification"
        else:
            kind = "other"
        binary = kind == "segmentation" and shape[-1] == 1
        specs.append(OutputSpec(name, shape, kind, BINARY_CLASSES if binary else ()))
    if shipped and specs and specs[0].kind == "segmentation":
        specs[0] = OutputSpec(specs[0].name, specs[0].shape, specs[0].kind, SHIPPED_CLASSES)
    if labels:
        labelled = next((i for i, s in enumerate(specs) if s.kind == "classification"), None)
        if labelled is None:
            labelled = next((i for i, s in enumerate(specs) if s.kind == "other" and len(s.shape) == 1
                             and s.shape[0] == len(labels)), None)
            if labelled is not None:
                specs[labelled] = OutputSpec(specs[labelled].name, specs[labelled].shape, "classification")
        if labelled is None:
            labelled = next((i for i, s in enumerate(specs) if s.kind == "segmentation"), None)
        if labelled is None:
            raise InputError(f"--labels names {len(labels)} classes, but no output of the model is a class "
                             f"score vector or a per-pixel class map ({'; '.join(s.describe() for s in specs)})")
        spec = specs[labelled]
        if spec.class_count != len(labels):
            raise InputError(f"the labels file names {len(labels)} classes but output {spec.name!r} has "
                             f"{spec.class_count}")
        specs[labelled] = OutputSpec(spec.name, spec.shape, spec.kind, tuple(labels))
    return specs


def is_probability(values: np.ndarray) -> bool:
    """Scores that are a distribution: non-negative and summing to 1 over the last axis."""
    return bool(values.size and values.min() >= -1e-6 and np.allclose(values.sum(axis=-1), 1.0, atol=1e-3))


@dataclass(frozen=True)
class ImageOutput:
    """One output on one image, summarised for the page."""

    name: str
    kind: str
    top: tuple[tuple[str, float], ...] = ()  # classification: (class, score), best first
    score_name: str = "score"  # "probability" when the scores are a distribution
    summary: str = ""  # other outputs: shape and range

    def text(self) -> str:
        if self.top:
            return ", ".join(f"{name} {value:.3f}" for name, value in self.top)
        return self.summary


def summarise(spec: OutputSpec, values: np.ndarray) -> ImageOutput:
    values = np.asarray(values, np.float64)
    if spec.kind == "classification":
        order = np.argsort(-values, kind="stable")[:TOP_K]
        top = tuple((spec.class_name(int(i)), float(values[i])) for i in order)
        return ImageOutput(spec.name, spec.kind, top, "probability" if is_probability(values) else "score")
    if spec.kind == "segmentation":
        share = np.bincount(pixel_classes(values).ravel(), minlength=spec.class_count) / values[..., 0].size
        parts = [f"{spec.class_name(int(k))} {share[k]:.0%}" for k in np.argsort(-share)[:3] if share[k] > 0]
        return ImageOutput(spec.name, spec.kind, summary="predicted area: " + ", ".join(parts))
    finite = values[np.isfinite(values)]
    if values.size == 1:
        text = f"{float(values.ravel()[0]):.4g}"
    elif finite.size:
        text = f"{values.size} values, min {finite.min():.4g}, mean {finite.mean():.4g}, max {finite.max():.4g}"
    else:
        text = f"{values.size} values, none finite"
    return ImageOutput(spec.name, spec.kind, summary=text)


def pixel_classes(values: np.ndarray) -> np.ndarray:
    """Each pixel's class in a segmentation output (... x K scores): the argmax; for one sigmoid
    channel, 1 where p > 0.5 (the foreground) and 0 elsewhere."""
    values = np.asarray(values)
    if values.shape[-1] == 1:
        return (values[..., 0] > 0.5).astype(np.int64)
    return values.argmax(axis=-1)


def as_mask(values: np.ndarray) -> np.ndarray:
    """A segmentation output (`gives_mask`) as the mask the statistics measure against, class k as
    k + 1 (`OutputSpec.mask_classes`): a binary output's foreground 1 (the pet) and background 2."""
    classes = pixel_classes(values)
    return stored_classes(2 - classes if np.shape(values)[-1] == 1 else classes + 1, np.shape(values)[-1])


def record_values(values: np.ndarray):
    """An output of one image for data/predictions.json: every value, or a summary if it is large."""
    values = np.asarray(values, np.float64)
    if values.size <= FULL_VALUES:
        return _finite_list(values)
    finite = values[np.isfinite(values)]
    return {"shape": list(values.shape), "recorded": "summary (more than 1,000 values)",
            "min": float(finite.min()) if finite.size else None, "mean": float(finite.mean()) if finite.size else None,
            "max": float(finite.max()) if finite.size else None}


def _finite_list(values: np.ndarray):
    if values.ndim == 0:
        value = float(values)
        return round(value, 7) if math.isfinite(value) else None
    return [_finite_list(v) for v in values]


def preprocessing_hint(input_convention: str, own_input_layers: tuple[str, ...] = ()) -> str:
    """What to check when the output ignores the image. A model that rescales its own input from 0-255
    pixels, fed them as they are, points at its weights (untrained?) rather than at the convention."""
    if own_input_layers and input_convention.startswith("--preprocess none"):
        return (f"the model converts its own input ({'; '.join(own_input_layers)}) and was given 0-255 pixels, "
                "so check its weights (are they trained?) rather than the input convention")
    return f"check the input convention (this build used {input_convention}; see --preprocess and --rescale)"


def warnings_for(specs: list[OutputSpec], per_output: list[np.ndarray], input_convention: str,
                 own_input_layers: tuple[str, ...] = ()) -> list[str]:
    """Outputs that do not depend on the image: signs that the pixels reached the model in a form it
    was not trained on, or that it was never trained. `per_output[k]` holds output k for every image."""
    hint = preprocessing_hint(input_convention, own_input_layers)
    found = []
    for spec, values in zip(specs, per_output):
        values = np.asarray(values, np.float64)
        broken = ~np.isfinite(values)
        if broken.any():
            found.append(f"Output {spec.name!r} is NaN or infinite in {broken.sum():,} of its {values.size:,} values "
                         f"on the {len(values)} pictured images; the layer pages say where it starts.")
            continue
        if len(values) < 2:
            continue
        if spec.kind == "classification" and is_probability(values):
            top = values.argmax(axis=1)
            if (top == top[0]).all() and values.max(axis=1).min() >= SATURATED:
                found.append(f"Output {spec.name!r} gives every one of the {len(values)} images the same class, "
                             f"{spec.class_name(int(top[0]))!r}, with probability at least {SATURATED}: the model "
                             f"is saturated, not looking at the images; {hint}.")
                continue
        spread = float(np.max(np.ptp(values, axis=0))) if values.size else 0.0
        scale = float(np.max(np.abs(values))) if values.size else 0.0
        if spread <= CONSTANT_SPREAD * max(scale, 1e-6):
            found.append(f"Output {spec.name!r} is the same for all {len(values)} images (largest difference "
                         f"{spread:.2g}); {hint}.")
    return found


@dataclass(frozen=True)
class Accuracy:
    """How often a class output named each labelled image's class: top-1, top-5, and the pairs it
    confused most. Classes are matched by name when --labels names every class folder; otherwise by
    position, as `image_dataset_from_directory` numbers sorted class folders."""

    output: str
    images: int
    top1: int
    top5: int
    confused: tuple[tuple[str, str, int], ...]  # (true class, predicted class, images), most first
    matched_by: str  # "name" or "folder order"
    classes: int = 0  # the output's class count: top-5 says nothing of five classes or fewer

    def describe(self) -> str:
        parts = []
        for what, hits in (("top-1", self.top1), ("top-5", self.top5))[:2 if self.classes > 5 else 1]:
            low, high = wilson_interval(hits, self.images)
            parts.append(f"{what} {hits / self.images:.0%} (90% interval {low:.0%}-{high:.0%})")
        confused = "; ".join(f"{true} taken for {predicted} ({count})" for true, predicted, count in self.confused)
        return (f"output {self.output!r} on {self.images} labelled images: {', '.join(parts)}; classes matched by "
                f"{self.matched_by}" + (f"; most confused: {confused}" if confused else ""))


CONFUSED_PAIRS = 3


def accuracy(spec: OutputSpec, values: np.ndarray, folder_labels: list[int | None],
             folder_names: list[str]) -> Accuracy | None:
    """The model's own accuracy on the labelled images (`values`: N x K scores), or None without labels."""
    return ranked_accuracy(spec, np.argsort(-np.asarray(values, np.float64), axis=1, kind="stable")[:, :5],
                           folder_labels, folder_names)


def ranked_accuracy(spec: OutputSpec, ranked: np.ndarray, folder_labels: list[int | None],
                    folder_names: list[str]) -> Accuracy | None:
    """`accuracy` from each image's five best classes (N x 5 class indices, best first)."""
    known = [i for i, label in enumerate(folder_labels) if label is not None]
    if spec.kind != "classification" or not known or not folder_names:
        return None
    by_name = bool(spec.classes) and all(name in spec.classes for name in folder_names)
    truth = np.array([spec.classes.index(folder_names[folder_labels[i]]) if by_name else folder_labels[i]
                      for i in known])
    ranked = np.asarray(ranked)[known]
    top1 = int((ranked[:, 0] == truth).sum())
    top5 = int((ranked[:, :5] == truth[:, None]).any(axis=1).sum())
    pairs: dict[tuple[int, int], int] = {}
    for true, predicted in zip(truth, ranked[:, 0]):
        if true != predicted:
            pairs[int(true), int(predicted)] = pairs.get((int(true), int(predicted)), 0) + 1
    worst = sorted(pairs.items(), key=lambda item: (-item[1], item[0]))[:CONFUSED_PAIRS]
    confused = tuple((spec.class_name(t), spec.class_name(p), n) for (t, p), n in worst)
    return Accuracy(spec.name, len(known), top1, top5, confused, "name" if by_name else "folder order",
                    spec.class_count)
