"""The shipped default: its weights load, predict a fixed synthetic pet as recorded, and meet the bar."""

import json
import re

import numpy as np
import pytest

from reportgen import model_io
from reportgen.datasets.synthetic_pets.render import render_example
from reportgen.inputs import InputGeometry

META = model_io.models_dir() / model_io.MODEL_META


@pytest.fixture(scope="module")
def meta():
    return json.loads(META.read_text())


@pytest.fixture(scope="module")
def shipped():
    return model_io.load()


def test_weights_are_small_and_match_the_card(meta, shipped):
    weights = model_io.models_dir() / model_io.DEFAULT_WEIGHTS
    assert weights.stat().st_size < 50 * 1024 * 1024
    assert shipped.trained and shipped.checksum == meta["sha256"]
    assert shipped.model.count_params() == 21_507_171
    card = (model_io.models_dir() / model_io.MODEL_CARD).read_text()
    assert meta["sha256"] in card


def test_prediction_for_a_fixed_synthetic_pet_matches_the_record(meta, shipped):
    expected = meta["expected_prediction"]
    example = render_example(expected["seed"], expected["index"])
    image = InputGeometry(160, 160, 3).pixels(example.image).astype("float32")[None]
    probabilities = shipped.model.predict(image, verbose=0)[0]
    np.testing.assert_allclose(probabilities.mean(axis=(0, 1)), expected["mean_probabilities"], atol=0.01)
    coarse = probabilities.argmax(-1)[4::8, 4::8]  # 20 x 20 samples of the predicted mask
    agreement = (coarse == np.array(expected["mask_20x20"])).mean()
    assert agreement >= 0.97


@pytest.mark.slow
def test_evaluate_reproduces_the_card_metrics(meta, runner):
    from reportgen.cli import app

    result = runner.invoke(app, ["evaluate"])
    assert result.exit_code == 0, result.output
    # Only the metric lines: on a fresh machine TFDS first says where it prepared the split.
    metric = re.compile(r"^\s+(IoU \w+|mean IoU|pixel accuracy)\s+([0-9.]+)$")
    values = {found[1].removeprefix("IoU "): float(found[2])
              for found in map(metric.match, result.output.splitlines()) if found}
    assert values["pet"] >= 0.85 and values["mean IoU"] >= 0.70
    assert values["pet"] == pytest.approx(meta["metrics"]["pet_iou"], abs=0.002)
    assert values["mean IoU"] == pytest.approx(meta["metrics"]["mean_iou"], abs=0.002)
