"""Models users bring: each report is checked against the model's own output on correctly
preprocessed pixels, computed here independently of reportgen (PIL for the resizing, the closed
form of the convention), so a build that ignored the preprocessing fails."""

import json

import keras
import numpy as np
import pytest
from keras import layers
from PIL import Image

from reportgen.cli import app


def _build(runner, out, *args):
    # One worker: no test here is about the pool, and each pool process starts a TensorFlow of its own.
    result = runner.invoke(app, ["build", "--out", str(out), "-q", "--workers", "1", *map(str, args)])
    assert result.exit_code == 0, result.output
    return out


def _predictions(site):
    return json.loads((site / "data" / "predictions.json").read_text())


def _stats(site):
    return json.loads((site / "data" / "stats.json").read_text())


def _index(site):
    return (site / "index.html").read_text()


def _reference_pixels(path, width, height, mode="RGB"):
    """What the model must have been fed: the file resized (nearest, stretched) and converted."""
    with Image.open(path) as image:
        return np.asarray(image.convert(mode).resize((width, height), Image.Resampling.NEAREST), np.float32)


def _assert_recorded(site, output_name, expected, ids):
    recorded = _predictions(site)["images"]
    got = np.array([recorded[i][output_name] for i in ids], np.float64)
    np.testing.assert_allclose(got, expected, atol=1e-3)


# --- a grayscale classifier in the tf-keras 2 legacy .h5 format that needs --preprocess tf -----------------

@pytest.fixture(scope="module")
def grayscale_classifier(tmp_path_factory, pets_folder):
    """A 64x64 grayscale emotion-style classifier saved by tf-keras 2, trained on x / 127.5 - 1: its
    BatchNorm statistics are those of its first conv on such inputs."""
    import tf_keras  # make test installs it (with --no-deps, beside tensorflow-cpu)

    tf_keras.utils.set_random_seed(1)
    inputs = tf_keras.Input((64, 64, 1), name="face_gray")
    conv1 = tf_keras.layers.Conv2D(8, 3, padding="same", name="conv1")
    x = tf_keras.layers.BatchNormalization(name="bn1")(conv1(inputs))
    x = tf_keras.layers.ReLU()(x)
    x = tf_keras.layers.MaxPooling2D(2)(x)
    x = tf_keras.layers.SeparableConv2D(16, 3, padding="same", activation="relu", name="sep2")(x)
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    outputs = tf_keras.layers.Dense(7, activation="softmax", name="emotion")(x)
    model = tf_keras.Model(inputs, outputs)
    files = sorted(pets_folder[0].iterdir())
    pixels = np.stack([_reference_pixels(f, 64, 64, "L")[..., None] for f in files])
    preprocessed = pixels / 127.5 - 1
    conv_out = tf_keras.Model(inputs, conv1.output).predict(preprocessed, verbose=0)
    bn = model.get_layer("bn1")
    gamma, beta = bn.get_weights()[:2]
    bn.set_weights([gamma, beta, conv_out.mean(axis=(0, 1, 2)), conv_out.var(axis=(0, 1, 2))])
    path = tmp_path_factory.mktemp("emotion") / "emotion_2017.h5"
    model.save(path)
    return path, files, model.predict(preprocessed, verbose=0), model.predict(pixels, verbose=0)


def test_grayscale_legacy_h5_needs_preprocess_tf(runner, tmp_path, grayscale_classifier, pets_folder):
    path, files, expected, on_raw = grayscale_classifier
    assert np.abs(expected - on_raw).max() > 0.05  # ignoring the convention must be visible
    site = _build(runner, tmp_path / "site", "--model", path, "--image-dir", pets_folder[0], "--images", 6,
                  "--preprocess", "tf")
    _assert_recorded(site, "emotion", expected, [f.name for f in files])
    index = _index(site)
    assert "64 x 64 x 1, grayscale (PIL&#39;s L conversion" in index
    assert "--preprocess tf: x / 127.5 - 1" in index
    assert "Check the input" not in index  # the BatchNorm statistics match: no warning
    manifest = json.loads((site / "data" / "manifest.json").read_text())
    assert manifest["input"]["preprocess"] == "tf" and manifest["input"]["channels"] == 1
    top = index.split('<span class="said">')[1].split("</span>")[0]
    best = int(np.argmax(expected[0]))
    assert f"class {best} {expected[0][best]:.3f}" in top  # top-5 without --labels: class indices


