"""Is a layer's Grad-CAM faithful to the model? Remove the pixels it ranks highest, and the lowest, and
watch the target (the pixel-perturbation test of Samek et al., IEEE TNNLS 2017, as ROAD runs it:
Rong et al., ICML 2022).

For each image and each layer's map, upsampled to the image as the page draws it, the pixels are
ranked by relevance (ties by position). At each fraction f of FRACTIONS the top f of them (MoRF, most
relevant first) or the bottom f (LeRF, least relevant first) are replaced by the image blurred with a
Gaussian of BLUR_SIGMA times its shorter side, and the model runs again. The target y is the one
Grad-CAM explains (attribution.Target: log-odds). A faithful map's MoRF curve falls fast and its LeRF
curve stays: the score is the area between them, the mean over f in [0, max f] of y_LeRF(f) - y_MoRF(f)
by the trapezoid rule, in the units of y; larger is more faithful. The same for two baselines on the
same images: a random ranking (seeded by the image) and the image's own edges (localisation.edge_map).

A blur, not zeros or the mean, because a constant patch is an input unlike any the model was trained
on, and the model's answer to that would be scored; the blur keeps the image's colours and coarse
layout, so what is removed is the detail the ranking points at. Costs 2 x len(FRACTIONS) forward
passes per image and map: opt-in, `--faithfulness-images`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reportgen.catalog import ANY
from reportgen.intervals import mean_with_interval
from reportgen.localisation import edge_map, upsampled

FRACTIONS = (0.05, 0.1, 0.2, 0.4)
BLUR_SIGMA = 0.1  # of the image's shorter side
IMPUTATION = f"a Gaussian blur of the image (sigma {BLUR_SIGMA:g} of its shorter side)"
BASELINES = ("random", "edges")


def ranking(relevance: np.ndarray) -> np.ndarray:
    """Pixel indices (row-major), most relevant first; ties in position order."""
    return np.argsort(-np.asarray(relevance, np.float64).ravel(), kind="stable")


def blurred(image: np.ndarray) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    sigma = BLUR_SIGMA * min(image.shape[:2])
    image = np.asarray(image, np.float32)
    return gaussian_filter(image, sigma=(sigma, sigma, 0) if image.ndim == 3 else sigma, mode="reflect")


def perturbed(image: np.ndarray, fill: np.ndarray, order: np.ndarray) -> np.ndarray:
    """2 x len(FRACTIONS) images: MoRF at each fraction, then LeRF, the removed pixels taken from `fill`."""
    height, width = image.shape[:2]
    pixels = height * width
    found = []
    for most in (True, False):
        for fraction in FRACTIONS:
            count = int(round(fraction * pixels))
            chosen = order[:count] if most else order[pixels - count:]
            changed = np.array(image, np.float32).reshape(pixels, -1)
            changed[chosen] = fill.reshape(pixels, -1)[chosen]
            found.append(changed.reshape(image.shape))
    return np.stack(found)


def area_between(y0: float, scores: np.ndarray) -> float:
    """Mean over f in [0, max f] of LeRF - MoRF, trapezoid rule; `scores` as `perturbed` orders them."""
    steps = len(FRACTIONS)
    fractions = np.array((0.0, *FRACTIONS))
    morf = np.array((y0, *scores[:steps]))
    lerf = np.array((y0, *scores[steps:]))
    gap = lerf - morf
    return float(np.sum((gap[1:] + gap[:-1]) / 2 * np.diff(fractions)) / fractions[-1])


@dataclass(frozen=True)
class Faithfulness:
    """Per layer (plan order): the score per image, and the mean curves; the baselines the same way."""

    scores: np.ndarray  # L x N: area between LeRF and MoRF (NaN: the layer has no map)
    curves: np.ndarray  # L x 2 x len(FRACTIONS): mean MoRF and LeRF y
    baselines: dict  # name -> N scores
    baseline_curves: dict  # name -> 2 x len(FRACTIONS)
    y0: np.ndarray  # N: the target on each unchanged image
    forward_passes: int  # images run through the model

    @staticmethod
    def summary(values: np.ndarray) -> tuple[float, tuple[float, float]]:
        """The mean over images with its delete-one-image jackknife interval."""
        return mean_with_interval(values, ANY)


def measure(target_of, images: np.ndarray, cams: list, attributed: list[bool], batch: int = 40) -> Faithfulness:
    """`target_of(images)` is y for a stack of 0-255 images (the model's own preprocessing applied);
    `cams` each layer's N Grad-CAM maps of `images` (N x H x W x C); `attributed`: whether a layer has one."""
    count, (height, width) = len(images), images.shape[1:3]
    fills = [blurred(image) for image in images]
    y0 = np.asarray(target_of(images.astype(np.float32)), np.float64)
    passes = count

    def run(order_of) -> tuple[np.ndarray, np.ndarray]:
        nonlocal passes
        variants = np.concatenate([perturbed(images[i], fills[i], order_of(i)) for i in range(count)])
        y = np.concatenate([np.asarray(target_of(variants[s:s + batch]), np.float64)
                            for s in range(0, len(variants), batch)]).reshape(count, -1)
        passes += len(variants)
        return np.array([area_between(y0[i], y[i]) for i in range(count)]), y

    steps = len(FRACTIONS)
    scores = np.full((len(cams), count), np.nan)
    curves = np.full((len(cams), 2, steps), np.nan)
    for layer, maps in enumerate(cams):
        if not attributed[layer] or np.asarray(maps).shape[1:] == (1, 1):
            continue
        scores[layer], y = run(lambda i: ranking(upsampled(maps[i], height, width)))
        curves[layer] = y.reshape(count, 2, steps).mean(axis=0)
    baselines, baseline_curves = {}, {}
    for name, order_of in (("random", lambda i: np.random.default_rng(i).permutation(height * width)),
                           ("edges", lambda i: ranking(edge_map(images[i])))):
        baselines[name], y = run(order_of)
        baseline_curves[name] = y.reshape(count, 2, steps).mean(axis=0)
    return Faithfulness(scores, curves, baselines, baseline_curves, y0, passes)


def target_function(model, target, convention, image_index: int):
    """y of a stack of 0-255 images, as Grad-CAM's target defines it, the build's input convention applied."""
    import keras

    from reportgen import capture

    def target_of(images: np.ndarray) -> np.ndarray:
        feeds = capture.model_feeds(model, convention.apply(np.asarray(images, np.float32)), image_index)
        found = model(feeds if len(feeds) > 1 else feeds[0], training=False)
        output = found[target.output] if isinstance(found, (list, tuple)) else found
        return keras.ops.convert_to_numpy(target.scores(output))

    return target_of


def numbers(found: Faithfulness) -> tuple[list[dict], list[dict]]:
    """Per layer, the catalog's `faithfulness` and its interval."""
    values, spans = [], []
    for scores in found.scores:
        value, interval = found.summary(scores)
        values.append({"faithfulness": value})
        spans.append({"faithfulness": interval})
    return values, spans


def record(found: Faithfulness) -> dict:
    """The test as plain data (stats.json's `faithfulness`, the pages): fractions, imputation, the
    baselines as [value, low, high], and each layer's mean MoRF and LeRF curves."""
    def plain(values):
        return [None if not np.isfinite(v) else round(float(v), 4) for v in np.ravel(values)]

    def summary(values):
        value, (low, high) = found.summary(values)
        return plain([value, low, high])

    steps = len(FRACTIONS)
    return {"fractions": list(FRACTIONS), "imputation": IMPUTATION, "images": int(len(found.y0)),
            "forward_passes": found.forward_passes, "y0": plain([np.mean(found.y0)])[0],
            "baselines": {name: summary(scores) for name, scores in found.baselines.items()},
            "baseline_curves": {name: {"morf": plain(c[0]), "lerf": plain(c[1])}
                                for name, c in found.baseline_curves.items()},
            "curves": [{"morf": plain(c[0]), "lerf": plain(c[1])} if np.isfinite(c).all() else None
                       for c in found.curves.reshape(-1, 2, steps)]}
