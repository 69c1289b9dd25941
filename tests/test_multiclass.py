"""N-class segmentation: a softmax U-Net of 5 classes named by --labels, masks stored as the class
index 0..4 with 255 for "ignore" (the PASCAL VOC layout). Every mask statistic must be defined per
class, and equal what scikit-learn (jaccard_score, Ridge) gives from Keras' own layer outputs; on
21 classes the accumulator's per-class numbers must equal the same references."""

import json
import re

import keras
import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import jaccard_score
from sklearn_reference import held_out_predictions

from reportgen import stats
from reportgen.catalog import POOL_GRID
from reportgen.cli import app
from reportgen.linear_probes import ProbeScores, pool_to
from reportgen.mask_classes import MaskClasses
from reportgen.targets import Targets, feed, mask_truth, score_image

SIZE = 32
NAMES = ("background", "cat", "dog", "bird", "fish")
IGNORE = 255
COLOURS = np.array([[40, 40, 40], [230, 160, 0], [90, 180, 230], [0, 160, 115], [240, 230, 70]], np.float32)


def _scene(rng, classes: int, size: int = SIZE):
    """An image of coloured rectangles on a background, its class mask, and an ignored band around
    the first rectangle (VOC's 255 boundary)."""
    mask = np.zeros((size, size), np.uint8)
    for cls in rng.choice(np.arange(1, classes), size=min(3, classes - 1), replace=False):
        top, left = rng.integers(0, size - 10, 2)
        height, width = rng.integers(6, 14, 2)
        mask[top:top + height, left:left + width] = cls
    colours = COLOURS[np.arange(classes) % len(COLOURS)] + np.arange(classes)[:, None] * 7 % 50
    image = colours[mask] + rng.normal(0, 12, (size, size, 3))
    stored = mask.copy()
    edge = (np.abs(np.diff(mask.astype(int), axis=0, prepend=mask[:1])) > 0)
    stored[edge] = IGNORE
    return np.clip(image, 0, 255).astype(np.uint8), stored


def _jaccard(truth: np.ndarray, predicted: np.ndarray, labels) -> np.ndarray:
    """scikit-learn's IoU of each label, NaN where neither says it (this scikit-learn has no
    zero_division=nan)."""
    truth, predicted = np.ravel(truth), np.ravel(predicted)
    return np.array([jaccard_score(truth == k, predicted == k) if ((truth == k) | (predicted == k)).any()
                     else np.nan for k in labels])


def _unet(classes: int, activation: str = "softmax"):
    from conftest import small_unet

    return small_unet(SIZE, classes, activation, "photo", "seg", seed=11)


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    """Eight images with their 0..4/255 masks (half of them palette PNGs), the labels file, and the
    saved 5-class model."""
    root = tmp_path_factory.mktemp("voc")
    images, masks = root / "JPEGImages", root / "SegmentationClass"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(3)
    for i in range(8):
        image, mask = _scene(rng, len(NAMES))
        Image.fromarray(image).save(images / f"scene_{i}.png")
        stored = Image.fromarray(mask)
        if i % 2:  # VOC stores its masks as palette PNGs: the values are the palette's indices
            stored = Image.frombytes("P", stored.size, mask.tobytes())
            stored.putpalette([v for k in range(256) for v in (k * 37 % 256, k * 91 % 256, k * 53 % 256)])
        stored.save(masks / f"scene_{i}.png")
    labels = root / "labels.txt"
    labels.write_text("\n".join(NAMES) + "\n")
    model_path = root / "voc_unet.keras"
    _unet(len(NAMES)).save(model_path)
    return images, masks, labels, model_path


def _build(runner, out, voc, *args):
    images, masks, labels, model_path = voc
    return runner.invoke(app, ["build", "--model", str(model_path), "--image-dir", str(images), "--images", "8",
                               "--labels", str(labels), "--out", str(out), "-q", *map(str, args)])


@pytest.fixture(scope="module")
def voc_site(tmp_path_factory, voc):
    from typer.testing import CliRunner

    out = tmp_path_factory.mktemp("voc_site") / "site"
    result = _build(CliRunner(), out, voc, "--trimap-dir", voc[1], "--mask-values", "classes,255=ignore")
    assert result.exit_code == 0, result.output
    return out


