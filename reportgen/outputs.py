"""What the model says: its outputs described, each image's output summarised, and the warnings
that a model's outputs give when its input was probably preprocessed wrongly."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reportgen.errors import InputError

TOP_K = 5
FULL_VALUES = 1000  # outputs of at most this many numbers per image are recorded in full
SATURATED = 0.999  # a top-class probability this close to 1 on every image says nothing about the image
CONSTANT_SPREAD = 1e-4  # relative spread across images below which an output is constant
SHIPPED_CLASSES = ("pet", "background", "border")


@dataclass(frozen=True)
class OutputSpec:
    """One of the model's outputs, as the report treats it."""

    name: str
    shape: tuple[int | None, ...]  # without the batch axis
    kind: str  # "segmentation" (class per input pixel), "classification" (a vector of class scores), "other"
    classes: tuple[str, ...] = ()  # class names, from --labels or the shipped model; empty: use indices

    @property
    def class_count(self) -> int:
        return int(self.shape[-1]) if self.kind in ("segmentation", "classification") else 0

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
    """One class name per line (blank lines at the end ignored), as Keras' label files are."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(f"labels file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read labels file {str(path)!r}: {error.__class__.__name__}") from None
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise InputError(f"labels file {str(path)!r} is empty")
    return tuple(line.strip() for line in lines)


def _ends_in_scores(tensor) -> bool:
    """Whether the layer making `tensor` ends in softmax or sigmoid: class scores, not regression values."""
    layer = tensor._keras_history[0]
    activation = getattr(getattr(layer, "activation", None), "__name__", "")
    return activation in ("softmax", "sigmoid", "log_softmax") or type(layer).__name__ == "Softmax"


def describe(model, image_size: tuple[int, int], labels: tuple[str, ...] = (),
             shipped: bool = False) -> list[OutputSpec]:
    """Each output's kind; `labels` name the classes of the first class output (count checked).

    A vector output is a classification when it ends in softmax or sigmoid; a vector of logits is
    one when --labels names as many classes as it has values.
    """
    specs = []
    for name, tensor in zip(output_names(model), model.outputs):
        shape = tuple(None if d is None else int(d) for d in tuple(tensor.shape)[1:])
        if len(shape) == 3 and shape[:2] == image_size and (shape[-1] or 0) >= 2:
            kind = "segmentation"
        elif len(shape) == 1 and (shape[0] or 0) >= 2 and _ends_in_scores(tensor):
            kind = "classification"
        else:
            kind = "other"
        specs.append(OutputSpec(name, shape, kind))
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
        share = np.bincount(values.argmax(axis=-1).ravel(), minlength=values.shape[-1]) / values[..., 0].size
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


def preprocessing_hint(input_convention: str) -> str:
    return f"check the input convention (this build used {input_convention}; see --preprocess and --rescale)"


def warnings_for(specs: list[OutputSpec], per_output: list[np.ndarray], input_convention: str) -> list[str]:
    """Outputs that do not depend on the image: signs that the pixels reached the model in a form it
    was not trained on. `per_output[k]` holds output k for every image (N x ...)."""
    hint = preprocessing_hint(input_convention)
    found = []
    for spec, values in zip(specs, per_output):
        values = np.asarray(values, np.float64)
        if len(values) < 2:
            continue
        if spec.kind == "classification" and is_probability(values):
            top = values.argmax(axis=1)
            if (top == top[0]).all() and values.max(axis=1).min() >= SATURATED:
                found.append(f"Output {spec.name!r} gives every one of the {len(values)} images the same class, "
                             f"{spec.class_name(int(top[0]))!r}, with probability at least {SATURATED}: the model "
                             f"is saturated, not looking at the images; {hint}.")
                continue
        spread = float(np.nanmax(np.ptp(values, axis=0))) if values.size else 0.0
        scale = float(np.nanmax(np.abs(values))) if values.size else 0.0
        if spread <= CONSTANT_SPREAD * max(scale, 1e-6):
            found.append(f"Output {spec.name!r} is the same for all {len(values)} images (largest difference "
                         f"{spread:.2g}); {hint}.")
    return found
