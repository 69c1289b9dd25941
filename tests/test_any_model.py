"""Any Keras model: applications, U-Nets with separable and transposed convs, nesting, 1-D and 3-D
convs, dynamic input sizes, and Lambda layers behind an explicit flag."""

import json

import keras
import pytest
from keras import layers

from reportgen.cli import app


def _save(model, tmp_path, name):
    path = tmp_path / f"{name}.keras"
    model.save(path)
    return path


def _build_site(runner, tmp_path, model_path, pets_folder, *extra):
    out = tmp_path / "site"
    images, trimaps = pets_folder
    result = runner.invoke(app, ["build", "--model", str(model_path), "--image-dir", str(images), "--trimap-dir",
                                 str(trimaps), "--images", "2", "--out", str(out), "-q", "--workers", "1", *extra])
    assert result.exit_code == 0, result.output
    return out


def _conv_count(model):
    from reportgen.capture import find_conv_layers

    return len(find_conv_layers(model))


def _xception_unet(size=64):
    """The classic Keras Oxford-pets segmentation example, shrunk."""
    inputs = keras.Input((size, size, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="same")(inputs)
    x = layers.Activation("relu")(layers.BatchNormalization()(x))
    previous = x
    for filters in (16, 32):
        x = layers.Activation("relu")(x)
        x = layers.BatchNormalization()(layers.SeparableConv2D(filters, 3, padding="same")(x))
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        residual = layers.Conv2D(filters, 1, strides=2, padding="same")(previous)
        x = previous = layers.add([x, residual])
    for filters in (32, 16, 8):
        x = layers.Activation("relu")(x)
        x = layers.BatchNormalization()(layers.Conv2DTranspose(filters, 3, padding="same")(x))
        x = layers.UpSampling2D(2)(x)
        residual = layers.Conv2D(filters, 1, padding="same")(layers.UpSampling2D(2)(previous))
        x = previous = layers.add([x, residual])
    outputs = layers.Conv2D(3, 3, activation="softmax", padding="same")(x)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet50", "xception_unet", "nested"])
def test_model_gets_a_page_per_conv_layer(runner, tmp_path, pets_folder, name):
    if name == "mobilenet_v2":
        model = keras.applications.MobileNetV2(weights=None, input_shape=(64, 64, 3), alpha=0.35)
    elif name == "resnet50":
        model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3))
    elif name == "xception_unet":
        model = _xception_unet()
    else:
        block = keras.Sequential([keras.Input((32, 32, 8)), layers.Conv2D(8, 3, padding="same", name="inner_a"),
                                  layers.ReLU(), layers.DepthwiseConv2D(3, padding="same", name="inner_dw")],
                                 name="block")
        inputs = keras.Input((64, 64, 3))
        x = layers.Conv2D(8, 3, strides=2, padding="same", name="stem")(inputs)
        x = block(x)
        x = layers.Conv2DTranspose(3, 3, strides=2, padding="same", activation="softmax", name="up")(x)
        model = keras.Model(inputs, x)
    expected = _conv_count(model)
    out = _build_site(runner, tmp_path, _save(model, tmp_path, name), pets_folder)
    assert len(list((out / "layers").glob("*.html"))) == expected > 3
    stats = json.loads((out / "data" / "stats.json").read_text())["layers"]
    assert len(stats) == expected
    if name == "nested":
        assert [row["name"] for row in stats] == ["stem", "block/inner_a", "block/inner_dw", "up"]
    # Counting pages passes on garbage: the last conv's mean is also recomputed here, by Keras, from the
    # model's own layer output on the same images (the pictured ones, which the statistics cover).
    last = stats[-1]
    ids = json.loads((out / "data" / "manifest.json").read_text())["data"]["image_ids"]
    assert last["images"] == len(ids) == 2
    expected_mean = _keras_mean(model, model.get_layer(last["name"]), pets_folder[0], ids)
    assert last["mean"] == pytest.approx(expected_mean, rel=5e-3, abs=1e-3 * (last["std"] + 1e-6))


def _keras_mean(model, layer, folder, ids):
    """A layer's mean output over the images `ids` of `folder`, read at the model's input size."""
    import numpy as np

    from reportgen import sources

    geometry = sources.as_geometry(model.input_shape[1])
    batch = np.stack([sources._load_file(folder, folder / ident, None, geometry, None).image for ident in ids])
    probe = keras.Model(model.inputs, layer.output)
    return float(np.mean(np.asarray(probe(batch.astype("float32")), dtype=np.float64)))


