"""What the statistics measure against, decided once per build, and the one way a layer is fed.

Every executor of the statistics (in process over the pictured images, or Beam on any runner)
consumes one `Targets` value, part of the build's plan (plan.py): the statistics images' ids, each
image's fold, each image's class and where the mask comes from. `feed` and `score_features` are what
the one measuring function (measure.py) calls.

Folds come from the images themselves: within each class, images are ordered by a SHA-256 of their
id and dealt to the folds in turn, classes one after another. No order of the source and no number
of classes can put a whole class in one fold (the round-robin `i mod 10` did, for 10, 100 or 1,000
classes taken round-robin from class folders), and the same images get the same folds on every
machine and every run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from reportgen import stats
from reportgen.attribution import Target
from reportgen.catalog import MAX_FOLDS
from reportgen.linear_probes import ProbeScores
from reportgen.mask_classes import OXFORD, MaskClasses, grid_truth

MASK_TRIMAP = "trimap"  # ground-truth Oxford trimaps, given with the images
MASK_PREDICTION = "prediction"  # the model's own segmentation stands in


def _id_hash(image_id: str) -> int:
    return int.from_bytes(hashlib.sha256(image_id.encode("utf-8", "surrogateescape")).digest()[:8], "big")


def assign_folds(ids: list[str], labels: list[int] | None, fold_count: int) -> np.ndarray:
    """Each image's fold: by class (when there are classes), then by a hash of its id, dealt in turn.

    A class of m images lands in min(m, fold_count) folds, and the folds' sizes differ by at most one.
    """
    count = len(ids)
    if fold_count < 1 or count == 0:
        return np.zeros(count, np.int64)
    classes = labels if labels is not None else [0] * count
    order = sorted(range(count), key=lambda i: (classes[i], _id_hash(ids[i]), ids[i], i))
    folds = np.empty(count, np.int64)
    folds[order] = np.arange(count) % fold_count
    return folds


@dataclass(frozen=True, eq=False)
class Targets:
    """The statistics images and what each is measured against: one value for the whole build.

    The pictured images are the first statistics images, so index i means the same image everywhere.
    """

    ids: tuple[str, ...]
    folds: np.ndarray  # fold of each statistics image
    fold_count: int
    labels: np.ndarray | None = None  # class index of each image, or None: no class probe
    class_count: int = 0
    mask_source: str | None = None  # MASK_TRIMAP, MASK_PREDICTION, or None: the mask-free statistics only
    mask_classes: MaskClasses = OXFORD  # what the masks' values 1..K are
    prediction_output: int | None = None  # with MASK_PREDICTION: the model output whose argmax is the mask
    measures: bool = True  # False: the descriptive numbers and the ranking only (--no-stats)
    class_names: tuple[str, ...] = ()  # the class folders' names, sorted: what `labels` index
    explained: Target = Target(reason="no target")  # what Grad-CAM and the importances explain (attribution.py)

    @property
    def attributes(self) -> bool:
        """Whether the drivers compute Grad-CAM and Taylor importance."""
        return self.measures and self.explained.defined

    @classmethod
    def decide(cls, ids, labels=None, trimaps_given: bool = False, prediction_output: int | None = None,
               measures: bool = True, class_names=(), explained: Target | None = None,
               mask_classes: MaskClasses = OXFORD) -> "Targets":
        """The targets of `ids` (statistics images, in order) with their class indices (or None)."""
        ids = tuple(str(i) for i in ids)
        if labels is not None and (any(label is None for label in labels) or len(set(labels)) < 2):
            labels = None  # a class probe needs every image's class, and two classes at least
        fold_count = min(len(ids), MAX_FOLDS)
        folds = assign_folds(list(ids), None if labels is None else list(labels), fold_count)
        source = MASK_TRIMAP if trimaps_given else MASK_PREDICTION if prediction_output is not None else None
        return cls(ids, folds, fold_count, None if labels is None else np.asarray(labels, np.int64),
                   0 if labels is None else int(max(labels)) + 1, source, mask_classes,
                   prediction_output if source == MASK_PREDICTION else None, measures, tuple(class_names),
                   explained or Target(reason="no target"))

    def __len__(self) -> int:
        return len(self.ids)

    def onehot(self, indices) -> np.ndarray | None:
        if self.labels is None:
            return None
        return np.eye(self.class_count, dtype=np.float32)[self.labels[np.asarray(indices, np.int64)]]

    def label(self, index: int) -> int | None:
        return None if self.labels is None else int(self.labels[index])

    @staticmethod
    def measured(shape: tuple[int, ...]) -> bool:
        """Whether a layer's output (without the batch axis) gets the spatial statistics: H x W x C maps
        (the plan decides it once per layer, plan.MeasuredLayer.spatial)."""
        return len(shape) == 3

    def accumulator(self, shape: tuple[int, ...], input_height: int) -> stats.LayerAccumulator:
        stride = input_height / shape[0] if self.measured(shape) else 1.0
        return stats.LayerAccumulator(shape[-1], stride, self.fold_count, self.mask_classes)

    def compares(self, spec) -> bool:
        """Whether segmentation output `spec`'s prediction (`outputs.as_mask`) is in the masks' classes,
        so it can be graded against them or stand in for them: a binary output, or as many classes
        (in order)."""
        return spec.gives_mask and (spec.binary or spec.class_count == self.mask_classes.count)

    def mask_of_prediction(self, output: np.ndarray) -> np.ndarray:
        """N x H x W x K segmentation scores (outputs.OutputSpec.gives_mask) to N x H x W masks."""
        from reportgen.outputs import as_mask

        return as_mask(output)


def feed(accumulator: stats.LayerAccumulator, maps: np.ndarray, indices, targets: Targets,
         masks, importance: np.ndarray | None = None, cams: np.ndarray | None = None, *,
         spatial: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """Add N images' outputs of one layer (N x ... x C) to its accumulator: the one way in (measure.measure_batch).

    `masks` are the images' mask classes (N x H x W, class k stored as k + 1, or mask_classes.MaskGrids of them),
    as `targets.mask_source` says they are made, or None; `importance` (N x C) the images' Taylor importances and
    `cams` (N x h x w) their Grad-CAM maps, or None where the layer is not attributed.
    Layers that are not `spatial` (plan.MeasuredLayer) get the descriptive numbers and the importance only.
    Returns the images' channel means and pooled maps where it measured them (stats.LayerAccumulator.add).
    """
    indices = np.asarray(indices, np.int64)
    if not spatial:
        accumulator.add(maps.reshape(len(maps), -1, 1, maps.shape[-1]), None, indices, targets.folds[indices],
                        measures=False, importance=importance)
        return None
    return accumulator.add(maps, masks if targets.mask_source else None, indices, targets.folds[indices],
                    measures=targets.measures, labels=targets.onehot(indices), importance=importance,
                    cams=cams if targets.mask_source else None)


def mask_truth(mask: np.ndarray | None, targets: Targets):
    """An image's mask classes on any h x w grid, `truth(h, w)`, or None without a mask."""
    if mask is None or not targets.mask_source:
        return None
    return lambda h, w: grid_truth(mask[None], h, w, targets.mask_classes.count)[0]


def score_image(scores: ProbeScores, maps: np.ndarray, index: int, targets: Targets, truth) -> None:
    """Score the leave-out probes on statistics image `index`: its H x W x C maps, its `mask_truth`."""
    scores.add_image(maps, int(targets.folds[index]), truth, targets.label(index))


def score_features(scores: ProbeScores, means: np.ndarray, pooled: np.ndarray | None, index: int, targets: Targets,
                   truth) -> None:
    """Score the leave-out probes on statistics image `index` from its `linear_probes.probe_features`:
    the counts `score_image` gives on its maps."""
    scores.add_features(means, pooled, int(targets.folds[index]), truth, targets.label(index))
