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
    """A site of a model unlike the SD-UNet: a MobileNetV2 classifier (depthwise convs, three named
    classes, ImageNet-style `--preprocess tf`) over class folders without trimaps, so every mask
    statistic is undefined and the class statistics are there instead."""
    import shutil

    import keras
    from typer.testing import CliRunner

    from reportgen.cli import app

    root = tmp_path_factory.mktemp("classifier")
    model_path = root / "mobilenet_v2.keras"
    keras.applications.MobileNetV2(weights=None, input_shape=(64, 64, 3), alpha=0.35, classes=3).save(model_path)
    labels = root / "labels.txt"
    labels.write_text("cat\ndog\n<b>bird</b>\n")  # markup in a class name must be shown, not run
    folders = root / "photos"
    for i, path in enumerate(sorted(pets_folder[0].iterdir())):
        (folders / ("cats" if i % 2 else "dogs")).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folders / ("cats" if i % 2 else "dogs") / path.name)
    out = root / "site"
    result = CliRunner().invoke(app, ["build", "--model", str(model_path), "--image-dir", str(folders),
                                      "--labels", str(labels), "--preprocess", "tf", "--images", "4",
                                      "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    return out
