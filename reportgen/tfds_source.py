"""The TensorFlow Datasets source: the project's `synthetic_pets` and the real `oxford_iiit_pet`,
each example a `SourceImage` in the split's stored order, with its trimap fitted like its image.

A data set that is not prepared and whose download host cannot be reached fails at once, naming
what works offline, rather than after TFDS' minutes of retries.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

from reportgen.errors import DatasetUnavailableError, InputError
from reportgen.inputs import InputGeometry
from reportgen.sources import SourceImage, as_geometry

TFDS_DATASETS = ("synthetic_pets", "oxford_iiit_pet")
DOWNLOAD_HOSTS = {"oxford_iiit_pet": "thor.robots.ox.ac.uk"}  # where TFDS fetches each data set from
OFFLINE_OPTIONS = (
    "offline options: --dataset synthetic_pets (built locally), --image-dir FOLDER "
    "(your own JPEG/PNG files), or --data-dir pointing at an already prepared TFDS folder"
)
SPLITS = {"synthetic_pets": ("train", "test"), "oxford_iiit_pet": ("train", "test")}


def check_split(dataset: str, split: str) -> None:
    """The data set is one reportgen knows, and `split` names its splits, in TFDS' split syntax
    (`test`, `train[:10%]`, `train+test`)."""
    if dataset not in TFDS_DATASETS:
        raise InputError(f"unknown data set {dataset!r}; choose one of {', '.join(TFDS_DATASETS)} or use --image-dir")
    for part in split.split("+"):
        name = part.split("[", 1)[0].strip()
        if name not in SPLITS[dataset]:
            raise InputError(f"data set {dataset!r} has no split {name!r}; its splits are "
                             f"{', '.join(SPLITS[dataset])} (TFDS syntax such as test[:50%] works too)")


def _tfds_name(dataset: str, split: str) -> str:
    if dataset == "synthetic_pets":
        import reportgen.datasets.synthetic_pets  # noqa: F401  (registers the builder)

        # The report needs only the test split, which the `test` config prepares in seconds.
        return "synthetic_pets/test" if split.startswith("test") else "synthetic_pets/full"
    return dataset


def tfds_split(dataset: str, split: str, input_size: InputGeometry | int,
               data_dir: str | None = None) -> Iterator[SourceImage]:
    """Examples of a TFDS split in its stored order, with trimaps fitted like their images."""
    geometry = as_geometry(input_size)
    if dataset not in TFDS_DATASETS:
        raise InputError(f"unknown data set {dataset!r}; choose one of {', '.join(TFDS_DATASETS)} or use --image-dir")
    import tensorflow_datasets as tfds

    name = _tfds_name(dataset, split)
    tfds.disable_progress_bar()
    if dataset in DOWNLOAD_HOSTS and not _is_prepared(name, data_dir) and not _reachable(DOWNLOAD_HOSTS[dataset]):
        # TFDS would retry for minutes with backoff; say at once what is wrong and what works offline.
        raise DatasetUnavailableError(
            f"data set {dataset!r} is not prepared in the TFDS data folder and its download host "
            f"{DOWNLOAD_HOSTS[dataset]} cannot be reached; {OFFLINE_OPTIONS}")
    try:
        loaded = tfds.load(name, split=split, data_dir=data_dir, shuffle_files=False)
    except (ConnectionError, OSError) as error:
        raise DatasetUnavailableError(
            f"data set {dataset!r} is not prepared here and could not be downloaded "
            f"({error.__class__.__name__}); {OFFLINE_OPTIONS}") from None
    except Exception as error:  # TFDS wraps network failures in many types
        if "download" in str(error).lower() or "connect" in str(error).lower() or "resolve" in str(error).lower():
            raise DatasetUnavailableError(
                f"data set {dataset!r} is not prepared here and could not be downloaded; {OFFLINE_OPTIONS}") from None
        raise
    for example in tfds.as_numpy(loaded):
        image = np.asarray(example["image"])
        if image.ndim == 2:
            image = image[..., None]
        if image.shape[-1] == 1:
            image = np.repeat(image, 3, axis=-1)
        mask = np.asarray(example["segmentation_mask"])[..., 0]
        if mask.shape != image.shape[:2]:  # TFDS mock data pairs masks and images of other sizes
            mask = np.asarray(Image.fromarray(mask).resize(image.shape[1::-1], Image.Resampling.NEAREST))
        mask = np.clip(mask, 1, 3).astype(np.uint8)
        file_name = example["file_name"]
        ident = file_name.decode("utf-8", "replace") if isinstance(file_name, bytes) else str(file_name)
        rgb = image[..., :3].astype(np.uint8)
        yield SourceImage(ident, geometry.pixels(rgb), geometry.trimap(mask), None, rgb.shape[:2])


def _is_prepared(name: str, data_dir: str | None) -> bool:
    import tensorflow_datasets as tfds

    try:
        return tfds.builder(name, data_dir=data_dir).is_prepared()
    except Exception:  # an unknown or broken builder: let tfds.load report it
        return True


def _reachable(host: str, timeout: float = 3.0) -> bool:
    import socket

    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class DatasetImages:
    """Statistics images that a worker reads itself from a TFDS split (prepared where it runs)."""

    dataset: str
    split: str
    geometry: InputGeometry
    data_dir: str | None = None

    def read(self, start: int, end: int) -> list[SourceImage]:
        import itertools

        return list(itertools.islice(tfds_split(self.dataset, self.split, self.geometry, self.data_dir), start, end))
