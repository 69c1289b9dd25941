"""float16 <-> float32 through TensorFlow's casts, which are vectorised, where numpy's are loops (about 5 ns a
value to float16 and 1.4 to float32). The processes that measure maps hold TensorFlow already, and the
probe gives them float16 maps: every statistic is measured on those values (capture.as_stored)."""

from __future__ import annotations

import numpy as np


def as_float16(values: np.ndarray) -> np.ndarray:
    """Values rounded to float16, as numpy's `astype(np.float16)` rounds them (to nearest, ties to even)."""
    if values.dtype == np.float16:
        return values
    import tensorflow as tf

    return tf.cast(np.ascontiguousarray(values, np.float32), tf.float16).numpy()


def as_float32(values: np.ndarray) -> np.ndarray:
    """Values as float32, the same numbers."""
    values = np.asarray(values)
    if values.dtype != np.float16:
        return np.asarray(values, np.float32)
    import tensorflow as tf

    return tf.cast(values, tf.float32).numpy()
