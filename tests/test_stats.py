"""Each statistic against what can be known independently (STATS.md)."""

import numpy as np
import pytest

from reportgen import casts, stats
from reportgen.catalog import EXAMPLES, MAX_FOLDS, POOL_GRID, TOP_IMPORTANT, UNIT
from reportgen.channel_examples import ChannelTopK
from reportgen.cka import MinibatchCKA, linear_cka, unbiased_hsic
from reportgen.intervals import jackknife_interval, wilson_interval
from reportgen.linear_probes import FoldRatio, chance_accuracy, pool_to, probe_predict
from reportgen.mask_classes import grid_truth, mask_onehot


@pytest.fixture()
def rng():
    return np.random.default_rng(0)


def test_cka_is_one_for_itself_and_symmetric(rng):
    x = rng.normal(size=(200, 12))
    y = rng.normal(size=(200, 5))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x))
    assert 0.0 <= linear_cka(x, y) <= 1.0


def test_cka_is_invariant_to_rotation_and_isotropic_scaling(rng):
    x = rng.normal(size=(300, 8))
    y = x @ rng.normal(size=(8, 4)) + 0.5 * rng.normal(size=(300, 4))
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    base = linear_cka(x, y)
    assert linear_cka(x @ q, y) == pytest.approx(base, rel=1e-9)
    assert linear_cka(7.5 * x, y) == pytest.approx(base, rel=1e-9)


def test_cka_of_a_constant_is_undefined():
    assert np.isnan(linear_cka(np.ones((50, 3)), np.random.default_rng(1).normal(size=(50, 2))))


