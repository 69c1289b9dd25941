"""Grad-CAM localisation: relevance mass and rank accuracy against closed forms, rank ties against every
way of breaking them, and the baselines on images whose answer is known."""

import itertools

import numpy as np
import pytest

from reportgen.localisation import Baselines, layer_scores, mass_accuracy, rank_accuracy, scored_pixels


def _square_mask(size=12, top=3, side=5, ignore_row=None):
    """Class 1 (the focus) in a square, class 2 elsewhere; an optional row of no class (0)."""
    mask = np.full((size, size), 2, np.uint8)
    mask[top:top + side, top:top + side] = 1
    if ignore_row is not None:
        mask[ignore_row] = 0
    return mask


def test_mass_accuracy_is_the_share_of_positive_mass_on_the_focus():
    mask = _square_mask(ignore_row=11)
    valid, inside = scored_pixels(mask, classes=2, focus=0)
    relevance = np.where(mask == 1, 3.0, 1.0)
    relevance[0, 0] = -50.0  # negative relevance is no evidence: it counts nowhere
    relevance[11] = 100.0  # pixels of no class are not scored
    area, outside = 25, 144 - 25 - 12 - 1
    assert mass_accuracy(relevance, valid, inside) == pytest.approx(3 * area / (3 * area + outside))
    assert np.isnan(mass_accuracy(np.zeros_like(relevance), valid, inside))


def test_rank_accuracy_counts_ties_by_their_expected_share():
    """Every ordering of the tied pixels, enumerated: the mean share of the top-k on the focus."""
    relevance = np.array([5.0, 2.0, 2.0, 2.0, 2.0, 0.0, 0.0])
    inside = np.array([False, True, True, False, False, True, False])
    valid = np.ones(7, bool)
    k = int(inside.sum())
    shares = []
    for order in itertools.permutations(range(7)):
        rank = np.lexsort((np.asarray(order), -relevance))  # ties broken by this ordering
        shares.append(inside[rank[:k]].mean())
    assert rank_accuracy(relevance, valid, inside) == pytest.approx(np.mean(shares))
    assert rank_accuracy(np.where(inside, 1.0, 0.0), valid, inside) == 1.0
    assert rank_accuracy(np.zeros(7), valid, inside) == pytest.approx(k / 7)  # all tied: the area share


def test_a_map_on_the_focus_scores_one_and_one_beside_it_zero():
    mask = _square_mask()
    on = np.where(mask == 1, 1.0, 0.0)[None]
    off = np.where(mask == 2, 1.0, 0.0)[None]
    np.testing.assert_allclose(layer_scores(on, mask[None], 2, 0), [[1.0, 1.0]])
    np.testing.assert_allclose(layer_scores(off, mask[None], 2, 0), [[0.0, 0.0]])


def test_a_coarse_map_is_upsampled_to_the_mask_as_the_page_draws_it():
    """A 2 x 2 map whose top-left cell is the 6 x 6 focus: bilinear upsampling spreads a little mass
    past the square's edge, so mass accuracy is below 1 and above the area share."""
    mask = np.full((12, 12), 2, np.uint8)
    mask[:6, :6] = 1
    cam = np.array([[1.0, 0.0], [0.0, 0.0]], np.float32)
    mass, rank = layer_scores(cam[None], mask[None], 2, 0)[0]
    assert 0.25 < mass < 1.0 and rank > 0.9


def test_images_without_the_focus_class_are_not_scored():
    mask = np.full((1, 8, 8), 2, np.uint8)
    assert np.isnan(layer_scores(np.ones((1, 4, 4)), mask, 2, 0)).all()


def test_baselines_uniform_is_the_area_share_and_edges_of_a_square_fall_on_its_border():
    """A bright square on black, the focus the square grown by two pixels: every Sobel response lies
    within a pixel of the square's outline, so all the edge map's mass is on the focus; its top-100
    pixels are its E edge pixels and 100 - E of the tied zeros, a share (100 - E) / (256 - E) of them
    on the focus."""
    from skimage.filters import sobel

    image = np.zeros((16, 16, 3), np.uint8)
    image[5:11, 5:11] = 200
    mask = np.full((16, 16), 2, np.uint8)
    mask[3:13, 3:13] = 1
    baselines = Baselines(folds=2)
    baselines.add(image, mask, 0, classes=2, focus=0)
    baselines.add(image, mask, 1, classes=2, focus=0)
    summary = baselines.summary()
    assert summary["uniform"]["value"] == pytest.approx(100 / 256)
    assert summary["edges_mass"]["value"] == pytest.approx(1.0)
    edges = int(np.count_nonzero(sobel(image.mean(axis=-1)) > 0))
    assert 40 < edges < 100
    expected_rank = (edges + (100 - edges) ** 2 / (256 - edges)) / 100
    assert summary["edges_rank"]["value"] == pytest.approx(expected_rank)
    merged = Baselines(2).merge(baselines)
    assert merged.images == 2 and merged.summary()["uniform"]["value"] == pytest.approx(100 / 256)
