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

from reportgen import sources
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
    loader = sources.tfds_split(config.dataset, "train", data_dir=data_dir, input_size=config.input_size)
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


def train(config: TrainConfig, run_dir: Path, data_dir: str | None = None, progress: bool = True):
    """Train into `run_dir` (checkpoints, log, best model); resumes when `run_dir` holds a run."""
    import keras

    from reportgen.models.sd_unet import build_sd_unet

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config.__dict__, indent=2))
    keras.utils.set_random_seed(config.seed)
    (x_train, y_train), (x_val, y_val) = _training_arrays(config, data_dir)
    log.info("training on %d images, validating on %d", len(x_train), len(x_val))

    model = build_sd_unet(config.input_size, 3, config.width)
    model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    callbacks = [
        keras.callbacks.BackupAndRestore(str(run_dir / "backup")),
        keras.callbacks.ModelCheckpoint(str(run_dir / "best.keras"), monitor="val_loss", save_best_only=True),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
    ]
    started = time.monotonic()
    model.fit(
        x_train, y_train, batch_size=config.batch_size, epochs=config.epochs,
        validation_data=(x_val, y_val), callbacks=callbacks, verbose=1 if progress else 2,
        shuffle=True,
    )
    (run_dir / "wall_time_s.txt").write_text(f"{time.monotonic() - started:.0f}\n")
    return run_dir / "best.keras"