def _blob_trimaps(n, size, rng):
    trimaps = np.full((n, size, size), 2, np.uint8)
    for i in range(n):
        r = rng.integers(size // 5, size // 3)
        cy, cx = rng.integers(r, size - r, size=2)
        yy, xx = np.mgrid[:size, :size]
        trimaps[i][(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 1
    return trimaps


def _folds(indices, total):
    """Image i in fold i mod F: a plain assignment for the accumulators' own tests."""
    return np.asarray(indices) % min(total, MAX_FOLDS)


def _accumulator(channels, stride, total):
    return stats.LayerAccumulator(channels, stride, min(total, MAX_FOLDS))


def _accumulate(maps, trimaps, stride=1.0):
    acc = _accumulator(maps.shape[-1], stride, len(maps))
    acc.add(maps, trimaps, list(range(len(maps))), _folds(range(len(maps)), len(maps)))
    return acc


def _probe_score(acc, maps, trimaps, balanced=True):
    final = stats.finalise(acc)
    folds = min(len(maps), MAX_FOLDS)
    score = FoldRatio(folds, 3)
    for i in range(len(maps)):
        pooled = pool_to(maps[i:i + 1], POOL_GRID)[0]
        truth = grid_truth(trimaps[i:i + 1], *pooled.shape[:2], 3)[0]
        score.add_pixels(probe_predict(final.probe_weights, pooled, i % folds, balanced), truth, i % folds)
    return score


def _probe_iou(acc, maps, trimaps):
    return _probe_score(acc, maps, trimaps).ratio()


def test_probe_scores_the_mask_itself_near_perfect_and_noise_as_chance(rng):
    trimaps = _blob_trimaps(8, 40, rng)
    onehot = mask_onehot(trimaps, 40, 40, 3).astype(np.float32)
    plain = _probe_score(_accumulate(onehot, trimaps), onehot, trimaps, balanced=False).ratio()
    assert plain[0] == pytest.approx(1.0)
    # The balanced rule thresholds the pet at its prior (~0.15), not at 0.5: boundary pixels with a
    # pet share between the two are called pet, and only those.
    assert 0.9 <= _probe_iou(_accumulate(onehot, trimaps), onehot, trimaps)[0] < 1.0
    noise = rng.normal(size=(8, 40, 40, 6)).astype(np.float32)
    assert _probe_iou(_accumulate(noise, trimaps), noise, trimaps)[0] < 0.3


def test_balanced_probe_finds_a_uniquely_coloured_pet_where_argmax_finds_none(rng):
    """A pet whose colour differs a little from a noisy background: the plain argmax of the ridge
    regression almost never calls a pixel pet (the pet's predicted share stays below the
    background's), the class-balanced decision finds it, well above what it scores on colourless noise."""
    def scores(shift):
        generator = np.random.default_rng(1)
        trimaps = _blob_trimaps(10, 40, generator)
        pet = (trimaps == 1)[..., None]
        rgb = (generator.normal(120, 30, size=(10, 40, 40, 3)) + pet * np.array([shift, -shift / 2, shift / 4]))
        rgb = rgb.astype(np.float32)
        acc = _accumulate(rgb, trimaps)
        return (_probe_score(acc, rgb, trimaps, balanced=False).ratio()[0],
                _probe_score(acc, rgb, trimaps).ratio()[0])

    plain, balanced = scores(10.0)
    _, on_noise = scores(0.0)
    assert plain < 0.05
    assert balanced > on_noise + 0.07

def test_uniform_blob_effective_area_equals_its_area():
    maps = np.zeros((1, 40, 40, 1), np.float32)
    maps[0, 10:30, 5:25, 0] = 3.0  # 400 of 1600 pixels
    final = stats.finalise(_accumulate(maps, np.full((1, 40, 40), 2, np.uint8)))
    assert final.effective_area[0] == pytest.approx(0.25)


@pytest.mark.parametrize("size", [20, 40, 80, 160])
def test_ntv_ranks_an_edge_map_above_a_blob_at_every_resolution(size):
    yy, xx = np.mgrid[:size, :size] / size
    blob = np.exp(-((yy - 0.5) ** 2 + (xx - 0.5) ** 2) / 0.05)
    edges = np.sin(xx * size * np.pi / 2) * np.sin(yy * size * np.pi / 2)  # period of 4 map pixels
    maps = np.stack([blob, edges], axis=-1)[None].astype(np.float32)
    stride = 160 / size
    final = stats.finalise(_accumulate(maps, np.full((1, 160, 160), 2, np.uint8), stride))
    assert final.ntv[1] > 3 * final.ntv[0]


def test_merge_equals_the_whole(rng):
    maps = rng.normal(size=(6, 16, 16, 5)).astype(np.float32)
    trimaps = _blob_trimaps(6, 64, rng)
    whole = _accumulator(5, 4.0, 6)
    whole.add(maps, trimaps, list(range(6)), _folds(range(6), 6))
    first, second = _accumulator(5, 4.0, 6), _accumulator(5, 4.0, 6)
    first.add(maps[:2], trimaps[:2], [0, 1], _folds([0, 1], 6))
    second.add(maps[2:], trimaps[2:], [2, 3, 4, 5], _folds([2, 3, 4, 5], 6))
    merged = stats.finalise(first.merge(second))
    direct = stats.finalise(whole)
    for name in ("mean", "std", "near_zero_fraction", "cka_mask", "participation"):
        assert getattr(merged, name) == pytest.approx(getattr(direct, name), rel=1e-6, abs=1e-9)
    for name in ("channel_strength", "ntv", "effective_area", "best_iou"):
        np.testing.assert_allclose(getattr(merged, name), getattr(direct, name), rtol=1e-6)


def test_constant_zero_and_nan_channels_are_undefined_not_zero(rng):
    maps = rng.normal(size=(3, 16, 16, 4)).astype(np.float32)
    maps[..., 0] = 2.0
    maps[..., 1] = 0.0
    maps[..., 2] = np.nan
    final = stats.finalise(_accumulate(maps, _blob_trimaps(3, 16, rng)))
    for channel in (0, 1, 2):
        assert np.isnan(final.ntv[channel])
        assert np.isnan(final.best_iou[0, channel])
    assert np.isnan(final.effective_area[1])
    assert np.isfinite(final.ntv[3])


def test_best_channel_iou_finds_a_mask_channel_in_either_polarity(rng):
    trimaps = _blob_trimaps(4, 32, rng)
    pet = (trimaps == 1).astype(np.float32)
    maps = np.stack([pet, -pet, rng.normal(size=pet.shape)], axis=-1).astype(np.float32)
    final = stats.finalise(_accumulate(maps, trimaps))
    assert final.best_iou[0, 0] == pytest.approx(1.0)
    assert final.best_iou[0, 1] == pytest.approx(1.0)
    assert final.best_iou[0, 2] < 0.5


def test_participation_ratio_of_isotropic_and_rank_one():
    assert stats.participation_ratio(np.eye(10)) == pytest.approx(10.0)
    v = np.ones((10, 1))
    assert stats.participation_ratio(v @ v.T) == pytest.approx(1.0)
    assert np.isnan(stats.participation_ratio(np.zeros((3, 3))))


def _unbiased_hsic_by_definition(k, l):
    """HSIC_1 of Song et al. (2012) term by term: the sum over distinct index quadruples, expanded."""
    n = k.shape[0]
    k, l = k.copy(), l.copy()
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l, 0)
    one = np.ones(n)
    return (np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * one @ k @ l @ one) / (n * (n - 3))


def test_unbiased_hsic_matches_its_definition_for_every_pair(rng):
    features = [rng.normal(size=(12, c)) for c in (3, 5, 2)]
    grams = np.stack([f @ f.T for f in features])
    expected = [[_unbiased_hsic_by_definition(a, b) for b in grams] for a in grams]
    np.testing.assert_allclose(unbiased_hsic(grams), expected, rtol=1e-10)


def test_minibatch_cka_is_one_on_itself_symmetric_and_merges(rng):
    shapes = [(20, 20, 3), (10, 10, 4), (5, 5, 2)]
    maps = [rng.normal(size=(6, *s)).astype(np.float32) for s in shapes]
    # Layer 1 carries layer 0 (area-pooled 2x): related layers score higher than unrelated ones.
    maps[1][..., :3] += 3 * maps[0].reshape(6, 10, 2, 10, 2, 3).mean(axis=(2, 4))
    whole = MinibatchCKA(3)
    for start in (0, 3):
        whole.add([m[start:start + 3] for m in maps])
    left, right = MinibatchCKA(3), MinibatchCKA(3)
    left.add([m[:3] for m in maps])
    right.add([m[3:] for m in maps])
    matrix = whole.finalise()
    np.testing.assert_allclose(left.merge(right).finalise(), matrix, rtol=1e-12)
    np.testing.assert_allclose(np.diag(matrix), 1.0)
    np.testing.assert_allclose(matrix, matrix.T)
    assert matrix[0, 1] > matrix[0, 2] + 0.1 and whole.images == 6


def test_unbiased_cka_does_not_inflate_independent_wide_features(rng):
    """Few rows, many channels, no relation: the biased CKA is far from 0, the minibatch unbiased one is not."""
    acc = MinibatchCKA(2)
    biased = []
    for _ in range(20):
        a = rng.normal(size=(2, 5, 5, 200)).astype(np.float32)  # 50 rows, 200 channels
        b = rng.normal(size=(2, 5, 5, 200)).astype(np.float32)
        acc.add([a, b])
        biased.append(linear_cka(a.reshape(50, -1), b.reshape(50, -1)))
    assert np.mean(biased) > 0.7
    assert acc.finalise()[0, 1] < 0.1


def test_minibatch_cka_of_a_constant_layer_is_undefined(rng):
    acc = MinibatchCKA(2)
    acc.add([rng.normal(size=(2, 5, 5, 3)).astype(np.float32), np.zeros((2, 5, 5, 3), np.float32)])
    matrix = acc.finalise()
    assert matrix[0, 0] == pytest.approx(1.0) and np.isnan(matrix[1, 1]) and np.isnan(matrix[0, 1])


def _class_maps(rng, labels, separable: bool):
    """8 x 8 x 6 maps per image; with `separable` channel 0's mean is the class, else pure noise."""
    maps = rng.normal(size=(len(labels), 8, 8, 6)).astype(np.float32)
    if separable:
        maps[..., 0] += 3.0 * np.asarray(labels, np.float32)[:, None, None]
    return maps


def _class_probe_accuracy(maps, labels):
    """The class probe as the build runs it: accumulate per image, finalise, predict each held-out image."""
    onehot = np.eye(int(max(labels)) + 1, dtype=np.float32)[labels]
    acc = _accumulator(maps.shape[-1], 1.0, len(maps))
    for k in range(len(maps)):
        acc.add(maps[k:k + 1], None, [k], _folds([k], len(maps)), labels=onehot[k:k + 1])
    final = stats.finalise(acc)
    folds = min(len(maps), MAX_FOLDS)
    hits = [probe_predict(final.class_probe_weights, maps[k].reshape(-1, maps.shape[-1]).mean(0, keepdims=True),
                          k % folds)[0] == labels[k] for k in range(len(maps))]
    return float(np.mean(hits)), final


def test_class_probe_decodes_a_class_coded_channel_and_not_noise(rng):
    labels = np.array([0, 1] * 10)
    accuracy, _ = _class_probe_accuracy(_class_maps(rng, labels, True), labels)
    # Standardising puts the five noise channels on the signal's footing; with 18 training images
    # a held-out image may still fall on the wrong side.
    assert accuracy >= 0.9
    noise_accuracy = np.mean([_class_probe_accuracy(_class_maps(np.random.default_rng(s), labels, False), labels)[0]
                              for s in range(10)])
    assert noise_accuracy < 0.7  # chance is 0.5; held-out images keep the probe honest
    assert chance_accuracy(list(labels)) == 0.5


def test_class_cka_equals_linear_cka_of_pooled_features(rng):
    labels = np.array([0, 1, 2] * 5)
    maps = _class_maps(rng, labels, True)
    _, final = _class_probe_accuracy(maps, labels)
    pooled = maps.reshape(len(maps), -1, maps.shape[-1]).mean(axis=1)
    assert final.cka_class == pytest.approx(linear_cka(pooled, np.eye(3)[labels]), rel=1e-5)


def test_mask_free_statistics_are_defined_without_a_mask(rng):
    maps = rng.normal(size=(3, 16, 16, 4)).astype(np.float32)
    acc = _accumulator(4, 2.0, 3)
    acc.add(maps, None, [0, 1, 2], [0, 1, 2])
    final = stats.finalise(acc)
    assert np.isfinite(final.ntv).all() and np.isfinite(final.effective_area).all()
    assert np.isfinite(final.participation)
    assert np.isnan(final.cka_mask) and np.isnan(final.best_iou).all() and final.probe_weights == []
    with_mask = _accumulator(4, 2.0, 3)
    with_mask.add(maps, np.ones((3, 32, 32), np.uint8), [0, 1, 2], [0, 1, 2])
    np.testing.assert_allclose(final.ntv, stats.finalise(with_mask).ntv)  # the mask changes nothing here
    assert final.participation == pytest.approx(stats.finalise(with_mask).participation)


def test_class_sums_merge_like_the_whole(rng):
    labels = np.array([0, 1, 0, 1, 1, 0])
    maps = _class_maps(rng, labels, True)
    onehot = np.eye(int(max(labels)) + 1, dtype=np.float32)[labels]
    whole, left, right = (_accumulator(6, 1.0, 6) for _ in range(3))
    for k in range(6):
        whole.add(maps[k:k + 1], None, [k], [k], labels=onehot[k:k + 1])
        (left if k < 3 else right).add(maps[k:k + 1], None, [k], [k], labels=onehot[k:k + 1])
    merged = stats.finalise(left.merge(right))
    assert merged.cka_class == pytest.approx(stats.finalise(whole).cka_class, rel=1e-9)


def test_labels_need_two_classes_and_every_image():
    from reportgen.targets import Targets

    assert Targets.decide(["a", "b", "c"], [0, 0, 0]).onehot([0, 1]) is None
    assert Targets.decide(["a", "b", "c"], [0, None, 1]).onehot([0, 1]) is None
    np.testing.assert_array_equal(Targets.decide(["a", "b"], [1, 0]).onehot([0, 1]), [[0, 1], [1, 0]])


def test_jackknife_of_a_mean_is_the_t_interval(rng):
    """For the mean of K equal folds the delete-one jackknife's standard error is exactly s / sqrt(K)."""
    from scipy.stats import t

    values = rng.normal(3.0, 2.0, size=10)
    replicates = [(values.sum() - v) / 9 for v in values]
    low, high = jackknife_interval(values.mean(), replicates)
    half = t.ppf(0.95, 9) * values.std(ddof=1) / np.sqrt(10)
    assert (low, high) == pytest.approx((values.mean() - half, values.mean() + half), rel=1e-9)
    assert jackknife_interval(float("nan"), replicates) != jackknife_interval(1.0, replicates)
    assert np.isnan(jackknife_interval(1.0, [1.0])[0])


def test_a_share_on_its_bound_gets_the_plain_jackknife_cut_at_the_bound():
    """One fold holds the only near-zero count of ten: the interval is the plain jackknife's, cut at 0.

    On the logit scale the folds without the count sat at the transform's clip (1e-6), so the
    interval's width measured that clip: (0, 0.88), and (0, 0.003) once a second fold had a count.
    """
    from scipy.stats import t

    share = 1 / 1000
    replicates = np.array([0.0] + [share * 10 / 9] * 9)
    low, high = jackknife_interval(share, replicates, bounds=UNIT)
    half = t.ppf(0.95, 9) * np.sqrt(9 / 10 * np.sum((replicates - replicates.mean()) ** 2))
    assert (low, high) == pytest.approx((0.0, share + half), rel=1e-9)
    # A second fold with a count moves the upper end a little, not by orders of magnitude.
    two_folds = np.array([share / 2 * 10 / 9] * 2 + [share * 10 / 9] * 8)
    assert 0.2 < jackknife_interval(share, two_folds, bounds=UNIT)[1] / high < 5
    assert jackknife_interval(0.0, np.zeros(10), bounds=UNIT) == (0.0, 0.0)


def _stationary(n, seed):
    """Blob images whose channel 0 follows the mask and whose other channels are noise."""
    generator = np.random.default_rng(seed)
    trimaps = _blob_trimaps(n, 40, generator)
    maps = generator.normal(size=(n, 40, 40, 4)).astype(np.float32)
    maps[..., 0] += 0.8 * (trimaps == 1)
    return maps, trimaps


def test_intervals_shrink_as_images_are_added():
    widths = []
    for n in (10, 80):
        maps, trimaps = _stationary(n, 7)
        final = stats.finalise(_accumulate(maps, trimaps))
        low, high = final.interval("cka_mask")
        assert low <= final.cka_mask <= high
        widths.append(high - low)
    assert widths[1] < 0.6 * widths[0]


def test_intervals_are_the_same_however_the_images_are_split():
    maps, trimaps = _stationary(12, 8)
    whole = stats.finalise(_accumulate(maps, trimaps))
    parts = _accumulator(4, 1.0, 12)
    for chunk in (range(0, 5), range(5, 6), range(6, 12)):
        part = _accumulator(4, 1.0, 12)
        part.add(maps[list(chunk)], trimaps[list(chunk)], list(chunk), _folds(chunk, 12))
        parts = parts.merge(part)
    merged = stats.finalise(parts)
    for name in stats.LAYER_NUMBERS:
        np.testing.assert_allclose(merged.interval(name), whole.interval(name), rtol=1e-6, equal_nan=True)


def test_top_examples_are_each_channels_strongest_images_by_brute_force(rng):
    maps = rng.standard_normal((20, 6, 5, 4)).astype(np.float32)
    maps[:, :, :, 3] = 0.0  # a constant channel: every image ties; the lowest indices win
    top = ChannelTopK(4)
    top.add(maps, list(range(20)))
    for channel in range(3):
        peaks = maps[..., channel].reshape(20, -1).max(axis=1)
        expected = np.argsort(-peaks, kind="stable")[:EXAMPLES]
        np.testing.assert_array_equal(top.images[channel], expected)
        np.testing.assert_array_equal(top.values[channel], peaks[expected])
        for slot, image in enumerate(expected):
            row, col = top.rows[channel, slot], top.cols[channel, slot]
            assert maps[image, row, col, channel] == peaks[image]
    np.testing.assert_array_equal(top.images[3], np.arange(EXAMPLES))


def test_top_examples_merge_exactly_in_any_split_and_order(rng):
    maps = np.round(rng.standard_normal((17, 4, 4, 5)), 1).astype(np.float32)  # rounding makes ties
    whole = ChannelTopK(5)
    whole.add(maps, list(range(17)))
    parts = []
    for start, end in ((0, 1), (1, 7), (7, 8), (8, 17)):
        part = ChannelTopK(5)
        part.add(maps[start:end], list(range(start, end)))
        parts.append(part)
    for merged in (parts[0].merge(parts[1]).merge(parts[2].merge(parts[3])),
                   parts[3].merge(parts[2]).merge(parts[1]).merge(parts[0])):
        for name in ("values", "images", "rows", "cols"):
            np.testing.assert_array_equal(getattr(merged, name), getattr(whole, name))


def test_fewer_images_than_examples_leave_empty_slots(rng):
    top = ChannelTopK(2)
    top.add(rng.standard_normal((3, 2, 2, 2)).astype(np.float32), [5, 6, 7])
    assert sorted(top.images[0, :3]) == [5, 6, 7]
    assert (top.images[:, 3:] == -1).all() and np.isneginf(top.values[:, 3:]).all()


def test_wilson_interval_matches_its_closed_form_and_never_collapses():
    z = 1.6448536269514722  # the 95th percentile of the normal: a 90% interval
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and low == pytest.approx(10 / (10 + z * z))  # all right: the lower bound is n / (n + z^2)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(z * z / (10 + z * z))
    low, high = wilson_interval(50, 100)  # symmetric around 0.5, close to the normal interval for large n
    assert (low + high) / 2 == pytest.approx(0.5) and high - low == pytest.approx(2 * z * 0.05 / (1 + z * z / 100)
                                                                                   * np.sqrt(1 + z * z / 100), rel=1e-9)


def test_effective_area_of_the_strongest_channels_is_their_median_area(rng):
    """Ten channels, each a uniform blob of its own area and amplitude on every image: the statistic
    is the median area of the eight of highest spatial std, computed here from the maps directly."""
    n, size, channels = 4, 24, 10
    amplitude = 3.0 ** np.arange(channels)  # each channel far stronger than the last, whatever its area
    maps = np.zeros((n, size, size, channels), np.float32)
    for i in range(n):
        for c in range(channels):
            h, w = rng.integers(3, size, size=2)
            top, left = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
            maps[i, top:top + h, left:left + w, c] = amplitude[c]
    final = stats.finalise(_accumulate(maps, np.full((n, size, size), 2, np.uint8)))
    strength = maps.reshape(n, -1, channels).std(axis=1).mean(axis=0)
    p = np.abs(maps.reshape(n, -1, channels))
    p = p / p.sum(axis=1, keepdims=True)
    entropy = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=1)
    area = (np.exp(entropy) / (size * size)).mean(axis=0)
    strongest = np.argsort(-strength)[:TOP_IMPORTANT]
    assert set(strongest) == set(range(2, channels))
    expected = float(np.median(area[strongest]))
    assert final.value("effective_area_top_median") == pytest.approx(expected, rel=1e-4)  # float32 sums
    # Not the median over every channel: the two weakest are left out.
    assert expected != pytest.approx(float(np.median(area)), rel=1e-6)
    low, high = final.interval("effective_area_top_median")
    assert 0.0 <= low <= expected <= high <= 1.0


def _area_matched_counts_by_brute_force(values, truth):
    """Per class and polarity, over the images: the top-k (bottom-k) pixels of each channel by their
    float16 values, k the class's pixels, ties with the k-th value chosen too; their intersection
    with the class and the union, pixel by pixel."""
    n, h, w, c = values.shape
    k_classes = truth.shape[-1]
    inter, union = np.zeros((2, k_classes, c)), np.zeros((2, k_classes, c))
    for i in range(n):
        flat = values[i].reshape(h * w, c).astype(np.float16).astype(np.float64)
        for cls in range(k_classes):
            member = truth[i].reshape(h * w, k_classes)[:, cls]
            k = int(member.sum())
            if k == 0:
                continue
            for channel in range(c):
                ordered = np.sort(flat[:, channel])
                for polarity, chosen in ((0, flat[:, channel] >= ordered[-k]),
                                         (1, flat[:, channel] <= ordered[k - 1])):
                    inter[polarity, cls, channel] += np.sum(chosen & member)
                    union[polarity, cls, channel] += np.sum(chosen | member)
    return inter, union


def test_channel_iou_counts_equal_a_brute_force_count_with_ties_and_float16_rounding(rng):
    trimaps = _blob_trimaps(4, 16, rng)
    trimaps[:, :2] = 3  # a border class too
    maps = np.round(rng.normal(size=(4, 16, 16, 5)), 1).astype(np.float32)  # many ties
    maps[..., 1] = np.maximum(maps[..., 1], 0.0)  # ReLU zeros: a tie across most of the map
    maps[..., 2] = 1.0 + rng.normal(size=maps.shape[:3]) * 1e-4  # distinct in float32, tied in float16
    maps[..., 3] = -0.0
    maps[0, :, :, 3] = 0.0  # -0 and +0 rank together
    acc = _accumulator(5, 1.0, 1)
    acc.add(maps, trimaps, list(range(4)), np.zeros(4, np.int64))
    truth = np.stack([trimaps == k + 1 for k in range(3)], axis=-1)
    inter, union = _area_matched_counts_by_brute_force(maps, truth)
    np.testing.assert_array_equal(acc.inter[0], inter)
    np.testing.assert_array_equal(acc.union[0], union)
    assert acc.union[0, 1, 0, 2] > truth[..., 0].sum() * 2  # the float16 ties were all chosen


def test_float16_rounding_is_numpys_on_every_kind_of_value(rng):
    tiny = np.float32(2.0 ** -24)
    values = np.concatenate([
        rng.normal(size=100_000).astype(np.float32) * np.float32(10.0) ** rng.integers(-9, 6, 100_000),
        np.array([0.0, -0.0, tiny, tiny / 2, tiny * 1.5, tiny * 2.5, 65504.0, 65519.0, 65520.0, 1e9, -1e9,
                  1.0 + 2.0 ** -11, 1.0 + 3 * 2.0 ** -11, 6.1e-5, 5.96e-8], np.float32)])
    with np.errstate(over="ignore"):
        expected = values.astype(np.float16)
    np.testing.assert_array_equal(casts.as_float16(values).view(np.uint16), expected.view(np.uint16))


def test_float16_widens_to_numpys_float32_on_every_value():
    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).reshape(256, 256)
    widened, expected = casts.as_float32(every), every.astype(np.float32)
    assert widened.dtype == np.float32 and widened.shape == every.shape
    number = ~np.isnan(expected)
    np.testing.assert_array_equal(widened[number].view(np.uint32), expected[number].view(np.uint32))
    assert np.isnan(widened[~number]).all() and (~number).sum() == 2 * 1023


