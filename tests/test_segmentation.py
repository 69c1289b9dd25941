"""Binary segmentation: a one-channel sigmoid U-Net with masks stored as 0/255 (a medical U-Net's
layout). Its mask statistics must be the ones the same masks give as Oxford trimaps, whose path is
checked against scikit-learn and written-out formulas elsewhere; its maps must be Keras' own."""

import json

import keras
import numpy as np
import pytest
from PIL import Image

from reportgen.cli import app

SIZE = 32


def _binary_unet():
    from conftest import small_unet

    return small_unet(SIZE, 1, "sigmoid", "scan", "lesion", seed=8)


@pytest.fixture(scope="module")
def masks(tmp_path_factory, pets_folder):
    """The pets' trimaps as binary masks (pet 255, everything else 0), and as the equivalent trimaps
    (pet 1, everything else 2), and with a third value that neither convention names."""
    root = tmp_path_factory.mktemp("masks")
    folders = {name: root / name for name in ("binary", "trimap", "three")}
    for folder in folders.values():
        folder.mkdir()
    for path in sorted(pets_folder[1].iterdir()):
        pet = np.asarray(Image.open(path)) == 1
        Image.fromarray(np.where(pet, 255, 0).astype(np.uint8)).save(folders["binary"] / path.name)
        Image.fromarray(np.where(pet, 1, 2).astype(np.uint8)).save(folders["trimap"] / path.name)
        Image.fromarray(np.where(pet, 2, 0).astype(np.uint8)).save(folders["three"] / path.name)
    model_path = root / "binary_unet.keras"
    _binary_unet().save(model_path)
    return folders, model_path


def _build(runner, out, model_path, images, *args):
    """One worker: no test here is about the pool (the Beam case reads the session's shared Beam site)."""
    return runner.invoke(app, ["build", "--model", str(model_path), "--image-dir", str(images), "--images", "6",
                               "--out", str(out), "-q", "--workers", "1", *map(str, args)])


def _layers(site):
    return json.loads((site / "data" / "stats.json").read_text())["layers"]


def test_binary_masks_give_every_mask_statistic(runner, tmp_path, pets_folder, masks):
    folders, model_path = masks
    binary = tmp_path / "binary"
    trimap = tmp_path / "trimap"
    for out, folder in ((binary, folders["binary"]), (trimap, folders["trimap"])):
        result = _build(runner, out, model_path, pets_folder[0], "--trimap-dir", folder)
        assert result.exit_code == 0, result.output
    from_binary, from_trimap = _layers(binary), _layers(trimap)
    for row in from_binary:
        assert row["focus_class"] == "foreground" and sorted(row["probe_iou"]) == ["background", "foreground"]
        assert row["probe_iou"]["foreground"] is not None and row["cka_mask"] is not None, row["name"]
        assert row["best_channel_iou"]["foreground"]["max"] is not None
    # The trimaps' border class is empty: it changes no number of the two classes they share.
    def same(x, y):  # the two paths sum the same values in another order: the last bit may differ
        return x == (None if y is None else pytest.approx(y, rel=1e-9))

    for a, b in zip(from_binary, from_trimap):
        assert same(a["cka_mask"], b["cka_mask"]) and a["channels"] == b["channels"], a["name"]
        for mine, theirs in (("foreground", "pet"), ("background", "background")):
            for key in ("probe_iou", "rgb_probe_iou"):
                assert same(a[key][mine], b[key][theirs]), (a["name"], key, mine)
            for part, value in a["best_channel_iou"][mine].items():
                assert same(value, b["best_channel_iou"][theirs][part]), (a["name"], mine, part)
    index = (binary / "index.html").read_text()
    assert "binary masks (0 background, 255 foreground)" in index
    assert "per-pixel scores over 2 classes" in index


def test_a_sigmoid_output_stands_in_for_missing_masks(runner, tmp_path, pets_folder, masks):
    _, model_path = masks
    site = tmp_path / "site"
    result = _build(runner, site, model_path, pets_folder[0])
    assert result.exit_code == 0, result.output
    rows = _layers(site)
    assert all(row["probe_iou"]["foreground"] is not None for row in rows)
    assert "predicted area: background" in (site / "index.html").read_text()  # classes named, not numbered
    model = keras.models.load_model(model_path)
    pixels = np.stack([np.asarray(Image.open(f).convert("RGB").resize((SIZE, SIZE), Image.Resampling.NEAREST),
                                  np.float32) for f in sorted(pets_folder[0].iterdir())])
    raw = keras.Model(model.inputs, model.get_layer("dec").output).predict(pixels, verbose=0)
    strengths = raw.reshape(len(raw), -1, raw.shape[-1]).std(axis=1).mean(axis=0)
    got = np.array(next(r for r in rows if r["name"] == "dec")["channels"]["strength"])
    np.testing.assert_allclose(got, strengths, rtol=2e-3, atol=1e-3 * strengths.max())


