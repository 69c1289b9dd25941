"""What the model says: output kinds, labels, the recorded values and the warnings."""

import keras
import numpy as np
import pytest
from keras import layers

from reportgen import outputs
from reportgen.errors import InputError


def _model():
    inputs = keras.Input((32, 48, 3))
    x = layers.Conv2D(4, 3, padding="same")(inputs)
    pooled = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, [layers.Dense(5, activation="softmax", name="species")(pooled),
                                layers.Dense(4, name="box")(pooled),
                                layers.Conv2D(3, 1, activation="softmax", name="mask")(x)])


def test_kinds_of_outputs_and_labels():
    specs = outputs.describe(_model(), (32, 48))
    assert [(s.name, s.kind) for s in specs] == [("species", "classification"), ("box", "other"),
                                                 ("mask", "segmentation")]
    labelled = outputs.describe(_model(), (32, 48), ("a", "b", "c", "d", "e"))
    assert labelled[0].classes == ("a", "b", "c", "d", "e") and labelled[0].class_name(4) == "e"
    with pytest.raises(InputError, match="names 2 classes but output 'species' has 5"):
        outputs.describe(_model(), (32, 48), ("a", "b"))


def test_logits_become_classes_when_labels_match_their_count():
    inputs = keras.Input((8, 8, 3))
    logits = layers.Dense(3, name="logits")(layers.Flatten()(layers.Conv2D(2, 3)(inputs)))
    model = keras.Model(inputs, logits)
    assert outputs.describe(model, (8, 8))[0].kind == "other"
    assert outputs.describe(model, (8, 8), ("x", "y", "z"))[0].kind == "classification"


def test_top_k_and_recorded_values():
    spec = outputs.OutputSpec("species", (6,), "classification", ("a", "b", "c", "d", "e", "f"))
    said = outputs.summarise(spec, np.array([0.05, 0.4, 0.1, 0.3, 0.1, 0.05]))
    assert [name for name, _ in said.top] == ["b", "d", "c", "e", "a"] and said.score_name == "probability"
    assert outputs.record_values(np.arange(6.0)) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    big = outputs.record_values(np.arange(2000.0).reshape(40, 50))
    assert big["shape"] == [40, 50] and big["max"] == 1999.0 and big["mean"] == pytest.approx(999.5)


def test_constant_and_saturated_outputs_are_warned():
    spec = outputs.OutputSpec("p", (2,), "classification", ("no", "yes"))
    saturated = np.array([[1.0, 1e-20], [0.99995, 5e-5], [1.0, 0.0]])
    (line,) = outputs.warnings_for([spec], [saturated], "--preprocess none")
    assert "same class, 'no'" in line and "--preprocess none" in line
    varied = np.array([[0.6, 0.4], [0.3, 0.7], [0.5, 0.5]])
    assert outputs.warnings_for([spec], [varied], "x") == []
    other = outputs.OutputSpec("v", (3,), "other")
    (line,) = outputs.warnings_for([other], [np.tile([1.0, 2.0, 3.0], (4, 1))], "x")
    assert "is the same for all 4 images" in line


def test_the_models_own_preprocessing_layers_are_named():
    from reportgen.input_evidence import input_layers

    inputs = keras.Input((8, 8, 3))
    x = layers.Rescaling(1 / 255, name="to_unit")(inputs)
    x = layers.Normalization(mean=[0.5, 0.5, 0.5], variance=[0.25, 0.25, 0.25], name="norm")(x)
    model = keras.Model(inputs, layers.Conv2D(2, 3)(x))
    found = input_layers(model)
    assert found[0].startswith("Rescaling 'to_unit' (x * 0.00392157 + 0)") and found[1].startswith("Normalization")
    plain = keras.Model(inputs, layers.Conv2D(2, 3)(inputs))
    assert input_layers(plain) == []


def test_a_saturated_bounded_first_conv_is_evidence():
    from reportgen.capture import find_conv_layers
    from reportgen.input_evidence import first_conv_evidence

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    model = keras.Model(inputs, layers.Conv2D(4, 3, activation="tanh", name="first")(inputs))
    conv = find_conv_layers(model)[0]
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, (4, 16, 16, 3)).astype(np.float32)
    on_raw = model.predict(pixels, verbose=0)
    on_unit = model.predict(pixels / 127.5 - 1, verbose=0)
    assert "is saturated" in first_conv_evidence(model, conv, on_raw)
    assert first_conv_evidence(model, conv, on_unit) is None


def test_batchnorm_statistics_reveal_the_input_scale():
    from reportgen.capture import find_conv_layers
    from reportgen.input_evidence import first_conv_evidence

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    conv_layer = layers.Conv2D(4, 3, name="first")
    norm = layers.BatchNormalization(name="bn")
    model = keras.Model(inputs, norm(conv_layer(inputs)))
    rng = np.random.default_rng(0)
    unit = rng.uniform(-1, 1, (4, 16, 16, 3)).astype(np.float32)
    trained_on = keras.Model(inputs, conv_layer.output).predict(unit, verbose=0)
    norm.moving_mean.assign(trained_on.mean(axis=(0, 1, 2)))
    norm.moving_variance.assign(trained_on.var(axis=(0, 1, 2)))
    conv = find_conv_layers(model)[0]
    assert first_conv_evidence(model, conv, trained_on) is None
    raw = keras.Model(inputs, conv_layer.output).predict((unit + 1) * 127.5, verbose=0)
    assert "times the spread its BatchNormalization learnt" in first_conv_evidence(model, conv, raw)
