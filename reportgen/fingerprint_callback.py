"""`FingerprintCallback`: a Keras callback that writes the model's fingerprint at the end of every
epoch of `fit`, for `reportgen timeline --fingerprints DIR`.

A fingerprint (fingerprint.py, the format of a build's data/fingerprint.npz) is a few MB even for the
SD-UNet, where a checkpoint is tens: a run keeps one per epoch and still shows its timeline without a
checkpoint kept. Each is measured by timeline.FingerprintMeter, the path `--checkpoints` measures a
checkpoint by, so both give the same timeline.
"""

from __future__ import annotations

from pathlib import Path

import keras

from reportgen import fingerprint
from reportgen.errors import InputError

FILE_SUFFIX = ".fingerprint.npz"


def epoch_file(folder: Path, epoch: int) -> Path:
    """The fingerprint after `epoch` (1-based, as ModelCheckpoint's {epoch}): epoch_N.fingerprint.npz,
    whose natural order (timeline's) is the epochs' order."""
    return Path(folder) / f"epoch_{epoch}{FILE_SUFFIX}"


class FingerprintCallback(keras.callbacks.Callback):
    """Writes the model's fingerprint over fixed probe images into `folder` at each epoch's end.

    images: the probe images, raw 0-255 pixels as `reportgen.build` takes them (H x W, H x W x 1, 3 or
        4, or PIL images), fitted to the model's input by `fit` and `interpolation`; the first
        fingerprint.PROBE_IMAGES are kept. The same images every epoch: use held-out ones.
    folder: where epoch_1.fingerprint.npz, epoch_2.fingerprint.npz, ... go (created if needed).
    preprocess, rescale: the input convention, as `reportgen build` takes it: reportgen applies it to
        the pixels, so give what the model needs on top of its own layers ("none" where it rescales).
    """

    def __init__(self, images, folder, *, preprocess: str = "none", rescale: tuple[float, float] | None = None,
                 fit: str = "stretch", interpolation: str = "nearest", batch_size: int = 5):
        super().__init__()
        from reportgen.options import BuildOptions

        self.images = list(images)[:fingerprint.PROBE_IMAGES]
        if len(self.images) < 4:
            # The unbiased CKA estimator needs four images; fewer give no timeline worth the name.
            raise InputError(f"FingerprintCallback needs at least 4 probe images, got {len(self.images)}")
        if batch_size < 1:
            raise InputError(f"FingerprintCallback's batch_size must be at least 1, got {batch_size}")
        self.folder = Path(folder)
        # Checked now, in BuildOptions' own words, rather than at the end of the first epoch.
        self.options = BuildOptions(preprocess=preprocess, rescale=None if rescale is None else tuple(rescale),
                                    fit=fit, interpolation=interpolation, batch_size=batch_size)
        self.options.convention  # noqa: B018  (validates preprocess and rescale together)
        self._meter = None

    def on_train_begin(self, logs=None):
        """The probe images fitted to the model's input, and the probe built once for every epoch."""
        from reportgen import plan, sources, timeline
        from reportgen.capture import image_input

        geometry = plan.geometry(self.model, None, image_input(self.model, None), self.options)
        items = sources.from_arrays(self.images, None, None, geometry)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._meter = timeline.FingerprintMeter(self.model, items, self.options.convention, self.options.batch_size)

    def on_epoch_end(self, epoch, logs=None):
        self._meter().save(epoch_file(self.folder, epoch + 1))
