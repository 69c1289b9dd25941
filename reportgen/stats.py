"""Per-layer abstraction statistics (STATS.md), each as accumulate -> merge -> finalise.

An accumulator sees one batch of one layer's activations at a time and keeps
only sums, Gram matrices and counts, so the same code serves 10 images or a
whole split, and `merge(a, b)` equals accumulating a and b together. A value
that cannot be defined (a constant channel, no pet pixels) is NaN, and the
site prints it as "undefined".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import scipy.linalg

from reportgen.catalog import (ANY, CKA_GRID, EXAMPLES, INTERVAL_LEVEL, MAX_FOLDS, NEAR_ZERO,  # noqa: F401
                               POOL_GRID, POSITIVE, PROBE_RIDGE, TOP_IMPORTANT, UNIT, layer_statistics)
from reportgen.catalog import Statistic as LayerStatistic  # noqa: F401


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
class MaskClasses:
    """The classes of the masks measured against. A mask stores class k as k + 1, and 0 where a
    pixel has no class (`--mask-values ...=ignore`): such a pixel is in no class's IoU.

    The per-layer headline numbers are about one class, the focus: the pet of an Oxford trimap,
    the foreground of a binary mask, and for N classes the first one not named background. Every
    class's IoU is kept as well (`LayerStats.best_iou`, the probes' IoU per class).

    `layout` says how the classes are stored: TRIMAP (1 pet, 2 background, 3 border, a class as in
    Oxford's evaluation), BINARY (1 foreground, 2 background; 3, the pixels `--mask-values` calls
    ignore, in no class), or BY_CLASS (class k as k + 1)."""

    names: tuple[str, ...] = ("pet", "background", "border")
    focus: int = 0
    layout: str = "trimap"

    TRIMAP: ClassVar[str] = "trimap"
    BINARY: ClassVar[str] = "binary"
    BY_CLASS: ClassVar[str] = "classes"

    @classmethod
    def named(cls, names) -> "MaskClasses":
        """A segmentation's classes in order, the first not named background in focus."""
        names = tuple(str(name) for name in names)
        if names == OXFORD.names:
            return OXFORD
        focus = next((k for k, name in enumerate(names) if name.lower() != "background"), 0)
        return cls(names, focus, cls.BY_CLASS)

    @classmethod
    def binary(cls, foreground: str = "foreground", background: str = "background") -> "MaskClasses":
        return cls((foreground, background), 0, cls.BINARY)

    @property
    def in_trimap_order(self) -> bool:
        """Stored as 1 focus, 2 background, 3 not classified: drawn and scored as Oxford trimaps are."""
        return self.layout in (self.TRIMAP, self.BINARY)

    @property
    def count(self) -> int:
        return len(self.names)

    @property
    def focus_name(self) -> str:
        return self.names[self.focus]

    @property
    def background(self) -> int | None:
        """The background class: the second in trimap order, else the class named background, if one is."""
        if self.in_trimap_order:
            return 1
        return next((k for k, name in enumerate(self.names) if name.lower() == "background"), None)


OXFORD = MaskClasses()