def test_grayscale_model_on_raw_pixels_is_warned(runner, tmp_path, grayscale_classifier, pets_folder):
    path, files, _, on_raw = grayscale_classifier
    site = _build(runner, tmp_path / "site", "--model", path, "--image-dir", pets_folder[0], "--images", 6)
    index = _index(site)
    assert "Check the input" in index
    assert "times the spread its BatchNormalization learnt in training" in index
    _assert_recorded(site, "emotion", on_raw, [f.name for f in files])  # honest about what it did


# --- an RGB PReLU classifier with three outputs that needs --rescale ------------------------------------

def _face_net():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((48, 48, 3), name="face")
    x = inputs
    for i, filters in enumerate((8, 16, 16), start=1):
        x = layers.PReLU(shared_axes=[1, 2], name=f"prelu{i}")(layers.Conv2D(filters, 3, name=f"conv{i}")(x))
        if i < 3:
            x = layers.MaxPooling2D(2)(x)
    x = layers.PReLU(name="prelu4")(layers.Dense(32, name="dense")(layers.Flatten()(x)))
    return keras.Model(inputs, [layers.Dense(2, activation="softmax", name="face_prob")(x),
                                layers.Dense(4, name="bbox")(x), layers.Dense(10, name="landmarks")(x)])


@pytest.fixture(scope="module")
def face_classifier(tmp_path_factory, pets_folder):
    model = _face_net()
    folder = tmp_path_factory.mktemp("face")
    path = folder / "face_onet.keras"
    model.save(path)
    labels = folder / "labels.txt"
    labels.write_text("not a face\nface\n")
    files = sorted(pets_folder[0].iterdir())
    pixels = np.stack([_reference_pixels(f, 48, 48) for f in files])
    return path, labels, files, model.predict((pixels - 127.5) / 128, verbose=0), model.predict(pixels, verbose=0)


def test_prelu_classifier_with_three_outputs_and_rescale(runner, tmp_path, face_classifier, pets_folder):
    path, labels, files, expected, _ = face_classifier
    site = _build(runner, tmp_path / "site", "--model", path, "--image-dir", pets_folder[0], "--images", 6,
                  "--rescale", "0.0078125,-0.99609375", "--labels", labels)
    ids = [f.name for f in files]
    for name, values in zip(("face_prob", "bbox", "landmarks"), expected):
        _assert_recorded(site, name, values, ids)
    index = _index(site)
    assert "Check the input" not in index
    assert "x * 0.0078125 + -0.996094" in index
    assert "face_prob: 2 values, scores over 2 classes; classes not a face, face" in index
    assert "bbox: 4 values, summarised per image" in index
    assert "pet, background, border" not in index  # never the SD-UNet's classes for another model
    first = index.split('<a href="images/')[1].split('"')[0]
    page = (site / "images" / first).read_text()
    assert "face_prob: top 2 classes (probability)" in page
    stats = _stats(site)["layers"]
    assert all(row["cka_mask"] is None and row["ntv_p10_p50_p90"][1] is not None for row in stats)
    assert all(row["participation_ratio_over_c"] is not None for row in stats)


def test_prelu_classifier_on_raw_pixels_is_saturated_and_said(runner, tmp_path, face_classifier, pets_folder):
    path, labels, _, _, on_raw = face_classifier
    probabilities = on_raw[0]
    assert (probabilities.argmax(axis=1) == 0).all() and probabilities.max(axis=1).min() >= 0.999
    site = _build(runner, tmp_path / "site", "--model", path, "--image-dir", pets_folder[0], "--images", 6,
                  "--labels", labels)
    index = _index(site)
    assert "Check the input" in index
    assert "gives every one of the 6 images the same class, &#39;not a face&#39;" in index


# --- a custom layer from a user module file --------------------------------------------------------------

CUSTOM_MODULE = '''
import keras


class ChannelGate(keras.layers.Layer):
    """A learnt per-channel gain, not registered with Keras: --import passes it as a custom object."""

    def __init__(self, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def build(self, shape):
        self.gate = self.add_weight(shape=(shape[-1],), initializer="ones", name="gate")

    def call(self, x):
        return x * self.gate * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}
'''


