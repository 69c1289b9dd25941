"""Keras graphs unlike a plain chain: channels_first layers and inputs, shared layers and towers under
either `--input`, a ConvNeXt-like block (depthwise conv, Dense on the maps, `x + y`), grouped convs.

Each site's per-channel strengths (the mean over images of each channel's spatial standard deviation)
are checked against the same formula applied here to Keras' own output of the layer's call on the
images' path, so a build that tapped the wrong call or read the wrong axis fails.
"""

import json
import re

import keras
import numpy as np
import pytest
from keras import layers
from PIL import Image, ImageOps

from reportgen import platform_support
from reportgen.cli import app
from reportgen.outdir import SITE_MARKER

SIZE = 32


def _pixels(folder, count):
    files = sorted(folder.iterdir())[:count]
    return files, np.stack([np.asarray(Image.open(f).convert("RGB").resize((SIZE, SIZE), Image.Resampling.NEAREST),
                                       np.float32) for f in files])


def _strengths(maps: np.ndarray) -> np.ndarray:
    """The report's ranking measure, written out: per image and channel the population std over the
    map's positions, then the mean over images. `maps` is images x height x width x channels."""
    flat = maps.reshape(len(maps), -1, maps.shape[-1]).astype(np.float64)
    return flat.std(axis=1).mean(axis=0)


def _site_layers(site):
    rows = json.loads((site / "data" / "stats.json").read_text())["layers"]
    return {row["name"]: row for row in rows}


def _build(runner, tmp_path, model, images, *args, name="site"):
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    out = tmp_path / name
    result = runner.invoke(app, ["build", "--model", str(path), "--image-dir", str(images), "--images", "4",
                                 "--out", str(out), "-q", *map(str, args)])
    assert result.exit_code == 0, result.output
    return out


def _assert_strengths(site_row, maps):
    expected = _strengths(maps)
    assert expected.max() > 1e-3, "the reference itself is flat: the test would not tell a wrong tap"
    got = np.array(site_row["channels"]["strength"], np.float64)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=2e-3, atol=1e-3 * expected.max())


# --- channels_first ---------------------------------------------------------------------------------------

def _channels_first_model():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((SIZE, SIZE, 3), name="photo")
    x = layers.Permute((3, 1, 2))(inputs)  # to channels first, as a model exported from PyTorch does
    x = layers.Conv2D(8, 3, padding="same", data_format="channels_first", name="cf_conv1")(x)
    x = layers.MaxPooling2D(2, data_format="channels_first")(x)
    x = layers.Conv2D(6, 3, padding="same", data_format="channels_first", activation="relu", name="cf_conv2")(x)
    x = layers.GlobalAveragePooling2D(data_format="channels_first")(x)
    return keras.Model(inputs, layers.Dense(3, activation="softmax", name="species")(x), name="channels_first")


