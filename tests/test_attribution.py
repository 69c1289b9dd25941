"""Grad-CAM, Taylor importance and the ablation check, against formulas written here, finite
differences, a model built with a known answer, and the Beam pass against the in-process one."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers
from PIL import Image

from reportgen import ablation, attribution, capture, outputs, platform_support, stats, stats_pass
from reportgen.cli import app
from reportgen.errors import InputError
from reportgen.inputs import InputConvention
from reportgen.sources import LoadedImages, SourceImage
from reportgen.targets import Targets
from conftest import measure_in_process


def _classifier():
    """Conv, BatchNorm, ReLU, a channels_first conv behind a Permute, pooling and a softmax head."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(4, 3, padding="same", name="first")(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Permute((3, 1, 2))(x)
    x = layers.Conv2D(5, 3, padding="same", data_format="channels_first", activation="relu", name="cf")(x)
    x = layers.Permute((2, 3, 1))(x)
    x = layers.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="last")(x)
    x = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, layers.Dense(3, activation="softmax")(x))
    # BatchNorm with statistics of its own, so that inference mode is not the identity
    norm = model.layers[2]
    norm.moving_mean.assign(np.full(4, 0.3, np.float32))
    norm.moving_variance.assign(np.full(4, 2.0, np.float32))
    return model


def _segmenter():
    """A 3-class segmentation: the pet channel first, as the SD-UNet's."""
    keras.utils.set_random_seed(2)
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(6, 3, padding="same", activation="relu", name="a")(inputs)
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="b")(x)
    x = layers.UpSampling2D(2)(x)
    return keras.Model(inputs, layers.Conv2D(3, 1, activation="softmax", name="head")(x))


def _reference(model, convs, images, target_of):
    """Grad-CAM and Taylor importance written out: a GradientTape over the tapped tensors."""
    sources = [capture.tapped_tensor(model, conv, channels_last=False) for conv in convs]
    tapped = keras.Model(model.inputs, [*sources, model.outputs[0]])
    x = tf.constant(images)
    with tf.GradientTape() as tape:
        tape.watch(x)
        *values, output = tapped(x, training=False)
        total = tf.reduce_sum(target_of(output))
    gradients = tape.gradient(total, values)
    found = []
    for conv, a, g in zip(convs, values, gradients):
        a, g = a.numpy().astype(np.float64), g.numpy().astype(np.float64)
        if conv.channels_first:
            a, g = np.moveaxis(a, 1, -1), np.moveaxis(g, 1, -1)
        weights = g.mean(axis=(1, 2), keepdims=True)
        cam = np.maximum((weights * a).sum(axis=-1), 0.0)
        found.append((cam, np.abs((a * g).sum(axis=(1, 2)))))
    return found


def _attributed(model, images):
    convs = capture.find_conv_layers(model, "conv")
    target = attribution.decide_target(outputs.describe(model, (16, 16)), None,
                                       [outputs.score_activation(t) for t in model.outputs])
    probe = attribution.attributed_probe(model, convs, list(capture.probe_model(model, convs).outputs), target, 0)
    found = probe.predict_on_batch([images])
    count = len(convs)
    return convs, target, found[count:2 * count], found[2 * count:3 * count], found[-1]


def _predicted_log_odds(output):
    """log p_c - log(sum of the others' p) of the predicted class c, after the softmax."""
    chosen = tf.one_hot(tf.argmax(output, axis=-1), output.shape[-1])
    return tf.math.log(tf.reduce_sum(output * chosen, axis=-1)) - tf.math.log(tf.reduce_sum(output * (1 - chosen),
                                                                                            axis=-1))


def _pet_region_score(output):
    """Seg-Grad-CAM: the pet's log-odds summed over the pixels predicted pet."""
    pet = tf.cast(tf.equal(tf.argmax(output, axis=-1), 0), tf.float32)
    log_odds = tf.math.log(output[..., 0]) - tf.math.log(output[..., 1] + output[..., 2])
    return tf.reduce_sum(pet * log_odds, axis=(1, 2))


