"""Build-to-build comparison."""

import json

import pytest

from reportgen import compare


def _stats(value):
    return [{"index": 1, "name": "conv", "cka_mask": value, "probe_iou": {"pet": 0.5},
             "best_channel_iou": {"pet": {"max": 0.7}}, "ntv_p10_p50_p90": [0.1, 0.2, 0.3]}]


def _manifest(sha, ids):
    return {"model": {"sha256": sha}, "data": {"image_ids": ids}, "build_time": "2026-11-23T03:00:00Z"}


def test_no_previous_build_says_first_build(tmp_path):
    assert compare.load_previous(tmp_path) is None
    result = compare.compare(None, _manifest("a" * 64, ["x"]), _stats(0.5))
    assert result.first_build and "First build" in result.summary[0]


def test_changes_in_model_images_and_statistics_are_reported(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.json").write_text(json.dumps(_manifest("a" * 64, ["x", "y"])))
    (data / "stats.json").write_text(json.dumps({"layers": _stats(0.30)}))
    previous = compare.load_previous(tmp_path)
    result = compare.compare(previous, _manifest("b" * 64, ["x", "z"]), _stats(0.42))
    assert not result.first_build
    assert any("model changed" in line for line in result.summary)
    assert any("1 added, 1 removed" in line for line in result.summary)
    cka = next(c for c in result.rows[0]["cells"] if c["label"] == "CKA with mask")
    assert cka["delta"] == "+0.120" and cka["notable"]
    assert result.notable == 1


@pytest.mark.parametrize("manifest, stats", [("{not json", "{}"), ("[1, 2]", "{}"), ("{}", '{"layers": 3}'),
                                             ('{"model": 1, "data": []}', '{"layers": [{"name": "conv"}]}')],
                         ids=["not-json", "a-list", "layers-not-a-list", "foreign-shapes"])
def test_a_damaged_previous_build_is_named_and_not_compared(tmp_path, manifest, stats):
    (tmp_path / "manifest.json").write_text(manifest)
    (tmp_path / "stats.json").write_text(stats)
    result = compare.compare(compare.load_previous(tmp_path), _manifest("b" * 64, ["x"]), _stats(0.42))
    assert result.first_build and not result.rows
    (line,) = result.summary
    assert line.startswith(f"The previous build in {tmp_path} was not compared with: its files")


def _fine_tuned_last_block(path, out_path, names=("dec", "segmentation")):
    """A copy of the model at `path` with only its last block's weights changed (as fine-tuning only
    that block would): each weight moved by noise of twice its standard deviation."""
    import keras
    import numpy as np

    model = keras.saving.load_model(path)
    rng = np.random.default_rng(0)
    for name in names:
        layer = model.get_layer(name)
        layer.set_weights([w + rng.normal(size=w.shape).astype(w.dtype) * 2 * np.std(w) for w in layer.get_weights()])
    model.save(out_path)


def _pets(folder, count: int):
    """`count` synthetic pets as PNG files: images/ and nothing else (the masks are not the subject)."""
    from PIL import Image

    from reportgen.datasets.synthetic_pets.render import render_example

    images = folder / "images"
    images.mkdir()
    for i in range(count):
        Image.fromarray(render_example(5, i).image).resize((32, 32)).save(images / f"pet_{i:02}.png")
    return images


def test_the_changes_page_names_the_layers_a_change_of_the_model_moved(tmp_path, small_model_path, runner):
    """Two real builds of the 4-conv U-Net (enc, mid, dec, head) over 20 images, the second with only
    dec and the head changed: inside the model, conv 1 and 2 are identical, conv 3 and 4 moved (their
    intervals below 0.98), and the page says so. (Over 6 images the intervals of conv 3 and 4 reach 0.98
    and the page says it cannot tell.)"""
    from reportgen.cli import app

    changed = tmp_path / "changed.keras"
    _fine_tuned_last_block(small_model_path, changed)
    images = _pets(tmp_path, 20)
    out = tmp_path / "site"
    for model in (small_model_path, changed):
        result = runner.invoke(app, ["build", "--model", str(model), "--image-dir", str(images), "--images", "20",
                                     "--out", str(out), "-q", "--workers", "1", "--no-attribution"])
        assert result.exit_code == 0, result.output
    inside = json.loads((out / "data" / "changes.json").read_text())["inside"]
    assert inside["compared"] and inside["images"] == 20 and inside["estimator"] == "unbiased"
    assert [(row["index"], row["status"]) for row in inside["layers"]] == [
        (1, "identical"), (2, "identical"), (3, "moved"), (4, "moved")]
    assert inside["layers"][0]["cka"] == pytest.approx(1.0, abs=1e-6)
    assert inside["findings"][0] == "conv 1 to conv 2 are identical to the previous build's (CKA 1)."
    assert inside["findings"][1].startswith("conv 3 to conv 4 moved (CKA 0.")
    page = (out / "changes.html").read_text()
    assert "conv 3 to conv 4 moved" in page and 'src="img/charts/changes-cka-light.svg"' in page
    assert (out / "img" / "charts" / "changes-cka-dark.svg").is_file()
    assert "Since the previous build, conv 1 to conv 2 are identical" in (out / "index.html").read_text()
    assert len(inside["cka"]) == 4 and len(inside["cka"][0]) == 4
    stats = json.loads((out / "data" / "stats.json").read_text())["fingerprint"]
    assert stats["file"] == "fingerprint.npz" and len(stats["probe_ids"]) == 20 and "grams" in stats["arrays"]


def _print(ids, seed=0, layers=("a", "b")):
    import numpy as np

    from reportgen import fingerprint

    rng = np.random.default_rng(seed)
    sums = fingerprint.FingerprintSums(len(ids))
    sums.add([rng.normal(size=(len(ids), 5, 5, 4)) for _ in layers], np.arange(len(ids)))
    return sums.finalise(ids, layers)


def test_different_probe_images_are_said_and_only_the_shared_ones_compared():
    from reportgen import representation

    current = _print([f"i{k}" for k in range(8)])
    previous = current.restricted([f"i{k}" for k in range(2, 8)])
    inside = representation.between_builds(current, previous, [1, 2])
    assert inside.notes[0] == ("The probe images differ: this build's 8, the previous build's 6, 6 in both; "
                               "the layers are compared on those 6.")
    assert inside.images == 6 and [row["status"] for row in inside.rows] == ["identical", "identical"]
    few = representation.between_builds(current, current.restricted(["i0", "i1", "i2"]), [1, 2])
    assert not few.compared and "Fewer than 4 probe images in both" in few.notes[-1]


def test_a_previous_build_without_a_fingerprint_is_said(tmp_path):
    from reportgen import representation

    inside = representation.between_builds(_print([f"i{k}" for k in range(6)]), None, [1, 2])
    assert not inside.compared and "previous build has no fingerprint" in inside.notes[0]
