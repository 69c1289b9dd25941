"""The statistics against independent references on varied configurations: scikit-learn's ridge
with the same folds, CKA and HSIC written out from their formulas, and the intervals' coverage of
a known true value. No TensorFlow: the accumulators are fed as every driver feeds them (`feed`)."""

import numpy as np
import pytest
from sklearn_reference import held_out_predictions

from reportgen import stats
from reportgen.catalog import UNIT
from reportgen.cka import MinibatchCKA
from reportgen.intervals import jackknife_interval
from reportgen.linear_probes import ProbeScores, probe_predict
from reportgen.mask_classes import mask_onehot
from reportgen.targets import Targets, assign_folds, feed, mask_truth, score_image


def _class_images(rng, labels, channels=6, size=3):
    """Each image's channel means code its class weakly, under noise: a probe that is far from perfect."""
    classes = int(labels.max()) + 1
    codes = rng.normal(size=(classes, channels))
    maps = rng.normal(size=(len(labels), size, size, channels)) + 0.3 * codes[labels][:, None, None, :]
    return maps.astype(np.float32)


@pytest.mark.parametrize("classes, per_class", [(2, 7), (3, 5), (10, 4), (37, 3), (100, 2)])
def test_class_probe_equals_scikit_learn_ridge_with_the_same_folds(classes, per_class):
    rng = np.random.default_rng(classes)
    count = classes * per_class + classes // 3  # unequal classes, and folds of unequal size
    labels = np.concatenate([np.arange(classes), rng.integers(0, classes, count - classes)])
    rng.shuffle(labels)  # any order of the source
    ids = [f"class_{label}/img_{rng.integers(1 << 30)}_{i}.png" for i, label in enumerate(labels)]
    targets = Targets.decide(ids, list(labels))
    maps = _class_images(rng, labels)
    accumulator = targets.accumulator(maps.shape[1:], 3)
    order = rng.permutation(count)  # images arrive in any order and any batches
    for chunk in np.array_split(order, 7):
        feed(accumulator, maps[chunk], chunk, targets, None, spatial=True)
    final = stats.finalise(accumulator)

    pooled = maps.reshape(count, -1, maps.shape[-1]).mean(axis=1).astype(np.float64)
    reference = held_out_predictions(pooled, np.eye(classes)[labels], targets.folds).argmax(axis=1)
    ours = np.array([probe_predict(final.class_probe_weights, pooled[i:i + 1], int(targets.folds[i]))[0]
                     for i in range(count)])
    assert np.mean(ours == reference) >= 0.99  # float32 solves may flip a near tie
    assert 0.1 < np.mean(reference == labels) < 1.0  # a probe with something to get wrong

    scores = ProbeScores(targets.fold_count, [], final.class_probe_weights, 3)
    for i in range(count):
        score_image(scores, maps[i], i, targets, None)
    assert scores.classes.denominator.sum() == count
    assert scores.classes.ratio()[0] == pytest.approx(np.mean(ours == labels))


def test_mask_probe_equals_scikit_learn_ridge_on_the_pooled_pixels():
    rng = np.random.default_rng(5)
    count, size, channels = 23, 8, 5
    trimaps = rng.integers(1, 4, (count, size, size)).astype(np.uint8)
    onehot = mask_onehot(trimaps, size, size, 3)
    maps = (rng.normal(size=(count, size, size, channels)) + 0.8 * onehot @ rng.normal(size=(3, channels)))
    maps = maps.astype(np.float32)
    targets = Targets.decide([f"pet_{i}.jpg" for i in range(count)], trimaps_given=True)
    accumulator = targets.accumulator(maps.shape[1:], size)
    feed(accumulator, maps, np.arange(count), targets, trimaps, spatial=True)
    final = stats.finalise(accumulator)

    rows = maps.reshape(-1, channels).astype(np.float64)
    row_folds = np.repeat(targets.folds, size * size)
    reference = held_out_predictions(rows, onehot.reshape(-1, 3), row_folds)
    for fold in range(targets.fold_count):  # the balanced decision: each class past its training share
        prior = onehot.reshape(-1, 3)[row_folds != fold].mean(axis=0)
        reference[row_folds == fold] -= prior
    reference = reference.argmax(axis=1).reshape(count, size, size)
    ours = np.stack([probe_predict(final.probe_weights, maps[i], int(targets.folds[i]), balanced=True)
                     for i in range(count)])
    assert np.mean(ours == reference) >= 0.995

    scores = ProbeScores(targets.fold_count, final.probe_weights, [], 3)
    for i in range(count):
        score_image(scores, maps[i], i, targets, mask_truth(trimaps[i], targets))
    truth = trimaps - 1
    expected = np.sum((ours == 0) & (truth == 0)) / np.sum((ours == 0) | (truth == 0))
    assert scores.mask.ratio()[0] == pytest.approx(expected)


@pytest.mark.parametrize("classes", [2, 3, 10, 37, 100])
def test_no_order_and_no_count_of_classes_puts_a_class_in_one_fold(classes):
    rng = np.random.default_rng(classes)
    count = max(40, 3 * classes)
    labels = [i % classes for i in range(count)]  # class folders taken round-robin, as the source does
    ids = [f"c{label}/{i}.jpg" for i, label in enumerate(labels)]
    folds = assign_folds(ids, labels, 10)
    for cls in range(classes):
        members = [i for i in range(count) if labels[i] == cls]
        assert len(set(folds[members])) == min(len(members), 10)
    sizes = np.bincount(folds, minlength=10)
    assert sizes.max() - sizes.min() <= 1
    permutation = rng.permutation(count)  # the same images in another order: the same folds
    again = assign_folds([ids[i] for i in permutation], [labels[i] for i in permutation], 10)
    np.testing.assert_array_equal(again, folds[permutation])


