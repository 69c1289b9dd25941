"""The Python API: a report of a model already in memory, for notebooks, with no file round-trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from reportgen.options import BY_NAME, BuildOptions
from reportgen.pipeline import BuildResult, InMemory, build as _build


def build(model, images, masks=None, out: str | Path = BY_NAME["out"].default, *, image_classes=None,
          class_names=None, **options) -> BuildResult:
    """Build the report site of `model` (a functional or Sequential keras.Model) over `images`.

    images: arrays of raw pixel values 0-255 (H x W, H x W x 1, 3 or 4; any size, fitted to the
        model's input as `fit` says) or PIL images. The input convention is applied by reportgen:
        pass `preprocess="tf"` or `rescale=(1 / 127.5, -1)` as the model needs.
    masks: optional Oxford-style trimaps (1 pet, 2 background, 3 border), one per image.
    image_classes: optional class name per image, for the class probe (like class folders).
    class_names: optional names of the model's output classes (what `--labels FILE` gives).
    options: any field of `BuildOptions`, named as there: preprocess, rescale, fit, interpolation,
        input_size, tap, cmap, scale, statistics, workers, ... with the defaults declared in
        reportgen.options, the command line's; but `images` defaults to all of them.

    Returns the `BuildResult`; the site is in `out` (open `out/index.html`). Errors are raised as
    `reportgen.errors.ReportgenError` subclasses with a one-line message.
    """
    images = list(images)
    known = {field.name for field in dataclasses.fields(BuildOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)}; BuildOptions has {', '.join(sorted(known))}")
    if options.get("rescale") is not None:
        options["rescale"] = tuple(float(v) for v in options["rescale"])
    if options.get("input_size") is not None and isinstance(options["input_size"], int):
        options["input_size"] = (options["input_size"], options["input_size"])
    options.setdefault("images", len(images))
    in_memory = InMemory(model, images, None if masks is None else list(masks),
                         None if image_classes is None else list(image_classes),
                         tuple(class_names or ()))
    return _build(Path(out), BuildOptions(**options), in_memory=in_memory)