@pytest.mark.parametrize("build, target_of, kind", [
    (_classifier, _predicted_log_odds, attribution.CLASS),
    (_segmenter, _pet_region_score, attribution.FOREGROUND),
], ids=["classifier", "segmentation"])
def test_grad_cam_and_taylor_match_the_formulas(build, target_of, kind):
    model = build()
    images = np.random.default_rng(0).uniform(0, 1, (3, 16, 16, 3)).astype(np.float32)
    if kind == attribution.CLASS and not platform_support.runs_channels_first("Conv2D", 2):
        # This CPU's TensorFlow has no NCHW conv kernel (the probe says so at run time): the model
        # really cannot run here, and the build refuses it naming its channels_first conv.
        with pytest.raises(tf.errors.OpError, match="NHWC"):
            model(images)
        with pytest.raises(InputError, match="conv layer 'cf' .*channels_last"):
            platform_support.check_convs_run_here(capture.find_conv_layers(model, "conv"))
        return
    convs, target, maps, taylors, y = _attributed(model, images)
    assert target.kind == kind and target.activation == "softmax"
    assert target.describe() == ("the log-odds of the class the model predicts for the image" if kind == attribution.CLASS
                                 else "the summed class 0 log-odds over the pixels predicted class 0 (Seg-Grad-CAM)")
    np.testing.assert_allclose(y, target_of(model(images)).numpy(), rtol=1e-5)
    checked = 0
    for conv, cam, taylor, (expected_cam, expected_taylor) in zip(convs, maps, taylors,
                                                                  _reference(model, convs, images, target_of)):
        np.testing.assert_allclose(taylor, expected_taylor, rtol=1e-4, atol=1e-5, err_msg=conv.name)
        assert cam.shape == expected_cam.shape == (3, *conv.output_shape[:2])
        np.testing.assert_allclose(cam, expected_cam, rtol=1e-4, atol=1e-5, err_msg=conv.name)
        checked += bool(expected_cam.max() > 0 and expected_taylor.max() > 0)
    assert checked >= 2  # not a comparison of zeros
    if kind == attribution.CLASS:
        assert [c.channels_first for c in convs] == [False, True, False]


def test_taylor_importance_is_the_derivative_of_the_target_along_each_channel():
    """sum(a * dy/da) over a channel is d/de y(a * (1 + e)) at e = 0: a central difference through
    the ablation's own rerun of the graph."""
    model = _segmenter()
    images = np.random.default_rng(3).uniform(0, 1, (2, 16, 16, 3)).astype(np.float32)
    convs, target, _, taylors, y = _attributed(model, images)
    rerun = ablation.Rerun(model, convs, target)
    values = rerun.run([images])
    np.testing.assert_allclose(rerun.output_with(values, 1, np.ones(8)), model(images), atol=1e-6)
    step = 1e-3
    for layer, channels in ((0, 6), (1, 8)):
        for channel in range(channels):
            gates = [np.ones(channels, np.float32) for _ in (0, 1)]
            gates[0][channel], gates[1][channel] = 1 + step, 1 - step
            up, down = (np.asarray(target.scores(rerun.output_with(values, layer, g)), np.float64) for g in gates)
            derivative = (up - down) / (2 * step)
            np.testing.assert_allclose(np.abs(derivative), taylors[layer][:, channel], rtol=2e-2, atol=2e-3)


