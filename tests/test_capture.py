"""Conv layers found by type, in graph order, nested too; the probe streams their outputs."""

import keras
import numpy as np
import pytest
from keras import layers

from reportgen import capture
from reportgen.errors import InputError


def test_finds_all_51_convs_of_the_sd_unet_in_graph_order(tiny_model_path):
    model = keras.models.load_model(tiny_model_path)
    convs = capture.find_conv_layers(model)
    assert len(convs) == 51
    assert [c.index for c in convs] == list(range(1, 52))
    assert convs[-1].name == "head"
    order = {layer.name: i for i, layer in enumerate(model.layers)}
    assert [order[c.name] for c in convs] == sorted(order[c.name] for c in convs)
    rate12 = next(c for c in convs if c.name == "daspp_rate12")
    assert rate12.dilation == (12, 12) and rate12.kernel == (3, 3)


def test_finds_by_type_not_by_name():
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(4, 3, padding="same", name="features")(inputs)
    x = layers.LayerNormalization(name="conv_like_name")(x)
    x = layers.SeparableConv2D(4, 3, padding="same", name="sep")(x)
    x = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = layers.Conv2DTranspose(2, 3, strides=2, padding="same", name="tr")(x)
    convs = capture.find_conv_layers(keras.Model(inputs, x))
    assert [c.name for c in convs] == ["features", "sep", "dw", "tr"]
    assert [c.kind for c in convs] == ["Conv2D", "SeparableConv2D", "DepthwiseConv2D", "Conv2DTranspose"]


def test_nested_models_are_searched_and_probed():
    inner = keras.Sequential([keras.Input((16, 16, 4)), layers.Conv2D(6, 3, padding="same", name="inner_conv"),
                              layers.ReLU()], name="block")
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(4, 3, padding="same", name="outer_conv")(inputs)
    x = inner(x)
    x = layers.Conv2D(2, 1, name="last")(x)
    model = keras.Model(inputs, x)
    convs = capture.find_conv_layers(model)
    assert [c.qualified_name for c in convs] == ["outer_conv", "block/inner_conv", "last"]
    probe = capture.probe_model(model, convs)
    images = np.random.default_rng(0).uniform(0, 255, (3, 16, 16, 3)).astype("float32")
    (_, outputs), = list(capture.stream_activations(probe, images, batch_size=8))
    assert [o.shape for o in outputs] == [(3, 16, 16, 4), (3, 16, 16, 6), (3, 16, 16, 2)]
    expected = keras.Model(inner.inputs, inner.get_layer("inner_conv").output)(
        model.get_layer("outer_conv")(images))
    np.testing.assert_allclose(outputs[1], np.asarray(expected), rtol=1e-5, atol=1e-5)


def test_activation_tap_follows_norm_and_nonlinearity(tiny_model_path):
    model = keras.models.load_model(tiny_model_path)
    taps = {c.name: c.tap_name for c in capture.find_conv_layers(model, "activation")}
    assert taps["e1_sa_main_conv1"] == "e1_sa_main_conv1_act"
    assert taps["head"] == "head"  # nothing follows the head
    with pytest.raises(InputError):
        capture.find_conv_layers(model, "elsewhere")


def test_batches_stream_and_match_one_big_batch(tiny_model_path):
    model = keras.models.load_model(tiny_model_path)
    convs = capture.find_conv_layers(model)
    probe = capture.probe_model(model, convs)
    images = np.random.default_rng(1).uniform(0, 255, (5, 64, 64, 3)).astype("float32")
    streamed = list(capture.stream_activations(probe, images, batch_size=2))
    assert [start for start, _ in streamed] == [0, 2, 4]
    whole = list(capture.stream_activations(probe, images, batch_size=5))[0][1]
    for layer in (0, 25, 50):
        joined = np.concatenate([outs[layer] for _, outs in streamed])
        np.testing.assert_allclose(joined, whole[layer], rtol=1e-4, atol=1e-4)


def test_model_without_convs_is_refused():
    inputs = keras.Input((8,))
    model = keras.Model(inputs, layers.Dense(2)(inputs))
    assert capture.find_conv_layers(model) == []
    with pytest.raises(InputError, match="no convolution"):
        capture.probe_model(model, [])
