"""`reportgen timeline --checkpoints DIR`: each layer of a run's checkpoints against its final self."""

import json

import keras
import numpy as np
from keras import layers

from reportgen import timeline
from reportgen.cli import app
from reportgen.inputs import InputConvention
from reportgen.sources import SourceImage


def test_a_digits_run_settles_and_its_last_checkpoint_is_its_own_final_self(tmp_path):
    """A small CNN trained on scikit-learn's digits, a checkpoint after each of 5 epochs: the last
    checkpoint has CKA 1 with itself, every layer settles at some checkpoint, and the first checkpoint,
    before most of the training, is further from the final one than the fourth."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.repeat((digits.images / 16.0 * 255).astype(np.uint8)[..., None], 3, axis=-1)
    keras.utils.set_random_seed(3)
    inputs = keras.Input((8, 8, 3))
    h = layers.Rescaling(1 / 255)(inputs)
    for k, width in enumerate((16, 16, 32)):
        h = layers.Conv2D(width, 3, padding="same", activation="relu", name=f"conv{k}")(h)
    model = keras.Model(inputs, layers.Dense(10, activation="softmax")(layers.GlobalAveragePooling2D()(h)))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x[:1500], digits.target[:1500], epochs=5, batch_size=64, verbose=0, callbacks=[
        keras.callbacks.ModelCheckpoint(str(tmp_path / "epoch_{epoch}.keras"))])
    paths = timeline.checkpoints_in(tmp_path)
    assert [p.name for p in paths] == [f"epoch_{k}.keras" for k in range(1, 6)]
    items = tuple(SourceImage(f"d{i}", x[1500 + i], None) for i in range(64))
    prints = [timeline.measure_fingerprint(keras.saving.load_model(p), items, InputConvention("none"), 8)
              for p in paths]
    found = timeline.timeline(prints, [p.stem for p in paths])
    assert found.images == 64 and found.estimator == "unbiased"
    np.testing.assert_allclose(found.cka[:, -1], 1.0, atol=1e-6)
    assert all(0 <= t <= 4 for t in found.settled)
    assert np.all(found.cka[:, 0] < found.cka[:, 3]), np.round(found.cka, 3)
    assert np.all(found.low[:, :-1] <= found.cka[:, :-1]) and np.all(found.cka[:, :-1] <= found.high[:, :-1])
    assert any("settled" in line for line in found.findings)


def test_timeline_command_writes_its_site(tmp_path, small_model_path, pets_folder, runner):
    """Three "checkpoints" of the 4-conv U-Net: the model, a copy with its last layers moved a little, and
    the model again; the page names every layer and the data file says each one's CKA with the last."""
    folder = tmp_path / "run"
    folder.mkdir()
    model = keras.saving.load_model(small_model_path)
    model.save(folder / "step_10.keras")
    rng = np.random.default_rng(0)
    for name in ("dec", "segmentation"):
        layer = model.get_layer(name)
        layer.set_weights([w + rng.normal(size=w.shape).astype(w.dtype) * 2 * np.std(w) for w in layer.get_weights()])
    model.save(folder / "step_2.keras")
    keras.saving.load_model(small_model_path).save(folder / "step_30.keras")
    images, _ = pets_folder
    out = tmp_path / "timeline"
    result = runner.invoke(app, ["timeline", "--checkpoints", str(folder), "--image-dir", str(images),
                                 "--stats-images", "all", "--out", str(out)])
    assert result.exit_code == 0, result.output
    found = json.loads((out / "data" / "timeline.json").read_text())
    assert found["checkpoints"] == ["step_2", "step_10", "step_30"] and found["images"] == 6
    cka = np.array(found["cka"], float)
    np.testing.assert_allclose(cka[:, 1:], 1.0, atol=1e-6)  # step_10 is step_30
    np.testing.assert_allclose(cka[:2, 0], 1.0, atol=1e-6)  # enc and mid did not change
    assert found["settled"][:2] == ["step_2", "step_2"] and found["settled"][3] == "step_10"
    page = (out / "index.html").read_text()
    assert "conv 1 to conv 2 settled by step_2 (checkpoint 1 of 3)" in page
    assert (out / "img" / "cka-light.svg").is_file()


