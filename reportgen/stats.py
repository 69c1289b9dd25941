"""Per-layer abstraction statistics (STATS.md), each as accumulate -> merge -> finalise.

An accumulator sees one batch of one layer's activations at a time and keeps
only sums, Gram matrices and counts, so the same code serves 10 images or a
whole split, and `merge(a, b)` equals accumulating a and b together. A value
that cannot be defined (a constant channel, no pet pixels) is NaN, and the
site prints it as "undefined".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

POOL_GRID = 20  # CKA, probes and covariance work on maps pooled to at most this grid
CLASSES = ("pet", "background", "border")
PROBE_RIDGE = 1e-1
MAX_FOLDS = 10
NEAR_ZERO = 1e-3


def pool_to(maps: np.ndarray, grid: int) -> np.ndarray:
    """Area-pool N x H x W x C to N x g x g x C (g = min(grid, H)), by block means where H divides."""
    n, h, w, c = maps.shape
    gh, gw = min(grid, h), min(grid, w)
    if h % gh or w % gw:
        gh, gw = _largest_divisor_at_most(h, grid), _largest_divisor_at_most(w, grid)
    return maps.reshape(n, gh, h // gh, gw, w // gw, c).mean(axis=(2, 4))


def _largest_divisor_at_most(value: int, limit: int) -> int:
    return max(d for d in range(1, min(value, limit) + 1) if value % d == 0)


def mask_onehot(trimaps: np.ndarray, height: int, width: int) -> np.ndarray:
    """N x S x S trimaps (1..3) to N x height x width x 3 class fractions, area-pooled."""
    n, s, _ = trimaps.shape
    onehot = np.stack([(trimaps == k + 1) for k in range(3)], axis=-1).astype(np.float32)
    if s % height == 0 and s % width == 0:
        return onehot.reshape(n, height, s // height, width, s // width, 3).mean(axis=(2, 4))
    from PIL import Image

    return np.stack([
        np.stack([np.asarray(Image.fromarray(onehot[i, ..., k]).resize((width, height), Image.Resampling.BOX))
                  for k in range(3)], axis=-1)
        for i in range(n)
    ])


def grid_truth(trimaps: np.ndarray, height: int, width: int) -> np.ndarray:
    """Class id per grid pixel where one class covers most of it, else -1 (a tie has no truth)."""
    fractions = mask_onehot(trimaps, height, width)
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


def participation_ratio(covariance: np.ndarray) -> float:
    """(sum lambda)^2 / sum lambda^2 of a covariance; NaN when it is all zero."""
    trace = float(np.trace(covariance))
    frob2 = float(np.sum(covariance ** 2))
    return trace * trace / frob2 if frob2 > 1e-30 else float("nan")


@dataclass
class Moments:
    """Centred cross-products from streamed sums: n, sum x, sum y, X'X, X'Y, Y'Y."""

    n: float = 0.0
    sx: np.ndarray | None = None
    sy: np.ndarray | None = None
    xx: np.ndarray | None = None
    xy: np.ndarray | None = None
    yy: np.ndarray | None = None

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        x = x.astype(np.float64)
        y = y.astype(np.float64)
        parts = (x.sum(0), y.sum(0), x.T @ x, x.T @ y, y.T @ y)
        if self.sx is None:
            self.sx, self.sy, self.xx, self.xy, self.yy = parts
        else:
            self.sx, self.sy, self.xx, self.xy, self.yy = (
                a + b for a, b in zip((self.sx, self.sy, self.xx, self.xy, self.yy), parts))
        self.n += x.shape[0]

    def merge(self, other: "Moments") -> "Moments":
        if other.sx is None:
            return self
        if self.sx is None:
            return other
        return Moments(self.n + other.n, self.sx + other.sx, self.sy + other.sy,
                       self.xx + other.xx, self.xy + other.xy, self.yy + other.yy)

    def centred(self):
        mx, my = self.sx / self.n, self.sy / self.n
        return (self.xx - self.n * np.outer(mx, mx), self.xy - self.n * np.outer(mx, my),
                self.yy - self.n * np.outer(my, my))


