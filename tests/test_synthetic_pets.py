"""The synthetic_pets data set: TFDS's own builder test case, determinism and trimap conventions."""

import tempfile

import numpy as np
import tensorflow_datasets as tfds

from reportgen.datasets.synthetic_pets import SyntheticPets, render


class SyntheticPetsTest(tfds.testing.DatasetBuilderTestCase):
    """TFDS's standard checks: features, splits, determinism of the written records."""

    DATASET_CLASS = SyntheticPets
    BUILDER_CONFIG_NAMES_TO_TEST = ["test"]
    SPLITS = {"test": 240}
    SKIP_CHECKSUMS = True
    EXAMPLE_DIR = tempfile.mkdtemp(prefix="synthetic_pets_dummy_")  # nothing is downloaded, so no dummy files
    SKIP_TF1_GRAPH_MODE = True


def test_same_seed_and_index_give_the_same_picture():
    a, b = render.render_example(2, 5), render.render_example(2, 5)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.trimap, b.trimap)
    assert not np.array_equal(a.image[:10, :10], render.render_example(2, 6).image[:10, :10]) or a.label != 0


def test_trimaps_follow_oxford_with_a_border_band_around_the_pet():
    for index in range(6):
        example = render.render_example(3, index)
        assert set(np.unique(example.trimap)) == {1, 2, 3}
        pet = example.trimap == 1
        border = example.trimap == 3
        assert 0.03 < pet.mean() < 0.7
        # every pet pixel next to the background must be separated from it by the border
        background = example.trimap == 2
        touching = pet[:, 1:] & background[:, :-1] | pet[:, :-1] & background[:, 1:]
        assert not touching.any() and border.any()


def test_breeds_match_oxford_species_counts():
    breeds = render.breeds()
    assert len(breeds) == 37
    assert sum(b.is_cat for b in breeds) == 12
    assert len({b.name for b in breeds}) == 37


def test_images_vary_in_size_and_aspect():
    shapes = {render.render_example(4, i).image.shape[:2] for i in range(12)}
    assert len(shapes) > 8
    assert any(h > w for h, w in shapes) and any(w > h for h, w in shapes)
