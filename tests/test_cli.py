"""The command line as a user meets it: builds, inspect, and one-line errors for bad input."""

import json
import shutil

import keras
import numpy as np
import pytest
from PIL import Image

from reportgen.cli import app


def _build(runner, out, model, images, *extra):
    """A build in this process; `--workers 1` because no test here is about the worker pool (a pool
    start is a second TensorFlow per core)."""
    return runner.invoke(app, ["build", "--model", str(model), "--image-dir", str(images), "--out", str(out),
                               "-q", "--workers", "1", *extra])


def test_tiny_site_has_every_page_and_download(tiny_site):
    layers = sorted((tiny_site / "layers").glob("*.html"))
    assert len(layers) == 51
    assert len(list((tiny_site / "images").glob("*.html"))) == 4
    for name in ("index.html", "about.html", "404.html", ".nojekyll", "data/stats.json", "data/layers.csv",
                 "data/manifest.json", "assets/style.css", "assets/site.js"):
        assert (tiny_site / name).is_file(), name
    stats = json.loads((tiny_site / "data/stats.json").read_text())["layers"]
    assert [row["index"] for row in stats] == list(range(1, 52))
    assert sorted(stats[0]["channel_ranking"]) == list(range(stats[0]["output_shape"][-1]))
    manifest = json.loads((tiny_site / "data/manifest.json").read_text())
    assert manifest["data"]["image_ids"] == ["pet_0.jpg", "pet_1.jpg", "pet_2.jpg", "pet_3.jpg"]
    assert len(manifest["model"]["sha256"]) == 64
    index = (tiny_site / "index.html").read_text()
    assert "http://" not in index and "https://" not in index


def test_builds_are_deterministic_and_rebuilds_are_skipped(runner, tmp_path, tiny_model_path, pets_folder,
                                                            monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    images, trimaps = pets_folder
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        result = _build(runner, out, tiny_model_path, images, "--trimap-dir", str(trimaps), "--images", "2")
        assert result.exit_code == 0, result.output
    files_a = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        if rel.name != "manifest.json":
            assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel
    again = _build(runner, first, tiny_model_path, images, "--trimap-dir", str(trimaps), "--images", "2")
    assert again.exit_code == 0 and again.output.startswith("up to date")


@pytest.fixture(scope="module")
def site_without_trimaps(tmp_path_factory, tiny_model_path, pets_folder):
    """One build without trimaps, per-layer scale and gray colormap: the options two tests look at
    from their sides, built once."""
    from typer.testing import CliRunner

    out = tmp_path_factory.mktemp("no_trimaps") / "site"
    result = _build(CliRunner(), out, tiny_model_path, pets_folder[0], "--images", "1", "--scale", "layer",
                    "--cmap", "gray")
    assert result.exit_code == 0, result.output
    return out


def test_per_layer_scale_and_gray_colormap(site_without_trimaps):
    out = site_without_trimaps
    page = next((out / "layers").glob("e1_sa_main_conv1.html")).read_text()
    assert "per-layer normalisation" in page
    grid = next((out / "img" / "layers" / "e1_sa_main_conv1").glob("pet_0-*[0-9a-f].jpg"))
    pixels = np.asarray(Image.open(grid).convert("RGB")).astype(int)
    assert np.abs(pixels[..., 0] - pixels[..., 1]).max() <= 12  # gray: the channels agree (up to JPEG)


def test_without_trimaps_the_prediction_stands_in(site_without_trimaps):
    assert "predicted mask stands in" in (site_without_trimaps / "index.html").read_text()


def _assert_one_line_error(result, fragment):
    assert result.exit_code != 0
    lines = [line for line in result.output.strip().splitlines() if line]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]
    assert "Traceback" not in result.output


@pytest.fixture()
def previous_site(tmp_path, tiny_site):
    """A copy of the session's site: every case below fails before it writes, so one build serves all
    twelve, and each case still proves that a real site in its --out is left as it was."""
    out = tmp_path / "site"
    shutil.copytree(tiny_site, out, symlinks=True)
    return out, (out / "index.html").read_bytes()


@pytest.mark.parametrize("case", ["missing model", "corrupt keras", "corrupt h5", "not a model", "images 0",
                                  "empty folder", "non-image file", "bad cmap", "both model and weights",
                                  "bad tap", "bad scale", "too many images"])
