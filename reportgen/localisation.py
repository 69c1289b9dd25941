"""Does a layer's Grad-CAM point at the focus class? Relevance mass and rank accuracy, and their baselines.

For one image with a mask (class k stored as k + 1; pixels of no class are left out of both sides):
- relevance mass accuracy: the share of the map's positive mass that lies on the focus class's pixels;
- relevance rank accuracy: the share of the map's top-k pixels on them, k the focus class's area.
  Pixels tied at the k-th value (a ReLU'd map has many zeros) count by their expected share, as if
  the ties were broken at random, so the number does not depend on an arbitrary order.
(Arras, Osman and Samek, "CLEVR-XAI", Information Fusion 2022.) The map is upsampled to the mask's
size bilinearly, as the layer page draws it over the image.

Two baselines on the same images say what the numbers are worth: a uniform map, whose mass and rank
accuracy are both the focus class's area share, and the image's own edges (Sobel magnitude of its
luminance). A layer whose map localises no better than the edges says little about the model.
Every mean comes with the delete-one-fold jackknife over the statistics images' folds
(`linear_probes.FoldRatio`), as every other statistic does.
"""

from __future__ import annotations

import numpy as np

from reportgen.linear_probes import FoldRatio

BASELINES = ("uniform", "edges_mass", "edges_rank")  # the baselines' rows in `Baselines.sums`


def upsampled(cam: np.ndarray, height: int, width: int) -> np.ndarray:
    """An h x w map at height x width, bilinear (what the layer page shows over the image)."""
    cam = np.nan_to_num(np.asarray(cam, np.float32))
    if cam.shape == (height, width):
        return cam
    from PIL import Image

    return np.asarray(Image.fromarray(cam, mode="F").resize((width, height), Image.Resampling.BILINEAR))


def scored_pixels(mask: np.ndarray, classes: int, focus: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(pixels of any class, focus pixels among them) of one mask, or None where the focus class is absent
    or covers every scored pixel (then every map localises perfectly and nothing is measured)."""
    valid = (mask >= 1) & (mask <= classes)
    inside = valid & (mask == focus + 1)
    area = int(inside.sum())
    if area == 0 or area == int(valid.sum()):
        return None
    return valid, inside


def mass_accuracy(relevance: np.ndarray, valid: np.ndarray, inside: np.ndarray) -> float:
    """Positive relevance on the focus pixels over positive relevance on every scored pixel; NaN without any."""
    positive = np.maximum(relevance, 0.0)
    total = float(positive[valid].sum(dtype=np.float64))
    return float(positive[inside].sum(dtype=np.float64)) / total if total > 0 else float("nan")


def rank_accuracy(relevance: np.ndarray, valid: np.ndarray, inside: np.ndarray) -> float:
    """The expected share of the top-k scored pixels on the focus, k = the focus area, ties broken at random."""
    values = relevance[valid].astype(np.float64)
    on_focus = inside[valid]
    k = int(on_focus.sum())
    threshold = np.partition(values, values.size - k)[values.size - k]  # the k-th largest value
    above = values > threshold
    tied = values == threshold
    hits = float(np.count_nonzero(above & on_focus))
    remaining = k - int(np.count_nonzero(above))
    hits += remaining * np.count_nonzero(tied & on_focus) / np.count_nonzero(tied)
    return hits / k


def edge_map(image: np.ndarray) -> np.ndarray:
    """H x W Sobel gradient magnitude of an H x W (x C) image's luminance (the channels' mean)."""
    from skimage.filters import sobel

    gray = np.asarray(image, np.float64)
    if gray.ndim == 3:
        gray = gray.mean(axis=-1)
    return sobel(gray)


class Baselines:
    """The baselines' per-image values summed per fold: mean uniform accuracy (the focus area share),
    and the edge map's mass and rank accuracy, each with its jackknife interval; mergeable."""

    def __init__(self, folds: int, sums: FoldRatio | None = None):
        self.sums = sums if sums is not None else FoldRatio(folds, classes=len(BASELINES))

    def add(self, image: np.ndarray, mask: np.ndarray, fold: int, classes: int, focus: int) -> None:
        pixels = scored_pixels(mask, classes, focus)
        if pixels is None:
            return
        valid, inside = pixels
        edges = edge_map(image)
        values = (float(inside.sum()) / float(valid.sum()), mass_accuracy(edges, valid, inside),
                  rank_accuracy(edges, valid, inside))
        for row, value in enumerate(values):
            if np.isfinite(value):
                self.sums.numerator[fold, row] += value
                self.sums.denominator[fold, row] += 1.0

    def merge(self, other: "Baselines") -> "Baselines":
        return Baselines(self.sums.folds, self.sums.merge(other.sums))

    @property
    def images(self) -> int:
        return int(self.sums.denominator[:, 0].sum())

    def summary(self) -> dict:
        """name -> {"value", "interval"} over the images scored."""
        means = self.sums.ratio()
        return {name: {"value": float(means[row]), "interval": [float(v) for v in self.sums.class_interval(row)]}
                for row, name in enumerate(BASELINES)}


def layer_scores(cams: np.ndarray, masks: np.ndarray, classes: int, focus: int) -> np.ndarray:
    """N x 2 (mass accuracy, rank accuracy) of N images' h x w Grad-CAM maps against their masks;
    NaN rows where the image has no focus pixels to score or the map no positive mass."""
    found = np.full((len(cams), 2), np.nan)
    for i, (cam, mask) in enumerate(zip(cams, masks)):
        pixels = scored_pixels(mask, classes, focus)
        if pixels is None:
            continue
        relevance = upsampled(cam, *mask.shape)
        mass = mass_accuracy(relevance, *pixels)
        if np.isfinite(mass):
            found[i] = mass, rank_accuracy(relevance, *pixels)
    return found