@pytest.fixture(scope="module")
def custom_model(tmp_path_factory):
    import importlib.util

    folder = tmp_path_factory.mktemp("custom")
    module_path = folder / "user_layers.py"
    module_path.write_text(CUSTOM_MODULE)
    spec = importlib.util.spec_from_file_location("user_layers_for_test", module_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    keras.utils.set_random_seed(2)
    inputs = keras.Input((32, 32, 3))
    x = layers.Conv2D(4, 3, padding="same", name="conv_a")(inputs)
    x = module.ChannelGate(0.5, name="gate")(x)
    x = layers.Conv2D(4, 3, padding="same", name="conv_b")(x)
    outputs = layers.Dense(3, activation="softmax", name="kind")(layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    model.get_layer("gate").set_weights([np.array([1.0, 2.0, 3.0, 4.0], np.float32)])
    path = folder / "gated.keras"
    model.save(path)
    return path, module_path, model


def test_custom_layer_needs_its_module(runner, tmp_path, custom_model, pets_folder):
    path, module_path, model = custom_model
    result = runner.invoke(app, ["build", "--model", str(path), "--image-dir", str(pets_folder[0]), "--images", "2",
                                 "--out", str(tmp_path / "refused"), "-q"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "ChannelGate" in lines[0] and "--import" in lines[0], result.output
    site = _build(runner, tmp_path / "site", "--model", path, "--image-dir", pets_folder[0], "--images", 3,
                  "--import", module_path)
    files = sorted(pets_folder[0].iterdir())[:3]
    expected = model.predict(np.stack([_reference_pixels(f, 32, 32) for f in files]), verbose=0)
    _assert_recorded(site, "kind", expected, [f.name for f in files])
    assert len(list((site / "layers").glob("*.html"))) == 2


# --- a 96x160 segmentation model -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wide_segmenter(tmp_path_factory):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((96, 160, 3))
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="enc")(inputs)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="mid")(x)
    x = layers.UpSampling2D(2)(x)
    outputs = layers.Conv2D(3, 1, activation="softmax", name="seg")(x)
    model = keras.Model(inputs, outputs)
    path = tmp_path_factory.mktemp("wide") / "wide_unet.keras"
    model.save(path)
    return path, model


def _centre_crop(array, aspect):
    """The centred part of an array with width / height = aspect (the rule --fit crop follows)."""
    height, width = array.shape[:2]
    if width / height > aspect:
        kept = round(height * aspect)
        left = (width - kept) // 2
        return array[:, left:left + kept]
    kept = round(width / aspect)
    top = (height - kept) // 2
    return array[top:top + kept]


def test_non_square_segmentation_with_crop(runner, tmp_path, wide_segmenter, pets_folder):
    path, model = wide_segmenter
    images, trimaps = pets_folder
    site = _build(runner, tmp_path / "site", "--model", path, "--image-dir", images, "--trimap-dir", trimaps,
                  "--images", 2, "--fit", "crop")
    files = sorted(images.iterdir())[:2]
    for f in files:
        with Image.open(f) as picture:
            rgb = np.asarray(picture.convert("RGB"))
        with Image.open(trimaps / f"{f.stem}.png") as picture:
            trimap = np.asarray(picture)
        pixels = np.asarray(Image.fromarray(_centre_crop(rgb, 160 / 96)).resize((160, 96), Image.Resampling.NEAREST))
        expected = model.predict(pixels[None].astype(np.float32), verbose=0)[0]
        recorded = _predictions(site)["images"][f.name]["seg"]
        assert recorded["shape"] == [96, 160, 3]
        assert recorded["mean"] == pytest.approx(float(expected.mean()), abs=1e-3)
        assert recorded["max"] == pytest.approx(float(expected.max()), abs=1e-3)
        expected_trimap = np.asarray(Image.fromarray(_centre_crop(trimap, 160 / 96)).resize(
            (160, 96), Image.Resampling.NEAREST))
        shown = [p for p in (site / "img" / "images").glob("*-trimap.png") if p.name.startswith(f.stem)]
        assert shown
        with Image.open(shown[0]) as picture:
            assert picture.size == (160, 96)
            colours = np.asarray(picture.convert("RGB"))
        from reportgen.render import trimap_rgb

        np.testing.assert_array_equal(colours, trimap_rgb(expected_trimap))
    index = _index(site)
    assert "96 x 160 x 3" in index and "--fit crop" in index and "cropped to fit" in index
    assert 'width="96" height="58"' in index  # inputs shown at their own aspect ratio
    thumbs = list((site / "img" / "layers").glob("*/*-top.webp"))
    with Image.open(thumbs[0]) as thumb:
        assert thumb.size == (64, 38)
    assert _stats(site)["layers"][0]["cka_mask"] is not None  # trimaps keep the mask statistics


# --- a labelled class folder -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stripes_folder(tmp_path_factory):
    """Two classes in the layout of keras.utils.image_dataset_from_directory: horizontal and vertical stripes."""
    root = tmp_path_factory.mktemp("stripes")
    rng = np.random.default_rng(4)
    for name, axis in (("horizontal", 0), ("vertical", 1)):
        (root / name).mkdir()
        for i in range(6):
            phase, period = rng.uniform(0, 2 * np.pi), rng.uniform(5, 9)
            wave = np.sin(np.arange(64) * 2 * np.pi / period + phase)
            picture = np.repeat(wave[:, None] if axis == 0 else wave[None, :], 64, axis=1 - axis)
            picture = (127 + 100 * picture + rng.normal(0, 10, (64, 64)))[..., None].repeat(3, axis=2)
            Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8)).save(root / name / f"{name}_{i}.png")
    return root