def _refused(runner, tmp_path, model, images, layer):
    """The build of a model whose channels_first conv this CPU cannot run: one line naming `layer` and
    what to do, exit 2, and the site that was there before left as it was."""
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    out = tmp_path / "site"
    out.mkdir()
    (out / SITE_MARKER).write_text("{}")
    (out / "index.html").write_text("the previous site")
    result = runner.invoke(app, ["build", "--model", str(path), "--image-dir", str(images), "--images", "4",
                                 "--out", str(out), "-q"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert f"'{layer}'" in lines[0] and 'data_format="channels_last"' in lines[0] and "Traceback" not in lines[0]
    assert sorted(p.name for p in out.iterdir()) == sorted(["index.html", SITE_MARKER])
    assert (out / "index.html").read_text() == "the previous site"


def test_channels_first_layers_are_read_along_their_channel_axis(runner, tmp_path, pets_folder):
    """Where this CPU's TensorFlow runs NCHW convs, the maps are read along the channel axis; where it
    cannot (the probe decides, at run time), the build is refused in one line naming the first such conv."""
    model = _channels_first_model()
    if not platform_support.runs_channels_first("Conv2D", 2):
        _refused(runner, tmp_path, model, pets_folder[0], "cf_conv1")
        return
    site = _build(runner, tmp_path, model, pets_folder[0])
    _, pixels = _pixels(pets_folder[0], 4)
    rows = _site_layers(site)
    for name, channels in (("cf_conv1", 8), ("cf_conv2", 6)):
        raw = keras.Model(model.inputs, model.get_layer(name).output).predict(pixels, verbose=0)
        assert raw.shape[1] == channels
        assert rows[name]["output_shape"][-1] == channels
        _assert_strengths(rows[name], np.moveaxis(raw, 1, -1))
    assert "channels_first" in rows["cf_conv1"]["type"]


def test_a_channels_first_input_is_fed_channels_first(runner, tmp_path, pets_folder):
    keras.utils.set_random_seed(4)
    inputs = keras.Input((3, SIZE, SIZE), name="chw")
    x = layers.Conv2D(5, 3, padding="same", data_format="channels_first", name="first")(inputs)
    x = layers.GlobalAveragePooling2D(data_format="channels_first")(x)
    model = keras.Model(inputs, layers.Dense(2, name="logits")(x), name="chw_model")
    if not platform_support.runs_channels_first("Conv2D", 2):
        _refused(runner, tmp_path, model, pets_folder[0], "first")
        return
    site = _build(runner, tmp_path, model, pets_folder[0])
    _, pixels = _pixels(pets_folder[0], 4)
    raw = keras.Model(model.inputs, model.get_layer("first").output).predict(np.moveaxis(pixels, -1, 1), verbose=0)
    _assert_strengths(_site_layers(site)["first"], np.moveaxis(raw, 1, -1))
    manifest = json.loads((site / "data" / "manifest.json").read_text())
    assert manifest["input"]["channels"] == 3


def test_a_conv_the_cpu_cannot_run_is_refused_in_one_line(runner, tmp_path, pets_folder, monkeypatch):
    """The refusal, on every CPU: the probe's answer forced to 'cannot'. Only the channels_first conv is
    refused; the channels_last ones of the same class are asked about by no one."""
    asked = []

    def cannot(kind, rank):
        asked.append((kind, rank))
        return False

    monkeypatch.setattr(platform_support, "runs_channels_first", cannot)
    keras.utils.set_random_seed(6)
    inputs = keras.Input((SIZE, SIZE, 3), name="photo")
    x = layers.Conv2D(4, 3, padding="same", name="plain")(inputs)
    x = layers.Permute((3, 1, 2))(x)
    x = layers.Conv2D(3, 3, padding="same", data_format="channels_first", name="nchw \x1b")(x)
    x = layers.GlobalAveragePooling2D(data_format="channels_first")(x)
    model = keras.Model(inputs, layers.Dense(2, name="logits")(x), name="forced")
    _refused(runner, tmp_path, model, pets_folder[0], "nchw \\x1b")
    assert asked == [("Conv2D", 2)]


# --- shared layers: a siamese model ------------------------------------------------------------------------

def _siamese():
    keras.utils.set_random_seed(5)
    tower_in = keras.Input((SIZE, SIZE, 3))
    t = layers.Conv2D(6, 3, padding="same", activation="relu", name="tower_conv")(tower_in)
    tower = keras.Model(tower_in, layers.MaxPooling2D(2)(t), name="tower")
    shared = layers.Conv2D(4, 3, padding="same", name="shared_conv")
    left, right = keras.Input((SIZE, SIZE, 3), name="left"), keras.Input((SIZE, SIZE, 3), name="right")
    a, b = shared(tower(left)), shared(tower(right))
    own = layers.Conv2D(3, 1, name="right_only")(b)  # a layer that only the right input reaches
    distance = layers.GlobalAveragePooling2D()(keras.ops.abs(a - b))
    pooled = layers.GlobalAveragePooling2D()(own)
    return keras.Model([left, right], [layers.Dense(1, name="same")(distance), pooled], name="siamese")


@pytest.mark.parametrize("chosen", ["left", "right"])
def test_shared_layers_are_tapped_on_the_chosen_inputs_call(runner, tmp_path, pets_folder, chosen):
    model = _siamese()
    site = _build(runner, tmp_path, model, pets_folder[0], "--input", chosen)
    _, pixels = _pixels(pets_folder[0], 4)
    tower = model.get_layer("tower")
    inner = keras.Model(tower.inputs, tower.get_layer("tower_conv").output).predict(pixels, verbose=0)
    shared = np.asarray(model.get_layer("shared_conv")(tower(pixels)))
    rows = _site_layers(site)
    _assert_strengths(rows["tower/tower_conv"], inner)
    _assert_strengths(rows["shared_conv"], shared)
    index = (site / "index.html").read_text()
    if chosen == "left":
        assert "right_only" not in rows
        assert ("3 conv layer calls that this input does not reach are left out: tower/tower_conv (its other "
                "call), shared_conv (its other call), right_only") in index
    else:
        own = np.asarray(model.get_layer("right_only")(shared))
        _assert_strengths(rows["right_only"], own)


def test_a_layer_called_twice_on_the_images_path_is_reported_per_call(runner, tmp_path, pets_folder):
    keras.utils.set_random_seed(6)
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    twice = layers.Conv2D(3, 3, padding="same", activation="tanh", name="twice")
    first = twice(layers.Rescaling(1 / 255)(inputs))
    second = twice(first)
    model = keras.Model(inputs, layers.GlobalAveragePooling2D()(second), name="recurrent")
    site = _build(runner, tmp_path, model, pets_folder[0])
    _, pixels = _pixels(pets_folder[0], 4)
    once = np.asarray(twice(pixels / 255))
    rows = _site_layers(site)
    _assert_strengths(rows["twice (call 1)"], once)
    _assert_strengths(rows["twice (call 2)"], np.asarray(twice(once)))


# --- a ConvNeXt-like block, grouped convs ---------------------------------------------------------------

def _convnext_block():
    keras.utils.set_random_seed(7)
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = layers.Conv2D(8, 4, strides=4, name="stem")(layers.Rescaling(1 / 127.5, -1)(inputs))
    y = layers.DepthwiseConv2D(7, padding="same", name="dw")(x)
    y = layers.LayerNormalization(epsilon=1e-6)(y)
    y = layers.Dense(32, activation="gelu", name="pw1")(y)
    y = layers.Dense(8, name="pw2")(y)
    x = x + y  # keras.ops in the graph
    x = layers.Conv2D(8, 3, padding="same", groups=4, name="grouped")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(3, activation="softmax", name="classes")(x), name="convnext_like")


def test_convnext_like_block(runner, tmp_path, pets_folder):
    model = _convnext_block()
    site = _build(runner, tmp_path, model, pets_folder[0])
    _, pixels = _pixels(pets_folder[0], 4)
    rows = _site_layers(site)
    assert list(rows) == ["stem", "dw", "pw1", "pw2", "grouped"]
    for name in rows:
        raw = keras.Model(model.inputs, model.get_layer(name).output).predict(pixels, verbose=0)
        _assert_strengths(rows[name], raw)
    assert rows["pw1"]["type"] == "Dense on the maps (a 1x1 conv)"
    assert rows["grouped"]["type"] == "Conv2D (groups=4)"
    assert rows["grouped"]["receptive_field"] == 4 + 6 * 4 + 2 * 4  # stem 4, 7x7 at jump 4, 3x3 at jump 4


# --- 16-bit images --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """Four 12-bit grayscale scans in 16-bit PNGs (PIL mode I;16), already at the model's size."""
    folder = tmp_path_factory.mktemp("scans")
    rng = np.random.default_rng(12)
    ramp = np.linspace(0, 1, SIZE)
    for i in range(4):
        scan = 4095 * np.clip(np.outer(ramp, ramp[::-1]) * 0.6 + rng.uniform(0, 0.4, (SIZE, SIZE)), 0, 1)
        Image.fromarray(scan.astype(np.uint16)).save(folder / f"scan_{i}.png")
    return folder


def _grayscale_model():
    keras.utils.set_random_seed(9)
    inputs = keras.Input((SIZE, SIZE, 1), name="scan")
    x = layers.Conv2D(6, 3, padding="same", name="first")(inputs)
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(4, 3, padding="same", name="second")(x))
    return keras.Model(inputs, layers.Dense(2, name="finding")(x), name="scanner")


