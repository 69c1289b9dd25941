"""`reportgen compare MODEL_A MODEL_B`: two models on the same images, as a site of its own."""

import json

import keras
import numpy as np
from keras import layers

from conftest import small_unet
from reportgen.cli import app


def _other_architecture(path):
    """Not a U-Net: three plain convs at 32 px, one of them strided, and an upsampled 3-class head."""
    keras.utils.set_random_seed(7)
    inputs = keras.Input((32, 32, 3), name="image")
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.Conv2D(10, 5, padding="same", activation="relu", name="first")(x)
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="second")(x)
    x = layers.UpSampling2D(2)(x)
    keras.Model(inputs, layers.Conv2D(3, 1, activation="softmax", name="head")(x)).save(path)


def test_compare_writes_a_site_of_two_models(tmp_path, small_model_path, pets_folder, runner):
    """A model against itself: CKA 1 on the diagonal, every layer its own best match, every channel
    matched to itself; against another seed and another architecture: a site with every layer matched."""
    images, _ = pets_folder
    out = tmp_path / "same"
    result = runner.invoke(app, ["compare", str(small_model_path), str(small_model_path), "--image-dir", str(images),
                                 "--stats-images", "6", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "on 6 images" in result.output
    found = json.loads((out / "data" / "compare.json").read_text())
    assert found["images"] == 6 and found["a"]["layers"] == ["enc", "mid", "dec", "segmentation"]
    np.testing.assert_allclose(np.diag(np.array(found["cka"], float)), 1.0, atol=1e-6)
    assert [(row["index"], row["match_index"]) for row in found["best_match"]] == [(1, 1), (2, 2), (3, 3), (4, 4)]
    for layer in found["channels"]:
        assert [(a, b) for a, b, _ in layer["pairs"] if a != b] == []
    page = (out / "index.html").read_text()
    assert "4 of 4 layers of A match best the layer at the same position in B." in page
    assert (out / "img" / "cka-light.svg").is_file() and (out / "assets" / "style.css").is_file()

    seed = tmp_path / "seed.keras"
    small_unet(32, 3, "softmax", "image", "segmentation", seed=11).save(seed)
    other = tmp_path / "other.keras"
    _other_architecture(other)
    for model in (seed, other):
        out = tmp_path / model.stem
        result = runner.invoke(app, ["compare", str(small_model_path), str(model), "--image-dir", str(images),
                                     "--stats-images", "all", "--out", str(out)])
        assert result.exit_code == 0, result.output
        found = json.loads((out / "data" / "compare.json").read_text())
        matrix = np.array(found["cka"], float)
        assert matrix.shape == (4, len(found["b"]["layers"])) and np.isfinite(matrix).all()
        assert len(found["best_match"]) == 4


def test_compare_refuses_models_with_different_inputs(tmp_path, small_model_path, tiny_model_path, pets_folder,
                                                      runner):
    images, _ = pets_folder
    result = runner.invoke(app, ["compare", str(small_model_path), str(tiny_model_path), "--image-dir", str(images),
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert "the two models take different inputs" in result.output


def test_compare_on_beam_equals_in_process(tmp_path, small_model_path, pets_folder, runner):
    """Two seeds of the small U-Net over the 6 pets: on Beam's DirectRunner with two worker processes
    (two shards of whole batches, their sums merged) the cross-model CKA, the best matches and the
    matched channels are those of the in-process comparison, to 1e-6."""
    images, _ = pets_folder
    seed = tmp_path / "seed.keras"
    small_unet(32, 3, "softmax", "image", "segmentation", seed=11).save(seed)
    found = {}
    for name, extra in (("in_process", []), ("beam", ["--runner", "DirectRunner", "--workers", "2",
                                                      "--beam-option", "direct_running_mode=multi_processing"])):
        out = tmp_path / name
        result = runner.invoke(app, ["compare", str(small_model_path), str(seed), "--image-dir", str(images),
                                     "--stats-images", "all", "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
        found[name] = json.loads((out / "data" / "compare.json").read_text())
    in_process, beam = found["in_process"], found["beam"]
    assert beam["images"] == in_process["images"] == 6
    matrix = np.array(in_process["cka"], float)
    assert matrix.shape == (4, 4) and np.isfinite(matrix).all() and not np.allclose(matrix, 1.0)
    np.testing.assert_allclose(np.array(beam["cka"], float), matrix, atol=1e-6)
    assert [(r["index"], r["match_index"]) for r in beam["best_match"]] == \
        [(r["index"], r["match_index"]) for r in in_process["best_match"]]
    assert [[(a, b) for a, b, _ in c["pairs"]] for c in beam["channels"]] == \
        [[(a, b) for a, b, _ in c["pairs"]] for c in in_process["channels"]]


def test_compare_refuses_beam_options_without_a_runner_and_unknown_runners(tmp_path, small_model_path, pets_folder,
                                                                            runner):
    images, _ = pets_folder
    common = ["compare", str(small_model_path), str(small_model_path), "--image-dir", str(images),
              "--out", str(tmp_path / "out")]
    for extra, message in ((["--beam-option", "direct_num_workers=2"], "--beam-option needs --runner"),
                           (["--runner", "NoSuchRunner"], "unknown --runner 'NoSuchRunner'")):
        result = runner.invoke(app, [*common, *extra])
        lines = result.output.strip().splitlines()
        assert result.exit_code != 0 and len(lines) == 1 and message in lines[0], result.output
