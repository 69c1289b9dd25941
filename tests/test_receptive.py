"""Receptive fields against hand-computed values for small graphs."""

import keras
import numpy as np
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
    from reportgen.profiles.sd_unet import build_sd_unet

    fields = receptive_field_map(build_sd_unet(64, 3, 0.125))
    assert fields["e1_sa_main_conv1"] == 3
    assert fields["e1_sa_attn_conv1"] == 2 + 2 * 2  # 2x2 pool (r 2, j 2) then 3x3
    assert fields["daspp_rate6"] == pytest.approx(fields["e5_sa_out"] + 12 * 16)


# --- against an empirical receptive field -------------------------------------------------------------

def _empirical_fields(model, size: int, scale: float, seed: int = 0) -> dict[str, float]:
    """Each conv's field measured on the model itself: how many input rows reach the centre output pixel.

    Row i of the input is perturbed by large random noise, one image per row, and the rows whose
    perturbation moves any channel of the layer's centre pixel are counted (first to last). Perturbing
    rather than taking the gradient counts the pixels a max-pooling window passes over too."""
    from reportgen import capture

    convs = capture.find_conv_layers(model)
    probe = capture.probe_model(model, convs)
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, scale, (1, size, size, 3)).astype(np.float32)
    batch = np.repeat(base, size + 1, axis=0)
    for row in range(size):
        batch[row + 1, row] += rng.normal(0, 1.6 * scale, (size, 3)).astype(np.float32)
    outputs = probe.predict_on_batch(batch)
    found = {}
    for conv, out in zip(convs, outputs if isinstance(outputs, list) else [outputs]):
        centre = out[:, out.shape[1] // 2, out.shape[2] // 2, :]
        moved = np.flatnonzero(np.abs(centre[1:] - centre[0]).max(axis=-1) > 1e-5 * np.abs(centre[0]).max() + 1e-30)
        found[conv.qualified_name] = float(moved.max() - moved.min() + 1) if moved.size else 0.0
    return found


def _residual_and_dilated():
    keras.utils.set_random_seed(2)
    inputs = keras.Input((64, 64, 3))
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inputs)
    y = layers.Conv2D(8, 3, padding="same", activation="relu", name="c2")(x)
    x = x + y  # the residual written as code
    x = layers.Conv2D(8, 3, strides=2, padding="same", name="c3")(x)
    x = layers.Conv2D(8, 3, dilation_rate=3, padding="same", name="dilated")(keras.ops.relu(x))
    x = layers.Conv2D(8, 3, padding="same", name="after")(x * 0.5 + 1)
    return keras.Model(inputs, x)


def _convnext_tiny():
    """ConvNeXtTiny with its LayerScale gammas at 1: initialised at 1e-6, they hide each block's
    contribution below float32's resolution, which a trained model's do not."""
    model = keras.applications.ConvNeXtTiny(weights=None, input_shape=(96, 96, 3), include_top=False)
    for layer in model.layers:
        if type(layer).__name__ == "LayerScale":
            layer.set_weights([np.ones_like(w) for w in layer.get_weights()])
    return model


class _WithoutGroupNorm:
    """keras.layers with GroupNormalization replaced by a tanh: its per-image statistics make every pixel
    reach every output, a global dependence that receptive fields (like Araujo et al.'s) do not count;
    the tanh keeps the attention blocks' products from overflowing without it."""

    def __getattr__(self, name):
        return getattr(layers, name)

    @staticmethod
    def GroupNormalization(name, **_):  # noqa: N802 (the keras.layers name it stands in for)
        return layers.Activation("tanh", name=name)


def _sd_unet():
    from reportgen.profiles.sd_unet import build_sd_unet

    return build_sd_unet(96, 3, 0.125, layer_types=_WithoutGroupNorm())


@pytest.mark.parametrize("build, size, exact", [
    (_residual_and_dilated, 64, True),
    (lambda: keras.applications.MobileNetV3Small(weights=None, input_shape=(96, 96, 3), include_top=False), 96, True),
    (_convnext_tiny, 96, True),
    (lambda: keras.applications.ResNet50(weights=None, input_shape=(96, 96, 3), include_top=False), 96, True),
    (_sd_unet, 96, False),
], ids=["residual-dilated", "mobilenetv3small", "convnexttiny", "resnet50", "sd-unet"])
def test_fields_from_the_graph_equal_the_empirical_ones(build, size, exact):
    """Exact on chains, residuals, gates and nested models. Where a nearest upsampling and a pooling
    line up (the SD-UNet's attention and down blocks), neighbouring pixels repeat and the graph's
    bound (Araujo et al., 2019) can exceed the true field by up to one jump."""
    from reportgen import capture

    keras.utils.set_random_seed(0)
    model = build()
    convs = capture.find_conv_layers(model)
    fields = capture.receptive_fields(model, convs)
    measured = _empirical_fields(model, size, scale=1.0 if not exact else 255.0)
    checked = 0
    for conv in convs:
        field, jump = fields[conv.qualified_name], size / conv.output_shape[0]
        assert field == field, f"{conv.qualified_name}: receptive field undefined"
        if field == float("inf"):
            # After a global pooling (a squeeze-and-excitation gate) every pixel can move the output; a
            # saturated gate hides it from the perturbation, so only the definition is checked.
            continue
        if field + 2 * jump <= size:  # the whole field lies inside the image
            if exact:
                assert measured[conv.qualified_name] == field, conv.qualified_name
            else:
                assert field - jump <= measured[conv.qualified_name] <= field, conv.qualified_name
            checked += 1
        else:
            assert measured[conv.qualified_name] >= size / 2 - jump, conv.qualified_name
    assert checked >= 2
