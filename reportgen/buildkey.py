"""The incremental build key: a content hash of every input, computed without TensorFlow.

A rebuild whose key matches the site in --out returns at once. Hashed: reportgen's own code and
templates, the options, the model or weights file (or the shipped weights), and the images:
every file's path, size and bytes under an image or trimap folder, the prepared data set's metadata for a TFDS data set.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

import reportgen
from reportgen import __version__, model_io, timeline
from reportgen.options import UNHASHED
from reportgen.paths import models_dir, templates_dir

UNHASHED_OPTIONS = UNHASHED  # declared in options.py: they change how a site is built or compared, not the site
CHUNK = 1 << 20


def _update_file(digest, path: Path, name: str | None = None) -> None:
    """The file's name (or `name`, its path within a folder), size and bytes."""
    digest.update(f"{name or path.name}\0{path.stat().st_size}\0".encode("utf-8", "surrogateescape"))
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)


def _package_files():
    for root in (Path(reportgen.__file__).parent, templates_dir(), models_dir()):
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and not path.name.endswith(".weights.h5"):
                yield path


def _tfds_data_dir(options) -> Path:
    return Path(options.data_dir or os.environ.get("TFDS_DATA_DIR") or Path.home() / "tensorflow_datasets")


def input_key(options, shipped_weights: Path | None) -> str | None:
    """The key, or None when the inputs cannot be identified cheaply (then the build runs in full)."""
    digest = hashlib.sha256(f"reportgen {__version__}\n".encode())
    for path in _package_files():
        _update_file(digest, path)
    for name, value in sorted(vars(options).items()):
        if name not in UNHASHED_OPTIONS:
            digest.update(f"{name}={value!r}\n".encode())
    for spec in options.imports:  # custom code decides the model: a module name cannot be hashed cheaply
        if not spec.endswith(".py") or not Path(spec).is_file():
            return None
        _update_file(digest, Path(spec))
    if options.labels is not None:
        if not Path(options.labels).is_file():
            return None
        _update_file(digest, Path(options.labels))
    model_files = [f for f in (options.model_path, options.weights_path) if f is not None] or [shipped_weights]
    for model_file in model_files:
        if model_file is None or not Path(model_file).is_file():
            return None
        digest.update(f"model {model_io.sha256(Path(model_file))}\n".encode())
        kept = timeline.kept_beside(Path(model_file))
        if kept is not None:  # its training timeline is a page of the site
            for path in sorted(kept.iterdir()):
                if path.is_file():
                    _update_file(digest, path, f"kept/{path.name}")
    if options.image_dir is not None:
        for folder in (options.image_dir, options.trimap_dir):
            if folder is None:
                continue
            if not Path(folder).is_dir():
                return None
            # Every file under the folder, by its path in it: class sub-folders, an image moved from
            # one class to another, a trimap edited in place all change the key.
            digest.update(f"folder {folder == options.trimap_dir}\n".encode())
            for path in sorted(Path(folder).rglob("*")):
                if path.is_file():
                    _update_file(digest, path, path.relative_to(folder).as_posix())
    else:
        infos = sorted((_tfds_data_dir(options) / options.dataset).glob("**/dataset_info.json"))
        if not infos:
            return None
        for info in infos:
            digest.update(str(info.relative_to(_tfds_data_dir(options))).encode())
            _update_file(digest, info)
    return digest.hexdigest()


def loaded_key(loaded, options, selected) -> str:
    """The key from what was loaded, for inputs `input_key` cannot hash cheaply (a model in memory,
    --import of modules): the model's checksum, the options and the selected images' pixels."""
    digest = hashlib.sha256()
    digest.update(f"reportgen {__version__}\n{loaded.description}\n{loaded.checksum}\n".encode())
    for path in _package_files():
        _update_file(digest, path)
    for name, value in sorted(vars(options).items()):
        if name not in UNHASHED_OPTIONS:
            digest.update(f"{name}={value!r}\n".encode())
    for item in selected:
        digest.update(f"{item.id}\0{item.label}\0".encode("utf-8", "surrogatepass"))
        digest.update(item.image.tobytes())
        if item.trimap is not None:
            digest.update(item.trimap.tobytes())
    if not loaded.trained:  # initialised weights: the key is the weights themselves
        for weight in loaded.model.weights:
            digest.update(np.asarray(weight).tobytes())
    return digest.hexdigest()