@pytest.mark.parametrize("depth, scale", [("scale", 255 / 65535), ("raw", 1 / 4095)])
def test_16_bit_images_keep_every_grey_level(runner, tmp_path, scans, depth, scale):
    model = _grayscale_model()
    args = ["--depth", depth] + (["--rescale", f"{scale!r}"] if depth == "raw" else [])
    site = _build(runner, tmp_path, model, scans, *args)
    stored = np.stack([np.asarray(Image.open(f), np.float64) for f in sorted(scans.iterdir())])[..., None]
    assert len(np.unique(stored)) > 1000
    first = keras.Model(model.inputs, model.get_layer("first").output)
    expected = first.predict((stored * scale).astype(np.float32), verbose=0)
    quantised = first.predict((np.floor(stored / 257) * (65535 / 255 * scale)).astype(np.float32), verbose=0)
    assert np.abs(_strengths(expected) - _strengths(quantised)).max() > 0.01 * _strengths(expected).max()
    _assert_strengths(_site_layers(site)["first"], expected)
    index = (site / "index.html").read_text()
    assert "4 of the 4 images have 16 bits per pixel" in index and f"(--depth {depth})" in index


# --- EXIF orientation -------------------------------------------------------------------------------------

def test_exif_orientation_is_ignored_as_keras_does_or_applied_with_exif(runner, tmp_path):
    """Four photos stored on their side (EXIF orientation 6, as phones write them): without --exif the
    model sees them as stored, as image_dataset_from_directory gives them; with --exif, turned upright.
    Each site's strengths equal the model's own layer output on the one or the other."""
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(4)
    stored, upright = [], []
    for i in range(4):
        pixels = np.zeros((SIZE, SIZE, 3), np.uint8)
        pixels[:, : SIZE // 4] = rng.integers(100, 255, 3)  # a bright band on the left as stored
        pixels += rng.integers(0, 40, pixels.shape, dtype=np.uint8)
        photo = Image.fromarray(pixels)
        exif = photo.getexif()
        exif[0x0112] = 6
        photo.save(photos / f"photo_{i}.jpg", exif=exif, quality=95)
        with Image.open(photos / f"photo_{i}.jpg") as saved:
            stored.append(np.asarray(saved.convert("RGB"), np.float32))
            upright.append(np.asarray(ImageOps.exif_transpose(saved).convert("RGB"), np.float32))
    keras.utils.set_random_seed(2)
    inputs = keras.Input((SIZE, SIZE, 3))
    model = keras.Model(inputs, layers.Conv2D(4, (1, 5), padding="same", name="edges")(inputs), name="oriented")
    probe = keras.Model(model.inputs, model.get_layer("edges").output)
    as_stored, turned = probe.predict(np.stack(stored), verbose=0), probe.predict(np.stack(upright), verbose=0)
    assert np.abs(_strengths(as_stored) - _strengths(turned)).max() > 0.05 * _strengths(as_stored).max()
    for flag, expected, said in ((None, as_stored, "it was ignored, as in Keras image_dataset_from_directory"),
                                 ("--exif", turned, "it was applied (--exif)")):
        site = _build(runner, tmp_path, model, photos, *([flag] if flag else []), name=f"site{flag}")
        _assert_strengths(_site_layers(site)["edges"], expected)
        assert f"4 of the 4 images have an EXIF orientation: {said}" in (site / "index.html").read_text()


# --- what the model got right: labelled folders of 10 classes -------------------------------------------

def _wilson(hits, n, z=1.6448536269514722):
    """The Wilson score interval at 90%, written out."""
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


@pytest.mark.parametrize("statistics", ["pictured", "beam"])
def test_accuracy_on_ten_labelled_classes(runner, tmp_path, statistics):
    """Top-1 and top-5 of an untrained 10-class model on 30 labelled images, against the counts and
    Wilson intervals written out here: on 30 pictured images, or on 4 pictured and all 30 as
    statistics images on Beam (the workers grade the model as they measure the layers)."""
    import html

    rng = np.random.default_rng(10)
    names = [f"kind_{k}" for k in range(10)]
    folder = tmp_path / "photos"
    for k, name in enumerate(names):
        (folder / name).mkdir(parents=True)
        for i in range(3):
            tint = np.array([25 * k, 255 - 25 * k, 128], np.float64)
            picture = np.clip(tint + rng.normal(0, 40, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(picture).save(folder / name / f"{i}.png")
    labels = tmp_path / "labels.txt"
    shuffled = list(rng.permutation(names))  # the model's class order is not the folders' order
    labels.write_text("\n".join(shuffled) + "\n")
    keras.utils.set_random_seed(11)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(8, 3, activation="relu", name="conv")(inputs / 255.0))
    model = keras.Model(inputs, layers.Dense(10, activation="softmax", name="kind")(x), name="kinds")
    extra = ["--images", 30] if statistics == "pictured" else ["--stats-images", "all"]
    site = _build(runner, tmp_path, model, folder, "--labels", labels, *extra)
    files = sorted(folder.rglob("*.png"))
    pixels = np.stack([np.asarray(Image.open(f).convert("RGB"), np.float32) for f in files])
    scores = model.predict(pixels, verbose=0)
    truth = np.array([shuffled.index(f.parent.name) for f in files])
    ranked = np.argsort(-scores, axis=1)
    top1, top5 = int((ranked[:, 0] == truth).sum()), int((ranked[:, :5] == truth[:, None]).any(axis=1).sum())
    assert 0 < top1 < 30  # an untrained model: the count itself is what is checked
    index = html.unescape((site / "index.html").read_text())
    card = re.search(r"<dt>Accuracy</dt><dd>(.*?)</dd>", index).group(1)
    graded = card if statistics == "pictured" else card.split("; on the 30 statistics images, ")[1]
    for what, hits in (("top-1", top1), ("top-5", top5)):
        low, high = _wilson(hits, 30)
        assert f"{what} {hits / 30:.0%} (90% interval {low:.0%}-{high:.0%})" in graded
    assert "on 30 labelled images" in graded and "classes matched by name" in graded
    if statistics == "beam":
        assert card.startswith("On the pictured images, ") and "on 4 labelled images" in card


def test_a_saved_model_folder_is_refused_with_what_to_do(runner, tmp_path, pets_folder):
    import tensorflow as tf

    model = _convnext_block()
    site = _build(runner, tmp_path, model, pets_folder[0])
    before = {p: p.read_bytes() for p in site.rglob("*") if p.is_file()}
    exported = tmp_path / "exported"
    tf.saved_model.save(model, str(exported))
    result = runner.invoke(app, ["build", "--model", str(exported), "--image-dir", str(pets_folder[0]),
                                 "--out", str(site), "-q"])
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert "is a TensorFlow SavedModel folder" in line and "save the model as .keras" in line
    assert {p: p.read_bytes() for p in site.rglob("*") if p.is_file()} == before


# --- pictures fitted to the site's budget ----------------------------------------------------------------

def test_many_small_maps_are_drawn_in_fewer_levels_and_the_card_says_so(runner, tmp_path, tiny_model_path,
                                                                         pets_folder, monkeypatch):
    """The tiny SD-UNet stores 0.3 million lossless grid pixels an image; with a budget of 0.1 million
    its small-map grids come out in fewer colour levels, said on the card and on each such page,
    while the numbers stay those of the full-level build."""
    from reportgen import pipeline, render

    def built(name):
        out = tmp_path / name
        result = runner.invoke(app, ["build", "--model", str(tiny_model_path), "--image-dir", str(pets_folder[0]),
                                     "--images", "2", "--out", str(out), "-q"])
        assert result.exit_code == 0, result.output
        return out

    full = built("full")
    assert "<dt>Pictures</dt>" not in (full / "index.html").read_text()  # the default model is not reduced
    monkeypatch.setattr(pipeline, "LOSSLESS_PIXELS_PER_IMAGE", 100_000)
    reduced = built("reduced")
    card = (reduced / "index.html").read_text()
    found = re.search(r"<dt>Pictures</dt><dd>The grids of the (\d+) layers with small maps are drawn in (\d+) "
                      r"colour levels, not 256", card)
    assert found, card
    layers, levels = int(found.group(1)), int(found.group(2))
    assert levels in render.GRID_LEVELS and levels < 256
    pages = [p for p in (reduced / "layers").glob("*.html") if f"drawn in {levels} colour levels" in p.read_text()]
    assert len(pages) == layers
    for page in pages[:5]:
        for grid in (reduced / "img" / "layers" / page.stem).glob("*[0-9a-f].png"):
            assert len(np.unique(np.asarray(Image.open(grid)))) <= levels, grid
            full_grid = np.asarray(Image.open(full / grid.relative_to(reduced)), np.int32)
            assert np.abs(np.asarray(Image.open(grid), np.int32) - full_grid).max() <= 256 // levels // 2 + 1
    assert _site_layers(reduced) == _site_layers(full)
