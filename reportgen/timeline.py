"""`reportgen timeline --checkpoints DIR`: the checkpoints of one training run, in order, each layer
compared with its final self.

Each checkpoint's fingerprint (fingerprint.py) is measured over the same probe images, one model in
memory at a time; each layer's CKA with the last checkpoint's same layer, with its jackknife interval,
says when it settled. Raghu et al. (NeurIPS 2017) found that lower layers settle first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reportgen import fingerprint, representation
from reportgen.errors import InputError

CHECKPOINT_SUFFIXES = (".keras", ".h5")


def checkpoints_in(folder: Path) -> list[Path]:
    """The model files of `folder` in natural order (epoch_2 before epoch_10)."""
    if not folder.is_dir():
        raise InputError(f"--checkpoints {folder}: not a folder")
    found = [p for p in folder.iterdir() if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES]
    if len(found) < 2:
        raise InputError(f"--checkpoints {folder}: {len(found)} model files (.keras, .h5); a timeline needs two or more")

    def natural(path: Path):
        return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]

    return sorted(found, key=natural)


def measure_fingerprint(model, items, convention, batch_size: int) -> fingerprint.Fingerprint:
    """One model's fingerprint over `items` (the probe images first): the build's measuring path, the
    probe and FingerprintSums, without the other statistics."""
    from reportgen import capture, outputs, plan
    from reportgen.inputs import InputGeometry
    from reportgen.measure import batches_of
    from reportgen.probe import Probe
    from reportgen.targets import Targets

    image = items[0].image
    geometry = InputGeometry(image.shape[0], image.shape[1], image.shape[2] if image.ndim == 3 else 1)
    targets = Targets.decide([item.id for item in items])
    convs = capture.find_conv_layers(model)
    if not convs:
        raise InputError("a checkpoint has no convolution layers")
    measured = plan.make(model, convs, outputs.describe(model, geometry.size), targets, convention, geometry,
                         batch_size=batch_size)
    probe = Probe(model, convs, measured)
    sums: dict = {}
    for batch in batches_of(measured, items):
        fingerprint.add_batch(sums, 0, len(items), probe(batch.images, len(items), attributed=False).activations,
                              batch.indices)
    return fingerprint.of_build(sums.get(0), targets.ids, [c.qualified_name for c in convs])


@dataclass
class Timeline:
    """Each layer's CKA with its final self at every checkpoint, and when it settled."""

    checkpoints: list[str]
    layers: list[str]
    images: int
    estimator: str
    cka: np.ndarray  # L x T
    low: np.ndarray  # L x T
    high: np.ndarray  # L x T
    settled: list[int | None]  # per layer, the first checkpoint (0-based) from which CKA with the final stays at or
    # above UNCHANGED
    findings: list[str]


def timeline(prints: list[fingerprint.Fingerprint], names: list[str]) -> Timeline:
    """The timeline of fingerprints of one architecture on the same probe images, in training order."""
    final = prints[-1]
    for name, found in zip(names, prints):
        if found.layers != final.layers or found.ids != final.ids:
            raise InputError(f"checkpoint {name} has other layers or probe images than the last; a timeline needs "
                             "checkpoints of one architecture")
    n = len(final.ids)
    estimator = representation.estimator_for(n, min(final.features))
    shape = (len(final.layers), len(prints))
    cka, low, high = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    for t, found in enumerate(prints):
        for k in range(len(final.layers)):
            estimate, interval = representation.jackknife_cka(found.grams[k].astype(np.float64),
                                                              final.grams[k].astype(np.float64), estimator)
            cka[k, t], (low[k, t], high[k, t]) = estimate, interval
    settled = []
    for k in range(len(final.layers)):
        below = [t for t in range(len(prints)) if not cka[k, t] >= representation.UNCHANGED]
        settled.append(max(below) + 1 if below else 0)
    return Timeline(names, list(final.layers), n, estimator, cka, low, high, settled,
                    _findings(settled, names, low))


def _findings(settled: list[int], names: list[str], low: np.ndarray) -> list[str]:
    """Which layers settled first: runs of layers by the checkpoint from which they stay within
    UNCHANGED of their final selves."""
    said = []
    by_checkpoint: dict[int, list[int]] = {}
    for k, t in enumerate(settled):
        by_checkpoint.setdefault(t, []).append(k + 1)
    for t in sorted(by_checkpoint):
        spans = ", ".join(representation.span(*s) for s in representation.runs(by_checkpoint[t]))
        if t == len(names) - 1:
            said.append(f"{spans} settled only at the last checkpoint ({names[t]}).")
            continue
        bounds = [low[k - 1, t] for k in by_checkpoint[t] if np.isfinite(low[k - 1, t])]
        interval = f"; the lowest 90% interval bound there {min(bounds):.2f}" if bounds else ""
        said.append(f"{spans} settled by {names[t]} (checkpoint {t + 1} of {len(names)}): CKA with the final "
                    f"layer {representation.UNCHANGED} or above from there on{interval}.")
    order = [np.mean([k + 1 for k, t in enumerate(settled) if t == c]) for c in sorted(by_checkpoint)]
    if len(order) > 1:
        lower_first = all(a <= b for a, b in zip(order, order[1:]))
        said.append("Lower layers settled first, as Raghu et al. (2017) found." if lower_first else
                    "The layers did not settle from the bottom up.")
    return said


def run(folder: Path, options, out: Path) -> Timeline:
    """The command: every checkpoint's fingerprint over the first probe images, the timeline, its page."""
    import dataclasses

    from reportgen import pipeline, plan, site
    from reportgen.capture import image_input

    paths = checkpoints_in(folder)
    first = pipeline._load_model(dataclasses.replace(options, model_path=paths[0]), None)
    geometry = plan.geometry(first.model, options.input_size, image_input(first.model, None), options)
    counted = dataclasses.replace(options, stats_images=options.stats_images or fingerprint.PROBE_IMAGES)
    items = pipeline._stats_images(counted, geometry)[:fingerprint.PROBE_IMAGES]
    prints = []
    for path in paths:
        loaded = first if path == paths[0] else \
            pipeline._load_model(dataclasses.replace(options, model_path=path), None)
        prints.append(measure_fingerprint(loaded.model, items, options.convention, options.batch_size))
    found = timeline(prints, [p.stem for p in paths])
    site.write_timeline(out, found)
    return found
