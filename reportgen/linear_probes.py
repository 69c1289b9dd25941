"""The leave-out linear probes: ridge regressions from a layer's pooled features to the mask's classes
(per grid pixel) or to the image's class (per image).

Each image's features and targets are summed per fold (`FoldSums`, `add_to_fold`); the probe of a
fold is fitted on the sums of the other folds (`probe_weights`) and predicts that fold's images
(`probe_predict`), whose counts become its scores with their jackknife intervals (`FoldRatio`,
`ProbeScores`). The same sums give the layer's CKA with the mask and with the class (stats.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.linalg

from reportgen.catalog import POOL_GRID, PROBE_RIDGE, UNIT
from reportgen.intervals import jackknife_interval


def pool_to(maps: np.ndarray, grid: int) -> np.ndarray:
    """Area-pool N x H x W x C to N x g x g x C (g = min(grid, H)), by block means where H divides."""
    n, h, w, c = maps.shape
    gh, gw = pooled_shape(h, w, grid)
    return maps.reshape(n, gh, h // gh, gw, w // gw, c).mean(axis=(2, 4))


def pooled_shape(height: int, width: int, grid: int = POOL_GRID) -> tuple[int, int]:
    """The grid `pool_to` pools an H x W map to."""
    gh, gw = min(grid, height), min(grid, width)
    if height % gh or width % gw:
        gh, gw = _largest_divisor_at_most(height, grid), _largest_divisor_at_most(width, grid)
    return gh, gw


def _largest_divisor_at_most(value: int, limit: int) -> int:
    return max(d for d in range(1, min(value, limit) + 1) if value % d == 0)


@dataclass(frozen=True)
class FoldSums:
    """Sums over the pixels of one fold of images: n, sum x, sum y, X'X, X'Y, Y'Y."""

    n: float
    sx: np.ndarray
    sy: np.ndarray
    xx: np.ndarray
    xy: np.ndarray
    yy: np.ndarray

    def __add__(self, other: "FoldSums") -> "FoldSums":
        return FoldSums(self.n + other.n, self.sx + other.sx, self.sy + other.sy, self.xx + other.xx,
                        self.xy + other.xy, self.yy + other.yy)

    def __sub__(self, other: "FoldSums") -> "FoldSums":
        return FoldSums(self.n - other.n, self.sx - other.sx, self.sy - other.sy, self.xx - other.xx,
                        self.xy - other.xy, self.yy - other.yy)

    def centred(self):
        """Centred X'X, X'Y and Y'Y."""
        mx, my = self.sx / self.n, self.sy / self.n
        return (self.xx - self.n * np.outer(mx, mx), self.xy - self.n * np.outer(mx, my),
                self.yy - self.n * np.outer(my, my))


def add_to_fold(folds: dict, fold: int, x: np.ndarray, y: np.ndarray) -> None:
    """Add one image's pixels (features x, class fractions y) to the sums of its fold."""
    x, y = x.astype(np.float32), y.astype(np.float32)
    sums = FoldSums(float(x.shape[0]), x.sum(0, dtype=np.float64), y.sum(0, dtype=np.float64),
                    (x.T @ x).astype(np.float64), (x.T @ y).astype(np.float64), (y.T @ y).astype(np.float64))
    folds[fold] = folds[fold] + sums if fold in folds else sums


def fold_total(folds: dict, drop: int | None = None) -> FoldSums | None:
    total = None
    for fold, sums in folds.items():
        if fold != drop:
            total = sums if total is None else total + sums
    return total


def can_fit_probe(folds: dict) -> bool:
    """Whether fold sums give a leave-out probe: two folds at least, and targets (a mask, classes)."""
    return len(folds) >= 2 and next(iter(folds.values())).sy.size > 0


def probe_weights(folds: dict) -> list:
    """Ridge weights per held-out fold, fitted on the standardised features of the other folds."""
    if not can_fit_probe(folds):
        return []
    total = fold_total(folds)
    weights = []
    for fold in sorted(folds):
        rest = total - folds[fold]
        m, mean_x, mean_y = rest.n, rest.sx / rest.n, rest.sy / rest.n
        gram, cross = rest.xx, rest.xy
        cov = gram / m - np.outer(mean_x, mean_x)
        variance = np.diag(cov)
        # Constant features (and rounding noise around zero variance) carry nothing: leave them out.
        varies = variance > 1e-8 * max(float(variance.max(initial=0.0)), 1e-30)
        scale = np.where(varies, np.sqrt(np.where(varies, variance, 1.0)), 1.0)
        cov_std = np.nan_to_num(cov / np.outer(scale, scale)) * np.outer(varies, varies)
        cross_std = np.nan_to_num((cross / m - np.outer(mean_x, mean_y)) / scale[:, None]) * varies[:, None]
        system = cov_std + PROBE_RIDGE * np.eye(len(scale))
        try:
            # float32 halves the time of the solves, the probe's largest cost; the ridge keeps the
            # standardised system's condition number below (C + ridge) / ridge, so its error is ~1e-4.
            w = scipy.linalg.solve(system.astype(np.float32), cross_std.astype(np.float32),
                                   assume_a="pos").astype(np.float64)
        except (np.linalg.LinAlgError, ValueError):  # not positive definite after rounding
            w = np.linalg.lstsq(system, cross_std, rcond=None)[0]
        weights.append((fold, w, mean_x, scale, mean_y))
    return weights


