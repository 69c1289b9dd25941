"""Load the model to report on: the shipped SD-UNet, a user's model file, or user weights."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from reportgen import op_names
from reportgen.errors import InputError
from reportgen.paths import models_dir

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = "sd_unet_synthetic_pets.weights.h5"
MODEL_CARD = "MODEL_CARD.md"
MODEL_META = "sd_unet_synthetic_pets.json"


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to probe, and what the report says about where it came from."""

    model: object  # keras.Model
    description: str
    source_path: str | None
    checksum: str  # sha256 of the weights or model file; "" for initialised weights
    trained: bool
    meta: dict  # the shipped model card's facts, or {}


def import_keras():
    """Keras, and TensorFlow under it, without TensorFlow's native start-up lines on stderr.

    Its C++ libraries print an absl notice and a oneDNN notice while they load, before
    TF_CPP_MIN_LOG_LEVEL applies, and nothing in them is for a reportgen user. Python errors still
    show: they are raised after stderr is restored. TF_CPP_MIN_LOG_LEVEL below 3 keeps the lines.
    """
    if "keras" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") != "3":
        import keras

        return keras
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        import keras
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    return keras


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file; the build key and the model card both ask, so it is computed once."""
    stat = Path(path).stat()
    return _sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.cache
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_file(path: Path, what: str) -> None:
    if not path.exists():
        raise InputError(f"{what} file {str(path)!r} does not exist")
    if path.is_dir() and (path / "saved_model.pb").is_file():
        raise InputError(f"{what} {str(path)!r} is a TensorFlow SavedModel folder, whose inner layers cannot be "
                         "tapped (keras.layers.TFSMLayer runs it whole): save the model as .keras from the code "
                         "that trained it (model.save('model.keras'))")
    if not path.is_file():
        raise InputError(f"{what} path {str(path)!r} is not a file")
    if path.stat().st_size == 0:
        raise InputError(f"{what} file {str(path)!r} is empty")


# tf.keras 2 writes these keys into the configs of these conv classes; Keras 3 refuses them. With
# `groups` 1 they carry nothing (the kernel_* of a separable conv are unused leftovers of Conv).
_LEGACY_CONV_KEYS = ("groups", "kernel_initializer", "kernel_regularizer", "kernel_constraint")
_LEGACY_CONV_CLASSES = ("SeparableConv1D", "SeparableConv2D", "DepthwiseConv1D", "DepthwiseConv2D",
                        "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")


@functools.cache
def _legacy_conv(name: str):
    """A Keras 3 conv class that reads tf.keras 2 configs: it drops the keys Keras 3 refuses."""
    import keras

    base = getattr(keras.layers, name)

    def from_config(cls, config):
        config = dict(config)
        if config.get("groups", 1) != 1:
            raise ValueError(f"{name} with groups={config['groups']} has no Keras 3 equivalent")
        for key in _LEGACY_CONV_KEYS:
            if key == "groups" or name.startswith("Separable"):  # transposed convs do use kernel_*
                config.pop(key, None)
        return super(legacy, cls).from_config(config)

    # Named as the Keras class, so the report names the layer type the user knows.
    legacy = type(name, (base,), {"from_config": classmethod(from_config), "__module__": __name__})
    return legacy


def _legacy_objects(legacy_h5: bool = False):
    import keras

    # The notebook's checkpoint came from tf.keras 2 with tensorflow-addons' GroupNormalization.
    objects = {"Addons>GroupNormalization": keras.layers.GroupNormalization,
               "GroupNormalization": keras.layers.GroupNormalization}
    if legacy_h5:
        objects.update({name: _legacy_conv(name) for name in _LEGACY_CONV_CLASSES})
    return objects


def import_user_code(specs: tuple[str, ...] | list[str]) -> dict[str, type]:
    """Import each `--import` (a module name or a .py file) before the model loads.

    Classes a module registers with `keras.saving.register_keras_serializable` deserialise by
    themselves; Keras layers, models and other objects it defines without registering are
    returned by class name, to be passed as `custom_objects`, the way Keras users pass them.
    """
    custom: dict[str, type] = {}
    for spec in specs:
        module = _import_one(spec)
        for name, value in vars(module).items():
            if isinstance(value, type) and value.__module__ == module.__name__ and _is_keras_object(value):
                custom[name] = value
    return custom


def _is_keras_object(cls: type) -> bool:
    import keras

    bases = (keras.layers.Layer, keras.Model, keras.initializers.Initializer, keras.regularizers.Regularizer,
             keras.constraints.Constraint)
    return issubclass(cls, bases)


def _import_one(spec: str):
    import importlib
    import importlib.util

    path = Path(spec)
    try:
        if spec.endswith(".py"):
            if not path.is_file():
                raise InputError(f"--import file {spec!r} does not exist")
            name = f"reportgen_user_{path.stem}"
            if name in sys.modules:
                return sys.modules[name]
            loader_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[name] = module  # dataclasses and pickling look a module up by name
            try:
                loader_spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[name]
                raise
            return module
        return importlib.import_module(spec)
    except InputError:
        raise
    except ModuleNotFoundError as error:
        raise InputError(f"--import {spec!r}: no module named {error.name!r} "
                         "(give a module on the Python path, or a path to a .py file)") from None
    except SystemExit as stop:
        raise InputError(f"--import {spec!r} called sys.exit({stop.code!r}) while it was imported") from None
    except Exception as error:  # the user's code may raise anything while it runs
        raise InputError(f"--import {spec!r} raised {_short(error)}") from None


def load_model_file(path: Path, unsafe: bool = False, custom_objects: dict | None = None):
    """A `.keras` or legacy full-model `.h5`, in safe mode unless `unsafe`."""
    import keras

    _check_file(path, "model")
    suffix = path.suffix.lower()
    if suffix == ".keras" and not zipfile.is_zipfile(path):
        raise InputError(f"model file {str(path)!r} is not a valid .keras archive (truncated or corrupt)")
    if suffix not in (".keras", ".h5", ".hdf5"):
        raise InputError(f"model file {str(path)!r} must be a .keras or .h5 file")
    hostile = _code_running_names(_stored_config(path))
    if hostile:
        raise InputError(f"model file {str(path)!r} names {', '.join(hostile[:3])}, which would run code on this "
                         "machine, where a Keras class belongs; it was not loaded (the file may be hostile)")
    try:
        legacy = _legacy_objects(legacy_h5=suffix in (".h5", ".hdf5"))
        return keras.models.load_model(path, custom_objects={**legacy, **(custom_objects or {})},
                                       compile=False, safe_mode=not unsafe)
    except (ValueError, TypeError) as error:
        text = str(error)
        if "safe_mode" in text or "lambda" in text.lower():
            raise InputError(f"model file {str(path)!r} contains Python code (a Lambda layer); it is not loaded "
                             "in safe mode. Pass --unsafe-load only if you trust the file") from None
        unknown = _unknown_class(text)
        if unknown:
            raise InputError(f"model file {str(path)!r} uses a class Keras does not know ({unknown}); give the "
                             "module that defines it with --import MODULE_OR_FILE.py") from None
        raise InputError(f"cannot load model file {str(path)!r}: {_short(error)}") from None
    except Exception as error:  # h5py, zipfile and deserialisation errors have no common base
        raise InputError(f"cannot load model file {str(path)!r}: {_short(error)}") from None


# Modules whose names in a model config can only mean running code, never a Keras class.
CODE_RUNNING_MODULES = frozenset({"os", "posix", "nt", "subprocess", "builtins", "__builtin__", "sys", "shutil",
                                  "importlib", "runpy", "pty", "socket", "ctypes", "pickle", "marshal",
                                  "multiprocessing", "webbrowser"})


def _stored_config(path: Path):
    """The architecture config stored in a .keras archive or a legacy .h5 file; None where unreadable
    (loading then says what is wrong)."""
    import json

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return json.loads(archive.read("config.json"))
        import h5py

        with h5py.File(path, "r") as stored:
            text = stored.attrs.get("model_config")
            return json.loads(text.decode() if isinstance(text, bytes) else text) if text is not None else None
    except Exception:  # noqa: BLE001  (any damage is reported by the load itself)
        return None


def _code_running_names(config) -> list[str]:
    """`module.name` of every object in `config` whose module runs code (os.system, subprocess.Popen)."""
    found = []

    def walk(value):
        if isinstance(value, dict):
            module = value.get("module")
            if isinstance(module, str) and module.split(".")[0] in CODE_RUNNING_MODULES:
                found.append(f"{module}.{value.get('class_name')}")
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(config)
    return sorted(set(found))


def _unknown_class(text: str) -> str | None:
    """The class name in Keras' 'could not locate' / 'unknown layer' messages, if that is what failed."""
    import re

    for pattern in (r"Could not locate (?:class|function) '([^']+)'", r"Unknown (?:layer|object)[^']*'([^']+)'"):
        found = re.search(pattern, text)
        if found:
            return repr(found.group(1))
    return "a custom class" if "could not be deserialized" in text else None


