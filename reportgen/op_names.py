"""Layer and model names never reach TensorFlow's op names as they are.

Keras accepts any string as a layer's or a model's name and opens a TensorFlow name scope with it on
every call, so inside a graph (`model.predict`, the build's probes, the Beam workers) a layer named `\\`,
`-x` or `a b` gives nodes that TensorFlow refuses: "Node name contains invalid characters". Keras' own
`predict` fails on such a model too. The scope TensorFlow sees is replaced by a sanitised one; Keras' own
name, its paths and its variables' names are left as the user wrote them, so the report shows the
user's names and only the graph's internal node names change.
"""

from __future__ import annotations

import re

_INVALID = re.compile(r"[^A-Za-z0-9_.\-]")
_installed = False


def op_safe(name: str) -> str:
    """`name` in TensorFlow's op-name pattern [A-Za-z0-9.][A-Za-z0-9_.\\-/]*, as one scope component
    ('/' would open nested scopes and is replaced too). Unchanged when already valid."""
    safe = _INVALID.sub("_", name)
    return safe if safe[:1].isascii() and (safe[:1].isalnum() or safe[:1] == ".") else f"x{safe}"


def install() -> None:
    """Sanitise the TensorFlow name scope Keras opens for each layer and model call (once per process)."""
    global _installed
    if _installed:
        return
    import tensorflow as tf
    from keras.src.backend.tensorflow import core

    original = core.name_scope.__init__

    def __init__(self, name, **kwargs):
        original(self, name, **kwargs)
        if isinstance(name, str) and name and op_safe(name) != name:
            self._tf_name_scope = tf.name_scope(op_safe(name))

    core.name_scope.__init__ = __init__
    _installed = True
