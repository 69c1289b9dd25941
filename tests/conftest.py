"""Shared fixtures: a tiny SD-UNet, a folder of synthetic pets, the sites built from them, and a CLI runner.

The suite runs in pytest-xdist workers (`make test`: one a core). Each worker has a session of its own,
so the slow session fixtures are built once for the whole run (`built_once`), and every worker checks
the same files.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

def small_unet(size: int, classes: int, activation: str, input_name: str, output_name: str, seed: int):
    """A two-level U-Net with its own Rescaling, named convs enc, mid, dec, and a 1x1 head of
    `classes` channels: the shape of the user segmentation models the tests build."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3), name=input_name)
    x = layers.Rescaling(1 / 255)(inputs)
    skip = layers.Conv2D(8, 3, padding="same", activation="relu", name="enc")(x)
    x = layers.Conv2D(12, 3, padding="same", activation="relu", name="mid")(layers.MaxPooling2D(2)(skip))
    x = layers.Concatenate()([layers.UpSampling2D(2)(x), skip])
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="dec")(x)
    return keras.Model(inputs, layers.Conv2D(classes, 1, activation=activation, name=output_name)(x))


def measuring_plan(path, items, targets, convention, batch_size: int, ablation_images: int = 0,
                   ablation_classes=None):
    """The saved model at `path`, its conv layers, and the plan of measuring them on `items`
    (sources.SourceImage, all of one size) against `targets`."""
    import keras

    from reportgen import capture, outputs, plan
    from reportgen.inputs import InputGeometry

    model = keras.saving.load_model(path)
    convs = capture.find_conv_layers(model)
    image = items[0].image
    height, width = image.shape[:2]
    specs = outputs.describe(model, (height, width))
    found = plan.make(model, convs, specs, targets, convention,
                      InputGeometry(height, width, image.shape[2] if image.ndim == 3 else 1),
                      graded_=plan.graded(specs, targets, items), batch_size=batch_size,
                      ablation_images=ablation_images, ablation_classes=ablation_classes)
    return model, convs, found