def test_float16_maps_are_measured_as_their_float32_values(rng):
    """The probe gives float16 maps, which the accumulator widens by TensorFlow and ranks by their own bits:
    every sum equals the one of the same values given as float32."""
    trimaps = _blob_trimaps(3, 12, rng)
    stored = (rng.normal(size=(3, 12, 12, 4)) * 3).astype(np.float16)
    stored[..., 1] = np.maximum(stored[..., 1], 0)  # ties at zero
    given16, given32 = _accumulator(4, 1.0, 2), _accumulator(4, 1.0, 2)
    kept16 = given16.add(stored, trimaps, [0, 1, 2], np.array([0, 1, 1]))
    kept32 = given32.add(stored.astype(np.float32), trimaps, [0, 1, 2], np.array([0, 1, 1]))
    for name in ("total", "total_sq", "near_zero", "spatial_std", "tv_num", "tv_den", "area_sum", "inter", "union"):
        np.testing.assert_array_equal(getattr(given16, name), getattr(given32, name), err_msg=name)
    for mine, theirs in zip(kept16, kept32):
        np.testing.assert_array_equal(mine, theirs)
    assert given16.inter.sum() > 0


def test_both_sorts_rank_the_keys_alike(rng):
    keys = stats.order_keys(np.round(rng.normal(size=(7, 999)), 2).astype(np.float32))
    assert stats.sort_kind() in ("quicksort", "stable")
    np.testing.assert_array_equal(np.sort(keys, axis=1, kind="quicksort"), np.sort(keys, axis=1, kind="stable"))


def test_non_finite_maps_are_measured_as_zeros_without_changing_the_callers_array(rng):
    for shape in ((2, 6, 6, 1), (2, 1, 1, 5)):  # one channel, one pixel: the rows a channel are views of the maps
        maps = rng.normal(size=shape).astype(np.float32)
        maps[0].flat[0], maps[1].flat[-1] = np.nan, np.inf
        given = maps.copy()
        acc = _accumulator(shape[-1], 1.0, 2)
        acc.add(maps, None, [0, 1], [0, 1])
        np.testing.assert_array_equal(maps, given)
        clean = np.nan_to_num(given, nan=0.0, posinf=0.0, neginf=0.0)
        np.testing.assert_allclose(acc.total.sum(axis=0), clean.reshape(2, -1, shape[-1]).sum(axis=(0, 1)), rtol=1e-6)
