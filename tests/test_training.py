"""Training and evaluation, on a tiny model for a few steps."""

import json

import numpy as np
import pytest

from reportgen import training


@pytest.fixture()
def mock_oxford(monkeypatch):
    import tensorflow_datasets as tfds

    from reportgen import tfds_source

    monkeypatch.setattr(tfds_source, "_reachable", lambda host: True)
    with tfds.testing.mock_data(num_examples=12):
        yield


def test_train_resume_and_export_on_mock_oxford(tmp_path, mock_oxford, monkeypatch):
    import keras

    config = training.TrainConfig(dataset="oxford_iiit_pet", width=0.125, input_size=64, batch_size=4, epochs=2,
                                  validation_examples=4, patience=3)
    run = tmp_path / "run"

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt  # as a session ending hard after the first epoch

    real_logger = training._progress_logger
    monkeypatch.setattr(training, "_progress_logger", lambda every: Interrupt())
    prints = tmp_path / "fingerprints"
    with pytest.raises(KeyboardInterrupt):
        training.train(config, run, progress=False, fingerprints=prints)
    assert [p.name for p in prints.iterdir()] == ["epoch_1.fingerprint.npz"]  # kept though the run then ended
    monkeypatch.setattr(training, "_progress_logger", real_logger)
    best = training.train(config, run, progress=False, fingerprints=prints)  # resumes: runs only the second epoch
    assert best.is_file()
    from reportgen import fingerprint

    stored = [fingerprint.load(prints / f"epoch_{k}.fingerprint.npz") for k in (1, 2)]
    assert [len(p.ids) for p in stored] == [4, 4]  # the 4 validation images
    assert len(stored[0].layers) == 51 and stored[0].layers == stored[1].layers
    assert json.loads((run / "config.json").read_text())["width"] == 0.125
    epochs = [line.split(",")[0] for line in (run / "history.csv").read_text().splitlines()[1:]]
    assert epochs == ["0", "1"]

    weights = tmp_path / "tiny.weights.h5"
    training.export_float16(best, weights)
    model = keras.models.load_model(best, compile=False)
    from reportgen.profiles.sd_unet import build_sd_unet

    restored = build_sd_unet(64, 3, 0.125)
    restored.load_weights(weights)
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    agreement = (model.predict(x, verbose=0).argmax(-1) == restored.predict(x, verbose=0).argmax(-1)).mean()
    assert agreement > 0.99
    assert restored.weights[0].dtype == "float32"


def test_evaluate_reports_per_class_iou(tmp_path, mock_oxford):
    from reportgen.profiles.sd_unet import build_sd_unet

    metrics = training.evaluate(build_sd_unet(64, 3, 0.125), "oxford_iiit_pet", "test", limit=5)
    assert metrics.images == 5
    assert len(metrics.class_iou) == 3
    assert 0.0 <= metrics.pixel_accuracy <= 1.0
    finite = [v for v in metrics.class_iou if np.isfinite(v)]
    assert metrics.mean_iou == pytest.approx(np.mean(finite))