def _inputs_and_truth(voc):
    images, masks, _, model_path = voc
    files = sorted(images.iterdir())
    pixels = np.stack([np.asarray(Image.open(f).convert("RGB"), np.float32) for f in files])
    stored = np.stack([np.asarray(Image.open(masks / f.name)) for f in files]).astype(np.int64)
    classes = np.where(stored == IGNORE, -1, stored)  # -1: no class
    return keras.models.load_model(model_path), pixels, classes


def _best_channel_iou_reference(maps: np.ndarray, classes: np.ndarray, count: int) -> np.ndarray:
    """K x C best single-channel IoU, written out: per image, a channel's top-k (or bottom-k) pixels,
    k = the class's pixels on the image, ties with the threshold chosen; the IoU of the chosen pixels
    of all images with the class's, by scikit-learn; the better polarity."""
    maps = maps.astype(np.float16).astype(np.float32)  # the values the build ranks: its float16 store
    n, h, w, channels = maps.shape
    best = np.full((count, channels), np.nan)
    for cls in range(count):
        truth = (classes == cls).reshape(n, -1)
        if not truth.any():
            continue
        for c in range(channels):
            values = maps[..., c].reshape(n, -1)
            scores = []
            for sign in (1, -1):
                chosen = np.zeros_like(truth)
                for i in range(n):
                    k = int(truth[i].sum())
                    if k:
                        threshold = np.sort(sign * values[i])[::-1][k - 1]
                        chosen[i] = sign * values[i] >= threshold
                scores.append(_jaccard(truth, chosen, [True])[0])
            if np.ptp(values) > 0:
                best[cls, c] = np.nanmax(scores)
    return best


def test_per_class_mask_statistics_equal_scikit_learn_on_the_models_own_outputs(voc_site, voc):
    record = json.loads((voc_site / "data" / "stats.json").read_text())
    assert record["mask_classes"] == {"names": list(NAMES), "focus": "cat"}  # the first class not background
    model, pixels, classes = _inputs_and_truth(voc)
    rows = {row["name"]: row for row in record["layers"]}
    for name in ("enc", "dec"):  # full-resolution layers: each map pixel is one mask pixel
        row = rows[name]
        assert row["focus_class"] == "cat" and sorted(row["probe_iou"]) == sorted(NAMES)  # JSON keys sorted
        maps = keras.Model(model.inputs, model.get_layer(name).output)(pixels).numpy()
        expected = _best_channel_iou_reference(maps, classes, len(NAMES))
        for k, cls in enumerate(NAMES):
            assert row["best_channel_iou"][cls]["max"] == pytest.approx(np.nanmax(expected[k]), abs=1e-6), cls
        ours = np.array([np.nan if v is None else v for v in row["channels"]["best_iou_focus"]])
        np.testing.assert_allclose(ours, expected[1], atol=1e-6)
        assert row["intervals_90"]["best_iou_focus_max"][0] is not None
    # The mid layer is at half resolution: its per-class numbers exist for every class present.
    assert all(rows["mid"]["best_channel_iou"][cls]["max"] is not None for cls in NAMES)


