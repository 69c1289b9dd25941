"""The intervals of the statistics: the delete-one-fold jackknife of any statistic, on the open scale
of its range (`jackknife_interval`), and Wilson's score interval of a proportion (`wilson_interval`).
"""

from __future__ import annotations

import numpy as np

from reportgen.catalog import ANY, INTERVAL_LEVEL


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


def mean_with_interval(values, bounds: tuple[float, float] = ANY) -> tuple[float, tuple[float, float]]:
    """The mean of per-image values (NaN left out) with its delete-one-image jackknife interval: for the
    checks measured on the few pictured images, which have no folds."""
    values = np.asarray(values, np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), (float("nan"), float("nan"))
    whole = float(finite.mean())
    replicates = [float(np.delete(finite, k).mean()) for k in range(finite.size)] if finite.size > 1 else []
    return whole, jackknife_interval(whole, replicates, bounds=bounds)


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
