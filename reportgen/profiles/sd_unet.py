"""The SD-UNet of the original notebook, rebuilt layer for layer from SD_UNET.md.

Every conv layer gets a stable name that says where it sits
(``e2_sa_attn_conv2``, ``d3_down_conv``, ``daspp_rate12``, ``u1_up_conv``,
``head``), so a report reader, a test or a weights file can find it by name.

Keras is imported by the builder only: the profile below (roles, sections, the claim) is read by the
site stage, which must run without TensorFlow.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras

ENCODER_FILTERS = (32, 64, 128, 256, 512)
DECODER_FILTERS = (256, 128, 64, 32)
DASPP_FILTERS = 256
MAX_GROUPS = 32


def _groups_for(filters: int) -> int:
    """GroupNorm groups: 32 as in the notebook, or the largest divisor that fits a slim layer."""
    return max(g for g in range(1, min(MAX_GROUPS, filters) + 1) if filters % g == 0)


class _Blocks:
    """Builds the notebook's blocks with width-scaled filters and deliberate names."""

    def __init__(self, width: float, center_only_dilations: bool, layer_types):
        self.width = width
        self.center_only_dilations = center_only_dilations
        self.layers = layer_types

    def filters(self, base: int) -> int:
        return max(1, int(round(base * self.width)))

    def cb(self, x, base_filters: int, kernel: int, name: str, dilation: int = 1):
        """Conv -> GroupNorm -> LeakyReLU(0.3), the notebook's conv block."""
        f = self.filters(base_filters)
        if self.center_only_dilations and dilation > 1 and dilation >= max(x.shape[1], x.shape[2]):
            # Every off-centre tap of this dilated kernel lands in the zero padding, so the layer
            # equals a 1x1 conv with the centre tap; TensorFlow's CPU gradient of such dilations is slow.
            kernel, dilation = 1, 1
        x = self.layers.Conv2D(f, kernel, padding="same", dilation_rate=dilation, name=name)(x)
        x = self.layers.GroupNormalization(groups=_groups_for(f), epsilon=1e-3, name=f"{name}_gn")(x)
        return self.layers.LeakyReLU(name=f"{name}_act")(x)

    def sa(self, x, base_filters: int, prefix: str):
        """Squeeze-and-attention: output = a * r + a, attention path from the block input."""
        r = self.cb(x, base_filters, 3, f"{prefix}_sa_main_conv1")
        r = self.cb(r, base_filters, 3, f"{prefix}_sa_main_conv2")
        a = self.layers.AveragePooling2D(2, strides=2, name=f"{prefix}_sa_attn_pool")(x)
        a = self.cb(a, base_filters, 3, f"{prefix}_sa_attn_conv1")
        a = self.cb(a, base_filters, 3, f"{prefix}_sa_attn_conv2")
        a = self.layers.UpSampling2D(2, interpolation="nearest", name=f"{prefix}_sa_attn_up")(a)
        weighted = self.layers.Multiply(name=f"{prefix}_sa_mul")([a, r])
        return self.layers.Add(name=f"{prefix}_sa_out")([weighted, a])

    def down(self, x, base_filters: int, prefix: str):
        maxed = self.layers.MaxPooling2D(2, strides=2, name=f"{prefix}_down_maxpool")(x)
        averaged = self.layers.AveragePooling2D(2, strides=2, name=f"{prefix}_down_avgpool")(x)
        x = self.layers.Concatenate(name=f"{prefix}_down_concat")([maxed, averaged])
        return self.cb(x, base_filters, 1, f"{prefix}_down_conv")

    def up(self, x, base_filters: int, prefix: str):
        x = self.layers.UpSampling2D(2, interpolation="bilinear", name=f"{prefix}_up")(x)
        return self.cb(x, base_filters, 1, f"{prefix}_up_conv")

    def daspp(self, x, grid: int):
        """Dense atrous spatial pyramid pooling; the input enters the rate-18 branch twice, as in the notebook."""
        f = DASPP_FILTERS
        p = self.layers.AveragePooling2D(pool_size=grid, name="daspp_pool")(x)
        p = self.cb(p, f, 1, "daspp_pool_conv")
        p = self.layers.UpSampling2D(grid, interpolation="bilinear", name="daspp_pool_up")(p)
        o1 = self.cb(x, f, 1, "daspp_rate1")
        o6 = self.cb(x, f, 3, "daspp_rate6", dilation=6)
        c6 = self.layers.Concatenate(name="daspp_concat6")([x, o6])
        o12 = self.cb(c6, f, 3, "daspp_rate12", dilation=12)
        c12 = self.layers.Concatenate(name="daspp_concat12")([x, c6, o12])
        o18 = self.cb(c12, f, 3, "daspp_rate18", dilation=18)
        fused = self.layers.Concatenate(name="daspp_concat")([p, o1, o6, o12, o18])
        return self.cb(fused, f, 1, "daspp_fuse")