def test_mask_values_no_convention_names_are_refused_then_read(runner, tmp_path, pets_folder, masks):
    folders, model_path = masks
    site = tmp_path / "site"
    result = _build(runner, site, model_path, pets_folder[0], "--trimap-dir", folders["three"])
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert "neither an Oxford trimap (1-3) nor a binary mask" in line and "--mask-values" in line
    assert not site.exists()
    result = _build(runner, site, model_path, pets_folder[0], "--trimap-dir", folders["three"],
                    "--mask-values", "0=background,2=foreground")
    assert result.exit_code == 0, result.output
    assert "--mask-values 0=background,2=foreground" in (site / "index.html").read_text()
    result = _build(runner, tmp_path / "other", model_path, pets_folder[0], "--mask-values", "0=bg")
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert "'bg', not one of the model's classes (foreground, background)" in line
    result = _build(runner, tmp_path / "other", model_path, pets_folder[0], "--mask-values", "0=background,1")
    assert result.exit_code == 2 and "ROLE one of foreground, background, ignore or a class name" in result.output
    assert not (tmp_path / "other").exists()


def test_mask_values_may_name_the_models_classes(runner, tmp_path, tiny_model_path, pets_folder, masks):
    """`0=background,255=pet` reads binary masks in the 3-class model's own classes (pet, background,
    border): the same numbers as the trimaps that say pet 1 and background 2."""
    folders, _ = masks
    named, trimap = tmp_path / "named", tmp_path / "trimap"
    for out, args in ((named, ("--trimap-dir", folders["binary"], "--mask-values", "0=background,255=pet")),
                      (trimap, ("--trimap-dir", folders["trimap"]))):
        result = _build(runner, out, tiny_model_path, pets_folder[0], *args)
        assert result.exit_code == 0, result.output
    for a, b in zip(_layers(named), _layers(trimap)):
        assert a["focus_class"] == "pet" and a["probe_iou"] == b["probe_iou"], a["name"]
        assert a["best_channel_iou"] == b["best_channel_iou"] and a["channels"] == b["channels"], a["name"]
    assert "--mask-values 0=background,255=pet" in (named / "index.html").read_text()


def _iou_reference(model, images, trimaps, size):
    """Per-class IoU of the model's argmax against the trimaps, from one confusion matrix summed over
    the images, written out here as `reportgen evaluate` defines it (three classes, every pixel)."""
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.Resampling.NEAREST),
                                  np.float32) for p in images])
    truth = np.stack([np.asarray(Image.open(p).resize((size, size), Image.Resampling.NEAREST)) for p in trimaps])
    predicted = model.predict(pixels, verbose=0).argmax(axis=-1) + 1
    inter = np.array([np.sum((predicted == k) & (truth == k)) for k in (1, 2, 3)], float)
    union = np.array([np.sum((predicted == k) | (truth == k)) for k in (1, 2, 3)], float)
    return inter / union


@pytest.mark.parametrize("statistics", ["pictured", "beam"])
def test_the_cards_iou_is_the_models_own_against_the_trimaps(runner, tmp_path, tiny_model_path, pets_folder,
                                                            beam_site, statistics):
    """The card's IoU per class equals the confusion-matrix IoU computed here from the model's own
    prediction: over the 2 pictured images, or over all 6 statistics images on Beam."""
    import re

    from conftest import TINY_SIZE

    images, trimaps = pets_folder
    if statistics == "beam":
        out = beam_site.out  # --images 2 --stats-images all
    else:
        out = tmp_path / "site"
        result = runner.invoke(app, ["build", "--model", str(tiny_model_path), "--image-dir", str(images),
                                     "--trimap-dir", str(trimaps), "--images", "2", "--out", str(out), "-q",
                                     "--workers", "1"])
        assert result.exit_code == 0, result.output
    count = 6 if statistics == "beam" else 2
    files = sorted(images.iterdir())[:count]
    expected = _iou_reference(keras.models.load_model(tiny_model_path), files,
                              [trimaps / f"{f.stem}.png" for f in files], TINY_SIZE)
    assert np.isfinite(expected).all() and expected.max() > 0.05  # a reference that can tell numbers apart
    card = re.search(r"<dt>Segmentation</dt><dd>(.*?)</dd>", (out / "index.html").read_text()).group(1)
    where = "the 6 statistics images" if statistics == "beam" else "the pictured images"
    assert card.startswith(f"IoU against the masks on {where}: ")
    shown = {name: float(value) for name, value in re.findall(r"(pet|background|border) ([0-9.]+) \(", card)}
    assert list(shown) == ["pet", "background", "border"], card
    np.testing.assert_allclose(list(shown.values()), expected, rtol=5e-3)  # three significant digits
