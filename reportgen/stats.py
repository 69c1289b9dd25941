"""Per-layer abstraction statistics (STATS.md), each as accumulate -> merge -> finalise.

An accumulator sees one batch of one layer's activations at a time and keeps
only sums, Gram matrices and counts, so the same code serves 10 images or a
whole split, and `merge(a, b)` equals accumulating a and b together. A value
that cannot be defined (a constant channel, no pet pixels) is NaN, and the
site prints it as "undefined".

What it builds on has modules of its own: the masks' classes (mask_classes.py), the leave-out
probes (linear_probes.py), CKA (cka.py), each channel's examples (channel_examples.py) and the
intervals (intervals.py).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

import numpy as np

from reportgen.casts import as_float16, as_float32
from reportgen.catalog import NEAR_ZERO, POOL_GRID, POSITIVE, STATISTICS_IMAGES, TOP_IMPORTANT, layer_statistics
from reportgen.channel_examples import ChannelTopK
from reportgen.cka import cka
from reportgen.intervals import jackknife_interval
from reportgen.linear_probes import add_to_fold, fold_total, pool_to, probe_weights
from reportgen.localisation import layer_scores
from reportgen.mask_classes import OXFORD, MaskClasses, MaskGrids


def order_keys(values: np.ndarray) -> np.ndarray:
    """Values as float16, mapped to uint16 keys in the same order: equal values get equal keys."""
    bits = np.ascontiguousarray(as_float16(values)).view(np.uint16)
    # Negative values have every bit flipped, the others only the sign bit: 0xFFFF or 0x8000 to xor.
    flips = np.right_shift(bits.view(np.int16), 15).view(np.uint16)
    np.bitwise_or(flips, np.uint16(0x8000), out=flips)
    keys = np.bitwise_xor(bits, flips, out=flips)
    keys[keys == 0x7FFF] = 0x8000  # -0 ranks with +0
    return keys


@functools.cache
def sort_kind() -> str:
    """The faster of numpy's sorts on 16-bit keys on this CPU (both give the same array): its default
    is vectorised where the CPU has AVX-512 and then several times as fast as its radix sort, which is
    the faster one elsewhere."""
    keys = np.random.default_rng(0).integers(0, 1 << 16, (64, 4096), dtype=np.uint16)
    seconds = {}
    for kind in ("quicksort", "stable"):
        np.sort(keys, axis=1, kind=kind)
        started = time.perf_counter()
        for _ in range(3):
            np.sort(keys, axis=1, kind=kind)
        seconds[kind] = time.perf_counter() - started
    return min(seconds, key=seconds.get)


def participation_ratio(covariance: np.ndarray) -> float:
    """(sum lambda)^2 / sum lambda^2 of a covariance; NaN when it is all zero."""
    trace = float(np.trace(covariance))
    frob2 = float(np.sum(covariance ** 2))
    return trace * trace / frob2 if frob2 > 1e-30 else float("nan")


_PER_CHANNEL = ("total", "total_sq", "near_zero", "spatial_std", "tv_num", "tv_den", "area_sum", "area_count",
                "taylor")
_PER_FOLD = ("images", "pixels", "attributed", "localised", "cam_mass", "cam_rank", *_PER_CHANNEL, "inter", "union")


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
    localised: np.ndarray = field(default=None)  # F: images whose Grad-CAM was scored against the focus class
    cam_mass: np.ndarray = field(default=None)  # F: sum over them of its relevance mass accuracy (localisation.py)
    cam_rank: np.ndarray = field(default=None)  # F: and of its relevance rank accuracy
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
        self.localised, self.cam_mass, self.cam_rank = np.zeros(f), np.zeros(f), np.zeros(f)
        for name in _PER_CHANNEL:
            setattr(self, name, np.zeros((f, c), np.float64))
        k = self.classes.count
        self.inter, self.union = np.zeros((f, 2, k, c)), np.zeros((f, 2, k, c))

    def add(self, maps: np.ndarray, masks: np.ndarray | MaskGrids | None, image_indices, folds,
            measures: bool = True, labels: np.ndarray | None = None, importance: np.ndarray | None = None,
            cams: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray] | None:
        """Accumulate N x H x W x C activations of images `image_indices`, in folds `folds`, with
        N x SH x SW masks (class k stored as k + 1, `MaskClasses`; or `MaskGrids` of them, which a batch's
        layers share) or None. `targets.feed` is the way
        every driver calls this.

        With `measures` False only the descriptive sums and the ranking strength are kept. Without
        masks the mask-free measures (nTV, effective area, covariance) are kept and the mask ones are
        undefined; `labels` (N x K one-hot) add the class probe's sums. float16 maps (what the spill
        stores) must be finite. `importance`
        (N x C) is each image's Taylor importance of every channel (`attribution.cam_and_taylor`), and
        `cams` (N x H x W) its Grad-CAM map, scored against the masks' focus class (localisation.py).

        With `measures`, returns what it computed that the leave-out probes read of each image
        (`linear_probes.probe_features`): the channel means (N x C float64) and the maps pooled to
        the probe's grid (N x g x g x C float32).
        """
        fold = np.asarray(folds, np.int64)
        if fold.size and (fold.min() < 0 or fold.max() >= self.fold_count):
            raise ValueError(f"folds {fold.tolist()} outside the accumulator's {self.fold_count}")
        stored = np.asarray(maps)  # float16 maps (what the spill stores) are finite
        maps = as_float32(stored)
        n, h, w, c = maps.shape
        # Each channel's map as a row of its pixels: numpy reduces along rows several times as fast as
        # across them, and the examples' maxima and the channel IoU's ranking read rows. The stored rows
        # (float16 from the probe) are what the channel IoU ranks; the statistics read them widened.
        ranked_rows = np.ascontiguousarray(stored.reshape(n, h * w, c).transpose(0, 2, 1))  # n x C x pixels
        by_channel = as_float32(ranked_rows)  # the same array where the maps came as float32
        sums = by_channel.sum(axis=2, dtype=np.float64)  # n x C
        if not np.isfinite(sums).all():  # a NaN or an infinity somewhere (float32 values cannot overflow it)
            maps = np.nan_to_num(maps, nan=0.0, posinf=0.0, neginf=0.0)
            by_channel = np.nan_to_num(by_channel, nan=0.0, posinf=0.0, neginf=0.0)  # may be a view of maps
            ranked_rows = by_channel  # float16 maps are finite: these came as float32
            sums = by_channel.sum(axis=2, dtype=np.float64)
        np.add.at(self.images, fold, 1)
        np.add.at(self.pixels, fold, h * w)
        magnitude = np.abs(by_channel)
        # In-place passes through one scratch array: these over every value are most of the statistics' cost.
        scratch = np.empty_like(by_channel)
        squares = np.square(by_channel, out=scratch).sum(axis=2, dtype=np.float64)  # float32 products
        means = sums / (h * w)
        np.add.at(self.total, fold, sums)
        np.add.at(self.total_sq, fold, squares)
        np.add.at(self.near_zero, fold, count_true(magnitude < NEAR_ZERO, axis=2))
        np.add.at(self.spatial_std, fold, np.sqrt(np.maximum(squares / (h * w) - means ** 2, 0.0)))
        if importance is not None:
            np.add.at(self.attributed, fold, 1)
            np.add.at(self.taylor, fold, np.nan_to_num(np.asarray(importance, np.float64).reshape(n, c)))
        if not measures:
            return None

        np.subtract(by_channel, means[:, :, None].astype(np.float32), out=scratch)
        centred = np.abs(scratch, out=scratch).mean(axis=2)  # n x C
        grad = np.zeros((n, c), np.float64)
        if h > 1:  # neighbours a row apart are w apart in a channel's row
            grad += _abs_step_sums(by_channel, w, scratch) / ((h - 1) * w)
        if w > 1:  # neighbours in a row are 1 apart, but for the steps from a row's end to the next row's start
            grad += _abs_step_sums(by_channel, 1, scratch, zero_every=w) / (h * (w - 1))
        np.add.at(self.tv_num, fold, grad)
        np.add.at(self.tv_den, fold, centred)

        # Entropy of p = a / M without forming p: H = log M - sum(a log a) / M.
        mass = magnitude.sum(axis=2, dtype=np.float64)  # n x C
        a_log_a = np.maximum(magnitude, np.float32(1e-30), out=scratch)
        np.log(a_log_a, out=a_log_a)
        a_log_a = np.multiply(a_log_a, magnitude, out=a_log_a).sum(axis=2, dtype=np.float64)
        defined = mass > 0
        safe_mass = np.where(defined, mass, 1.0)
        entropy = np.log(safe_mass) - a_log_a / safe_mass
        np.add.at(self.area_sum, fold, np.where(defined, np.exp(entropy) / (h * w), 0.0))
        np.add.at(self.area_count, fold, defined)

        if self.examples is None:
            self.examples = ChannelTopK(c)
        self.examples.add_by_channel(by_channel, w, image_indices)
        pooled = pool_to(maps, POOL_GRID)
        if masks is None:  # no mask: the sums still give the covariance (participation ratio)
            pooled_mask = np.zeros((*pooled.shape[:3], 0), np.float32)
        else:
            grids = masks if isinstance(masks, MaskGrids) else MaskGrids(masks, self.classes.count)
            if cams is not None:
                self._localise(cams, grids.masks, fold)
            classes = self.classes.count
            onehot = grids.onehot(h, w)  # n x h x w x K
            self._channel_iou(ranked_rows, onehot.reshape(n, h * w, classes), fold)
            pooled_mask = onehot if pooled.shape[1:3] == (h, w) else \
                grids.kept(("pooled", h, w), lambda: pool_to(onehot, POOL_GRID))
        rows = pooled.shape[1] * pooled.shape[2]
        for k in range(n):
            add_to_fold(self.folds, int(fold[k]), pooled[k].reshape(rows, c),
                        pooled_mask[k].reshape(rows, pooled_mask.shape[-1]))
            if labels is not None:
                add_to_fold(self.class_folds, int(fold[k]), means[k:k + 1].astype(np.float32), labels[k:k + 1])
        return means, pooled

    def _localise(self, cams: np.ndarray, masks: np.ndarray, fold: np.ndarray) -> None:
        scored = layer_scores(cams, masks, self.classes.count, self.classes.focus)
        for i, (mass, rank) in enumerate(scored):
            if np.isfinite(mass):
                self.localised[fold[i]] += 1
                self.cam_mass[fold[i]] += mass
                self.cam_rank[fold[i]] += rank

    def _channel_iou(self, by_channel: np.ndarray, onehot: np.ndarray, fold: np.ndarray) -> None:
        """Area-matched thresholds per image: a channel's top-k (and bottom-k) pixels, k = the class's pixels.

        Pixels are ranked by their values as float16 (what the spill stores) through 16-bit keys: one
        sort of each channel's pixels gives every class's thresholds and how many pixels reach them.
        Pixels tied with a threshold count as chosen.
        """
        n, c, pixels = by_channel.shape
        for i in range(n):
            truth = onehot[i] >= 0.5  # pixels x K
            keys = order_keys(by_channel[i])  # C x pixels
            ranked = _SortedRows(keys)
            for cls, k in enumerate(count_true(truth, axis=0).tolist()):
                if k == 0:
                    continue
                wanted = keys[:, truth[:, cls]]  # C x k
                top, bottom = ranked.at(pixels - k), ranked.at(k - 1)
                hits = (count_true(wanted >= top[:, None]), count_true(wanted <= bottom[:, None]))
                chosen = (pixels - ranked.below(top, "left"), ranked.below(bottom, "right"))
                for polarity in (0, 1):
                    self.inter[fold[i], polarity, cls] += hits[polarity]
                    self.union[fold[i], polarity, cls] += chosen[polarity] + k - hits[polarity]

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


def count_true(flags: np.ndarray, axis: int = -1) -> np.ndarray:
    """How many of `flags` are true along `axis`: numpy's count_nonzero with an axis is several times
    slower than summing the flags' bytes."""
    return flags.view(np.uint8).sum(axis=axis, dtype=np.int64)