def test_class_folders_give_a_class_probe(runner, tmp_path, stripes_folder):
    keras.utils.set_random_seed(5)
    inputs = keras.Input((64, 64, 3))
    x = layers.Conv2D(8, 5, activation="relu", name="oriented")(inputs)
    x = layers.Conv2D(8, 3, strides=2, activation="relu", name="deeper")(x)
    model = keras.Model(inputs, layers.Dense(2, activation="softmax", name="orientation")(
        layers.GlobalAveragePooling2D()(x)))
    path = tmp_path / "stripes.keras"
    model.save(path)
    site = _build(runner, tmp_path / "site", "--model", path, "--image-dir", stripes_folder, "--images", 12,
                  "--preprocess", "tf")
    stats = _stats(site)
    assert stats["class_chance"] == 0.5
    accuracy = [row["class_probe_accuracy"] for row in stats["layers"]]
    assert max(accuracy) >= 0.9, accuracy
    assert all(row["cka_class"] is not None and 0 <= row["cka_class"] <= 1 for row in stats["layers"])
    assert all(row["probe_iou"]["pet"] is None for row in stats["layers"])
    index = _index(site)
    assert "decodes the class at accuracy" in index
    assert "Image classes (folders)</dt><dd>horizontal, vertical" in index
    ids = json.loads((site / "data" / "manifest.json").read_text())["data"]["image_ids"]
    assert ids[:2] == ["horizontal/horizontal_0.png", "vertical/vertical_0.png"]  # classes taken in turn
    metrics = (site / "img" / "charts" / "metrics-light.svg").read_text()
    assert "Class decodability" in metrics and "Mask decodability" not in metrics  # only what is defined
    assert not (site / "img" / "charts" / "channels-light.svg").exists()  # no mask: no channel IoU scatter


# --- the in-memory API -----------------------------------------------------------------------------------

def test_python_api_builds_from_a_model_in_memory(tmp_path, pets_folder):
    import reportgen

    model = _face_net()
    files = sorted(pets_folder[0].iterdir())[:3]
    photos = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    result = reportgen.build(model, photos, out=tmp_path / "site", rescale=(1 / 128, -127.5 / 128), workers=1)
    assert result.images == 3 and result.pages > 5
    pixels = np.stack([_reference_pixels(f, 48, 48) for f in files])
    expected = model.predict((pixels - 127.5) / 128, verbose=0)
    _assert_recorded(result.out, "face_prob", expected[0], [f"image_{i:04d}" for i in range(3)])
    assert "(in memory)" in _index(result.out)


def test_python_api_refuses_a_subclassed_model(tmp_path):
    import reportgen
    from reportgen.errors import InputError

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = layers.Conv2D(2, 3)

        def call(self, x):
            return self.conv(x)

    model = Subclassed()
    model(np.zeros((1, 16, 16, 3), np.float32))
    with pytest.raises(InputError, match="subclassed keras.Model .* functional API"):
        reportgen.build(model, [np.zeros((16, 16, 3), np.uint8)], out=tmp_path / "site", workers=1)
    assert not (tmp_path / "site").exists()


# --- bad input: one line, exit 2 -------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["unknown preprocess", "malformed rescale", "missing import", "raising import",
                                  "labels count", "two channels", "rescale and preprocess"])