@dataclass
class LayerAccumulator:
    """Everything one layer's statistics need, summed over the images seen so far."""

    channels: int
    stride: float  # input pixels per feature pixel
    images: int = 0
    pixels: float = 0.0
    total: np.ndarray = field(default=None)
    total_sq: np.ndarray = field(default=None)
    near_zero: np.ndarray = field(default=None)
    spatial_std: np.ndarray = field(default=None)  # sum over images of each channel's spatial std
    tv_num: np.ndarray = field(default=None)
    tv_den: np.ndarray = field(default=None)
    area_sum: np.ndarray = field(default=None)
    area_count: np.ndarray = field(default=None)
    inter: np.ndarray = field(default=None)  # 2 polarities x 3 classes x C
    union: np.ndarray = field(default=None)
    moments: Moments = field(default_factory=Moments)
    folds: dict = field(default_factory=dict)  # fold -> (gram, cross) for the probe

    def __post_init__(self):
        c = self.channels
        for name in ("total", "total_sq", "near_zero", "spatial_std", "tv_num", "tv_den", "area_sum", "area_count"):
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(c, np.float64))
        if self.inter is None:
            self.inter = np.zeros((2, 3, c), np.float64)
            self.union = np.zeros((2, 3, c), np.float64)

    def add(self, maps: np.ndarray, masks: np.ndarray, image_indices: list[int], total_images: int,
            measures: bool = True) -> None:
        """Accumulate N x H x W x C activations with N x S x S trimaps (1..3).

        With `measures` False only the descriptive sums and the ranking strength are kept.
        """
        maps = np.nan_to_num(maps.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        n, h, w, c = maps.shape
        self.images += n
        self.pixels += n * h * w
        flat = maps.reshape(n, h * w, c)
        self.total += flat.sum(axis=(0, 1), dtype=np.float64)
        self.total_sq += (flat.astype(np.float64) ** 2).sum(axis=(0, 1))
        self.near_zero += (np.abs(flat) < NEAR_ZERO).sum(axis=(0, 1))
        self.spatial_std += flat.std(axis=1, dtype=np.float64).sum(axis=0)
        if not measures:
            return

        centred = np.abs(flat - flat.mean(axis=1, keepdims=True)).mean(axis=1)  # n x C
        grad = np.zeros((n, c), np.float64)
        if h > 1:
            grad += np.abs(np.diff(maps, axis=1)).mean(axis=(1, 2))
        if w > 1:
            grad += np.abs(np.diff(maps, axis=2)).mean(axis=(1, 2))
        self.tv_num += grad.sum(axis=0)
        self.tv_den += centred.sum(axis=0)

        magnitude = np.abs(flat).astype(np.float64)
        mass = magnitude.sum(axis=1)  # n x C
        p = magnitude / np.where(mass > 0, mass, 1.0)[:, None, :]
        entropy = -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1)
        defined = mass > 0
        self.area_sum += np.where(defined, np.exp(entropy) / (h * w), 0.0).sum(axis=0)
        self.area_count += defined.sum(axis=0)

        onehot = mask_onehot(masks, h, w)  # n x h x w x 3
        self._channel_iou(flat, onehot.reshape(n, h * w, 3))
        pooled = pool_to(maps, POOL_GRID)
        pooled_mask = pool_to(onehot, POOL_GRID) if pooled.shape[1] != h or pooled.shape[2] != w else onehot
        if pooled_mask.shape[1:3] != pooled.shape[1:3]:
            pooled_mask = mask_onehot(masks, pooled.shape[1], pooled.shape[2])
        x = pooled.reshape(-1, c)
        y = pooled_mask.reshape(-1, 3)
        self.moments.add(x, y)
        folds = min(total_images, MAX_FOLDS)
        for k, image_index in enumerate(image_indices):
            add_to_fold(self.folds, image_index % folds, pooled[k].reshape(-1, c), pooled_mask[k].reshape(-1, 3))

    def _channel_iou(self, flat: np.ndarray, onehot: np.ndarray) -> None:
        """Area-matched thresholds per image: a channel's top-k pixels, k = the class's pixel count."""
        n, pixels, c = flat.shape
        order = np.argsort(flat, axis=1)  # ascending, per image and channel
        for i in range(n):
            truth = onehot[i] >= 0.5  # pixels x 3
            for cls in range(3):
                k = int(truth[:, cls].sum())
                if k == 0:
                    continue
                for polarity, chosen in ((0, order[i, pixels - k:, :]), (1, order[i, :k, :])):
                    hits = truth[chosen, cls].sum(axis=0)  # C
                    self.inter[polarity, cls] += hits
                    self.union[polarity, cls] += 2 * k - hits

    def merge(self, other: "LayerAccumulator") -> "LayerAccumulator":
        merged = LayerAccumulator(self.channels, self.stride)
        for name in ("images", "pixels", "total", "total_sq", "near_zero", "spatial_std", "tv_num", "tv_den",
                     "area_sum", "area_count", "inter", "union"):
            setattr(merged, name, getattr(self, name) + getattr(other, name))
        merged.moments = self.moments.merge(other.moments)
        merged.folds = dict(self.folds)
        for fold, parts in other.folds.items():
            mine = merged.folds.get(fold)
            merged.folds[fold] = parts if mine is None else tuple(a + b for a, b in zip(mine, parts))
        return merged