def test_the_per_class_probe_equals_scikit_learn_ridge(voc_site, voc):
    """The leave-out probe's IoU per class, as the site reports it, equals scikit-learn's Ridge with
    the build's folds on the pooled pixels, each class decided past its training share."""
    record = json.loads((voc_site / "data" / "stats.json").read_text())
    row = next(r for r in record["layers"] if r["name"] == "enc")
    model, pixels, classes = _inputs_and_truth(voc)
    maps = keras.Model(model.inputs, model.get_layer("enc").output)(pixels).numpy()
    maps = maps.astype(np.float16).astype(np.float64)
    ids = [f.name for f in sorted(voc[0].iterdir())]
    folds = Targets.decide(ids, trimaps_given=True).folds
    pooled = pool_to(maps, POOL_GRID)  # 32 -> 16
    g = pooled.shape[1]
    onehot = np.stack([(classes == k) for k in range(len(NAMES))], -1).astype(float)
    fractions = onehot.reshape(len(maps), g, SIZE // g, g, SIZE // g, len(NAMES)).mean(axis=(2, 4))
    truth = np.where(fractions.max(-1) > 0.5, fractions.argmax(-1), -1)
    row_folds = np.repeat(folds, g * g)
    y = fractions.reshape(-1, len(NAMES))
    predicted = held_out_predictions(pooled.reshape(-1, maps.shape[-1]), y, row_folds)
    for fold in np.unique(folds):
        prior = y[row_folds != fold].mean(axis=0)
        predicted[row_folds == fold] = np.where(prior > 1e-9, predicted[row_folds == fold] - prior, -np.inf)
    predicted = predicted.argmax(axis=1)
    scored = truth.ravel() >= 0
    expected = _jaccard(truth.ravel()[scored], predicted[scored], range(len(NAMES)))
    ours = np.array([np.nan if row["probe_iou"][name] is None else row["probe_iou"][name] for name in NAMES])
    assert np.isfinite(expected).sum() >= 3  # a reference with classes to tell apart
    np.testing.assert_allclose(ours, expected, atol=0.02)  # float32 solves may move a boundary pixel


def test_the_card_and_pages_name_the_classes(voc_site, voc):
    index = (voc_site / "index.html").read_text()
    model, pixels, classes = _inputs_and_truth(voc)
    predicted = model.predict(pixels, verbose=0).argmax(-1)
    card = re.search(r"<dt>Segmentation</dt><dd>(.*?)</dd>", index).group(1)
    assert card.startswith("IoU against the masks on the pictured images: "), card
    shown = dict(re.findall(r"(\w+) ([0-9.]+) \(", card))
    scored = classes >= 0
    expected = _jaccard(classes[scored], predicted[scored], range(len(NAMES)))
    for k, name in enumerate(NAMES):
        if np.isfinite(expected[k]):
            assert float(shown[name]) == pytest.approx(expected[k], abs=5e-4), name
    assert "--mask-values classes,255=ignore" in index
    assert "{{" not in index  # every template expression was filled in, attribute texts too
    image_page = next((voc_site / "images").glob("*.html")).read_text()
    for name in NAMES:  # the mask pictures' key names every class
        assert f"</span>{name}</li>" in image_page
    layer_page = (voc_site / "layers").glob("*enc*.html")
    assert "Mask decodability (probe IoU, cat)" in next(layer_page).read_text()


def test_mask_values_named_by_class_read_as_the_class_indices(runner, tmp_path, voc, voc_site):
    """The same masks, their values named by the classes --labels gives, measure the same."""
    out = tmp_path / "site"
    named = ",".join(f"{k}={name}" for k, name in enumerate(NAMES)) + ",255=ignore"
    result = _build(runner, out, voc, "--trimap-dir", voc[1], "--mask-values", named)
    assert result.exit_code == 0, result.output
    mine = json.loads((out / "data" / "stats.json").read_text())
    theirs = json.loads((voc_site / "data" / "stats.json").read_text())
    assert mine["mask_classes"] == theirs["mask_classes"]
    for a, b in zip(mine["layers"], theirs["layers"]):
        for key in ("probe_iou", "best_channel_iou", "cka_mask", "intervals_90"):
            assert a[key] == b[key], (a["name"], key)


def test_the_prediction_stands_in_with_the_models_classes(runner, tmp_path, voc):
    out = tmp_path / "site"
    result = _build(runner, out, voc)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "data" / "stats.json").read_text())
    assert record["mask_classes"]["names"] == list(NAMES)
    assert all(row["probe_iou"]["cat"] is not None or row["probe_iou"]["background"] is not None
               for row in record["layers"] if row["output_shape"][0] > 1)
    assert "predicted mask stands in" in (out / "index.html").read_text()


