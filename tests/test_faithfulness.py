"""The pixel-removal test of Grad-CAM's faithfulness: the area between the curves in closed form, the
removed pixels exactly the ranked ones, and on a target whose answer is known, a map of what it reads
scores above a random ranking, which scores above a map of what it ignores."""

import numpy as np
import pytest

from reportgen import faithfulness
from reportgen.faithfulness import FRACTIONS, area_between, perturbed, ranking


def test_the_area_between_the_curves_by_the_trapezoid_rule():
    steps = len(FRACTIONS)
    # MoRF drops to 0 at the first fraction and LeRF stays at 1: the gap is 0 at f = 0 and 1 after.
    scores = np.array([0.0] * steps + [1.0] * steps)
    expected = (FRACTIONS[0] / 2 + (FRACTIONS[-1] - FRACTIONS[0])) / FRACTIONS[-1]
    assert area_between(1.0, scores) == pytest.approx(expected)
    assert area_between(1.0, np.ones(2 * steps)) == 0.0  # nothing changes: no faithfulness
    assert area_between(1.0, np.array([1.0] * steps + [0.0] * steps)) == pytest.approx(-expected)


def test_morf_removes_the_top_ranked_pixels_and_lerf_the_bottom():
    image = np.arange(100, dtype=np.float32).reshape(10, 10, 1)
    relevance = image[..., 0]  # the larger the value, the more relevant
    fill = np.full_like(image, -1.0)
    variants = perturbed(image, fill, ranking(relevance))
    for k, fraction in enumerate(FRACTIONS):
        count = int(round(fraction * 100))
        morf, lerf = variants[k, ..., 0], variants[len(FRACTIONS) + k, ..., 0]
        assert set(np.flatnonzero(morf.ravel() == -1)) == set(range(100 - count, 100))
        assert set(np.flatnonzero(lerf.ravel() == -1)) == set(range(count))


def test_a_map_of_what_the_target_reads_is_faithful_and_its_opposite_is_not():
    """y is the mean brightness of a 12 x 12 square: removing its pixels first (MoRF of its own map)
    lowers y at once, while LeRF of that map leaves y exactly as it was until the square is reached."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 60, (3, 32, 32, 3)).astype(np.uint8)
    images[:, 10:22, 10:22] = 250
    square = np.zeros((32, 32), bool)
    square[10:22, 10:22] = True

    def target_of(batch):
        return np.asarray(batch, np.float64)[:, square].mean(axis=(1, 2))

    on = [np.where(square, 1.0, 0.0)[None].repeat(3, axis=0).astype(np.float32)]
    off = [np.where(square, 0.0, 1.0)[None].repeat(3, axis=0).astype(np.float32)]
    found = faithfulness.measure(target_of, images, on + off, [True, True])
    faithful, opposite = found.scores.mean(axis=1)
    random = found.baselines["random"].mean()
    assert faithful > random > opposite
    assert faithful > 0 > opposite
    np.testing.assert_allclose(found.y0, 250.0)
    lerf = found.curves[0, 1]
    outside = (32 * 32 - 144) / (32 * 32)  # LeRF reaches the square only past this fraction
    assert all(value == pytest.approx(250.0) for f, value in zip(FRACTIONS, lerf) if f <= outside)
    passes = 3 + 3 * 2 * len(FRACTIONS) * 4  # the images, then 8 variants each for 2 maps and 2 baselines
    assert found.forward_passes == passes