def test_a_folder_with_one_checkpoint_is_refused(tmp_path, small_model_path, pets_folder, runner):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "only.keras").write_bytes(small_model_path.read_bytes())
    result = runner.invoke(app, ["timeline", "--checkpoints", str(folder), "--image-dir", str(pets_folder[0]),
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code != 0 and "a timeline needs two or more" in result.output


def _probe_images(folder, count: int = 12):
    """`count` synthetic pets at 32 px, as lossless PNG files in `folder` and as the arrays they hold."""
    from PIL import Image

    from reportgen.datasets.synthetic_pets.render import render_example

    folder.mkdir()
    arrays = []
    for i in range(count):
        picture = Image.fromarray(render_example(7, i).image).resize((32, 32), Image.Resampling.NEAREST)
        picture.save(folder / f"pet_{i:02d}.png")
        arrays.append(np.asarray(picture))
    return arrays


def test_fingerprints_written_during_fit_give_the_checkpoints_timeline(tmp_path, runner):
    """The 4-conv U-Net fitted 3 epochs with reportgen.FingerprintCallback and a ModelCheckpoint each
    epoch: `timeline --fingerprints` (no model) gives the timeline `timeline --checkpoints` measures from
    the checkpoints on the same images, to 1e-6, and training moved the first epoch away from the last."""
    import reportgen
    from conftest import small_unet

    arrays = _probe_images(tmp_path / "images")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (48, 32, 32, 3)).astype("float32")
    y = (x.mean(axis=-1) > 127).astype("int32")[..., None]  # a mask the model can learn from its pixels
    model = small_unet(32, 2, "softmax", "image", "segmentation", seed=5)
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    prints, checkpoints = tmp_path / "prints", tmp_path / "checkpoints"
    model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[
        reportgen.FingerprintCallback(arrays, prints, batch_size=5),
        keras.callbacks.ModelCheckpoint(str(checkpoints / "epoch_{epoch}.keras"))])
    assert sorted(p.name for p in prints.iterdir()) == [f"epoch_{k}.fingerprint.npz" for k in (1, 2, 3)]

    found = {}
    for option, folder in (("--fingerprints", prints), ("--checkpoints", checkpoints)):
        out = tmp_path / option.strip("-")
        result = runner.invoke(app, ["timeline", option, str(folder), "--image-dir", str(tmp_path / "images"),
                                     "--stats-images", "all", "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert f"timeline of 3 {option.strip('-')} on 12 images" in result.output
        found[option] = json.loads((out / "data" / "timeline.json").read_text())
    from_prints, from_checkpoints = found["--fingerprints"], found["--checkpoints"]
    assert from_prints["checkpoints"] == from_checkpoints["checkpoints"] == ["epoch_1", "epoch_2", "epoch_3"]
    assert from_prints["layers"] == from_checkpoints["layers"] == ["enc", "mid", "dec", "segmentation"]
    for key in ("cka", "low", "high"):
        np.testing.assert_allclose(np.array(from_prints[key], float), np.array(from_checkpoints[key], float),
                                   atol=1e-6)
    assert np.nanmin(np.array(from_prints["cka"], float)[:, 0]) < 0.999  # the epochs differ: not 1 = 1
    assert from_prints["settled"] == from_checkpoints["settled"]


def test_bad_fingerprint_folders_are_one_line_errors(tmp_path, runner):
    """No folder, an empty one, a file that is not a fingerprint, and both or neither option: one line each
    (the error and nothing else), and a non-zero exit."""
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "epoch_1.fingerprint.npz").write_bytes(b"not an npz")
    (bad / "epoch_2.fingerprint.npz").write_bytes(b"not an npz")
    cases = {
        ("--fingerprints", str(tmp_path / "missing")): "not a folder",
        ("--fingerprints", str(empty)): "0 fingerprint files (.npz); a timeline needs two or more",
        ("--fingerprints", str(bad)): "epoch_1.fingerprint.npz is not a reportgen fingerprint",
        ("--fingerprints", str(empty), "--checkpoints", str(empty)): "give exactly one of --checkpoints",
        (): "give exactly one of --checkpoints",
    }
    for arguments, message in cases.items():
        result = runner.invoke(app, ["timeline", *arguments, "--out", str(tmp_path / "out")])
        assert result.exit_code != 0, arguments
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output


def test_fingerprint_callback_checks_its_arguments_before_fit(tmp_path):
    """Too few probe images for the unbiased CKA, and an unknown input convention, fail when the callback
    is made, in one line, not at the end of the first epoch."""
    import pytest

    import reportgen
    from reportgen.errors import InputError

    pictures = [np.zeros((8, 8, 3), np.uint8)] * 4
    with pytest.raises(InputError, match="at least 4 probe images, got 3"):
        reportgen.FingerprintCallback(pictures[:3], tmp_path)
    with pytest.raises(InputError, match="unknown --preprocess mode 'nope'"):
        reportgen.FingerprintCallback(pictures, tmp_path, preprocess="nope")
    assert not any(tmp_path.iterdir())  # nothing written before fit


def test_fingerprints_kept_beside_the_model_make_a_page_of_its_builds(tmp_path, runner, pets_folder):
    """A model that keeps its run's fingerprints beside its file (NAME.fingerprints/ for NAME.keras) gets a
    timeline page in every build, with the numbers `timeline --fingerprints` gives for the same folder;
    a change to the kept fingerprints rebuilds the site, and kept files that are not fingerprints stop
    the build in one line and leave the site as it was."""
    import reportgen
    from conftest import small_unet

    arrays = _probe_images(tmp_path / "probe")
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, (32, 32, 32, 3)).astype("float32")
    y = (x.mean(axis=-1) > 127).astype("int32")[..., None]
    model = small_unet(32, 3, "softmax", "image", "segmentation", seed=6)
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    kept = tmp_path / "unet.fingerprints"
    model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[reportgen.FingerprintCallback(arrays, kept)])
    model.save(tmp_path / "unet.keras")

    images, trimaps = pets_folder
    site = tmp_path / "site"
    build = ["build", "--model", str(tmp_path / "unet.keras"), "--image-dir", str(images), "--trimap-dir",
             str(trimaps), "--images", "2", "--out", str(site), "-q"]
    result = runner.invoke(app, build)
    assert result.exit_code == 0, result.output
    alone = tmp_path / "alone"
    assert runner.invoke(app, ["timeline", "--fingerprints", str(kept), "--out", str(alone)]).exit_code == 0
    page = (site / "timeline.html").read_text()
    assert json.loads((site / "data" / "timeline.json").read_text()) == \
        json.loads((alone / "data" / "timeline.json").read_text())
    assert "Training timeline: 3 checkpoints" in page and 'href="data/timeline.json"' in page
    assert '<a href="index.html#layers">Layers</a>' in page  # the build's own frame, not a site of its own
    assert all((site / f"img/charts/timeline-cka-{theme}.svg").is_file() for theme in ("light", "dark"))
    assert 'href="timeline.html"' in (site / "index.html").read_text()
    assert 'href="../timeline.html">Training</a>' in next((site / "layers").glob("*.html")).read_text()

    (kept / "epoch_3.fingerprint.npz").unlink()  # the kept fingerprints decide a page: not up to date
    result = runner.invoke(app, build)
    assert result.exit_code == 0 and "Training timeline: 2 checkpoints" in (site / "timeline.html").read_text()

    (kept / "epoch_2.fingerprint.npz").write_bytes(b"not a fingerprint")
    before = (site / "index.html").read_text()
    result = runner.invoke(app, build)
    assert result.exit_code != 0
    (line,) = result.output.strip().splitlines()
    assert "the fingerprints kept beside the model," in line and "epoch_2.fingerprint.npz is not a reportgen" in line
    assert (site / "index.html").read_text() == before


def test_a_model_without_kept_fingerprints_has_no_timeline_page(tiny_site):
    assert not (tiny_site / "timeline.html").exists()
    assert "timeline.html" not in (tiny_site / "index.html").read_text()