def probe_predict(weights: list, pooled: np.ndarray, fold: int, balanced: bool = False) -> np.ndarray | None:
    """Class ids predicted on one image's pooled ... x C features by the probe fitted without its fold.

    `balanced`: each pixel goes to the class whose predicted share most exceeds its share in the
    probe's training data (argmax of prediction - prior: each class thresholded at its own prior),
    so a rare class (the pet on a coarse grid) is not swallowed by the majority class, as a plain
    argmax of a ridge regression tends to do when the features say little.
    """
    for f, w, mean_x, scale, mean_y in weights:
        if f == fold:
            x = (pooled.reshape(-1, pooled.shape[-1]) - mean_x) / scale
            scores = x @ w + mean_y
            if balanced:
                scores = np.where(mean_y > 1e-9, scores - mean_y, -np.inf)
            return scores.argmax(axis=1).reshape(pooled.shape[:-1])
    return None


@dataclass
class FoldRatio:
    """Per-fold counts whose ratio is a score (IoU: intersection / union; accuracy: hits / images),
    accumulated image by image, with the jackknife over the folds for its interval."""

    folds: int
    classes: int  # K: the mask's classes, or 1 for a hit count
    numerator: np.ndarray = field(default=None)  # F x K
    denominator: np.ndarray = field(default=None)

    def __post_init__(self):
        if self.numerator is None:
            self.numerator = np.zeros((self.folds, self.classes))
            self.denominator = np.zeros((self.folds, self.classes))

    def add_pixels(self, predicted: np.ndarray, truth: np.ndarray, fold: int) -> None:
        """IoU counts per class; truth -1 (no class covers most of the pixel) is left out."""
        scored = truth >= 0
        for k in range(self.classes):
            self.numerator[fold, k] += np.sum((predicted == k) & (truth == k) & scored)
            self.denominator[fold, k] += np.sum(((predicted == k) | (truth == k)) & scored)

    def add_hit(self, hit: bool, fold: int) -> None:
        self.numerator[fold, 0] += float(hit)
        self.denominator[fold, 0] += 1.0

    def merge(self, other: "FoldRatio") -> "FoldRatio":
        return FoldRatio(self.folds, self.classes, self.numerator + other.numerator,
                         self.denominator + other.denominator)

    def ratio(self, drop: int | None = None) -> np.ndarray:
        keep = np.arange(self.folds) != drop
        num, den = self.numerator[keep].sum(axis=0), self.denominator[keep].sum(axis=0)
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)

    def interval(self, reduce=lambda r: float(r[0])) -> tuple[float, float]:
        """The interval of `reduce(ratio)` (default: the first class, or the hits), by the delete-one-fold
        jackknife."""
        if self.folds < 2:
            return float("nan"), float("nan")
        return jackknife_interval(reduce(self.ratio()), [reduce(self.ratio(drop=k)) for k in range(self.folds)],
                                  bounds=UNIT)

    def class_interval(self, k: int) -> tuple[float, float]:
        return self.interval(lambda r: float(r[k]))


def probe_features(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """One image's H x W x C maps as the probes read them: the class probe's mean of each channel
    (1 x C, float64) and the mask probe's maps pooled to its grid (float32; None for a map of one
    row, which has no mask probe). Small enough to keep between the two passes (measure.ProbeInputs)."""
    means = maps.reshape(-1, maps.shape[-1]).astype(np.float64).mean(axis=0, keepdims=True)
    return means, pool_to(maps[None], POOL_GRID)[0] if maps.shape[0] > 1 else None


@dataclass
class ProbeScores:
    """The leave-out probes scored over images: each image is predicted by the probe fitted without
    its fold, and its counts go to its fold (`FoldRatio`), so the scores come with the jackknife.

    The weights come from the layer's sums (`measure.probe_fits`); `measure.score_batch` adds the
    statistics images, in process or in a second Beam pass.
    """

    folds: int
    probe_weights: list
    class_probe_weights: list
    mask_classes: int  # K
    mask: FoldRatio = field(default=None)  # the mask probe's IoU counts, per class
    classes: FoldRatio = field(default=None)  # the class probe's hits

    def __post_init__(self):
        if self.mask is None:
            self.mask, self.classes = FoldRatio(self.folds, self.mask_classes), FoldRatio(self.folds, classes=1)

    def add_image(self, maps: np.ndarray, fold: int, truth=None, label: int | None = None) -> None:
        """One statistics image's H x W x C maps, in fold `fold`; `truth(h, w)` gives its mask classes
        on an h x w grid (or truth is None: no mask); `label` its class, or None."""
        self.add_features(*probe_features(maps), fold, truth, label)

    def add_features(self, means: np.ndarray, pooled: np.ndarray | None, fold: int, truth=None,
                     label: int | None = None) -> None:
        """One statistics image as the probes read it (`probe_features`): the same counts as `add_image`."""
        if self.class_probe_weights and label is not None:
            predicted = probe_predict(self.class_probe_weights, means, fold)
            if predicted is not None:
                self.classes.add_hit(predicted[0] == label, fold)
        if self.probe_weights and truth is not None and pooled is not None:
            predicted = probe_predict(self.probe_weights, pooled, fold, balanced=True)
            if predicted is not None:
                self.mask.add_pixels(predicted, truth(*pooled.shape[:2]), fold)

    def merge(self, other: "ProbeScores") -> "ProbeScores":
        return ProbeScores(self.folds, self.probe_weights, self.class_probe_weights, self.mask_classes,
                           self.mask.merge(other.mask), self.classes.merge(other.classes))

    @property
    def has_classes(self) -> bool:
        return bool(self.classes.denominator.sum())


def chance_accuracy(labels: list[int]) -> float:
    """The accuracy of always guessing the most common class: what a probe must beat."""
    return float(np.bincount(labels).max() / len(labels)) if labels else float("nan")