def test_cka_with_the_mask_equals_the_formula():
    rng = np.random.default_rng(3)
    count, size, channels = 12, 40, 4  # pooled to the 20 x 20 probe grid
    trimaps = rng.integers(1, 4, (count, size, size)).astype(np.uint8)
    maps = rng.normal(size=(count, size, size, channels)).astype(np.float32)
    maps[..., 0] += (trimaps == 1)
    targets = Targets.decide([str(i) for i in range(count)], trimaps_given=True)
    accumulator = targets.accumulator(maps.shape[1:], 8)
    feed(accumulator, maps, np.arange(count), targets, trimaps, spatial=True)

    x = maps.reshape(count, 20, 2, 20, 2, channels).mean(axis=(2, 4)).reshape(-1, channels).astype(np.float64)
    onehot = np.stack([trimaps == k for k in (1, 2, 3)], axis=-1).astype(np.float64)
    y = onehot.reshape(count, 20, 2, 20, 2, 3).mean(axis=(2, 4)).reshape(-1, 3)
    x, y = x - x.mean(axis=0), y - y.mean(axis=0)
    expected = np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))
    assert stats.finalise(accumulator).cka_mask == pytest.approx(expected, rel=1e-6)


def _hsic_by_the_sums(k, l):
    """Song et al. (2012), eq. 5, term by term with plain loops over i != j."""
    n = len(k)
    kt, lt = k.copy(), l.copy()
    np.fill_diagonal(kt, 0)
    np.fill_diagonal(lt, 0)
    trace = sum(kt[i, j] * lt[j, i] for i in range(n) for j in range(n))
    both = kt.sum() * lt.sum() / ((n - 1) * (n - 2))
    cross = sum(kt[i, :] @ lt[:, j] for i in range(n) for j in range(n))
    return (trace + both - 2 * cross / (n - 2)) / (n * (n - 3))


def test_minibatch_cka_equals_the_unbiased_hsic_written_out():
    rng = np.random.default_rng(4)
    layers = [rng.normal(size=(2, 5, 5, c)).astype(np.float32) for c in (3, 6)]
    layers[1][..., :3] += 2 * layers[0]
    second = [rng.normal(size=(2, 5, 5, c)).astype(np.float32) for c in (3, 6)]
    cka = MinibatchCKA(2)
    cka.add(layers)
    cka.add(second)
    sums = np.zeros((2, 2))
    for batch in (layers, second):
        grams = [m.reshape(-1, m.shape[-1]).astype(np.float64) @ m.reshape(-1, m.shape[-1]).T.astype(np.float64)
                 for m in batch]
        sums += [[_hsic_by_the_sums(a, b) for b in grams] for a in grams]
    expected = sums[0, 1] / np.sqrt(sums[0, 0] * sums[1, 1])
    assert cka.finalise()[0, 1] == pytest.approx(expected, rel=1e-6)


def _coverage(statistic: str, truth: float, draw, runs: int = 200, images: int = 30) -> float:
    rng = np.random.default_rng(11)
    covered = 0
    for _ in range(runs):
        maps = draw(rng, images)
        targets = Targets.decide([f"{rng.integers(1 << 40)}" for _ in range(images)])
        accumulator = targets.accumulator(maps.shape[1:], 1)
        feed(accumulator, maps, np.arange(images), targets, None, spatial=True)
        low, high = stats.finalise(accumulator).interval(statistic)
        covered += low <= truth <= high
    return covered / runs


def test_intervals_cover_a_known_mean_nine_times_in_ten():
    """Each image's maps share a random offset (images differ, pixels of one image do not): the
    interval must carry the spread between images, not between pixels."""
    def draw(rng, n):
        offset = rng.normal(0.0, 1.0, size=(n, 1, 1, 1))
        return (2.0 + offset + 0.5 * rng.normal(size=(n, 4, 4, 2))).astype(np.float32)

    assert 0.85 <= _coverage("mean", 2.0, draw) <= 0.95


def test_intervals_cover_a_known_share_and_stay_in_its_range():
    """The near-zero share of maps that are exactly 0 with a per-image probability around 0.2."""
    def draw(rng, n):
        share = rng.beta(2, 8, size=(n, 1, 1, 1))  # mean 0.2
        return np.where(rng.random((n, 4, 4, 2)) < share, 0.0, 1.0 + rng.random((n, 4, 4, 2))).astype(np.float32)

    assert 0.85 <= _coverage("near_zero_fraction", 0.2, draw) <= 0.95
    bounded = jackknife_interval(0.7, [0.2, 0.99, 0.95, 0.99, 0.6, 0.9], bounds=UNIT)
    plain = jackknife_interval(0.7, [0.2, 0.99, 0.95, 0.99, 0.6, 0.9])
    assert plain[1] > 1.0 and 0.0 <= bounded[0] < 0.7 < bounded[1] <= 1.0
