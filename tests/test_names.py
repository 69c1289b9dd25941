"""Any layer or model name Keras accepts builds: TensorFlow's op names never see it as it is."""

import html
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from reportgen import op_names
from reportgen.cli import app

# Each is refused by TensorFlow as a node name: a backslash, a leading '-' or '_', a space, non-ASCII, '>'.
HOSTILE = ("\\", "-lead <b>x", "_under", "two words", "né ✓", "a>b")


@pytest.mark.parametrize("name", [*HOSTILE, "conv2d_1", ".dot"])
def test_an_op_safe_name_is_one_tensorflow_runs_in_a_graph(name):
    op_names.install()
    safe = op_names.op_safe(name)
    assert "/" not in safe
    assert safe == name or name in HOSTILE

    @tf.function
    def scoped(x):
        with tf.name_scope(safe):
            return tf.identity(x) * 2.0

    assert float(scoped(tf.constant(1.5))) == 3.0


def test_keras_own_predict_runs_a_hostile_name_in_a_graph():
    """The hook reaches Keras' per-layer scopes: `predict` traces a graph, and its numbers are the eager ones."""
    op_names.install()
    keras.utils.set_random_seed(4)
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(2, 3, padding="same", name="\\")(inputs)
    model = keras.Model(inputs, layers.Dense(2, name="-x")(layers.GlobalAveragePooling2D(name="a b")(x)), name="_m")
    images = np.random.default_rng(0).uniform(0, 1, (2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(model.predict(images, verbose=0), model(images).numpy(), rtol=1e-5, atol=1e-6)
    assert [layer.name for layer in model.layers[1:]] == ["\\", "a b", "-x"]  # Keras' names are left alone


def test_a_model_with_hostile_layer_names_builds_and_shows_them_escaped(runner, tmp_path, pets_folder):
    keras.utils.set_random_seed(9)
    inputs = keras.Input((32, 32, 3), name="in put")
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name=HOSTILE[0])(inputs)
    x = layers.Conv2D(3, 3, strides=2, padding="same", activation="relu", name=HOSTILE[1])(x)
    x = layers.GlobalAveragePooling2D(name=HOSTILE[3])(x)
    model = keras.Model(inputs, layers.Dense(2, activation="softmax", name=HOSTILE[2])(x), name=HOSTILE[4])
    path = tmp_path / "hostile.keras"
    model.save(path)
    out = tmp_path / "site"
    result = runner.invoke(app, ["build", "--model", str(path), "--image-dir", str(pets_folder[0]), "--images", "2",
                                 "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    stats = json.loads((out / "data" / "stats.json").read_text(encoding="utf-8"))
    assert [row["name"] for row in stats["layers"]] == list(HOSTILE[:2])
    index = (out / "index.html").read_text(encoding="utf-8")
    assert html.escape(HOSTILE[1], quote=False) in index and HOSTILE[1] not in index
    assert "\\" in index