def _short(error: Exception) -> str:
    text = " ".join(str(error).split())
    return f"{error.__class__.__name__}: {text[:160]}" if text else error.__class__.__name__


def load_weights_into(model, path: Path) -> None:
    """Weights-only files, including the notebook's legacy `.h5`, into the built-in SD-UNet."""
    _check_file(path, "weights")
    try:
        model.load_weights(path)
    except Exception as error:
        raise InputError(f"weights file {str(path)!r} does not fit this model: {_short(error)}") from None


def shipped_meta() -> dict:
    path = models_dir() / MODEL_META
    return json.loads(path.read_text()) if path.is_file() else {}


def check_graph(model) -> None:
    """Refuse, in one line, a model whose intermediate outputs cannot be tapped."""
    try:
        model.inputs  # noqa: B018  (subclassed models have no symbolic inputs)
    except AttributeError:
        raise InputError(
            f"the model is a subclassed keras.Model ({type(model).__name__}) with no symbolic graph, so its "
            "layers' outputs cannot be tapped; rebuild it with the functional API (keras.Input -> layers -> "
            "keras.Model(inputs, outputs)), reusing its layers and weights") from None


def from_memory(model) -> LoadedModel:
    """A model already in memory (the Python API): no file, the checksum is of its weights."""
    import numpy as np

    import_keras()
    op_names.install()
    check_graph(model)
    digest = hashlib.sha256(model.name.encode("utf-8", "surrogatepass"))
    for weight in model.weights:
        digest.update(np.asarray(weight).tobytes())
    return LoadedModel(model, f"{model.name} (in memory)", None, digest.hexdigest(), True, {})


