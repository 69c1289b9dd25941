"""reportgen: see and measure what every convolution layer of a CNN does."""

__version__ = "0.1.0"


def build(model, images, masks=None, out="site", **options):
    """Build the report of a keras.Model in memory; see `reportgen.api.build` (TensorFlow loads on first use)."""
    from reportgen.api import build as build_in_memory

    return build_in_memory(model, images, masks, out, **options)


def __getattr__(name: str):
    """`reportgen.FingerprintCallback`, imported on first use: it subclasses a Keras callback, and
    `import reportgen` alone must not load TensorFlow."""
    if name == "FingerprintCallback":
        from reportgen.fingerprint_callback import FingerprintCallback

        return FingerprintCallback
    raise AttributeError(f"module 'reportgen' has no attribute {name!r}")