def add_to_fold(folds: dict, fold: int, x: np.ndarray, y: np.ndarray) -> None:
    """Add one image's pixels (features x, class fractions y) to the probe's sums for its fold."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    gram, cross, sx, sy, m = folds.get(fold, (0.0, 0.0, 0.0, 0.0, 0))
    folds[fold] = (gram + x.T @ x, cross + x.T @ y, sx + x.sum(0), sy + y.sum(0), m + x.shape[0])


def _undefined_where(values: np.ndarray, bad: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64).copy()
    values[bad] = np.nan
    return values


def _percentile(values: np.ndarray, q: float) -> float:
    finite = values[np.isfinite(values)]
    return float(np.percentile(finite, q)) if finite.size else float("nan")


def _max(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.max()) if finite.size else float("nan")


@dataclass(frozen=True)
class LayerStats:
    """Finalised statistics of one conv layer. Per-channel arrays have one value per channel."""

    mean: float
    std: float
    near_zero_fraction: float
    channel_strength: np.ndarray  # mean spatial std per channel: the ranking measure
    ntv: np.ndarray  # normalised total variation per channel, per input pixel
    effective_area: np.ndarray  # exp(entropy)/pixels per channel
    best_iou: np.ndarray  # 3 classes x C: best of both polarities, area-matched threshold
    cka_mask: float
    participation: float  # participation ratio / C
    probe_weights: list  # per fold (W, b) for the leave-out probe, evaluated in the render pass

    @property
    def ntv_median(self) -> float:
        return _percentile(self.ntv, 50)

    def band(self, values: np.ndarray) -> tuple[float, float, float]:
        return _percentile(values, 10), _percentile(values, 50), _percentile(values, 90)

    def best_channel(self, cls: int = 0) -> int:
        finite = np.where(np.isfinite(self.best_iou[cls]), self.best_iou[cls], -1)
        return int(np.argmax(finite))

    def iou_summary(self, cls: int = 0) -> tuple[float, float, float]:
        """Max, 90th percentile and fraction above 0.5 of the best single-channel IoU."""
        values = self.best_iou[cls]
        finite = values[np.isfinite(values)]
        frac = float((finite > 0.5).mean()) if finite.size else float("nan")
        return _max(values), _percentile(values, 90), frac


def finalise(acc: LayerAccumulator) -> LayerStats:
    n = max(acc.pixels, 1.0)
    mean = acc.total / n
    variance = np.maximum(acc.total_sq / n - mean ** 2, 0.0)
    overall_mean = float(acc.total.sum() / (n * acc.channels))
    overall_var = float(acc.total_sq.sum() / (n * acc.channels) - overall_mean ** 2)
    constant = variance <= 1e-12 * np.maximum(1.0, mean ** 2)
    ntv = _undefined_where(acc.tv_num / np.where(acc.tv_den > 0, acc.tv_den, 1.0) / acc.stride,
                           (acc.tv_den <= 1e-12) | constant)
    area = _undefined_where(acc.area_sum / np.maximum(acc.area_count, 1), acc.area_count == 0)
    iou = acc.inter / np.where(acc.union > 0, acc.union, 1.0)
    best = np.where(acc.union[0] > 0, iou.max(axis=0), np.nan)
    best[:, constant] = np.nan
    if acc.moments.sx is not None and acc.moments.n > 1:
        xx, xy, yy = acc.moments.centred()
        cka_mask = cka(xy.T, xx, yy)
        pr = participation_ratio(xx / (acc.moments.n - 1)) / acc.channels
    else:
        cka_mask, pr = float("nan"), float("nan")
    return LayerStats(
        mean=overall_mean, std=float(np.sqrt(max(overall_var, 0.0))),
        near_zero_fraction=float(acc.near_zero.sum() / (n * acc.channels)),
        channel_strength=acc.spatial_std / max(acc.images, 1),
        ntv=ntv, effective_area=area, best_iou=best, cka_mask=cka_mask, participation=pr,
        probe_weights=probe_weights(acc.folds),
    )


def probe_weights(folds: dict) -> list:
    """Ridge weights per held-out fold, fitted on the standardised features of the other folds."""
    if len(folds) < 2:
        return []
    total = [sum(parts[i] for parts in folds.values()) for i in range(5)]
    weights = []
    for fold in sorted(folds):
        gram, cross, sx, sy, m = (t - p for t, p in zip(total, folds[fold]))
        mean_x, mean_y = sx / m, sy / m
        cov = gram / m - np.outer(mean_x, mean_x)
        scale = np.sqrt(np.maximum(np.diag(cov), 1e-12))
        cov_std = cov / np.outer(scale, scale)
        cross_std = (cross / m - np.outer(mean_x, mean_y)) / scale[:, None]
        w = np.linalg.solve(cov_std + PROBE_RIDGE * np.eye(len(scale)), cross_std)
        weights.append((fold, w, mean_x, scale, mean_y))
    return weights


@dataclass
class ProbeScore:
    """Confusion counts of the leave-out probe, accumulated in the render pass."""

    inter: np.ndarray = field(default_factory=lambda: np.zeros(3))
    union: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def add(self, predicted: np.ndarray, truth: np.ndarray) -> None:
        """Count pixels; truth -1 (no class covers most of the pixel) is left out."""
        scored = truth >= 0
        for k in range(3):
            self.inter[k] += np.sum((predicted == k) & (truth == k) & scored)
            self.union[k] += np.sum(((predicted == k) | (truth == k)) & scored)

    def iou(self) -> np.ndarray:
        return np.where(self.union > 0, self.inter / np.where(self.union > 0, self.union, 1), np.nan)


def probe_predict(weights: list, pooled: np.ndarray, image_index: int, folds: int) -> np.ndarray | None:
    """Class ids predicted on one image's pooled g x g x C features by the probe that never saw it."""
    fold = image_index % folds
    for f, w, mean_x, scale, mean_y in weights:
        if f == fold:
            x = (pooled.reshape(-1, pooled.shape[-1]) - mean_x) / scale
            return (x @ w + mean_y).argmax(axis=1).reshape(pooled.shape[:2])
    return None