def load(model_path: Path | None = None, weights_path: Path | None = None, input_size: int | None = None,
         unsafe: bool = False, width: float = 1.0, imports: tuple[str, ...] = ()) -> LoadedModel:
    """The model the user asked for, or the shipped SD-UNet with its trained weights."""
    keras = import_keras()
    op_names.install()

    from reportgen.profiles.sd_unet import build_sd_unet

    custom_objects = import_user_code(imports)
    if model_path is not None:
        if weights_path is not None:
            raise InputError("give --model or --weights, not both (--weights is for the built-in SD-UNet)")
        model = load_model_file(model_path, unsafe, custom_objects)
        check_graph(model)
        return LoadedModel(model, f"{model_path.name}", str(model_path), sha256(model_path), True, {})
    keras.utils.set_random_seed(0)  # initialised weights are the same in every build
    try:
        model = build_sd_unet(input_size or 160, 3, width)
    except ValueError as error:
        raise InputError(f"cannot build the SD-UNet: {error}") from None
    if weights_path is not None:
        if weights_path.suffix.lower() in (".keras",):
            raise InputError("a .keras file is a whole model: pass it with --model")
        load_weights_into(model, weights_path)
        return LoadedModel(model, f"SD-UNet with weights {weights_path.name}", str(weights_path),
                           sha256(weights_path), True, {})
    shipped = models_dir() / DEFAULT_WEIGHTS
    if shipped.is_file() and width == 1.0 and (input_size or 160) == 160:
        load_weights_into(model, shipped)
        return LoadedModel(model, "SD-UNet trained on synthetic_pets (shipped default)", str(shipped),
                           sha256(shipped), True, shipped_meta())
    return LoadedModel(model, "SD-UNet with initialised (untrained) weights", None, "", False, {})