def measure_in_process(path, items, targets, convention, batch_size: int, **planned):
    """The plan of `measuring_plan`, and what the in-process executor measures of it."""
    from reportgen import measure
    from reportgen.probe import Probe

    model, convs, found = measuring_plan(path, items, targets, convention, batch_size, **planned)
    return found, measure.in_process(found, Probe(model, convs, found), measure.batches_of(found, items))


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """The folder `name`, filled by `build(folder)` once for the whole run. Under pytest-xdist the first
    worker to ask builds it while the others wait on its lock; a build that fails leaves no mark, so the
    next worker to ask tries again and fails with its own message."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        folder = tmp_path_factory.mktemp(name)
        build(folder)
        return folder
    from filelock import FileLock

    folder = tmp_path_factory.getbasetemp().parent / name  # the run's folder, above each worker's own
    built = folder.with_name(f"{name}.built")
    with FileLock(folder.with_name(f"{name}.lock")):
        if not built.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            built.touch()
    return folder


@pytest.fixture(scope="session", autouse=True)
def _synthetic_pets_prepared(tmp_path_factory):
    """The default data set's test split, prepared in the TFDS folder before any test reads it: the
    builds of many tests read it, and two workers preparing it at once would write the same folder."""
    def prepare(_):
        import tensorflow_datasets as tfds

        import reportgen.datasets.synthetic_pets  # noqa: F401  (registers the builder)

        tfds.disable_progress_bar()
        tfds.builder("synthetic_pets/test").download_and_prepare()

    built_once(tmp_path_factory, "synthetic_pets_prepared", prepare)


TINY_SIZE = 64
TINY_WIDTH = 0.125


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    """A slim SD-UNet (same 51 convs, 1/8 the filters) at 64 px, saved as .keras. Its weights are
    random: one file for the whole run, so every worker checks the sites against the same model."""
    def build(folder):
        from reportgen.profiles.sd_unet import build_sd_unet

        build_sd_unet(TINY_SIZE, 3, TINY_WIDTH).save(folder / "tiny_sd_unet.keras")

    return built_once(tmp_path_factory, "tiny_model", build) / "tiny_sd_unet.keras"


@pytest.fixture(scope="session")
def small_model_path(tmp_path_factory) -> Path:
    """The two-level U-Net (4 convs, 32 px) saved as .keras: for tests of folders, files and messages,
    where the model is not the subject and each build of the 51-conv tiny SD-UNet would cost seconds."""
    path = tmp_path_factory.mktemp("models") / "small_unet.keras"
    small_unet(32, 3, "softmax", "image", "segmentation", seed=3).save(path)
    return path


@pytest.fixture(scope="session")
def pets_folder(tmp_path_factory) -> tuple[Path, Path]:
    """Six synthetic pets as JPEG files, with Oxford-style trimap PNGs in a sibling folder."""
    def build(root):
        from reportgen.datasets.synthetic_pets.render import render_example

        (root / "images").mkdir()
        (root / "trimaps").mkdir()
        for i in range(6):
            example = render_example(99, i)
            Image.fromarray(example.image).save(root / "images" / f"pet_{i}.jpg", quality=90)
            Image.fromarray(example.trimap).save(root / "trimaps" / f"pet_{i}.png")

    root = built_once(tmp_path_factory, "pets", build)
    return root / "images", root / "trimaps"


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Without these flags Chromium phones home at start-up; the site itself must make no request at all.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def pytest_collection_modifyitems(session, config, items):
    """Browser tests last, in their own order. The one session Chromium is driven by Playwright's sync
    API, which keeps its asyncio loop running on the main thread until the session ends: a later test
    that runs an event loop (Dask's client, asyncio.run) would find it. Nothing is deselected."""
    items[:] = ([item for item in items if item.get_closest_marker("browser") is None]
                + [item for item in items if item.get_closest_marker("browser") is not None])


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the whole session (the browser tests run last, see above): every
    browser test opens its own page in it, so no state crosses tests, and the start-up is paid once
    instead of once per module."""
    assert CHROMIUM, "Debian's chromium is required for the browser tests (make test installs it as root)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture()
def runner():
    from typer.testing import CliRunner

    return CliRunner()


@pytest.fixture(scope="session")
def tiny_site(tmp_path_factory, tiny_model_path, pets_folder) -> Path:
    """A complete site built from the tiny model over the pets folder, shared by browser and validator tests."""
    from typer.testing import CliRunner

    from reportgen.cli import app

    def build(folder):
        images, trimaps = pets_folder
        result = CliRunner().invoke(app, ["build", "--model", str(tiny_model_path), "--image-dir", str(images),
                                          "--trimap-dir", str(trimaps), "--images", "4", "--out", str(folder / "site"),
                                          "-q"])
        assert result.exit_code == 0, result.output

    return built_once(tmp_path_factory, "tiny_site", build) / "site"


@dataclass(frozen=True)
class BuiltSite:
    out: Path
    stderr: str  # what the build's processes (the Beam workers among them) wrote to file descriptor 2


@pytest.fixture(scope="session")
def beam_site(tmp_path_factory, tiny_model_path, pets_folder) -> BuiltSite:
    """The tiny model's site with two images pictured and the statistics of all six on Beam's
    DirectRunner: the build several tests check from their sides (the numbers, the card, the Dask
    runner's equal), built once."""
    import tempfile

    from typer.testing import CliRunner

    from reportgen.cli import app

    def build(folder):
        images, trimaps = pets_folder
        with tempfile.TemporaryFile() as caught:
            saved = os.dup(2)
            os.dup2(caught.fileno(), 2)  # the workers inherit the descriptor, not sys.stderr
            try:
                result = CliRunner().invoke(app, [*BEAM_BUILD, "--model", str(tiny_model_path), "--image-dir",
                                                  str(images), "--trimap-dir", str(trimaps), "--out", str(folder / "site")])
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            caught.seek(0)
            (folder / "stderr.txt").write_bytes(caught.read())
        assert result.exit_code == 0, result.output

    folder = built_once(tmp_path_factory, "beam_site", build)
    return BuiltSite(folder / "site", (folder / "stderr.txt").read_text("utf-8", "replace"))


BEAM_BUILD = ("build", "--images", "2", "--stats-images", "all", "--faithfulness-images", "2", "-q")


def random_image(rng: np.random.Generator, size: int) -> np.ndarray:
    return rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def classifier_site(tmp_path_factory, pets_folder) -> Path:
    """A site of a model unlike the SD-UNet: a MobileNetV2 classifier (depthwise convs, three named
    classes, ImageNet-style `--preprocess tf`) over class folders without trimaps, so every mask
    statistic is undefined and the class statistics are there instead."""
    import keras
    from typer.testing import CliRunner

    from reportgen.cli import app

    def build(root):
        model_path = root / "mobilenet_v2.keras"
        keras.applications.MobileNetV2(weights=None, input_shape=(64, 64, 3), alpha=0.35, classes=3).save(model_path)
        labels = root / "labels.txt"
        labels.write_text("cat\ndog\n<b>bird</b>\n")  # markup in a class name must be shown, not run
        folders = root / "photos"
        for i, path in enumerate(sorted(pets_folder[0].iterdir())):
            (folders / ("cats" if i % 2 else "dogs")).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, folders / ("cats" if i % 2 else "dogs") / path.name)
        result = CliRunner().invoke(app, ["build", "--model", str(model_path), "--image-dir", str(folders),
                                          "--labels", str(labels), "--preprocess", "tf", "--images", "4",
                                          "--out", str(root / "site"), "-q"])
        assert result.exit_code == 0, result.output

    return built_once(tmp_path_factory, "classifier", build) / "site"


_LAST_TEST: list[str] = []


@pytest.fixture(autouse=True)
def _sigint_handled(request):
    """Every test starts with Ctrl-C handled as Python's default. A suite started in the background of a
    non-interactive shell (`make test &`, as a CI script may) inherits SIGINT ignored (POSIX), and then
    every build a test interrupts inherits the ignore and runs to the end: three Ctrl-C tests failed so.
    pytest-xdist's workers start with it ignored too (their controller takes Ctrl-C). Said as a warning,
    with the test that ran before, should a test ever leave it ignored."""
    import signal
    import warnings

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        if _LAST_TEST:
            warnings.warn(f"SIGINT was ignored after {_LAST_TEST[0]}, before {request.node.nodeid}")
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    _LAST_TEST[:] = [request.node.nodeid]