class _SortedRows:
    """Each row of C x m 16-bit keys sorted, the rows laid end to end with row r's keys raised by r << 16:
    one increasing run, in which one searchsorted counts every row's keys below its own value."""

    def __init__(self, keys: np.ndarray):
        rows, self.width = keys.shape
        self.base = np.arange(rows, dtype=np.uint32 if rows <= 1 << 16 else np.uint64) << 16
        self.run = np.add(np.sort(keys, axis=1, kind=sort_kind()), self.base[:, None]).ravel()
        self.start = np.arange(rows, dtype=np.int64) * self.width

    def at(self, position: int) -> np.ndarray:
        """Each row's key at `position` in its sorted order."""
        return (self.run[self.start + position] - self.base).astype(np.uint16)

    def below(self, keys: np.ndarray, side: str) -> np.ndarray:
        """How many of each row's keys lie below its key in `keys` (side "right": at or below)."""
        return np.searchsorted(self.run, self.base + keys, side=side) - self.start


def _abs_step_sums(rows: np.ndarray, apart: int, scratch: np.ndarray, zero_every: int = 0) -> np.ndarray:
    """Each image's and channel's sum of |rows[..., p + apart] - rows[..., p]| over positions p (n x C
    float64), leaving out every `zero_every`-th step from step `zero_every - 1` on.

    On `rows` (n x C x P) and through `scratch` (its shape, float32): numpy is many times slower on
    the 4-d views a step along the width would take, and nothing the size of the maps is allocated."""
    step = scratch[..., :rows.shape[-1] - apart]
    np.subtract(rows[..., apart:], rows[..., :-apart], out=step)
    np.abs(step, out=step)
    if zero_every:
        step[..., zero_every - 1::zero_every] = 0.0
    return step.sum(axis=-1, dtype=np.float64)


def _merge_folds(mine: dict, theirs: dict) -> dict:
    merged = dict(mine)
    for fold, sums in theirs.items():
        merged[fold] = sums if fold not in merged else merged[fold] + sums
    return merged


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


# Their definitions: reportgen.catalog; the sanity check's rows join a layer's numbers later (sanity.with_numbers).
LAYER_STATISTICS = tuple(s for s in layer_statistics() if s.measured_on == STATISTICS_IMAGES)
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

    def joined(self, numbers: dict, intervals: dict) -> "LayerStats":
        """These statistics with catalog numbers measured apart (on the pictured images: sanity.py,
        faithfulness.py)."""
        from dataclasses import replace

        return replace(self, numbers={**self.numbers, **numbers}, intervals={**self.intervals, **intervals})


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
    total = fold_total(acc.folds, drop)
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
    localised = float(part["localised"])
    by_image = fold_total(acc.class_folds, drop)
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
        "cam_mass_focus": float(part["cam_mass"]) / localised if localised else float("nan"),
        "cam_rank_focus": float(part["cam_rank"]) / localised if localised else float("nan"),
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


def mean_defined(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")
