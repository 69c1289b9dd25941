"""Input conventions against their closed forms, and image geometry on pictures with a known layout."""

import numpy as np
import pytest
from PIL import Image

from reportgen.errors import InputError
from reportgen.inputs import InputConvention, InputGeometry, parse_rescale, parse_size

PIXELS = np.array([[[[0, 127.5, 255], [10, 20, 30]]]], np.float32)  # 1 x 1 x 2 x 3


def test_tf_mode_maps_0_255_to_minus_one_one():
    np.testing.assert_allclose(InputConvention("tf").apply(PIXELS), PIXELS / 127.5 - 1, atol=1e-6)


def test_torch_mode_is_imagenet_mean_and_std_on_0_1():
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(InputConvention("torch").apply(PIXELS), (PIXELS / 255 - mean) / std, atol=1e-5)


def test_caffe_mode_is_bgr_minus_imagenet_mean():
    expected = PIXELS[..., ::-1] - np.array([103.939, 116.779, 123.68])
    np.testing.assert_allclose(InputConvention("caffe").apply(PIXELS), expected, atol=1e-4)


def test_rescale_is_scale_then_offset_and_none_is_identity():
    np.testing.assert_allclose(InputConvention(rescale=(0.0078125, -0.99609375)).apply(PIXELS),
                               PIXELS * 0.0078125 - 0.99609375, atol=1e-7)
    np.testing.assert_array_equal(InputConvention().apply(PIXELS), PIXELS)
    assert InputConvention().is_identity and not InputConvention("tf").is_identity


def test_imagenet_modes_need_three_channels():
    with pytest.raises(InputError, match="needs a 3-channel input"):
        InputConvention("caffe").check_channels(1)
    InputConvention("tf").check_channels(1)


@pytest.mark.parametrize("text, expected", [("0.5", (0.5, 0.0)), ("0.0078125,-0.99609375", (0.0078125, -0.99609375)),
                                            (" 2 , 1 ", (2.0, 1.0))])
def test_parse_rescale(text, expected):
    assert parse_rescale(text) == expected


@pytest.mark.parametrize("text", ["", "1,2,3", "a", "1,", "nan", "0"])
def test_parse_rescale_refuses(text):
    with pytest.raises(InputError):
        parse_rescale(text)


def test_parse_size():
    assert parse_size("160") == (160, 160)
    assert parse_size("96x160") == (96, 160)
    for bad in ("96x", "x", "4", "-3", "12.5"):
        with pytest.raises(InputError):
            parse_size(bad)


def _halves(height=40, width=80):
    """Left half value 50, right half 200, a 10-pixel red stripe in the middle columns."""
    picture = np.zeros((height, width, 3), np.uint8)
    picture[:, : width // 2] = 50
    picture[:, width // 2:] = 200
    picture[:, width // 2 - 5: width // 2 + 5] = (255, 0, 0)
    return picture


def test_crop_keeps_the_centre_at_the_models_aspect_ratio():
    geometry = InputGeometry(20, 20, 3, fit="crop")
    fitted = geometry.pixels(_halves())  # 40 x 80 -> centre 40 x 40 -> 20 x 20
    assert fitted.shape == (20, 20, 3)
    assert (fitted[:, 0] == 50).all() and (fitted[:, -1] == 200).all()
    assert (fitted[:, 8:12] == (255, 0, 0)).all()


def test_pad_keeps_all_of_the_picture_and_pads_black():
    geometry = InputGeometry(40, 40, 3, fit="pad")
    fitted = geometry.pixels(_halves())  # 40 x 80 -> 80 x 80 canvas, picture in rows 20..59 -> 40 x 40
    assert (fitted[:10] == 0).all() and (fitted[30:] == 0).all()
    assert (fitted[10:30, 0] == 50).all() and (fitted[10:30, -1] == 200).all()
    trimap = np.full((40, 80), 1, np.uint8)
    fitted_trimap = geometry.trimap(trimap)
    assert (fitted_trimap[:10] == 3).all() and (fitted_trimap[10:30] == 1).all()  # padding is "not classified"


def test_stretch_is_a_plain_resize_and_grayscale_is_pil_l():
    geometry = InputGeometry(20, 30, 1)
    picture = _halves()
    expected = np.asarray(Image.fromarray(picture).convert("L").resize((30, 20), Image.Resampling.NEAREST))
    np.testing.assert_array_equal(geometry.pixels(picture)[..., 0], expected)


def test_geometry_refuses_other_channel_counts():
    with pytest.raises(InputError, match="2-channel"):
        InputGeometry(8, 8, 2)