def test_class_masks_that_do_not_fit_the_model_are_refused(runner, tmp_path, voc):
    """A value beyond the model's classes, and `classes` for a model without a class per pixel:
    one line each, exit 2, nothing written."""
    images, masks, labels, model_path = voc
    stray = tmp_path / "masks"
    stray.mkdir()
    for path in masks.iterdir():
        mask = np.asarray(Image.open(path)).copy()
        mask[0, 0] = 7
        Image.fromarray(mask).save(stray / path.name)
    out = tmp_path / "site"
    result = _build(runner, out, voc, "--trimap-dir", stray, "--mask-values", "classes,255=ignore")
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert "has values 7" in line and "5 classes (0-4)" in line
    result = _build(runner, out, voc, "--trimap-dir", masks, "--mask-values", "classes")  # 255 not named
    assert result.exit_code == 2 and "has values 255" in result.output
    result = runner.invoke(app, ["build", "--model", str(model_path), "--image-dir", str(images), "--out", str(out),
                                 "--mask-values", "classes,255=pet", "-q"])
    assert result.exit_code == 2 and "no other role" in result.output
    result = _build(runner, out, voc, "--trimap-dir", masks, "--mask-values", "0=background,1=cat,2=cow")
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert "'cow', not one of the model's classes (background, cat, dog, bird, fish)" in line
    sigmoid = tmp_path / "sigmoid.keras"
    _unet(1, "sigmoid").save(sigmoid)
    result = runner.invoke(app, ["build", "--model", str(sigmoid), "--image-dir", str(images), "--images", "8",
                                 "--trimap-dir", str(masks), "--out", str(out), "--mask-values", "classes,255=ignore",
                                 "-q"])
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert "two classes or more per pixel" in line and "0=background,255=foreground" in line
    assert not out.exists()


@pytest.mark.parametrize("count", [5, 21])
def test_the_accumulator_measures_every_class_of_many(count):
    """On 21 classes (PASCAL VOC's count), the accumulator's best channel IoU of every class and the
    leave-out probe's IoU of every class equal scikit-learn's, through the one way in (targets.feed)."""
    rng = np.random.default_rng(count)
    n, size, channels = 12, 16, 6
    scenes = [_scene(rng, count, size) for _ in range(n)]
    stored = np.stack([mask for _, mask in scenes]).astype(np.int64)
    classes_of = np.where(stored == IGNORE, -1, stored)
    onehot = np.stack([(classes_of == k) for k in range(count)], -1).astype(np.float32)
    maps = (rng.normal(size=(n, size, size, channels)) + onehot @ rng.normal(size=(count, channels)) * 1.5)
    maps = maps.astype(np.float32)
    names = ["background", *(f"class {k}" for k in range(1, count))]
    targets = Targets.decide([f"img_{i}" for i in range(n)], trimaps_given=True,
                             mask_classes=MaskClasses.named(names))
    masks = np.where(stored == IGNORE, 0, stored + 1)  # class k stored as k + 1, 0 no class
    accumulator = targets.accumulator(maps.shape[1:], size)
    feed(accumulator, maps, np.arange(n), targets, masks, spatial=True)
    final = stats.finalise(accumulator)
    expected = _best_channel_iou_reference(maps, classes_of, count)
    np.testing.assert_allclose(final.best_iou, expected, atol=1e-9)
    assert final.best_iou.shape == (count, channels) and final.classes.focus_name == "class 1"

    scores = ProbeScores(targets.fold_count, final.probe_weights, [], count)
    for i in range(n):
        score_image(scores, maps[i], i, targets, mask_truth(masks[i], targets))
    row_folds = np.repeat(targets.folds, size * size)
    y = onehot.reshape(-1, count)
    predicted = held_out_predictions(maps.reshape(-1, channels).astype(np.float64), y, row_folds)
    for fold in range(targets.fold_count):
        prior = y[row_folds != fold].mean(axis=0)
        predicted[row_folds == fold] = np.where(prior > 1e-9, predicted[row_folds == fold] - prior, -np.inf)
    predicted = predicted.argmax(axis=1)
    truth = classes_of.ravel()
    scored = truth >= 0
    reference = _jaccard(truth[scored], predicted[scored], range(count))
    present = np.isfinite(reference)
    assert present.sum() >= min(count, 8)
    np.testing.assert_allclose(scores.mask.ratio()[present], reference[present], atol=0.01)
    assert np.isnan(scores.mask.ratio()[~present]).all()
