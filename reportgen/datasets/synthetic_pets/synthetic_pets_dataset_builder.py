"""TFDS builder for ``synthetic_pets``: procedural cats and dogs with Oxford-style trimaps.

Same features as ``oxford_iiit_pet`` so the same loading code serves both.
Generated locally and deterministically; nothing is downloaded.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import tensorflow_datasets as tfds

from reportgen.datasets.synthetic_pets import render

SPLIT_SEEDS = {"train": 1, "test": 2}


class SyntheticPetsConfig(tfds.core.BuilderConfig):
    """Which splits a config writes, and how many examples each has."""

    def __init__(self, *, split_sizes: dict[str, int], **kwargs):
        super().__init__(**kwargs)
        self.split_sizes = split_sizes


class SyntheticPets(tfds.core.GeneratorBasedBuilder):
    """Procedural pets: 37 breeds, parts, fur, backgrounds, lighting, trimaps 1 pet / 2 background / 3 border."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [
        SyntheticPetsConfig(
            name="full",
            description="Train (2,000) and test (240) splits, for training and evaluation.",
            split_sizes={"train": 2000, "test": 240},
        ),
        SyntheticPetsConfig(
            name="test",
            description="Only the test split (the same 240 examples as full), quick to prepare for reports.",
            split_sizes={"test": 240},
        ),
    ]
    DEFAULT_CONFIG_NAME = "full"

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(),
                "label": tfds.features.ClassLabel(names=list(render.BREEDS)),
                "species": tfds.features.ClassLabel(names=["Cat", "Dog"]),
                "file_name": tfds.features.Text(),
                "segmentation_mask": tfds.features.Image(shape=(None, None, 1), use_colormap=True),
            "head_bbox": tfds.features.BBoxFeature(),
            }),
            supervised_keys=("image", "label"),
            homepage="https://github.com/reportgen/reportgen",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        return {
            split: self._generate_examples(SPLIT_SEEDS[split], size)
            for split, size in self.builder_config.split_sizes.items()
        }

    def _generate_examples(self, seed: int, size: int):
        # Rendering is pure numpy; spread it over the cores. Each example is seeded by
        # its own index, so the result does not depend on which process drew it.
        # Fork, not spawn: spawn re-runs the caller's unguarded __main__ in every worker.
        with ProcessPoolExecutor(
            max_workers=max(1, multiprocessing.cpu_count()),
            mp_context=multiprocessing.get_context("fork"),
        ) as pool:
            examples = pool.map(render.render_example, [seed] * size, range(size), chunksize=8)
            yield from (self._record(seed, index, example) for index, example in enumerate(examples))

    @staticmethod
    def _record(seed: int, index: int, example: render.Example):
        breed = render.BREEDS[example.label]
        file_name = f"{breed}_{seed}_{index:05d}.jpg"
        return file_name, {
            "image": example.image,
            "label": example.label,
            "species": 0 if example.is_cat else 1,
            "file_name": file_name,
            "segmentation_mask": example.trimap[..., None],
            "head_bbox": tfds.features.BBox(*np.asarray(example.head_box, np.float32)),
        }
