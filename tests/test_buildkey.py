"""The build key changes with every input a site depends on, and with nothing else. No TensorFlow:
the key hashes files, so the "model" here is any file."""

import os
from pathlib import Path

import pytest

from reportgen.buildkey import input_key
from reportgen.pipeline import BuildOptions


@pytest.fixture()
def inputs(tmp_path):
    """Class folders with an image each (nested one level deeper too), trimaps, labels, a model, an import."""
    images, trimaps = tmp_path / "photos", tmp_path / "trimaps"
    for name in ("cat", "dog"):
        (images / name / "indoor").mkdir(parents=True)
        (images / name / f"{name}_1.jpg").write_bytes(f"{name} one".encode())
        (images / name / "indoor" / f"{name}_2.jpg").write_bytes(f"{name} two".encode())
    trimaps.mkdir()
    (trimaps / "cat_1.png").write_bytes(b"trimap")
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    (tmp_path / "model.keras").write_bytes(b"weights")
    (tmp_path / "layers.py").write_text("X = 1\n")
    options = BuildOptions(image_dir=images, trimap_dir=trimaps, labels=tmp_path / "labels.txt",
                           model_path=tmp_path / "model.keras", imports=(str(tmp_path / "layers.py"),))
    return tmp_path, options


def _key(options):
    key = input_key(options, None)
    assert key is not None
    return key


def test_unchanged_inputs_give_the_same_key(inputs):
    _, options = inputs
    assert _key(options) == _key(options)


@pytest.mark.parametrize("change", ["edit in a sub-folder", "edit in a nested folder", "same size, same mtime",
                                    "move to another class", "rename", "add an image", "edit a trimap",
                                    "edit the labels", "edit the import", "edit the model"])
def test_every_input_change_changes_the_key(inputs, change):
    root, options = inputs
    before = _key(options)
    cat = root / "photos" / "cat" / "cat_1.jpg"
    if change == "edit in a sub-folder":
        cat.write_bytes(b"cat one, edited")
    elif change == "edit in a nested folder":
        (root / "photos" / "dog" / "indoor" / "dog_2.jpg").write_bytes(b"dog 2, edited")
    elif change == "same size, same mtime":
        stat = cat.stat()
        cat.write_bytes(b"cat ONE")
        os.utime(cat, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    elif change == "move to another class":
        cat.rename(root / "photos" / "dog" / "cat_1.jpg")
    elif change == "rename":
        cat.rename(cat.with_name("cat_9.jpg"))
    elif change == "add an image":
        (root / "photos" / "cat" / "cat_3.jpg").write_bytes(b"cat three")
    elif change == "edit a trimap":
        (root / "trimaps" / "cat_1.png").write_bytes(b"trimap, edited")
    elif change == "edit the labels":
        (root / "labels.txt").write_text("dog\ncat\n")
    elif change == "edit the import":
        (root / "layers.py").write_text("X = 2\n")
    else:
        (root / "model.keras").write_bytes(b"weights, retrained")
    assert _key(options) != before


def test_a_trimap_named_like_an_image_is_not_the_image(inputs):
    """The same file under the image folder or the trimap folder is a different input."""
    root, options = inputs
    before = _key(options)
    (root / "trimaps" / "cat_1.png").rename(root / "photos" / "cat_1.png")
    assert _key(options) != before


def test_workers_do_not_change_the_key(inputs):
    from dataclasses import replace

    _, options = inputs
    assert _key(options) == _key(replace(options, workers=7))
