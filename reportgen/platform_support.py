"""What this machine's TensorFlow can run, found by running it, never assumed from the CPU's name.

TensorFlow's CPU kernels for channels_first (NCHW) convolutions exist on some builds and CPUs and not on
others (an AMD EPYC's has none for Conv2D: "The Conv2D op currently only supports the NHWC tensor format
on the CPU", and "Conv2DCustomBackpropInputOp only supports NHWC" in the backward pass), and which exist
differs by op (plain, depthwise, transposed, 1-3D). So each conv class is probed once per process: a
1-channel layer of that class, channels_first, run forward and backward eagerly. Eagerly, because inside
a `tf.function` grappler may rewrite a lone NCHW conv to NHWC and hide the missing kernel, while the
build's own graphs (Keras' `predict`, the attribution probe) still reach it. A model with a conv the
probe cannot run is refused in one line before any image is read, instead of failing with a traceback
half-way through the build.
"""

from __future__ import annotations

import functools

from reportgen.errors import InputError


def _probe_layer(kind: str, rank: int):
    """A fresh 1-channel channels_first layer of Keras' own class `kind`, or a plain conv of `rank`
    dimensions for a class Keras does not ship (a subclass runs its base's kernels)."""
    from keras import layers

    data_format = "channels_first"
    if kind in ("DepthwiseConv1D", "DepthwiseConv2D"):
        return getattr(layers, kind)(1, data_format=data_format)
    if kind in ("Conv1D", "Conv2D", "Conv3D", "SeparableConv1D", "SeparableConv2D", "Conv1DTranspose",
                "Conv2DTranspose", "Conv3DTranspose"):
        return getattr(layers, kind)(1, 1, data_format=data_format)
    return getattr(layers, f"Conv{rank}D")(1, 1, data_format=data_format)


@functools.cache
def runs_channels_first(kind: str, rank: int) -> bool:
    """Whether TensorFlow here runs a channels_first `kind` conv of `rank` spatial dimensions forward and
    backward (gradients to its input, as Grad-CAM takes them, and to its kernel)."""
    import numpy as np
    import tensorflow as tf

    layer = _probe_layer(kind, rank)
    shape = (1, 1, *(3,) * rank)
    layer.build(shape)

    def forward_and_back(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(layer(x))
        return total, tape.gradient(total, [x, *layer.trainable_weights])  # the forward too, or it is pruned

    try:
        forward_and_back(tf.constant(np.ones(shape, np.float32)))
    except tf.errors.OpError:
        return False
    return True


def check_convs_run_here(convs) -> None:
    """Refuse, in one line naming the first such layer, a model whose channels_first conv this
    machine's TensorFlow cannot run. `convs` are capture.ConvLayer."""
    from reportgen.naming import printable

    for conv in convs:
        if conv.channels_first and not runs_channels_first(conv.kind, len(conv.kernel)):
            raise InputError(
                f"conv layer '{printable(conv.qualified_name)}' ({conv.kind}, data_format=\"channels_first\") "
                "cannot run here: this CPU's TensorFlow has no channels_first (NCHW) kernel for it; "
                "rebuild or convert the model with data_format=\"channels_last\" (or run on a CPU that has one)")