def build_sd_unet(
    input_size: int = 160,
    num_classes: int = 3,
    width: float = 1.0,
    name: str = "sd_unet",
    center_only_dilations: bool = False,
    toolkit=None,
    layer_types=None,
) -> keras.Model:
    """Build the SD-UNet; at width 1.0 and 160 px: 51 Conv2D, 21,507,171 parameters.

    `center_only_dilations` builds a training twin: DASPP branches whose dilation is at least the
    bottleneck's size (rates 12 and 18 at 160 px) become 1x1 convs that compute the same thing,
    and `copy_twin_weights` moves its weights into the real model.

    `toolkit` and `layer_types` build the same network with another Keras (tf.keras 2 with
    tensorflow-addons' GroupNormalization, as the notebook did), to make checkpoints in its format;
    `toolkit` None is Keras 3.
    """
    if not isinstance(input_size, int) or input_size < 32 or input_size % 32:
        raise ValueError(f"input_size must be a positive multiple of 32, got {input_size!r}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not (isinstance(width, (int, float)) and math.isfinite(width) and width > 0):
        raise ValueError(f"width must be a positive number, got {width!r}")
    if toolkit is None:
        import keras as toolkit

    blocks = _Blocks(float(width), center_only_dilations, layer_types or toolkit.layers)
    inputs = toolkit.Input((input_size, input_size, 3), name="image")
    x = inputs
    skips = []
    for level, base in enumerate(ENCODER_FILTERS, start=1):
        x = blocks.sa(x, base, f"e{level}")
        if level < len(ENCODER_FILTERS):
            skips.append(x)
            x = blocks.down(x, base, f"d{level}")
    x = blocks.daspp(x, grid=input_size // 16)
    for level, (base, skip) in enumerate(zip(DECODER_FILTERS, reversed(skips)), start=1):
        x = blocks.up(x, base, f"u{level}")
        x = blocks.layers.Concatenate(name=f"u{level}_concat")([x, skip])
        x = blocks.sa(x, base, f"u{level}")
    outputs = blocks.layers.Conv2D(num_classes, 3, padding="same", activation="softmax", name="head")(x)
    return toolkit.Model(inputs, outputs, name=name)


def copy_twin_weights(twin: keras.Model, model: keras.Model) -> None:
    """Copy a training twin's weights into the real SD-UNet; collapsed kernels go to the centre tap.

    The real model's off-centre taps keep their initial values: they only ever meet zero padding
    at this input size, so training would not have changed them either (their gradient is zero).
    """
    from keras import layers

    for twin_layer in twin.layers:
        weights = twin_layer.get_weights()
        if not weights:
            continue
        target = model.get_layer(twin_layer.name)
        current = target.get_weights()
        if isinstance(target, layers.Conv2D) and current[0].shape != weights[0].shape:
            kernel = current[0].copy()
            centre = (kernel.shape[0] // 2, kernel.shape[1] // 2)
            kernel[centre] = weights[0][0, 0]
            target.set_weights([kernel, *weights[1:]])
        else:
            target.set_weights(weights)


def describe_role(layer_name: str) -> str:
    """Turn a conv layer name from this builder into words: 'encoder E2, SA attention path, 2nd conv'."""
    stage_names = {"e": "encoder", "d": "downsample", "u": "decoder"}
    if layer_name == "head":
        return "classifier head"
    if layer_name.startswith("daspp_"):
        part = layer_name.removeprefix("daspp_")
        words = {
            "pool_conv": "image pooling branch",
            "fuse": "fusion of all branches",
        }
        if part in words:
            return f"bottleneck DASPP, {words[part]}"
        if part.startswith("rate"):
            return f"bottleneck DASPP, dilation {part.removeprefix('rate')} branch"
        return "bottleneck DASPP"
    stage, _, rest = layer_name.partition("_")
    if len(stage) < 2 or stage[0] not in stage_names or not stage[1:].isdigit():
        return ""
    where = f"{stage_names[stage[0]]} {stage.upper()}"
    ordinals = {"1": "1st", "2": "2nd"}
    if rest.startswith("sa_main_conv"):
        return f"{where}, SA main path, {ordinals.get(rest[-1], rest[-1])} conv"
    if rest.startswith("sa_attn_conv"):
        return f"{where}, SA attention path, {ordinals.get(rest[-1], rest[-1])} conv"
    if rest == "down_conv":
        return f"{where}, max+avg pool then 1x1 conv"
    if rest == "up_conv":
        return f"{where}, bilinear upsample then 1x1 conv"
    return where


CONV_COUNT = 51
CLAIM_LAYER = 43  # the original author: maps look "more like the mask" around conv layer 43 of 51


def is_sd_unet(names, paths) -> bool:
    """Whether these convs (graph order) are this builder's: its 51 names, none in a nested model."""
    return len(names) == CONV_COUNT and not any(paths) and all(describe_role(name) for name in names)


def section(layer_name: str) -> int | None:
    """The charts' shading: encoder (and its downsampling convs), the DASPP bottleneck, the decoder and head."""
    from reportgen.profiles import BOTTLENECK, DECODER, ENCODER

    if layer_name.startswith(("e", "d")) and layer_name[1:2].isdigit():
        return ENCODER
    if layer_name.startswith("daspp"):
        return BOTTLENECK
    if layer_name.startswith("u") and layer_name[1:2].isdigit() or layer_name == "head":
        return DECODER
    return None


def profile(names):
    """The report's words for this builder's convs, its charts' sections and its claim."""
    from reportgen.profiles import Profile

    return Profile("SD-UNet", tuple(describe_role(n) for n in names), tuple(section(n) for n in names), CLAIM_LAYER)
