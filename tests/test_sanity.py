"""The Grad-CAM sanity checks: the cascade's similarities equal a written-out computation on a copy
of the model randomised by hand, the target swap equals Grad-CAM of the background written out, and
the model comes back with its own weights."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers
from scipy.stats import spearmanr

from conftest import measuring_plan
from reportgen import attribution, capture, outputs, sanity
from reportgen.inputs import InputConvention
from reportgen.probe import Probe
from reportgen.sources import SourceImage
from reportgen.targets import Targets


def test_cuts_split_the_convs_into_equal_groups_from_the_head():
    assert sanity.cuts(51, 4) == [50, 33, 17, 0]  # the last conv and the head, then thirds of the rest
    assert sanity.cuts(3, 5) == [2, 1, 0]
    assert [sanity.downstream_step(k, [50, 33, 17, 0]) for k in (50, 49, 33, 32, 0)] == [None, 0, 0, 1, 2]


def test_similarities_are_spearman_and_ssim():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(9, 9)), rng.normal(size=(9, 9))
    assert sanity.rank_correlation(a, b) == pytest.approx(spearmanr(a.ravel(), b.ravel()).statistic)
    assert sanity.rank_correlation(a, 3 * a + 1) == pytest.approx(1.0)
    assert sanity.ssim(a, 2 * a) == pytest.approx(1.0)  # each map scaled to its own peak
    assert np.isnan(sanity.rank_correlation(a, np.zeros_like(a)))
    assert np.isnan(sanity.ssim(np.ones((2, 2)), np.ones((2, 2))))


def _segmenter():
    """Three classes, the pet first (the SD-UNet's order), four convs at 16 and 8 px."""
    keras.utils.set_random_seed(4)
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(6, 3, padding="same", activation="relu", name="a")(inputs)
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="b")(x)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="c")(x)
    x = layers.UpSampling2D(2)(x)
    return keras.Model(inputs, layers.Conv2D(3, 1, activation="softmax", name="head")(x))


def _region_score(channel):
    """Seg-Grad-CAM of class `channel`: its log-odds summed over the pixels predicted that class."""
    def score(output):
        region = tf.cast(tf.equal(tf.argmax(output, axis=-1), channel), tf.float32)
        others = tf.reduce_sum(output, axis=-1) - output[..., channel]
        return tf.reduce_sum(region * (tf.math.log(output[..., channel]) - tf.math.log(others)), axis=(1, 2))
    return score


def _grad_cams(model, names, images, score):
    """Grad-CAM written out: a GradientTape over the named layers' outputs."""
    tapped = keras.Model(model.inputs, [*(model.get_layer(n).output for n in names), model.outputs[0]])
    with tf.GradientTape() as tape:
        *values, output = tapped(tf.constant(images), training=False)
        total = tf.reduce_sum(score(output))
    gradients = tape.gradient(total, values)
    return [np.maximum((g.numpy().mean(axis=(1, 2), keepdims=True) * a.numpy()).sum(axis=-1), 0.0)
            for a, g in zip(values, gradients)]


def _mean_spearman(first, second):
    found = []
    for a, b in zip(first, second):
        if np.ptp(a) > 0 and np.ptp(b) > 0:
            found.append(spearmanr(a.ravel(), b.ravel()).statistic)
    return np.mean(found) if found else np.nan


def test_the_cascade_and_the_swap_equal_grad_cam_written_out(tmp_path):
    model = _segmenter()
    path = tmp_path / "seg.keras"
    model.save(path)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    items = tuple(SourceImage(f"i{k}", image, None, None) for k, image in enumerate(images))
    target = attribution.decide_target(outputs.describe(model, (16, 16)), None, ["softmax"])
    targets = Targets.decide([i.id for i in items], explained=target)
    model, convs, plan = measuring_plan(path, items, targets, InputConvention("tf"), 4)
    probe = Probe(model, convs, plan)
    (_, named), = probe.stream(images, 4)
    original = [np.asarray(m, np.float32) for m in named.cams]
    before = [w.copy() for w in model.get_weights()]

    found = sanity.check(model, convs, probe, images, original, target, outputs.describe(model, (16, 16)), 4,
                         stages=2)

    assert all(np.array_equal(w, b) for w, b in zip(model.get_weights(), before))  # its own weights, back
    (_, again), = probe.stream(images, 4)
    np.testing.assert_allclose(again.cams[0], original[0], rtol=1e-5, atol=1e-6)
    assert found.cuts == [3, 0]  # step 1: the head conv, step 2: everything

    names = [c.name for c in convs]
    scaled = images.astype(np.float32) / 127.5 - 1  # preprocess_input's "tf" mode, as the plan feeds them
    pet = _region_score(0)
    reference_original = _grad_cams(model, names, scaled, pet)
    for layer in range(4):  # the probe's maps are Grad-CAM as written out
        np.testing.assert_allclose(original[layer], reference_original[layer], rtol=1e-4, atol=1e-5)
    for step, cut in enumerate(found.cuts):
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        order = [copy.get_layer(n) for n in ("a", "b", "c", "head")]
        randomised = [op for op in order if names.index(op.name) >= cut]
        seeds = {name: k for k, name in enumerate(["a", "b", "c", "head"])}  # every trainable layer, in graph order
        for op in randomised:
            sanity._randomise(op, seeds[op.name])
        changed = _grad_cams(copy, names, scaled, pet)
        for layer in range(4):
            expected = _mean_spearman(reference_original[layer], changed[layer])
            assert found.rank[layer, step] == pytest.approx(expected, abs=1e-3, nan_ok=True), (layer, step)
    # The layers before the first cut keep their own weights at step 0: `sanity_rank` is that step's.
    assert found.numbers[0]["sanity_rank"] == pytest.approx(found.rank[0, 0], abs=1e-9)
    assert np.isnan(found.numbers[3]["sanity_rank"])  # the head's group has nothing after it

    background = _grad_cams(model, names, scaled, _region_score(1))
    other = outputs.describe(model, (16, 16))[0].class_name(1)  # the background, named as the target's class is
    assert found.swapped == f"the summed {other} log-odds over the pixels predicted {other} (Seg-Grad-CAM)"
    for layer in range(4):
        assert found.swap_rank[layer] == pytest.approx(_mean_spearman(reference_original[layer], background[layer]),
                                                       abs=1e-3, nan_ok=True)
    assert np.nanmax(np.abs(found.swap_rank)) < 0.999  # the background's maps are not the pet's


def test_a_classifier_swaps_to_its_runner_up_class():
    target = attribution.Target(0, attribution.CLASS, activation="softmax")
    swapped = sanity._swapped(target, None)
    assert swapped.rank == 2 and swapped.describe() == "the log-odds of the class the model ranks second for the image"
    scores = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]], np.float32)
    y = keras.ops.convert_to_numpy(swapped.scores(scores))
    np.testing.assert_allclose(y, np.log([0.3 / 0.7, 0.3 / 0.7]), rtol=1e-5)