def mask_onehot(masks: np.ndarray, height: int, width: int, classes: int) -> np.ndarray:
    """N x SH x SW masks (class k stored as k + 1) to N x height x width x K class fractions, area-pooled."""
    n, sh, sw = masks.shape
    onehot = np.stack([(masks == k + 1) for k in range(classes)], axis=-1).astype(np.float32)
    if sh % height == 0 and sw % width == 0:
        return onehot.reshape(n, height, sh // height, width, sw // width, classes).mean(axis=(2, 4))
    from PIL import Image

    return np.stack([
        np.stack([np.asarray(Image.fromarray(onehot[i, ..., k]).resize((width, height), Image.Resampling.BOX))
                  for k in range(classes)], axis=-1)
        for i in range(n)
    ])


def grid_truth(masks: np.ndarray, height: int, width: int, classes: int) -> np.ndarray:
    """Class id per grid pixel where one class covers most of it, else -1 (a tie, or no class, has no truth)."""
    fractions = mask_onehot(masks, height, width, classes)
    truth = fractions.argmax(axis=-1)
    truth[fractions.max(axis=-1) <= 0.5] = -1
    return truth


def cka(cross: np.ndarray, gram_x: np.ndarray, gram_y: np.ndarray) -> float:
    """Linear CKA from centred cross-products: ||Y'X||_F^2 / (||X'X||_F ||Y'Y||_F)."""
    denom = np.linalg.norm(gram_x) * np.linalg.norm(gram_y)
    if not np.isfinite(denom) or denom <= 1e-20:
        return float("nan")
    return float(np.clip(np.sum(cross ** 2) / denom, 0.0, 1.0))


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """CKA of two example x feature matrices (rows are the same examples)."""
    x = np.asarray(x, np.float64) - np.mean(x, axis=0)
    y = np.asarray(y, np.float64) - np.mean(y, axis=0)
    return cka(y.T @ x, x.T @ x, y.T @ y)


def order_keys(values: np.ndarray) -> np.ndarray:
    """Values as float16, mapped to uint16 keys in the same order: equal values get equal keys."""
    bits = np.ascontiguousarray(values, dtype=np.float16).view(np.uint16)
    keys = bits ^ (((bits >> 15) * np.uint16(0x7FFF)) | np.uint16(0x8000))
    keys[keys == 0x7FFF] = 0x8000  # -0 ranks with +0
    return keys


def participation_ratio(covariance: np.ndarray) -> float:
    """(sum lambda)^2 / sum lambda^2 of a covariance; NaN when it is all zero."""
    trace = float(np.trace(covariance))
    frob2 = float(np.sum(covariance ** 2))
    return trace * trace / frob2 if frob2 > 1e-30 else float("nan")


_PER_CHANNEL = ("total", "total_sq", "near_zero", "spatial_std", "tv_num", "tv_den", "area_sum", "area_count",
                "taylor")
_PER_FOLD = ("images", "pixels", "attributed", *_PER_CHANNEL, "inter", "union")


@dataclass
class LayerAccumulator:
    """Everything one layer's statistics need, summed per fold of images over the images seen so far.

    Each image belongs to one of F folds (the probe's folds), which `targets.Targets` assigns. Keeping
    each sum per fold costs F times the memory of one sum and gives, with no second pass, every
    statistic without each fold: the delete-one-fold jackknife behind every interval (`finalise`).
    """

    channels: int
    stride: float  # input pixels per feature pixel
    fold_count: int = 1  # F
    classes: MaskClasses = OXFORD  # K, the mask's classes
    images: np.ndarray = field(default=None)  # F
    pixels: np.ndarray = field(default=None)  # F
    total: np.ndarray = field(default=None)  # F x C, and so on for every per-channel sum
    total_sq: np.ndarray = field(default=None)
    near_zero: np.ndarray = field(default=None)
    spatial_std: np.ndarray = field(default=None)  # sum over images of each channel's spatial std
    tv_num: np.ndarray = field(default=None)
    tv_den: np.ndarray = field(default=None)
    area_sum: np.ndarray = field(default=None)
    area_count: np.ndarray = field(default=None)
    attributed: np.ndarray = field(default=None)  # F: images with a Taylor importance (attribution.py)
    taylor: np.ndarray = field(default=None)  # F x C: sum over images of |sum over positions of a * dy/da|
    inter: np.ndarray = field(default=None)  # F x 2 polarities x K classes x C
    union: np.ndarray = field(default=None)
    folds: dict = field(default_factory=dict)  # fold -> FoldSums over pixels: the mask probe's and CKA's sums
    class_folds: dict = field(default_factory=dict)  # fold -> FoldSums over images: pooled features, class
    examples: "ChannelTopK | None" = None  # each channel's strongest images (dataset examples)

    def __post_init__(self):
        if self.images is None:
            self._allocate(self.fold_count)

    def _allocate(self, fold_count: int) -> None:
        f, c = fold_count, self.channels
        self.fold_count = f
        self.images, self.pixels, self.attributed = np.zeros(f), np.zeros(f), np.zeros(f)
        for name in _PER_CHANNEL:
            setattr(self, name, np.zeros((f, c), np.float64))
        k = self.classes.count
        self.inter, self.union = np.zeros((f, 2, k, c)), np.zeros((f, 2, k, c))

    def add(self, maps: np.ndarray, masks: np.ndarray | None, image_indices, folds,
            measures: bool = True, labels: np.ndarray | None = None, importance: np.ndarray | None = None) -> None:
        """Accumulate N x H x W x C activations of images `image_indices`, in folds `folds`, with
        N x SH x SW masks (class k stored as k + 1, `MaskClasses`) or None. `targets.feed` is the way
        every driver calls this.

        With `measures` False only the descriptive sums and the ranking strength are kept. Without
        masks the mask-free measures (nTV, effective area, covariance) are kept and the mask ones are
        undefined; `labels` (N x K one-hot) add the class probe's sums. float16 maps (what the spill
        stores, always finite) are ranked for the channel IoU without a conversion. `importance`
        (N x C) is each image's Taylor importance of every channel (`attribution.cam_and_taylor`).
        """
        fold = np.asarray(folds, np.int64)
        if fold.size and (fold.min() < 0 or fold.max() >= self.fold_count):
            raise ValueError(f"folds {fold.tolist()} outside the accumulator's {self.fold_count}")
        stored = maps if maps.dtype == np.float16 else None
        maps = maps.astype(np.float32)
        if stored is None:
            maps = np.nan_to_num(maps, nan=0.0, posinf=0.0, neginf=0.0)
        n, h, w, c = maps.shape
        np.add.at(self.images, fold, 1)
        np.add.at(self.pixels, fold, h * w)
        flat = maps.reshape(n, h * w, c)
        magnitude = np.abs(flat)
        sums = flat.sum(axis=1, dtype=np.float64)  # n x C
        squares = np.einsum("npc,npc->nc", flat, flat).astype(np.float64)
        means = sums / (h * w)
        np.add.at(self.total, fold, sums)
        np.add.at(self.total_sq, fold, squares)
        np.add.at(self.near_zero, fold, np.count_nonzero(magnitude < NEAR_ZERO, axis=1))
        np.add.at(self.spatial_std, fold, np.sqrt(np.maximum(squares / (h * w) - means ** 2, 0.0)))
        if importance is not None:
            np.add.at(self.attributed, fold, 1)
            np.add.at(self.taylor, fold, np.nan_to_num(np.asarray(importance, np.float64).reshape(n, c)))
        if not measures:
            return

        # In-place on one scratch array: these passes over every value are most of the statistics' cost.
        scratch = np.subtract(flat, means[:, None, :].astype(np.float32))
        centred = np.abs(scratch, out=scratch).mean(axis=1)  # n x C
        grad = np.zeros((n, c), np.float64)
        if h > 1:
            step = np.abs(np.diff(maps, axis=1))
            grad += step.mean(axis=(1, 2))
        if w > 1:
            step = np.abs(np.diff(maps, axis=2))
            grad += step.mean(axis=(1, 2))
        np.add.at(self.tv_num, fold, grad)
        np.add.at(self.tv_den, fold, centred)

        # Entropy of p = a / M without forming p: H = log M - sum(a log a) / M.
        mass = magnitude.sum(axis=1, dtype=np.float64)  # n x C
        a_log_a = np.maximum(magnitude, np.float32(1e-30), out=scratch.reshape(magnitude.shape))
        np.log(a_log_a, out=a_log_a)
        a_log_a = np.multiply(a_log_a, magnitude, out=a_log_a).sum(axis=1, dtype=np.float64)
        defined = mass > 0
        safe_mass = np.where(defined, mass, 1.0)
        entropy = np.log(safe_mass) - a_log_a / safe_mass
        np.add.at(self.area_sum, fold, np.where(defined, np.exp(entropy) / (h * w), 0.0))
        np.add.at(self.area_count, fold, defined)

        if self.examples is None:
            self.examples = ChannelTopK(c)
        self.examples.add(maps, image_indices)
        pooled = pool_to(maps, POOL_GRID)
        if masks is None:  # no mask: the sums still give the covariance (participation ratio)
            pooled_mask = np.zeros((*pooled.shape[:3], 0), np.float32)
        else:
            classes = self.classes.count
            onehot = mask_onehot(masks, h, w, classes)  # n x h x w x K
            self._channel_iou(flat if stored is None else stored.reshape(n, h * w, c),
                              onehot.reshape(n, h * w, classes), fold)
            pooled_mask = pool_to(onehot, POOL_GRID) if pooled.shape[1] != h or pooled.shape[2] != w else onehot
            if pooled_mask.shape[1:3] != pooled.shape[1:3]:
                pooled_mask = mask_onehot(masks, pooled.shape[1], pooled.shape[2], classes)
        rows = pooled.shape[1] * pooled.shape[2]
        for k in range(n):
            add_to_fold(self.folds, int(fold[k]), pooled[k].reshape(rows, c),
                        pooled_mask[k].reshape(rows, pooled_mask.shape[-1]))
            if labels is not None:
                add_to_fold(self.class_folds, int(fold[k]), means[k:k + 1].astype(np.float32), labels[k:k + 1])

    def _channel_iou(self, values: np.ndarray, onehot: np.ndarray, fold: np.ndarray) -> None:
        """Area-matched thresholds per image: a channel's top-k (and bottom-k) pixels, k = the class's pixels.

        Pixels are ranked by their float16 values (what the spill stores) through 16-bit keys, which
        numpy sorts by radix in linear time: one sort per image finds every threshold of every class.
        Pixels tied with a threshold count as chosen.
        """
        n, pixels, c = values.shape
        for i in range(n):
            truth = onehot[i] >= 0.5  # pixels x K
            counts = truth.sum(axis=0)
            keys = np.ascontiguousarray(order_keys(values[i]).T)  # C x pixels
            ordered = np.sort(keys, axis=1, kind="stable")
            for cls in range(onehot.shape[-1]):
                k = int(counts[cls])
                if k == 0:
                    continue
                wanted = keys[:, truth[:, cls]]  # C x k
                for polarity in (0, 1):
                    if polarity == 0:
                        threshold = ordered[:, pixels - k]
                        hits = np.count_nonzero(wanted >= threshold[:, None], axis=1)
                        tied = ordered[:, pixels - k - 1] == threshold if k < pixels else np.zeros(c, bool)
                    else:
                        threshold = ordered[:, k - 1]
                        hits = np.count_nonzero(wanted <= threshold[:, None], axis=1)
                        tied = ordered[:, k] == threshold if k < pixels else np.zeros(c, bool)
                    chosen = np.full(c, k, np.int64)
                    if tied.any():
                        rows = keys[tied]
                        side = rows >= threshold[tied, None] if polarity == 0 else rows <= threshold[tied, None]
                        chosen[tied] = np.count_nonzero(side, axis=1)
                    self.inter[fold[i], polarity, cls] += hits
                    self.union[fold[i], polarity, cls] += chosen + k - hits

    def merge(self, other: "LayerAccumulator") -> "LayerAccumulator":
        if other.fold_count != self.fold_count:
            raise ValueError(f"cannot merge accumulators of {self.fold_count} and {other.fold_count} folds")
        if other.classes != self.classes:
            raise ValueError(f"cannot merge accumulators of mask classes {self.classes.names} and "
                             f"{other.classes.names}")
        merged = LayerAccumulator(self.channels, self.stride, self.fold_count, self.classes)
        for name in _PER_FOLD:
            setattr(merged, name, getattr(self, name) + getattr(other, name))
        merged.folds = _merge_folds(self.folds, other.folds)
        merged.class_folds = _merge_folds(self.class_folds, other.class_folds)
        if self.examples is not None and other.examples is not None:
            merged.examples = self.examples.merge(other.examples)
        else:
            merged.examples = self.examples if self.examples is not None else other.examples
        return merged


def _merge_folds(mine: dict, theirs: dict) -> dict:
    merged = dict(mine)
    for fold, sums in theirs.items():
        merged[fold] = sums if fold not in merged else merged[fold] + sums
    return merged


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


def _total(folds: dict, drop: int | None = None) -> FoldSums | None:
    total = None
    for fold, sums in folds.items():
        if fold != drop:
            total = sums if total is None else total + sums
    return total


def _undefined_where(values: np.ndarray, bad: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64).copy()
    values[bad] = np.nan
    return values


def _percentile(values: np.ndarray, q: float) -> float:
    finite = values[np.isfinite(values)]
    return float(np.percentile(finite, q)) if finite.size else float("nan")


def _share_above(values: np.ndarray, level: float) -> float:
    finite = values[np.isfinite(values)]
    return float((finite > level).mean()) if finite.size else float("nan")


def _max(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.max()) if finite.size else float("nan")




_EDGE = 1e-6  # how close to a bound a value is taken before its transform


def _to_open(values: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    """Values of a bounded statistic onto the whole line: logit on (0, 1), log on (0, inf), else as they are."""
    low, high = bounds
    if np.isfinite(low) and np.isfinite(high):
        p = np.clip((values - low) / (high - low), _EDGE, 1 - _EDGE)
        return np.log(p / (1 - p))
    if np.isfinite(low):
        return np.log(np.maximum(values - low, _EDGE))
    return values


def _from_open(values: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    low, high = bounds
    if np.isfinite(low) and np.isfinite(high):
        return low + (high - low) / (1 + np.exp(-values))
    if np.isfinite(low):
        return low + np.exp(values)
    return values


def _on_bound(values: np.ndarray, bounds: tuple[float, float]) -> bool:
    """Whether any value is within _EDGE of a finite bound (relative to the range when it has two)."""
    low, high = bounds
    width = high - low if np.isfinite(low) and np.isfinite(high) else 1.0
    return bool((np.isfinite(low) and np.any(values - low <= _EDGE * width))
                or (np.isfinite(high) and np.any(high - values <= _EDGE * width)))


def jackknife_interval(estimate: float, replicates, level: float = INTERVAL_LEVEL,
                       bounds: tuple[float, float] = ANY) -> tuple[float, float]:
    """A delete-one-fold jackknife interval: estimate -/+ t(K-1) * se, se^2 = (K-1)/K sum (r_k - mean r)^2.

    `replicates` are the statistic recomputed without each of the K folds. A statistic bounded to
    `bounds` gets its interval on the logit (two bounds) or log (one bound) scale, mapped back: it
    never leaves the range, and it is not symmetric near a bound. Undefined (NaN, NaN) when the
    estimate is undefined or fewer than two replicates are defined.

    When the estimate or a replicate lies on a bound the transform has no finite value there, and
    the interval is taken on the plain scale, cut at the bounds. Clipping such a value to _EDGE
    instead put it at logit(1e-6) = -13.8: a share that one fold holds alone (a near-zero count of
    1 on a 1x1 layer) got an interval of (0, 0.88), and one rounding step that gave a second fold a
    count narrowed it to (0, 0.003). The width then measured _EDGE, not the data.
    """
    from scipy.stats import t

    values = np.asarray([r for r in replicates if np.isfinite(r)], np.float64)
    k = len(values)
    if not np.isfinite(estimate) or k < 2:
        return float("nan"), float("nan")
    scale = ANY if _on_bound(np.append(values, estimate), bounds) else bounds
    centre, values = _to_open(np.float64(estimate), scale), _to_open(values, scale)
    spread = np.sqrt((k - 1) / k * np.sum((values - values.mean()) ** 2))
    half = float(t.ppf(0.5 + level / 2, k - 1)) * spread
    low, high = np.clip(_from_open(np.array([centre - half, centre + half]), scale), *bounds)
    # The round trip through the transform must not move a bound past the estimate itself.
    return float(min(low, estimate)), float(max(high, estimate))


def wilson_interval(hits: float, count: float, level: float = INTERVAL_LEVEL) -> tuple[float, float]:
    """The Wilson score interval of a proportion hits / count (Wilson, 1927).

    For the class probe's accuracy, where the images are the trials: unlike the jackknife it does not
    collapse to zero width when every fold is all right (or all wrong), the common case with few images.
    """
    from scipy.stats import norm

    if count <= 0:
        return float("nan"), float("nan")
    z = float(norm.ppf(0.5 + level / 2))
    p = hits / count
    centre = (p + z * z / (2 * count)) / (1 + z * z / count)
    half = z / (1 + z * z / count) * np.sqrt(p * (1 - p) / count + z * z / (4 * count * count))
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


LAYER_STATISTICS = layer_statistics()  # their definitions: reportgen.catalog
LAYER_NUMBERS = tuple(statistic.key for statistic in LAYER_STATISTICS)
RANGES = {statistic.key: statistic.bounds for statistic in LAYER_STATISTICS}


@dataclass(frozen=True)
class LayerStats:
    """Finalised statistics of one conv layer. Per-channel arrays have one value per channel."""

    mean: float
    std: float
    near_zero_fraction: float
    channel_strength: np.ndarray  # mean spatial std per channel: the ranking measure
    ntv: np.ndarray  # normalised total variation per channel, per input pixel
    effective_area: np.ndarray  # exp(entropy)/pixels per channel
    best_iou: np.ndarray  # K classes x C: best of both polarities, area-matched threshold
    cka_mask: float
    participation: float  # participation ratio / C
    probe_weights: list  # per fold, the leave-out probe (measure.probe_fits), scored by measure.score_batch
    cka_class: float = float("nan")  # linear CKA of globally pooled features with the one-hot class
    class_probe_weights: list = field(default_factory=list)  # the class probe's, per fold
    images: int = 0  # how many images the statistics cover
    folds: int = 0  # the image folds of the probes and the jackknife (`targets.assign_folds`)
    intervals: dict = field(default_factory=dict)  # LAYER_NUMBERS name -> (low, high), 90% jackknife
    examples: "ChannelTopK | None" = None  # each channel's strongest statistics images
    numbers: dict = field(default_factory=dict)  # LAYER_NUMBERS name -> its value over every image
    importance: np.ndarray | None = None  # C: mean Taylor importance over the images; None without a target
    importance_intervals: np.ndarray | None = None  # C x 2: its 90% jackknife interval per channel
    classes: MaskClasses = OXFORD  # what `best_iou`'s rows are

    def value(self, name: str) -> float:
        return float(self.numbers.get(name, float("nan")))

    @property
    def ntv_median(self) -> float:
        return _percentile(self.ntv, 50)

    def band(self, values: np.ndarray) -> tuple[float, float, float]:
        return _percentile(values, 10), _percentile(values, 50), _percentile(values, 90)

    def iou_summary(self, cls: int) -> tuple[float, float, float]:
        """Max, 90th percentile and fraction above 0.5 of the best single-channel IoU."""
        values = self.best_iou[cls]
        return _max(values), _percentile(values, 90), _share_above(values, 0.5)

    def interval(self, name: str) -> tuple[float, float]:
        return self.intervals.get(name, (float("nan"), float("nan")))


def _numbers(acc: LayerAccumulator, drop: int | None = None) -> dict:
    """Every statistic of the layer from the sums of all folds but `drop`: per channel and per layer."""
    keep = np.ones(acc.fold_count, bool)
    if drop is not None:
        keep[drop] = False
    part = {name: getattr(acc, name)[keep].sum(axis=0) for name in _PER_FOLD}
    n = max(float(part["pixels"]), 1.0)
    mean = part["total"] / n
    variance = np.maximum(part["total_sq"] / n - mean ** 2, 0.0)
    overall_mean = float(part["total"].sum() / (n * acc.channels))
    overall_var = float(part["total_sq"].sum() / (n * acc.channels) - overall_mean ** 2)
    constant = variance <= 1e-12 * np.maximum(1.0, mean ** 2)
    tv_den = part["tv_den"]
    ntv = _undefined_where(part["tv_num"] / np.where(tv_den > 0, tv_den, 1.0) / acc.stride,
                           (tv_den <= 1e-12) | constant)
    area = _undefined_where(part["area_sum"] / np.maximum(part["area_count"], 1), part["area_count"] == 0)
    union = part["union"]
    iou = part["inter"] / np.where(union > 0, union, 1.0)
    best = np.where(union[0] > 0, iou.max(axis=0), np.nan)
    best[:, constant] = np.nan
    focus, background = acc.classes.focus, acc.classes.background
    total = _total(acc.folds, drop)
    cka_mask = participation = float("nan")
    if total is not None and total.n > 1:
        xx, xy, yy = total.centred()
        cka_mask = cka(xy.T, xx, yy) if yy.size else float("nan")
        participation = participation_ratio(xx / (total.n - 1)) / acc.channels
    attributed = float(part["attributed"])
    importance = part["taylor"] / attributed if attributed else None
    top_share = float("nan")
    if importance is not None and importance.sum() > 0:
        top_share = float(np.sort(importance)[::-1][:TOP_IMPORTANT].sum() / importance.sum())
    by_image = _total(acc.class_folds, drop)
    cka_class = float("nan")
    if by_image is not None and by_image.n > 1:
        xx, xy, yy = by_image.centred()
        cka_class = cka(xy.T, xx, yy)
    return {
        "mean": overall_mean, "std": float(np.sqrt(max(overall_var, 0.0))),
        "near_zero_fraction": float(part["near_zero"].sum() / (n * acc.channels)),
        "ntv_median": _percentile(ntv, 50), "ntv_p10": _percentile(ntv, 10), "ntv_p90": _percentile(ntv, 90),
        "effective_area_median": _percentile(area, 50),
        "effective_area_top_median": _percentile(area[_strongest(part, TOP_IMPORTANT)], 50),
        "best_iou_focus_max": _max(best[focus]), "best_iou_focus_p90": _percentile(best[focus], 90),
        "best_iou_focus_share_above_half": _share_above(best[focus], 0.5),
        "best_iou_background_max": float("nan") if background is None else _max(best[background]),
        "cka_mask": cka_mask, "participation": participation, "cka_class": cka_class,
        "channel_strength": part["spatial_std"] / max(float(part["images"]), 1.0),
        "ntv": ntv, "effective_area": area, "best_iou": best, "images": int(part["images"]),
        "importance": importance, "importance_top_share": top_share,
    }


def _strongest(part: dict, k: int) -> np.ndarray:
    """The k channels of highest strength (mean spatial std), strongest first, as the grids rank them."""
    strength = part["spatial_std"] / max(float(part["images"]), 1.0)
    return np.argsort(-np.nan_to_num(strength, nan=-np.inf), kind="stable")[:k]


def finalise(acc: LayerAccumulator) -> LayerStats:
    """The statistics of all images, each per-layer number with its delete-one-fold jackknife interval."""
    whole = _numbers(acc)
    intervals, importance_intervals = {}, None
    if acc.fold_count >= 2:
        replicates = [_numbers(acc, drop=k) for k in range(acc.fold_count)]
        intervals = {name: jackknife_interval(whole[name], [r[name] for r in replicates], bounds=RANGES[name])
                     for name in LAYER_NUMBERS}
        if whole["importance"] is not None:
            per_fold = np.stack([r["importance"] if r["importance"] is not None else np.full(acc.channels, np.nan)
                                 for r in replicates])
            importance_intervals = np.array([jackknife_interval(float(v), per_fold[:, c], bounds=POSITIVE)
                                             for c, v in enumerate(whole["importance"])]).reshape(acc.channels, 2)
    return LayerStats(
        mean=whole["mean"], std=whole["std"], near_zero_fraction=whole["near_zero_fraction"],
        channel_strength=whole["channel_strength"], ntv=whole["ntv"], effective_area=whole["effective_area"],
        best_iou=whole["best_iou"], cka_mask=whole["cka_mask"], participation=whole["participation"],
        probe_weights=probe_weights(acc.folds), cka_class=whole["cka_class"],
        class_probe_weights=probe_weights(acc.class_folds), images=whole["images"], intervals=intervals,
        folds=acc.fold_count, examples=acc.examples, numbers={name: whole[name] for name in LAYER_NUMBERS},
        importance=whole["importance"], importance_intervals=importance_intervals, classes=acc.classes,
    )


def can_fit_probe(folds: dict) -> bool:
    """Whether fold sums give a leave-out probe: two folds at least, and targets (a mask, classes)."""
    return len(folds) >= 2 and next(iter(folds.values())).sy.size > 0


def probe_weights(folds: dict) -> list:
    """Ridge weights per held-out fold, fitted on the standardised features of the other folds."""
    if not can_fit_probe(folds):
        return []
    total = _total(folds)
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


@dataclass
class ChannelTopK:
    """Each channel's `k` strongest images: the value and place of its maximum on each, best first.

    One candidate per image and channel (its spatial maximum), so the examples are k different images.
    Ties go to the lower image index: the order is total, and merging any split of the images gives
    exactly what one pass over all of them gives.
    """

    channels: int
    k: int = EXAMPLES
    values: np.ndarray = field(default=None)  # C x k, descending; -inf where fewer than k images were seen
    images: np.ndarray = field(default=None)  # C x k image indices (the statistics images'), -1 where empty
    rows: np.ndarray = field(default=None)  # C x k, the maximum's place on the layer's grid
    cols: np.ndarray = field(default=None)

    def __post_init__(self):
        if self.values is None:
            self.values = np.full((self.channels, self.k), -np.inf, np.float32)
            self.images = np.full((self.channels, self.k), -1, np.int64)
            self.rows = np.zeros((self.channels, self.k), np.int32)
            self.cols = np.zeros((self.channels, self.k), np.int32)

    def add(self, maps: np.ndarray, image_indices) -> None:
        """N x H x W x C finite activations of images `image_indices`."""
        n, h, w, c = maps.shape
        flat = maps.reshape(n, h * w, c)
        where = flat.argmax(axis=1)  # n x C
        peak = np.take_along_axis(flat, where[:, None, :], axis=1)[:, 0, :]
        images = np.broadcast_to(np.asarray(image_indices, np.int64)[:, None], (n, c))
        self._keep(np.concatenate([self.values, peak.T.astype(np.float32)], axis=1),
                   np.concatenate([self.images, images.T], axis=1),
                   np.concatenate([self.rows, (where // w).T.astype(np.int32)], axis=1),
                   np.concatenate([self.cols, (where % w).T.astype(np.int32)], axis=1))

    def _keep(self, values, images, rows, cols) -> None:
        # Highest value first, then the lowest image index; empty slots (image -1, -inf) last.
        order = np.lexsort((np.where(images < 0, np.iinfo(np.int64).max, images), -values), axis=1)[:, :self.k]
        self.values, self.images, self.rows, self.cols = (np.take_along_axis(a, order, axis=1)
                                                          for a in (values, images, rows, cols))

    def used_images(self) -> list[int]:
        """The image indices that are some channel's example, in order."""
        return sorted({int(i) for i in self.images.ravel() if i >= 0})

    def merge(self, other: "ChannelTopK") -> "ChannelTopK":
        merged = ChannelTopK(self.channels, self.k, self.values, self.images, self.rows, self.cols)
        merged._keep(*(np.concatenate([a, b], axis=1) for a, b in
                       ((self.values, other.values), (self.images, other.images), (self.rows, other.rows),
                        (self.cols, other.cols))))
        return merged


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
        if self.class_probe_weights and label is not None:
            pooled = maps.reshape(-1, maps.shape[-1]).astype(np.float64).mean(axis=0, keepdims=True)
            predicted = probe_predict(self.class_probe_weights, pooled, fold)
            if predicted is not None:
                self.classes.add_hit(predicted[0] == label, fold)
        if self.probe_weights and truth is not None and maps.shape[0] > 1:
            pooled = pool_to(maps[None], POOL_GRID)[0]
            predicted = probe_predict(self.probe_weights, pooled, fold, balanced=True)
            if predicted is not None:
                self.mask.add_pixels(predicted, truth(*pooled.shape[:2]), fold)

    def merge(self, other: "ProbeScores") -> "ProbeScores":
        return ProbeScores(self.folds, self.probe_weights, self.class_probe_weights, self.mask_classes,
                           self.mask.merge(other.mask), self.classes.merge(other.classes))

    @property
    def has_classes(self) -> bool:
        return bool(self.classes.denominator.sum())


def mean_defined(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


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


def chance_accuracy(labels: list[int]) -> float:
    """The accuracy of always guessing the most common class: what a probe must beat."""
    return float(np.bincount(labels).max() / len(labels)) if labels else float("nan")




def common_grid(maps: np.ndarray) -> np.ndarray:
    """N x H x W x C onto N x 5 x 5 x C: area-pooled where 5 divides, else sampled (maps under 5 x 5 repeat)."""
    n, h, w, c = maps.shape
    if h >= CKA_GRID and w >= CKA_GRID and h % CKA_GRID == 0 and w % CKA_GRID == 0:
        return maps.reshape(n, CKA_GRID, h // CKA_GRID, CKA_GRID, w // CKA_GRID, c).mean(axis=(2, 4))
    rows = (np.arange(CKA_GRID) * h // CKA_GRID)
    cols = (np.arange(CKA_GRID) * w // CKA_GRID)
    return maps[:, rows][:, :, cols]


def unbiased_hsic(grams: np.ndarray) -> np.ndarray:
    """L x L matrix of the unbiased HSIC estimator (Song et al. 2012) between L n x n Gram matrices.

    HSIC_1(K, L) = [tr(K~L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3)), with K~ the
    Gram matrix with its diagonal set to 0; every pair at once, through matrix products.
    """
    count, n, _ = grams.shape
    if n < 4:
        raise ValueError(f"the unbiased HSIC needs at least 4 rows, got {n}")
    tilde = grams.astype(np.float64).copy()
    tilde[:, np.arange(n), np.arange(n)] = 0.0
    flat = tilde.reshape(count, n * n)
    sums = flat.sum(axis=1)
    rows = tilde.sum(axis=2)  # L x n: K~ 1
    return (flat @ flat.T + np.outer(sums, sums) / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (rows @ rows.T)) / (n * (n - 3))


class MinibatchCKA:
    """Layer x layer linear CKA over any number of images in constant memory: minibatch CKA with
    the unbiased HSIC estimator (Nguyen, Raghu and Kornblith, ICLR 2021).

    Each batch of images (its pixels on every layer's common 5 x 5 grid as rows) adds its L x L
    unbiased HSIC matrix to a running sum; CKA_ij = S_ij / sqrt(S_ii S_jj). Unlike the plain (biased)
    estimator, it does not inflate CKA when a batch has few rows for many channels, and merging is
    adding the sums. The result depends on which images form a batch: every executor batches images
    the same way (consecutive indices, the plan's batch size).
    """

    def __init__(self, layers: int):
        self.layers = layers
        self.sums = np.zeros((layers, layers))
        self.batches = 0
        self.images = 0

    def add(self, layer_maps: list[np.ndarray]) -> None:
        """One batch: the N x H x W x C output of every layer, in the accumulator's layer order."""
        rows = [np.nan_to_num(common_grid(np.asarray(m, np.float32)), nan=0.0, posinf=0.0, neginf=0.0)
                for m in layer_maps]
        features = [r.reshape(-1, r.shape[-1]) for r in rows]
        if features[0].shape[0] < 4:
            return
        grams = np.stack([f @ f.T for f in features])
        self.sums += unbiased_hsic(grams)
        self.batches += 1
        self.images += len(layer_maps[0])

    def merge(self, other: "MinibatchCKA") -> "MinibatchCKA":
        merged = MinibatchCKA(self.layers)
        merged.sums = self.sums + other.sums
        merged.batches, merged.images = self.batches + other.batches, self.images + other.images
        return merged

    def finalise(self) -> np.ndarray:
        """L x L matrix of CKA; NaN where a layer is constant (its HSIC with itself is not positive)."""
        diagonal = np.diag(self.sums)
        with np.errstate(invalid="ignore", divide="ignore"):
            norms = np.sqrt(np.where(diagonal > 1e-20, diagonal, np.nan))
            return np.clip(self.sums / np.outer(norms, norms), 0.0, 1.0) if self.batches else \
                np.full((self.layers, self.layers), np.nan)