def test_one_and_three_dimensional_convs_render(runner, tmp_path, pets_folder):
    inputs = keras.Input((64, 64, 3))
    strip = layers.Conv1D(6, 5, padding="same", name="along_rows")(layers.Reshape((64 * 64 // 16, 48))(inputs))
    volume = layers.Conv3D(4, 3, padding="same", name="volume")(layers.Reshape((4, 16, 64, 3))(inputs))
    outputs = layers.Concatenate()([layers.GlobalAveragePooling1D()(strip), layers.GlobalAveragePooling3D()(volume)])
    out = _build_site(runner, tmp_path, _save(keras.Model(inputs, outputs), tmp_path, "dims"), pets_folder)
    assert "channel-by-position heat strip" in (out / "layers" / "along_rows.html").read_text()
    assert "middle depth slice, 3 of 4" in (out / "layers" / "volume.html").read_text()


def test_dynamic_input_size_comes_from_the_option(runner, tmp_path, pets_folder):
    inputs = keras.Input((None, None, 3))
    x = layers.Conv2D(4, 3, padding="same", name="a")(inputs)
    x = layers.Conv2D(3, 3, padding="same", activation="softmax", name="b")(x)
    path = _save(keras.Model(inputs, x), tmp_path, "dynamic")
    result = runner.invoke(app, ["build", "--model", str(path), "--image-dir", str(pets_folder[0]), "--images", "1",
                                 "--out", str(tmp_path / "refused"), "-q"])
    assert result.exit_code == 2 and "--input-size" in result.output
    out = _build_site(runner, tmp_path, path, pets_folder, "--input-size", "48")
    assert json.loads((out / "data" / "stats.json").read_text())["layers"][0]["output_shape"] == [48, 48, 4]


def test_input_size_the_model_cannot_take(runner, tmp_path, tiny_model_path, pets_folder):
    result = runner.invoke(app, ["build", "--model", str(tiny_model_path), "--image-dir", str(pets_folder[0]),
                                 "--images", "1", "--input-size", "96", "--out", str(tmp_path / "s"), "-q"])
    assert result.exit_code == 2 and "cannot take --input-size 96" in result.output
    result = runner.invoke(app, ["build", "--input-size", "150", "--out", str(tmp_path / "s"), "-q"])
    assert result.exit_code == 2 and "multiple of 32" in result.output


def test_lambda_layers_need_the_unsafe_flag(runner, tmp_path, pets_folder):
    inputs = keras.Input((64, 64, 3))
    x = layers.Lambda(lambda t: t / 255.0)(inputs)
    x = layers.Conv2D(3, 3, padding="same", activation="softmax")(x)
    path = _save(keras.Model(inputs, x), tmp_path, "lambda")
    result = runner.invoke(app, ["build", "--model", str(path), "--image-dir", str(pets_folder[0]), "--images", "1",
                                 "--out", str(tmp_path / "refused"), "-q"])
    assert result.exit_code == 2
    assert "Lambda" in result.output and "--unsafe-load" in result.output and "Traceback" not in result.output
    _build_site(runner, tmp_path, path, pets_folder, "--unsafe-load")


def _two_input_model(size=32, second_is_image=False):
    """A segmentation net that also takes a second input: a metadata vector, or a second image."""
    image = keras.Input((size, size, 3), name="photo")
    other = keras.Input((size, size, 3) if second_is_image else (4,), name="extra")
    x = layers.Conv2D(4, 3, padding="same", activation="relu")(image)
    if second_is_image:
        x = layers.concatenate([x, layers.Conv2D(4, 3, padding="same")(other)])
    else:
        x = layers.add([x, layers.Reshape((1, 1, 4))(layers.Dense(4)(other))])
    outputs = layers.Conv2D(3, 1, activation="softmax")(x)
    return keras.Model([image, other], outputs)


def test_the_image_input_of_a_multi_input_model_is_found_and_the_others_fed_zeros(runner, tmp_path, pets_folder):
    path = _save(_two_input_model(), tmp_path, "two_inputs")
    out = _build_site(runner, tmp_path, path, pets_folder)
    assert len(list((out / "layers").glob("*.html"))) == 2
    assert "the other inputs, &#39;extra&#39;, were fed zeros" in (out / "index.html").read_text()


def test_several_image_inputs_ask_for_input_by_name(runner, tmp_path, pets_folder):
    path = _save(_two_input_model(second_is_image=True), tmp_path, "two_images")
    images, _ = pets_folder
    base = ["build", "--model", str(path), "--image-dir", str(images), "--images", "1", "-q"]
    ambiguous = runner.invoke(app, [*base, "--out", str(tmp_path / "a")])
    assert ambiguous.exit_code == 2 and "name the image input with --input" in ambiguous.output
    unknown = runner.invoke(app, [*base, "--out", str(tmp_path / "b"), "--input", "nope"])
    assert unknown.exit_code == 2 and "'photo', 'extra'" in unknown.output
    chosen = runner.invoke(app, [*base, "--out", str(tmp_path / "c"), "--input", "extra"])
    assert chosen.exit_code == 0, chosen.output
    assert "input &#39;extra&#39;; the other inputs, &#39;photo&#39;" in (tmp_path / "c" / "index.html").read_text()