def test_bad_user_input_gets_one_line(runner, tmp_path, case, face_classifier, pets_folder):
    path, labels, *_ = face_classifier
    args = ["--model", str(path), "--image-dir", str(pets_folder[0]), "--images", "2"]
    if case == "unknown preprocess":
        args += ["--preprocess", "imagenet"]
        fragment = "unknown --preprocess mode 'imagenet'; choose one of none, tf, torch, caffe"
    elif case == "malformed rescale":
        args += ["--rescale", "1/255"]
        fragment = "--rescale scale '1/255' is not a number"
    elif case == "missing import":
        args += ["--import", str(tmp_path / "nowhere.py")]
        fragment = "nowhere.py' does not exist"
    elif case == "raising import":
        broken = tmp_path / "broken.py"
        broken.write_text("raise RuntimeError('the user module failed')\n")
        args += ["--import", str(broken)]
        fragment = "raised RuntimeError: the user module failed"
    elif case == "labels count":
        wrong = tmp_path / "labels.txt"
        wrong.write_text("a\nb\nc\n")
        args += ["--labels", str(wrong)]
        fragment = "the labels file names 3 classes but output 'face_prob' has 2"
    elif case == "rescale and preprocess":
        args += ["--rescale", "0.5", "--preprocess", "tf"]
        fragment = "give --preprocess or --rescale, not both"
    else:
        inputs = keras.Input((16, 16, 2))
        two = keras.Model(inputs, layers.Conv2D(2, 3)(inputs))
        args[1] = str(tmp_path / "two.keras")
        two.save(args[1])
        fragment = "the model takes 2-channel images"
    out = tmp_path / "site"
    result = runner.invoke(app, ["build", *args, "--out", str(out), "-q"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.output
    assert not out.exists()


def test_readme_notebook_example_runs(tmp_path, monkeypatch):
    """The README's Python example, as written, builds a site (run in a scratch folder)."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    example = readme.split("**From a notebook**", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {})  # noqa: S102  (our own documentation)
    predictions = json.loads((tmp_path / "notebook_site" / "data" / "predictions.json").read_text())
    assert len(predictions["images"]) == 4
    assert predictions["outputs"][0]["classes"] == ["cat", "dog"]


@pytest.mark.parametrize("classes", [10, 37])
def test_class_folders_of_many_classes_get_scikit_learns_probe(runner, tmp_path, classes):
    """Class folders taken round-robin (image i of class i mod K), K a multiple of the 10 folds or
    not: the site's class probe equals scikit-learn's ridge on the model's own layer outputs, with
    the folds the site lists."""
    from sklearn_reference import held_out_predictions

    from reportgen.targets import Targets

    keras.utils.set_random_seed(classes)
    rng = np.random.default_rng(classes)
    folder = tmp_path / "photos"
    colours = rng.integers(40, 216, (classes, 3))
    for cls in rng.permutation(classes):  # folders made in any order
        (folder / f"class_{cls:02d}").mkdir(parents=True)
        for k in range(3):
            noisy = colours[cls] + rng.normal(0, 20, (16, 16, 3))
            Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(folder / f"class_{cls:02d}" / f"{k}.png")
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(16, 3, activation="relu", name="first")(inputs)
    x = layers.Conv2D(24, 3, strides=2, name="second")(x)
    model = keras.Model(inputs, layers.Dense(classes, activation="softmax")(layers.GlobalAveragePooling2D()(x)))
    path = tmp_path / "colours.keras"
    model.save(path)
    count = 3 * classes
    site = _build(runner, tmp_path / "site", "--model", path, "--image-dir", folder, "--images", count,
                  "--preprocess", "tf")
    found = _stats(site)
    manifest = json.loads((site / "data" / "manifest.json").read_text())
    ids = manifest["data"]["image_ids"]
    names = manifest["data"]["class_names"]
    labels = np.array([names.index(i.split("/")[0]) for i in ids])
    targets = Targets.decide(ids, list(labels))
    assert manifest["statistics"]["fold_sizes"] == np.bincount(targets.folds).tolist()

    pixels = np.stack([np.asarray(Image.open(folder / i)) for i in ids]).astype(np.float32) / 127.5 - 1
    for row in found["layers"]:
        maps = keras.Model(model.inputs, model.get_layer(row["name"]).output)(pixels).numpy()
        pooled = maps.astype(np.float16).astype(np.float64).mean(axis=(1, 2))  # the spill keeps float16
        predicted = held_out_predictions(pooled, np.eye(classes)[labels], targets.folds).argmax(axis=1)
        expected = float(np.mean(predicted == labels))
        assert row["class_probe_accuracy"] == pytest.approx(expected, abs=1.01 / count), row["name"]
        assert expected > 3 / classes  # far above chance (1 / classes): the colours are decodable