def test_bad_input_gets_one_line_and_leaves_the_site(runner, tmp_path, tiny_model_path, pets_folder,
                                                     previous_site, case):
    out, before = previous_site
    images, _ = pets_folder
    model = tiny_model_path
    extra = []
    if case == "missing model":
        model, fragment = tmp_path / "nope.keras", "does not exist"
    elif case == "corrupt keras":
        model = tmp_path / "bad.keras"
        model.write_bytes(tiny_model_path.read_bytes()[:5000])
        fragment = "not a valid .keras archive"
    elif case == "corrupt h5":
        model = tmp_path / "bad.h5"
        model.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
        fragment = f"cannot load model file '{model}'"
    elif case == "not a model":
        model = tmp_path / "notes.keras"
        model.write_text("hello")
        fragment = "not a valid .keras archive"
    elif case == "images 0":
        extra, fragment = ["--images", "0"], "at least 1"
    elif case == "empty folder":
        images = tmp_path / "empty"
        images.mkdir()
        fragment = "no image files"
    elif case == "non-image file":
        images = tmp_path / "mixed"
        images.mkdir()
        (images / "photo.jpg").write_text("<html>not a photo</html>")
        extra, fragment = ["--images", "1"], f"cannot read image file '{images / 'photo.jpg'}'"
    elif case == "bad cmap":
        extra, fragment = ["--cmap", "rainbowz"], "unknown colormap"
    elif case == "both model and weights":
        extra, fragment = ["--weights", str(tiny_model_path)], "not both"
    elif case == "bad tap":
        extra, fragment = ["--tap", "middle"], "unknown --tap"
    elif case == "bad scale":
        extra, fragment = ["--scale", "global"], "unknown --scale"
    else:
        extra, fragment = ["--images", "50"], "only 6"
    result = _build(runner, out, model, images, *extra)
    _assert_one_line_error(result, fragment)
    assert (out / "index.html").read_bytes() == before


def test_output_path_that_is_a_file(runner, tmp_path, tiny_model_path, pets_folder):
    target = tmp_path / "site.txt"
    target.write_text("keep me")
    result = _build(runner, target, tiny_model_path, pets_folder[0], "--images", "1")
    _assert_one_line_error(result, "is a file")
    assert target.read_text() == "keep me"


def test_output_folder_that_is_not_a_site_is_not_replaced(runner, tmp_path, tiny_model_path, pets_folder):
    target = tmp_path / "documents"
    target.mkdir()
    (target / "thesis.tex").write_text("precious")
    result = _build(runner, target, tiny_model_path, pets_folder[0], "--images", "1")
    _assert_one_line_error(result, "not made by reportgen")
    assert (target / "thesis.tex").read_text() == "precious"


def test_model_without_conv_layers(runner, tmp_path, pets_folder):
    inputs = keras.Input((32, 32, 3))
    path = tmp_path / "dense.keras"
    keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs))).save(path)
    result = _build(runner, tmp_path / "site", path, pets_folder[0], "--images", "1")
    _assert_one_line_error(result, "no convolution layers")


def test_inspect_lists_the_sd_unet(runner):
    result = runner.invoke(app, ["inspect"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "51 conv layers" in lines[0] and "21,507,171 parameters" in lines[0]
    rows = [line for line in lines[2:] if line.strip()]
    assert len(rows) == 51
    assert rows[-1].split()[1] == "head"
    assert "daspp_rate12" in result.output


def test_inspect_bad_model_is_one_line(runner, tmp_path):
    path = tmp_path / "x.keras"
    path.write_bytes(b"PK\x03\x04garbage")
    _assert_one_line_error(runner.invoke(app, ["inspect", "--model", str(path)]), "x.keras")


def test_grayscale_rgba_and_16_bit_images_build(runner, tmp_path, tiny_model_path):
    folder = tmp_path / "modes"
    folder.mkdir()
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 255, (70, 90), dtype=np.uint8), "L").save(folder / "g.png")
    Image.fromarray(rng.integers(0, 255, (70, 90, 4), dtype=np.uint8), "RGBA").save(folder / "a.png")
    Image.fromarray(rng.integers(0, 65535, (70, 90), dtype=np.uint16)).save(folder / "d.png")
    result = _build(runner, tmp_path / "site", tiny_model_path, folder, "--images", "3")
    assert result.exit_code == 0, result.output
