"""Receptive fields against hand-computed values for small graphs."""

import keras
import pytest
from keras import layers

from reportgen.receptive import receptive_field_map


def test_plain_chain():
    inputs = keras.Input((32, 32, 3))
    x = layers.Conv2D(4, 3, padding="same", name="a")(inputs)  # r 3, j 1
    x = layers.MaxPooling2D(2, name="pool")(x)  # r 4, j 2
    x = layers.Conv2D(4, 3, padding="same", name="b")(x)  # r 8, j 2
    x = layers.Conv2D(4, 3, dilation_rate=2, padding="same", name="c")(x)  # k' 5: r 16
    x = layers.Conv2D(4, 3, strides=2, padding="same", name="d")(x)  # r 20, j 4
    x = layers.UpSampling2D(2, name="up")(x)  # j 2
    x = layers.Conv2D(4, 3, padding="same", name="e")(x)  # r 24
    fields = receptive_field_map(keras.Model(inputs, x))
    assert [fields[n] for n in "abcde"] == [3, 8, 16, 20, 24]


def test_concatenation_takes_the_widest_path():
    inputs = keras.Input((16, 16, 3))
    narrow = layers.Conv2D(2, 1, name="narrow")(inputs)  # r 1
    wide = layers.Conv2D(2, 5, padding="same", name="wide")(inputs)  # r 5
    x = layers.Concatenate()([narrow, wide])
    x = layers.Conv2D(2, 3, padding="same", name="after")(x)  # r 7
    assert receptive_field_map(keras.Model(inputs, x))["after"] == 7


def test_nested_model_fields_are_qualified():
    inner_in = keras.Input((16, 16, 4))
    inner = keras.Model(inner_in, layers.Conv2D(4, 3, padding="same", name="inner_conv")(inner_in), name="block")
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(4, 3, padding="same", name="outer")(inputs)
    x = inner(x)
    fields = receptive_field_map(keras.Model(inputs, x))
    assert fields["outer"] == 3
    assert fields["block/inner_conv"] == 5


def test_sd_unet_first_and_bottleneck_fields():
    from reportgen.models.sd_unet import build_sd_unet

    fields = receptive_field_map(build_sd_unet(64, 3, 0.125))
    assert fields["e1_sa_main_conv1"] == 3
    assert fields["e1_sa_attn_conv1"] == 2 + 2 * 2  # 2x2 pool (r 2, j 2) then 3x3
    assert fields["daspp_rate6"] == pytest.approx(fields["e5_sa_out"] + 12 * 16)
