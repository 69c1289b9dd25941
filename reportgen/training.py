"""Train and evaluate the SD-UNet with the notebook's recipe, adapted to a small CPU.

Recipe (SD_UNET.md): rmsprop, sparse categorical cross-entropy, early stopping
on the validation loss with patience 5, the best checkpoint kept. Adapted:
batch 8 instead of 32 (memory and step time on 2 cores), and a validation set
carved from the end of the training split as the notebook did with its paths.
Training resumes from its last finished epoch after an interruption.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reportgen import tfds_source
from reportgen.errors import InputError

log = logging.getLogger(__name__)

CLASS_NAMES = ("pet", "background", "border")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; recorded beside its checkpoints."""

    dataset: str = "synthetic_pets"
    width: float = 1.0
    input_size: int = 160
    batch_size: int = 8
    epochs: int = 30
    validation_examples: int = 200
    patience: int = 5
    seed: int = 1337
    max_train_examples: int | None = None


def _training_arrays(config: TrainConfig, data_dir: str | None):
    """Load the train split as one array of images and masks (class ids 0..2)."""
    loader = tfds_source.tfds_split(config.dataset, "train", data_dir=data_dir, input_size=config.input_size)
    images, masks = [], []
    for item in loader:
        images.append(item.image)
        masks.append(item.trimap.astype(np.int32) - 1)
        if config.max_train_examples and len(images) >= config.max_train_examples:
            break
    if len(images) <= config.validation_examples:
        raise InputError(f"the train split has {len(images)} examples, too few to hold out "
                         f"{config.validation_examples} for validation")
    images = np.stack(images).astype(np.float32)
    masks = np.clip(np.stack(masks), 0, 2)[..., None]
    order = np.random.default_rng(config.seed).permutation(len(images))
    images, masks = images[order], masks[order]
    v = config.validation_examples
    return (images[:-v], masks[:-v]), (images[-v:], masks[-v:])


def _progress_logger(every: int):
    """A Keras callback that logs the running loss every `every` steps (for runs in the background)."""
    import keras

    class ProgressLog(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch + 1
            self._started = time.monotonic()

        def on_train_batch_end(self, batch, logs=None):
            if (batch + 1) % every == 0:
                log.info("epoch %d step %d: loss %.4f, %.2f s/step", self._epoch, batch + 1,
                         (logs or {}).get("loss", float("nan")), (time.monotonic() - self._started) / (batch + 1))

    return ProgressLog()


def train(config: TrainConfig, run_dir: Path, data_dir: str | None = None, progress: bool = True,
          fingerprints: Path | None = None):
    """Train into `run_dir` (checkpoints, log, best model); resumes when `run_dir` holds a run.
    `fingerprints`: a folder for the model's fingerprint after every epoch (FingerprintCallback), over
    the first validation images, for `reportgen timeline --fingerprints`."""
    import keras

    from reportgen.profiles.sd_unet import build_sd_unet

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config.__dict__, indent=2))
    keras.utils.set_random_seed(config.seed)
    (x_train, y_train), (x_val, y_val) = _training_arrays(config, data_dir)
    log.info("training on %d images, validating on %d", len(x_train), len(x_val))

    model = build_sd_unet(config.input_size, 3, config.width, center_only_dilations=True)
    model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    callbacks = [
        keras.callbacks.BackupAndRestore(str(run_dir / "backup")),
        keras.callbacks.ModelCheckpoint(str(run_dir / "best.keras"), monitor="val_loss", save_best_only=True),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
    ]
    if fingerprints is not None:
        from reportgen.fingerprint_callback import FingerprintCallback

        # Held-out images, the same every epoch; before the progress log, so an epoch that ends is kept.
        callbacks.append(FingerprintCallback(x_val, fingerprints, batch_size=config.batch_size))
    callbacks.append(_progress_logger(every=25))
    started = time.monotonic()
    model.fit(
        x_train, y_train, batch_size=config.batch_size, epochs=config.epochs,
        validation_data=(x_val, y_val), callbacks=callbacks, verbose=1 if progress else 2,
        shuffle=True,
    )
    (run_dir / "wall_time_s.txt").write_text(f"{time.monotonic() - started:.0f}\n")
    return run_dir / "best.keras"


def real_model(twin_path: Path):
    """The real SD-UNet (dilated kernels restored) carrying a saved training twin's weights."""
    import keras

    from reportgen.profiles.sd_unet import build_sd_unet, copy_twin_weights

    twin = keras.models.load_model(twin_path, compile=False)
    size = int(twin.inputs[0].shape[1])
    classes = int(twin.outputs[0].shape[-1])
    width = twin.get_layer("e1_sa_main_conv1").filters / 32
    keras.utils.set_random_seed(0)
    model = build_sd_unet(size, classes, width)
    copy_twin_weights(twin, model)
    return model


@dataclass(frozen=True)
class Metrics:
    """Segmentation quality on a split."""

    images: int
    class_iou: tuple[float, float, float]
    mean_iou: float
    pixel_accuracy: float


def evaluate(model, dataset: str, split: str, data_dir: str | None = None, limit: int | None = None,
             batch_size: int = 16) -> Metrics:
    """Per-class IoU over all pixels of the split (confusion summed over images), mean IoU, pixel accuracy."""
    input_size = int(model.inputs[0].shape[1])
    confusion = np.zeros((3, 3), np.int64)
    count = 0
    batch_images, batch_masks = [], []

    def flush():
        predicted = np.argmax(model.predict(np.stack(batch_images).astype(np.float32), verbose=0), axis=-1)
        truth = np.stack(batch_masks)
        np.add.at(confusion, (truth.ravel(), predicted.ravel()), 1)
        batch_images.clear()
        batch_masks.clear()

    for item in tfds_source.tfds_split(dataset, split, input_size, data_dir=data_dir):
        batch_images.append(item.image)
        batch_masks.append(np.clip(item.trimap.astype(np.int64) - 1, 0, 2))
        count += 1
        if len(batch_images) == batch_size:
            flush()
        if limit and count >= limit:
            break
    if batch_images:
        flush()
    if count == 0:
        raise InputError(f"the {split!r} split of {dataset!r} has no examples")
    inter = np.diag(confusion).astype(float)
    union = confusion.sum(0) + confusion.sum(1) - inter
    iou = tuple(float(v) for v in np.where(union > 0, inter / np.maximum(union, 1), np.nan))
    return Metrics(count, iou, float(np.nanmean(iou)), float(inter.sum() / confusion.sum()))


def export_float16(model_path: Path, weights_path: Path) -> None:
    """Store a trained model's weights in float16 (half the bytes) for the float32 model to load.

    A float16-policy twin of the architecture receives the weights and saves them;
    `load_weights` on the float32 model casts them back on load.
    """
    import keras

    from reportgen.profiles.sd_unet import build_sd_unet

    trained = real_model(model_path)
    size = int(trained.inputs[0].shape[1])
    classes = int(trained.outputs[0].shape[-1])
    width = trained.get_layer("e1_sa_main_conv1").filters / 32
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float16")
    try:
        twin = build_sd_unet(size, classes, width)
    finally:
        keras.config.set_dtype_policy(previous)
    twin.set_weights([w.astype(np.float16) for w in trained.get_weights()])
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    twin.save_weights(weights_path)
