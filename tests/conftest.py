"""Shared fixtures: a tiny SD-UNet, a folder of synthetic pets, and a CLI runner."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

TINY_SIZE = 64
TINY_WIDTH = 0.125


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    """A slim SD-UNet (same 51 convs, 1/8 the filters) at 64 px, saved as .keras."""
    from reportgen.models.sd_unet import build_sd_unet

    model = build_sd_unet(TINY_SIZE, 3, TINY_WIDTH)
    path = tmp_path_factory.mktemp("models") / "tiny_sd_unet.keras"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def pets_folder(tmp_path_factory) -> tuple[Path, Path]:
    """Six synthetic pets as JPEG files, with Oxford-style trimap PNGs in a sibling folder."""
    from reportgen.datasets.synthetic_pets.render import render_example

    root = tmp_path_factory.mktemp("pets")
    images, trimaps = root / "images", root / "trimaps"
    images.mkdir()
    trimaps.mkdir()
    for i in range(6):
        example = render_example(99, i)
        Image.fromarray(example.image).save(images / f"pet_{i}.jpg", quality=90)
        Image.fromarray(example.trimap).save(trimaps / f"pet_{i}.png")
    return images, trimaps


@pytest.fixture()
def runner():
    from typer.testing import CliRunner

    return CliRunner()


@pytest.fixture(scope="session")
def tiny_site(tmp_path_factory, tiny_model_path, pets_folder) -> Path:
    """A complete site built from the tiny model over the pets folder, shared by browser and validator tests."""
    from typer.testing import CliRunner

    from reportgen.cli import app

    out = tmp_path_factory.mktemp("sites") / "site"
    images, trimaps = pets_folder
    result = CliRunner().invoke(app, ["build", "--model", str(tiny_model_path), "--image-dir", str(images),
                                      "--trimap-dir", str(trimaps), "--images", "4", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    return out


def random_image(rng: np.random.Generator, size: int) -> np.ndarray:
    return rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def classifier_site(tmp_path_factory, pets_folder) -> Path:
    """A site of a model unlike the SD-UNet: MobileNetV2 (depthwise convs, a classifier, no mask to
    measure against) over images without trimaps, so every statistic that needs a mask is undefined."""
    import keras
    from typer.testing import CliRunner

    from reportgen.cli import app

    root = tmp_path_factory.mktemp("classifier")
    model_path = root / "mobilenet_v2.keras"
    keras.applications.MobileNetV2(weights=None, input_shape=(64, 64, 3), alpha=0.35).save(model_path)
    out = root / "site"
    result = CliRunner().invoke(app, ["build", "--model", str(model_path), "--image-dir", str(pets_folder[0]),
                                      "--images", "2", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    return out