def test_several_ablations_in_one_rerun_equal_each_alone():
    """`outputs_with` repeats the batch once a gate: a value from before the ablated layer (the skip
    connection into the concatenation) is repeated too, and each gate's output equals its own rerun."""
    keras.utils.set_random_seed(7)
    inputs = keras.Input((16, 16, 3))
    skip = layers.Conv2D(4, 3, padding="same", activation="relu", name="a")(inputs)
    x = layers.Conv2D(6, 3, padding="same", activation="relu", name="b")(skip)
    x = layers.Concatenate()([skip, x])
    model = keras.Model(inputs, layers.Conv2D(3, 1, activation="softmax", name="head")(x))
    images = np.random.default_rng(4).uniform(0, 1, (3, 16, 16, 3)).astype(np.float32)
    convs, target, _, _, _ = _attributed(model, images)
    rerun = ablation.Rerun(model, convs, target)
    values = rerun.run([images])
    gates = [np.ones(6, np.float32) for _ in range(5)]
    for k, gate in enumerate(gates[1:]):
        gate[k] = 0.0
    together = rerun.outputs_with(values, 1, gates)
    assert len(together) == 5
    for gate, output in zip(gates, together):
        np.testing.assert_allclose(output, rerun.output_with(values, 1, gate), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(together[0], model(images), rtol=1e-5, atol=1e-6)
    assert not np.allclose(together[1], together[0])  # a removed channel changes the output


def test_a_batch_check_splits_into_shares_of_about_equal_work():
    """Every layer in exactly one share; the single-channel layers weigh their channels, so a costly
    layer goes alone and the others fill the lighter share; the same plans give the same shares."""
    from types import SimpleNamespace

    channels = {0: 64, 1: 8, 2: 8, 3: 4}
    rerun = SimpleNamespace(taps=[SimpleNamespace(shape=(None, 4, 4, c)) for c in channels.values()],
                            channels_first=[False] * 4)
    plans = {0: ablation.LayerPlan((0,), (1,), single=False, downstream=0.9),
             1: ablation.LayerPlan((0,), (1,), single=True, downstream=0.5),
             2: ablation.LayerPlan((0,), (1,), single=False, downstream=0.4),
             3: ablation.LayerPlan((0,), (1,), single=True, downstream=0.1)}
    found = ablation.shares(rerun, plans, 2, single=True)
    assert sorted(k for share in found for k in share) == [0, 1, 2, 3]
    assert found[0] == {1} and found[1] == {0, 2, 3}  # 5.0 against 1.8 + 0.8 + 0.6
    assert ablation.shares(rerun, plans, 2, single=False) == [{0, 3}, {1, 2}]  # 1.8 + 0.2 against 1.0 + 0.8
    assert ablation.shares(rerun, plans, 2, single=True) == found
    assert ablation.shares(rerun, plans, 1, single=True) == [{0, 1, 2, 3}]


def _normalised_segmenter(groups: int):
    """The SD-UNet's block, conv -> GroupNormalization -> LeakyReLU, twice, then a softmax head."""
    keras.utils.set_random_seed(5)
    inputs = keras.Input((16, 16, 3))
    x = inputs
    for name in ("a", "b"):
        x = layers.Conv2D(8, 3, padding="same", name=name)(x)
        x = layers.GroupNormalization(groups=groups, epsilon=1e-3, name=f"{name}_gn")(x)
        x = layers.LeakyReLU()(x)
    return keras.Model(inputs, layers.Conv2D(3, 1, activation="softmax", name="head")(x))


def _scaled_derivatives(rerun, values, target, layer, channels, step=1e-3):
    """d/de y(the rerun's tap with channel c times 1 + e) at e = 0, per image and channel."""
    found = []
    for channel in range(channels):
        gates = [np.ones(channels, np.float32) for _ in (0, 1)]
        gates[0][channel], gates[1][channel] = 1 + step, 1 - step
        up, down = (np.asarray(target.scores(rerun.output_with(values, layer, g)), np.float64) for g in gates)
        found.append((up - down) / (2 * step))
    return np.stack(found, axis=1)


def test_attributions_of_a_channel_normalised_layer_are_taken_after_its_normalisation():
    """With one channel a group, y does not move when a conv channel is scaled, so its importance at
    the conv's output is 0 by construction (checked here through the graph itself): the importances
    and the ablations are the normalisation's, and equal its finite differences. With two channels a
    group, the conv's output is kept."""
    images = np.random.default_rng(6).uniform(0, 1, (3, 16, 16, 3)).astype(np.float32)
    model = _normalised_segmenter(groups=8)
    convs = capture.find_conv_layers(model, "conv")
    assert [attribution.attribution_source(model, conv)[1] for conv in convs] == ["a_gn", "b_gn", ""]

    _, target, _, taylors, _ = _attributed(model, images)
    rerun = ablation.Rerun(model, convs, target)
    values = rerun.run([images])
    assert rerun.taps[0] is model.get_layer("a_gn").output
    for layer in (0, 1):
        derivative = _scaled_derivatives(rerun, values, target, layer, 8)
        # 3%: a pixel on the pet's decision boundary may change sides within the difference's step
        np.testing.assert_allclose(np.abs(derivative), taylors[layer], rtol=3e-2, atol=2e-3)
        assert np.abs(derivative).max() > 0.1  # a real signal, not rounding

    # The reason: at the conv's own output, scaling a channel changes y by epsilon's share only.
    at_conv = ablation.Rerun(model, convs, target)
    at_conv.taps = [capture.tapped_tensor(model, conv, channels_last=False) for conv in convs]
    conv_derivative = _scaled_derivatives(at_conv, at_conv.run([images]), target, 0, 8)
    assert np.abs(conv_derivative).max() < 1e-2 * np.abs(taylors[0]).max()

    paired = _normalised_segmenter(groups=4)
    assert [attribution.attribution_source(paired, conv)[1] for conv in capture.find_conv_layers(paired, "conv")] \
        == ["", "", ""]


def _one_channel_classifier():
    """Channel 0 of the conv carries the class alone: the head reads no other channel."""
    inputs = keras.Input((8, 8, 3))
    x = layers.Rescaling(1 / 255)(inputs)
    conv = layers.Conv2D(4, 1, name="conv")
    x = conv(x)
    pooled = layers.GlobalAveragePooling2D()(x)
    head = layers.Dense(2, activation="softmax", name="head")
    model = keras.Model(inputs, head(pooled))
    kernel = np.zeros((1, 1, 3, 4), np.float32)
    kernel[0, 0, 0, 0] = 4.0  # red
    kernel[0, 0, 1, 1] = kernel[0, 0, 2, 2] = kernel[0, 0, 1, 3] = 1.0  # green, blue: read by nobody
    conv.set_weights([kernel, np.array([-2.0, 0, 0, 0], np.float32)])
    dense = np.zeros((4, 2), np.float32)
    dense[0] = (5.0, -5.0)
    head.set_weights([dense, np.zeros(2, np.float32)])
    return model


def _coloured_images(count: int):
    rng = np.random.default_rng(4)
    items = []
    for i in range(count):
        image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        label = ("bright", "dark")[i % 2]
        image[..., 0] = 220 if label == "bright" else 30
        items.append(SourceImage(f"img_{i:02d}", image, None, label))
    return items


def test_the_one_channel_that_carries_the_class_is_found_and_removing_it_is_chance(tmp_path):
    """A known answer, through the statistics pass: channel 0 ranks first by importance, and the
    others have none; removing it takes the probability of the true class to 1/2, removing any
    other changes nothing."""
    model = _one_channel_classifier()
    path = tmp_path / "one_channel.keras"
    model.save(path)
    items = _coloured_images(12)
    specs = outputs.describe(model, (8, 8), ("bright", "dark"))
    target = attribution.decide_target(specs, None, ["softmax"])
    targets = Targets.decide([item.id for item in items], [i % 2 for i in range(12)], explained=target,
                             class_names=("bright", "dark"))
    _, result = measure_in_process(path, items, targets, InputConvention("none"), 4, ablation_images=12,
                                   ablation_classes=tuple(i % 2 for i in range(12)))
    importance = stats.finalise(result.layers[0]).importance
    # The log-odds of the predicted class is 10 x channel 0's mean, |4 x red / 255 - 2| (the head is linear in it)
    log_odds = np.array([10 * abs(4 * float(item.image[..., 0].mean()) / 255 - 2) for item in items])
    assert importance[0] == pytest.approx(log_odds.mean(), rel=1e-4)
    np.testing.assert_array_equal(importance[1:], 0.0)
    found = result.ablation
    assert found.images == 12 and found.metric == "probability of the image's class"
    assert found.baseline.ratio()[0] > 0.99
    assert found.top[0].ratio()[0] == pytest.approx(0.5, abs=1e-6)  # all 4 channels: nothing left of the class
    single = found.single[0] / found.single_images[0]
    assert single[0] == pytest.approx(log_odds[:4].mean(), rel=1e-4)  # removed, the log-odds is 0; first batch only
    np.testing.assert_array_equal(single[1:], 0.0)
    summary = ablation.layer_summary(found, 0, found.plans[0], importance, "conv 1")
    assert "all 4 channels" in summary["sentences"][0] and summary["spearman"] > 0.7


def test_the_beam_pass_gives_the_in_process_importances_and_ablations(tmp_path):
    model = _segmenter()
    path = tmp_path / "segmenter.keras"
    model.save(path)
    rng = np.random.default_rng(5)
    items = tuple(SourceImage(f"image_{i}", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
                              rng.integers(1, 4, (16, 16), dtype=np.uint8)) for i in range(10))
    target = attribution.decide_target(outputs.describe(model, (16, 16)), None, ["softmax"])
    targets = Targets.decide([item.id for item in items], trimaps_given=True, explained=target)
    measured, reference = measure_in_process(path, items, targets, InputConvention("tf"), 2, ablation_images=6)
    setup = stats_pass.PassSetup(stats_pass.ModelSpec(path), measured, LoadedImages(items))
    beam = stats_pass.run_beam(setup, workers=2, results_folder=str(tmp_path / "beam"))
    assert measured.ablated_starts == {0, 2, 6}  # three batches of two, spread over the five
    assert measured.ablated == ("image_0", "image_1", "image_2", "image_3", "image_6", "image_7")
    for layer in range(3):
        ours, theirs = stats.finalise(beam.layers[layer]), stats.finalise(reference.layers[layer])
        np.testing.assert_allclose(ours.importance, theirs.importance, rtol=1e-5)
        np.testing.assert_allclose(ours.importance_intervals, theirs.importance_intervals, rtol=1e-4)
        assert np.isfinite(ours.value("importance_top_share"))
    assert beam.ablation.images == reference.ablation.images == 6
    assert beam.ablation.metric == "class 0 IoU against the trimaps" and beam.ablation.seconds > 0
    for layer in range(3):
        for kept in ("top", "random"):
            np.testing.assert_allclose(getattr(beam.ablation, kept)[layer].numerator,
                                       getattr(reference.ablation, kept)[layer].numerator)
        np.testing.assert_allclose(beam.ablation.single[layer], reference.ablation.single[layer], rtol=1e-5)
    # the IoU against the trimaps written out for the baseline
    pixels = np.stack([item.image for item in items]).astype(np.float32) / 127.5 - 1
    predicted = model.predict(pixels, verbose=0).argmax(axis=-1) == 0
    truth = np.stack([item.trimap for item in items]) == 1
    chosen = [0, 1, 2, 3, 6, 7]
    expected = (predicted & truth)[chosen].sum() / (predicted | truth)[chosen].sum()
    assert beam.ablation.baseline.ratio()[0] == pytest.approx(expected)


def test_a_model_without_a_decision_says_why_on_its_layer_pages(runner, tmp_path):
    keras.utils.set_random_seed(6)
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(4, 3, activation="relu")(inputs)
    model = keras.Model(inputs, layers.Dense(5)(layers.Flatten()(x)))  # regression values, no classes
    path = tmp_path / "regressor.keras"
    model.save(path)
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
            folder / f"{i}.png")
    out = tmp_path / "site"
    result = runner.invoke(app, ["build", "--model", str(path), "--image-dir", str(folder), "--images", "2",
                                 "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    page = next((out / "layers").glob("*.html")).read_text()
    assert "No Grad-CAM or channel importance for this layer: the model&#39;s outputs are neither" in page
    layer = json.loads((out / "data" / "stats.json").read_text())["layers"][0]
    assert layer["channels"]["taylor_importance"] is None and "neither" in layer["attribution_note"]


def test_the_notebook_api_explains_a_classifier_with_its_own_grad_cam(tmp_path):
    """In memory, a classifier: every layer has importances, each layer page shows the Grad-CAM of
    every image, each image page a Grad-CAM tile of every layer."""
    from reportgen import api

    model = _classifier()
    rng = np.random.default_rng(7)
    images = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(3)]
    out = tmp_path / "site"
    if not platform_support.runs_channels_first("Conv2D", 2):
        _api_refuses(api, model, images, out)
        return
    api.build(model, images, out=out, class_names=("a", "b", "c"), workers=1)
    rows = json.loads((out / "data" / "stats.json").read_text())["layers"]
    assert all(row["channels"]["taylor_importance"] is not None for row in rows)
    page = (out / "layers" / "last.html").read_text()
    assert page.count("-gradcam.jpg") == 3 and "log-odds of the class the model predicts" in page
    image = next((out / "images").glob("*.html")).read_text()
    assert image.count("-gradcam.jpg") == 3  # the filmstrip: one tile per conv layer


def _api_refuses(api, model, images, out):
    """The notebook API raises the CLI's exit-2 error, one line naming the conv, before writing anything."""
    with pytest.raises(InputError) as refused:
        api.build(model, images, out=out, class_names=("a", "b", "c"), workers=1)
    message = str(refused.value)
    assert refused.value.exit_code == 2 and "\n" not in message
    assert "conv layer 'cf' (Conv2D, data_format=\"channels_first\")" in message and "channels_last" in message
    assert not out.exists()


def test_the_notebook_api_refuses_a_conv_the_cpu_cannot_run(tmp_path, monkeypatch):
    """On every CPU: the probe's answer forced to 'cannot'."""
    from reportgen import api

    monkeypatch.setattr(platform_support, "runs_channels_first", lambda kind, rank: False)
    rng = np.random.default_rng(7)
    _api_refuses(api, _classifier(), [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(3)],
                 tmp_path / "site")


def test_explain_class_picks_a_named_class_and_refuses_others_in_one_line():
    from reportgen.errors import InputError

    specs = [outputs.OutputSpec("probs", (3,), "classification", ("cat", "dog", "fox"))]
    target = attribution.decide_target(specs, "dog", ["softmax"])
    assert (target.kind, target.channel) == (attribution.CLASS, 1)
    p = np.array([[0.7, 0.2, 0.1], [0.05, 0.9, 0.05]], np.float32)
    np.testing.assert_allclose(np.asarray(target.scores(p)), np.log([0.2 / 0.8, 0.9 / 0.1]), rtol=1e-5)
    predicted = attribution.decide_target(specs, None, ["softmax"])
    np.testing.assert_allclose(np.asarray(predicted.scores(p)), np.log([0.7 / 0.3, 0.9 / 0.1]), rtol=1e-5)
    raw = attribution.decide_target(specs, None, [""])  # logits: taken as they are
    np.testing.assert_allclose(np.asarray(raw.scores(p)), [0.7, 0.9], rtol=1e-6)
    for name, said in (("wolf", "is not one of the classes --labels names"),):
        with pytest.raises(InputError, match=said):
            attribution.decide_target(specs, name)
    with pytest.raises(InputError, match="needs --labels"):
        attribution.decide_target([outputs.OutputSpec("probs", (3,), "classification")], "dog")
    with pytest.raises(InputError, match="no class output"):
        attribution.decide_target([outputs.OutputSpec("mask", (8, 8, 3), "segmentation")], "dog")
