"""The SD-UNet builder against SD_UNET.md: counts, names, options, config round trip."""

import keras
import numpy as np
import pytest

from reportgen.profiles.sd_unet import build_sd_unet, describe_role


def conv2d_layers(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


def test_full_width_matches_the_notebook_summary():
    model = build_sd_unet()
    assert model.count_params() == 21_507_171
    assert len(conv2d_layers(model)) == 51
    assert len(model.layers) == 213
    assert tuple(model.inputs[0].shape) == (None, 160, 160, 3)
    assert tuple(model.outputs[0].shape) == (None, 160, 160, 3)


def test_blocks_follow_the_spec():
    model = build_sd_unet()
    assert model.get_layer("daspp_rate18").input.shape[-1] == 1536  # x enters twice
    assert model.get_layer("daspp_rate6").dilation_rate == (6, 6)
    assert model.get_layer("e1_sa_main_conv1_gn").groups == 32
    assert model.get_layer("e1_sa_main_conv1_act").negative_slope == pytest.approx(0.3)
    assert model.get_layer("head").activation.__name__ == "softmax"
    assert not any(isinstance(layer, (keras.layers.BatchNormalization, keras.layers.Dropout,
                                      keras.layers.Conv2DTranspose)) for layer in model.layers)


def test_slim_width_keeps_the_wiring_and_adapts_groups():
    model = build_sd_unet(64, 3, 0.125)
    convs = conv2d_layers(model)
    assert len(convs) == 51
    assert model.get_layer("e1_sa_main_conv1").filters == 4
    assert model.get_layer("e1_sa_main_conv1_gn").groups == 4
    assert model.count_params() < 21_507_171 / 30


def test_input_size_and_classes_are_configurable():
    model = build_sd_unet(96, 5, 0.125)
    assert tuple(model.outputs[0].shape) == (None, 96, 96, 5)


@pytest.mark.parametrize("kwargs", [{"input_size": 150}, {"input_size": 0}, {"num_classes": 0},
                                    {"width": -1.0}, {"width": float("nan")}])
def test_bad_arguments_are_refused_with_the_value(kwargs):
    with pytest.raises(ValueError, match="got"):
        build_sd_unet(**kwargs)


def test_keras_file_round_trips(tmp_path):
    model = build_sd_unet(64, 3, 0.125)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), loaded.predict(x, verbose=0), atol=1e-6)
    assert [layer.name for layer in conv2d_layers(loaded)] == [layer.name for layer in conv2d_layers(model)]


def test_names_say_where_each_conv_sits():
    names = {layer.name for layer in conv2d_layers(build_sd_unet(64, 3, 0.125))}
    for expected in ("e2_sa_attn_conv2", "d3_down_conv", "daspp_rate12", "u1_up_conv", "head"):
        assert expected in names
    assert describe_role("e2_sa_attn_conv2") == "encoder E2, SA attention path, 2nd conv"
    assert describe_role("daspp_rate12") == "bottleneck DASPP, dilation 12 branch"
    assert describe_role("u1_up_conv").startswith("decoder U1")
    assert describe_role("something_else") == ""


def test_training_twin_computes_the_same_function():
    from reportgen.profiles.sd_unet import copy_twin_weights

    twin = build_sd_unet(64, 3, 0.125, center_only_dilations=True)
    real = build_sd_unet(64, 3, 0.125)
    assert twin.get_layer("daspp_rate18").kernel_size == (1, 1)
    assert real.get_layer("daspp_rate18").kernel_size == (3, 3)
    before = real.get_layer("daspp_rate18").get_weights()[0]
    copy_twin_weights(twin, real)
    after = real.get_layer("daspp_rate18").get_weights()[0]
    np.testing.assert_array_equal(after[0, 0], before[0, 0])  # off-centre taps keep their values
    np.testing.assert_array_equal(after[1, 1], twin.get_layer("daspp_rate18").get_weights()[0][0, 0])
    x = np.random.default_rng(2).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(twin.predict(x, verbose=0), real.predict(x, verbose=0), atol=1e-5)
