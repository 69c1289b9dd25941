"""`reportgen timeline`: the fingerprints of one training run, in order, each layer compared with
its final self.

`--checkpoints DIR`: each checkpoint's fingerprint (fingerprint.py) is measured over the same probe
images, one model in memory at a time. `--fingerprints DIR`: the fingerprints were measured during
`fit` (fingerprint_callback.FingerprintCallback) and no model is loaded. Either way, each layer's CKA
with the last fingerprint's same layer, with its jackknife interval, says when it settled. Raghu et
al. (NeurIPS 2017) found that lower layers settle first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reportgen import fingerprint, representation
from reportgen.errors import InputError

CHECKPOINT_SUFFIXES = (".keras", ".h5")
# A model's training fingerprints kept beside its file: NAME.fingerprints/ for NAME.keras, NAME.h5 or
# NAME.weights.h5. A fingerprint is a few MB where a checkpoint is tens, so a model can ship its run's.
KEPT_BESIDE = ".fingerprints"
MODEL_SUFFIXES = (".weights.h5", ".keras", ".h5")
FINGERPRINT_SUFFIX = ".npz"  # what --fingerprints reads: FingerprintCallback's epoch_N.fingerprint.npz, or any
# build's data/fingerprint.npz copied under a name that sorts


def _natural(path: Path) -> list:
    """epoch_2 before epoch_10: digit runs compared as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _files_in(folder: Path, option: str, suffixes: tuple[str, ...], what: str) -> list[Path]:
    """The files of `folder` with one of `suffixes`, in natural order; two or more, else one line."""
    if not folder.is_dir():
        raise InputError(f"{option} {folder}: not a folder")
    found = [p for p in folder.iterdir() if p.is_file() and p.suffix in suffixes]
    if len(found) < 2:
        raise InputError(f"{option} {folder}: {len(found)} {what}; a timeline needs two or more")
    return sorted(found, key=_natural)


def checkpoints_in(folder: Path) -> list[Path]:
    """The model files of `folder` in natural order (epoch_2 before epoch_10)."""
    return _files_in(folder, "--checkpoints", CHECKPOINT_SUFFIXES, "model files (.keras, .h5)")


def fingerprints_in(folder: Path, given_as: str = "--fingerprints") -> list[tuple[str, fingerprint.Fingerprint]]:
    """The fingerprints of `folder` (.npz files) in natural order, each named by its file without
    `.fingerprint.npz`; a file that is not a fingerprint this version reads is one line naming it, and
    the folder as `given_as` names it."""
    found = []
    for path in _files_in(folder, given_as, (FINGERPRINT_SUFFIX,), "fingerprint files (.npz)"):
        loaded = fingerprint.load(path)
        if loaded is None:
            raise InputError(f"{given_as} {folder}: {path.name} is not a reportgen fingerprint "
                             f"(format {fingerprint.FORMAT})")
        found.append((path.name.removesuffix(FINGERPRINT_SUFFIX).removesuffix(".fingerprint"), loaded))
    return found


class FingerprintMeter:
    """One model's fingerprint over fixed probe images, measured as often as asked: the build's measuring
    path (the plan's probe and FingerprintSums) without the other statistics. The probe is built once and
    shares the model's layers, so a model that trains between two calls is measured with its weights of
    the moment (what FingerprintCallback needs at each epoch's end)."""

    def __init__(self, model, items, convention, batch_size: int):
        from reportgen import plan
        from reportgen.measure import batches_of
        from reportgen.probe import Probe

        (convs,), (measured,), self.targets = plan.for_items((model,), items, convention, batch_size)
        self.layers = [c.qualified_name for c in convs]
        self.probe = Probe(model, convs, measured)
        self.batches = list(batches_of(measured, items))
        self.count = len(items)

    def __call__(self) -> fingerprint.Fingerprint:
        sums: dict = {}
        for batch in self.batches:
            fingerprint.add_batch(sums, 0, self.count,
                                  self.probe(batch.images, self.count, attributed=False).activations, batch.indices)
        return fingerprint.of_build(sums.get(0), self.targets.ids, self.layers)


def measure_fingerprint(model, items, convention, batch_size: int) -> fingerprint.Fingerprint:
    """One model's fingerprint over `items` (the probe images first)."""
    return FingerprintMeter(model, items, convention, batch_size)()


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
            raise InputError(f"{name} has other layers or probe images than the last; a timeline needs "
                             "checkpoints of one architecture, on the same images")
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


def kept_beside(model_file: Path | None) -> Path | None:
    """The folder of fingerprints kept beside `model_file` (KEPT_BESIDE), or None where there is none."""
    if model_file is None:
        return None
    name = Path(model_file).name
    stem = next((name[:-len(s)] for s in MODEL_SUFFIXES if name.endswith(s)), Path(model_file).stem)
    folder = Path(model_file).with_name(stem + KEPT_BESIDE)
    return folder if folder.is_dir() else None


def timeline_of(folder: Path, given_as: str = "--fingerprints") -> Timeline:
    """The timeline of the fingerprints in `folder` (fingerprints_in), no model loaded."""
    named = fingerprints_in(folder, given_as)
    return timeline([p for _, p in named], [name for name, _ in named])


def kept_timeline(model_file: Path | None) -> Timeline | None:
    """The training timeline of the fingerprints kept beside `model_file`, for a build's timeline page;
    None where the model keeps none. Kept fingerprints that cannot be read are an error, in one line."""
    folder = kept_beside(model_file)
    return None if folder is None else timeline_of(folder, "the fingerprints kept beside the model,")


def run_fingerprints(folder: Path, out: Path) -> Timeline:
    """The command with --fingerprints: the stored fingerprints' timeline and its page, no model loaded."""
    from reportgen import site

    found = timeline_of(folder)
    site.write_timeline(out, found)
    return found


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
