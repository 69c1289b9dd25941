"""The original notebook's kind of checkpoint: tf.keras 2 `.h5` with tensorflow-addons' GroupNormalization.

The real file cannot be downloaded here, so the test writes faithful ones: the same SD-UNet built
with tf-keras, its GroupNormalization registered as `Addons>GroupNormalization`, saved as a full
model and as weights only. reportgen must load both and predict exactly what tf-keras predicted.
"""

import types

import numpy as np
import pytest

from reportgen import model_io
from reportgen.cli import app
from reportgen.profiles.sd_unet import build_sd_unet

SIZE, WIDTH = 64, 0.125


@pytest.fixture(scope="module")
def legacy_files(tmp_path_factory):
    import tf_keras  # make test installs it (with --no-deps, beside tensorflow-cpu)

    @tf_keras.utils.register_keras_serializable(package="Addons")
    class GroupNormalization(tf_keras.layers.GroupNormalization):
        """Stands in for tensorflow_addons.layers.GroupNormalization, registered under its name."""

    layer_types = types.SimpleNamespace(**{name: getattr(tf_keras.layers, name) for name in dir(tf_keras.layers)
                                           if not name.startswith("_")})
    layer_types.GroupNormalization = GroupNormalization
    model = build_sd_unet(SIZE, 3, WIDTH, toolkit=tf_keras, layer_types=layer_types)
    # Train-like weights: GroupNorm scales and offsets away from their 1 / 0 initial values.
    rng = np.random.default_rng(0)
    model.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) for w in model.get_weights()])
    folder = tmp_path_factory.mktemp("legacy")
    full, weights = folder / "notebook_model.h5", folder / "notebook_weights.h5"
    model.save(full)
    model.save_weights(weights)
    images = rng.uniform(0, 255, (3, SIZE, SIZE, 3)).astype("float32")
    return full, weights, images, model.predict(images, verbose=0)


def test_h5_file_names_the_addons_layer(legacy_files):
    full, _, _, _ = legacy_files
    assert b"Addons>GroupNormalization" in full.read_bytes()


def test_full_legacy_model_loads_and_predicts_the_same(legacy_files):
    full, _, images, expected = legacy_files
    model = model_io.load_model_file(full)
    np.testing.assert_allclose(model.predict(images, verbose=0), expected, atol=1e-5)


def test_legacy_weights_load_into_the_built_in_sd_unet(legacy_files):
    _, weights, images, expected = legacy_files
    loaded = model_io.load(weights_path=weights, input_size=SIZE, width=WIDTH)
    np.testing.assert_allclose(loaded.model.predict(images, verbose=0), expected, atol=1e-5)


def test_weights_for_another_architecture_are_refused(legacy_files, runner, tmp_path):
    _, weights, _, _ = legacy_files
    result = runner.invoke(app, ["build", "--weights", str(weights), "--out", str(tmp_path / "site"), "-q"])
    assert result.exit_code == 2
    assert "does not fit this model" in result.output and "Traceback" not in result.output