def rgb_baseline_features(images: np.ndarray, grid: int) -> np.ndarray:
    """Raw RGB pooled to the layer's grid: the probe baseline."""
    return pool_to(images.astype(np.float32), grid)


CKA_GRID = 5  # layer x layer CKA compares every layer on one common grid


class CrossLayerAccumulator:
    """Layer x layer linear CKA from one streamed Gram matrix of all layers' pooled features.

    STATS.md pools the finer of two layers to the coarser grid; with 51 layers that is a
    different grid per pair. Here every layer is area-pooled (or, below 5 x 5, repeated) onto
    one 5 x 5 grid, the coarsest grid of the SD-UNet's spatial layers, so one Gram matrix Z'Z
    over all channels of all layers gives every pair, and it merges by addition like every
    other statistic. Its cost is 25 rows per image times (channels of all layers) squared; it is
    kept in float32 (about 280 MB for the SD-UNet's 8,387 channels).
    """

    def __init__(self, channels: list[int]):
        self.channels = list(channels)
        self.offsets = np.concatenate([[0], np.cumsum(self.channels)])
        width = int(self.offsets[-1])
        self.gram = np.zeros((width, width), np.float32)
        self.total = np.zeros(width, np.float64)
        self.rows = 0

    @staticmethod
    def common_grid(maps: np.ndarray) -> np.ndarray:
        n, h, w, c = maps.shape
        if h >= CKA_GRID and w >= CKA_GRID and h % CKA_GRID == 0 and w % CKA_GRID == 0:
            return maps.reshape(n, CKA_GRID, h // CKA_GRID, CKA_GRID, w // CKA_GRID, c).mean(axis=(2, 4))
        rows = (np.arange(CKA_GRID) * h // CKA_GRID)
        cols = (np.arange(CKA_GRID) * w // CKA_GRID)
        return maps[:, rows][:, :, cols]

    def add(self, layer_maps: list[np.ndarray]) -> None:
        """One batch: the N x H x W x C output of every layer, in the accumulator's layer order."""
        z = np.concatenate([
            np.nan_to_num(self.common_grid(m.astype(np.float32)), nan=0.0, posinf=0.0, neginf=0.0).reshape(
                -1, m.shape[-1])
            for m in layer_maps], axis=1)
        self.gram += z.T @ z
        self.total += z.sum(axis=0, dtype=np.float64)
        self.rows += z.shape[0]

    def merge(self, other: "CrossLayerAccumulator") -> "CrossLayerAccumulator":
        merged = CrossLayerAccumulator(self.channels)
        merged.gram, merged.total, merged.rows = self.gram + other.gram, self.total + other.total, self.rows + other.rows
        return merged

    def finalise(self) -> np.ndarray:
        """L x L matrix of linear CKA; NaN where a layer is constant."""
        if self.rows < 2:
            return np.full((len(self.channels),) * 2, np.nan)
        mean = (self.total / self.rows).astype(np.float32)
        centred = self.gram - np.float32(self.rows) * np.outer(mean, mean)
        blocks = [slice(self.offsets[i], self.offsets[i + 1]) for i in range(len(self.channels))]
        norms = [float(np.linalg.norm(centred[b, b].astype(np.float64))) for b in blocks]
        size = len(blocks)
        result = np.full((size, size), np.nan)
        for i in range(size):
            for j in range(i, size):
                denom = norms[i] * norms[j]
                if denom > 1e-20:
                    cross = centred[blocks[i], blocks[j]].astype(np.float64)
                    value = float(np.clip(np.sum(cross * cross) / denom, 0.0, 1.0))
                    result[i, j] = result[j, i] = value
        return result
