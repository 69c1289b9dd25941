"""Image sources: folders in any image mode, trimaps, TFDS data sets (mocked offline), selection."""

import socket

import numpy as np
import pytest
from PIL import Image

from reportgen import sources, tfds_source
from reportgen.errors import DatasetUnavailableError, InputError


def test_every_mode_becomes_rgb_uint8_at_input_size(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (30, 40), dtype=np.uint8), "L").save(tmp_path / "gray.png")
    Image.fromarray(rng.integers(0, 255, (30, 40, 4), dtype=np.uint8), "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rng.integers(0, 65535, (30, 40), dtype=np.uint16)).save(tmp_path / "deep.png")
    Image.fromarray(rng.integers(0, 255, (50, 20, 3), dtype=np.uint8)).save(tmp_path / "photo.JPG")
    (tmp_path / "notes.txt").write_text("not an image, and not named like one")
    items = sources.image_folder(tmp_path, 32)
    assert [i.id for i in items] == ["deep.png", "gray.png", "photo.JPG", "rgba.png"]
    for item in items:
        assert item.image.shape == (32, 32, 3) and item.picture.shape == (32, 32, 3)
        assert item.picture.dtype == np.uint8 and item.trimap is None
    assert [item.image.dtype for item in items] == [np.float32, np.uint8, np.uint8, np.uint8]
    deep = items[0].image
    assert deep.max() > 128 and deep.max() <= 255  # 16-bit scaled to 0-255, not clipped or truncated
    assert len(np.unique(deep)) > 256  # every level kept


def test_trimaps_load_and_are_checked(tmp_path):
    images, trimaps = tmp_path / "images", tmp_path / "trimaps"
    images.mkdir()
    trimaps.mkdir()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(images / "a.png")
    trimap = np.full((20, 20), 2, np.uint8)
    trimap[5:15, 5:15] = 1
    Image.fromarray(trimap).save(trimaps / "a.png")
    (item,) = sources.image_folder(images, 32, trimaps)
    assert item.trimap.shape == (32, 32) and set(np.unique(item.trimap)) == {1, 2}
    Image.fromarray(np.full((20, 20), 7, np.uint8)).save(trimaps / "a.png")
    with pytest.raises(InputError, match="neither an Oxford trimap"):
        list(sources.image_folder(images, 32, trimaps))
    Image.fromarray(np.full((10, 20), 2, np.uint8)).save(trimaps / "a.png")
    with pytest.raises(InputError, match="trimap '.*a.png' is 20x10"):
        list(sources.image_folder(images, 32, trimaps))


@pytest.mark.parametrize("content,message", [
    (b"", "empty"), (b"this is text pretending to be a picture", "cannot read"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "cannot read"),
])
def test_unreadable_files_are_refused_by_name(tmp_path, content, message):
    (tmp_path / "broken.png").write_bytes(content)
    with pytest.raises(InputError, match=message) as info:
        list(sources.image_folder(tmp_path, 32))
    assert "broken.png" in str(info.value)


def test_huge_images_are_refused_before_decoding(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "MAX_IMAGE_PIXELS", 100)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(InputError, match="pixel limit"):
        list(sources.image_folder(tmp_path, 32))


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(InputError, match="no image files"):
        list(sources.image_folder(tmp_path, 32))
    with pytest.raises(InputError, match="does not exist"):
        list(sources.image_folder(tmp_path / "nope", 32))


def _items(n):
    return [sources.SourceImage(f"id{i}", np.zeros((4, 4, 3), np.uint8), None) for i in range(n)]


def test_selection_first_random_and_ids():
    assert [i.id for i in sources.select(_items(10), 3)] == ["id0", "id1", "id2"]
    random_a = [i.id for i in sources.select(_items(10), 4, "random", seed=5)]
    assert random_a == [i.id for i in sources.select(_items(10), 4, "random", seed=5)]
    assert random_a != [i.id for i in sources.select(_items(10), 4, "random", seed=6)]
    assert [i.id for i in sources.select(_items(10), 2, ids=["id7", "id3"])] == ["id7", "id3"]
    with pytest.raises(InputError, match="'nope' is not in the source"):
        sources.select(_items(3), 1, ids=["nope"])
    with pytest.raises(InputError, match="only 3"):
        sources.select(_items(3), 5)
    with pytest.raises(InputError, match="at least 1"):
        sources.select(_items(3), 0)


def test_oxford_pets_loads_through_tfds_with_its_own_mocking(monkeypatch):
    import tensorflow_datasets as tfds

    monkeypatch.setattr(tfds_source, "_reachable", lambda host: True)  # as if online; mock_data serves the data
    with tfds.testing.mock_data(num_examples=3):
        items = list(tfds_source.tfds_split("oxford_iiit_pet", "test", 64))
    assert len(items) == 3
    for item in items:
        assert item.image.shape == (64, 64, 3) and item.image.dtype == np.uint8
        assert item.trimap.shape == (64, 64) and set(np.unique(item.trimap)) <= {1, 2, 3}


def test_oxford_pets_offline_names_the_offline_options(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(DatasetUnavailableError, match="offline options: --dataset synthetic_pets"):
        list(tfds_source.tfds_split("oxford_iiit_pet", "test", 64, data_dir=str(tmp_path)))


def test_unknown_dataset_is_refused():
    with pytest.raises(InputError, match="unknown data set 'mnist'"):
        list(tfds_source.tfds_split("mnist", "test", 64))


def test_a_folder_of_only_hidden_files_says_they_are_never_read(tmp_path):
    from reportgen import sources
    from reportgen.errors import InputError
    from reportgen.inputs import InputGeometry

    Image.new("RGB", (8, 8)).save(tmp_path / ".0.png")
    with pytest.raises(InputError, match=r"no image files .*; 1 hidden files \(names starting with '\.'\) are never read"):
        sources.image_folder(tmp_path, InputGeometry(8, 8, 3, "stretch", "nearest"))
