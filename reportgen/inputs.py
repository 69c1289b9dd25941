"""How images become the model's input: the input convention and the input geometry.

Named the way Keras names them, so a user can copy what their training code did:
- `--preprocess none|tf|torch|caffe` is the `mode` of `keras.applications.imagenet_utils.preprocess_input`
  (and Keras' own function does the arithmetic, so the semantics are exactly Keras');
- `--rescale SCALE[,OFFSET]` is `keras.layers.Rescaling(scale, offset)`: x * scale + offset;
- `--fit stretch|crop|pad` is `image_dataset_from_directory`'s plain resize,
  `crop_to_aspect_ratio=True` and `pad_to_aspect_ratio=True`.

Nothing here imports TensorFlow: the options are checked before the heavy imports.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from reportgen.errors import InputError

PREPROCESS_MODES = ("none", "tf", "torch", "caffe")
FITS = ("stretch", "crop", "pad")
INTERPOLATIONS = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
                  "bicubic": Image.Resampling.BICUBIC, "area": Image.Resampling.BOX}
PAD_TRIMAP = 3  # padding is "not classified" in the Oxford convention: excluded from IoU

_MODE_FORMULAS = {
    "none": "raw pixel values 0-255 as float32",
    "tf": "x / 127.5 - 1 (range -1..1)",
    "torch": "x / 255, minus ImageNet mean (0.485, 0.456, 0.406), divided by std (0.229, 0.224, 0.225), RGB",
    "caffe": "RGB to BGR, minus ImageNet mean (103.939, 116.779, 123.68), not scaled",
}


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise InputError(f"{what} must be finite, got {text!r}")
    return value


def parse_rescale(text: str | None) -> tuple[float, float] | None:
    """`SCALE[,OFFSET]` as keras.layers.Rescaling takes them, e.g. `0.0078125,-0.99609375`."""
    if text is None:
        return None
    parts = text.split(",")
    if len(parts) not in (1, 2) or not all(p.strip() for p in parts):
        raise InputError(f"--rescale takes SCALE or SCALE,OFFSET (as keras.layers.Rescaling), got {text!r}")
    scale = _number(parts[0].strip(), "--rescale scale")
    offset = _number(parts[1].strip(), "--rescale offset") if len(parts) == 2 else 0.0
    if scale == 0:
        raise InputError("--rescale scale 0 would make every image the same")
    return scale, offset


def parse_size(text: str | None) -> tuple[int, int] | None:
    """`--input-size 160` (square) or `96x160` (height x width)."""
    if text is None:
        return None
    parts = text.lower().replace("×", "x").split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
        raise InputError(f"--input-size takes SIZE or HEIGHTxWIDTH in pixels, e.g. 160 or 96x160; got {text!r}")
    height, width = (int(parts[0]), int(parts[-1]))
    if min(height, width) < 8 or max(height, width) > 8192:
        raise InputError(f"--input-size {text!r} is outside 8..8192 pixels")
    return height, width


def check_choice(value: str, choices, option: str) -> str:
    if value not in choices:
        raise InputError(f"unknown {option} {value!r}; choose one of {', '.join(choices)}")
    return value


@dataclass(frozen=True)
class InputConvention:
    """What is done to the 0-255 pixels before the model sees them."""

    preprocess: str = "none"
    rescale: tuple[float, float] | None = None

    def __post_init__(self):
        check_choice(self.preprocess, PREPROCESS_MODES, "--preprocess mode")
        if self.preprocess != "none" and self.rescale is not None:
            raise InputError("give --preprocess or --rescale, not both: each is the whole input convention")

    @property
    def is_identity(self) -> bool:
        return self.preprocess == "none" and self.rescale is None

    def describe(self) -> str:
        """For the model card and the manifest, in the words of the option the user gave."""
        if self.rescale is not None:
            scale, offset = self.rescale
            return f"--rescale {scale:g},{offset:g}: x * {scale:g} + {offset:g} (keras.layers.Rescaling)"
        if self.preprocess == "none":
            return f"--preprocess none: {_MODE_FORMULAS['none']}"
        return f"--preprocess {self.preprocess}: {_MODE_FORMULAS[self.preprocess]} (Keras preprocess_input)"

    def check_channels(self, channels: int) -> None:
        if self.preprocess in ("torch", "caffe") and channels != 3:
            raise InputError(f"--preprocess {self.preprocess} subtracts ImageNet's per-channel RGB means and needs "
                             f"a 3-channel input; this model takes {channels}-channel images (try --rescale)")

    def apply(self, batch: np.ndarray) -> np.ndarray:
        """N x H x W x C pixel values 0-255 to what the model takes, float32."""
        batch = np.asarray(batch, np.float32)
        if self.rescale is not None:
            scale, offset = self.rescale
            return batch * np.float32(scale) + np.float32(offset)
        if self.preprocess == "none":
            return batch
        from keras.applications import imagenet_utils

        return np.asarray(imagenet_utils.preprocess_input(batch.copy(), mode=self.preprocess,
                                                          data_format="channels_last"), np.float32)


@dataclass(frozen=True)
class InputGeometry:
    """The picture the model takes: height x width x channels, and how a photo is made to fit it."""

    height: int
    width: int
    channels: int  # 1 (grayscale, PIL's "L") or 3 (RGB)
    fit: str = "stretch"
    interpolation: str = "nearest"  # what the shipped SD-UNet was trained with

    def __post_init__(self):
        check_choice(self.fit, FITS, "--fit")
        check_choice(self.interpolation, tuple(INTERPOLATIONS), "--interpolation")
        if self.channels not in (1, 3):
            raise InputError(f"the model takes {self.channels}-channel images; reportgen reports on 1-channel "
                             "(grayscale) and 3-channel (RGB) image models")

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width

    def describe(self) -> str:
        colour = "grayscale (PIL's L conversion: 0.299 R + 0.587 G + 0.114 B)" if self.channels == 1 else "RGB"
        how = {"stretch": "resized to it (aspect ratio not kept)",
               "crop": "centre-cropped to its aspect ratio, then resized",
               "pad": "padded with black to its aspect ratio, then resized"}[self.fit]
        return f"{self.height} x {self.width} x {self.channels}, {colour}; images {how}, {self.interpolation} " \
               f"interpolation (--fit {self.fit})"

    def _crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The centred part of a width x height picture with the model's aspect ratio."""
        target = self.width / self.height
        if width / height > target:
            kept = max(1, round(height * target))
            left = (width - kept) // 2
            return left, 0, left + kept, height
        kept = max(1, round(width / target))
        top = (height - kept) // 2
        return 0, top, width, top + kept

    def _pad_canvas(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The canvas (width, height) with the model's aspect ratio, and where the picture sits on it."""
        target = self.width / self.height
        if width / height > target:
            canvas_h = max(height, round(width / target))
            return width, canvas_h, 0, (canvas_h - height) // 2
        canvas_w = max(width, round(height * target))
        return canvas_w, height, (canvas_w - width) // 2, 0

    def fit_array(self, array: np.ndarray, fill: int = 0, resample: Image.Resampling | None = None) -> np.ndarray:
        """A uint8 H x W (x C) picture fitted to the geometry; masks pass NEAREST and their fill value.
        A float32 picture (a 16-bit image at full depth) is fitted channel by channel, in PIL's F mode."""
        resample = INTERPOLATIONS[self.interpolation] if resample is None else resample
        if array.shape[:2] == self.size:
            return array
        if array.dtype == np.uint8:
            return np.asarray(self._fit_picture(Image.fromarray(array), fill, resample))
        planes = array[..., None] if array.ndim == 2 else array
        fitted = [np.asarray(self._fit_picture(Image.fromarray(np.ascontiguousarray(planes[..., c], np.float32),
                                                               mode="F"), fill, resample))
                  for c in range(planes.shape[-1])]
        return np.stack(fitted, axis=-1) if array.ndim == 3 else fitted[0]

    def _fit_picture(self, picture: Image.Image, fill: int, resample: Image.Resampling) -> Image.Image:
        width, height = picture.size
        if self.fit == "crop":
            picture = picture.crop(self._crop_box(width, height))
        elif self.fit == "pad" and abs(width / height - self.width / self.height) > 1e-9:
            canvas_w, canvas_h, left, top = self._pad_canvas(width, height)
            canvas = Image.new(picture.mode, (canvas_w, canvas_h), fill if picture.mode in ("L", "P", "F") else
                               (fill,) * len(picture.getbands()))
            canvas.paste(picture, (left, top))
            picture = canvas
        return picture.resize((self.width, self.height), resample)

    def pixels(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 RGB H x W x 3 to the geometry, grayscale by PIL's L conversion where the model wants it."""
        fitted = self.fit_array(rgb)
        if self.channels == 1 and fitted.dtype != np.uint8:  # PIL's L weights, without its rounding to 8 bits
            return (fitted @ np.array([0.299, 0.587, 0.114], np.float32))[..., None].astype(np.float32)
        if self.channels == 1:
            return np.asarray(Image.fromarray(fitted).convert("L"))[..., None]
        return fitted

    def trimap(self, trimap: np.ndarray, fill: int = PAD_TRIMAP) -> np.ndarray:
        """A mask follows its image's geometry exactly; padding is 'not classified' (`MaskValues.padding`)."""
        return self.fit_array(trimap, fill=fill, resample=Image.Resampling.NEAREST)


MASK_ROLES = {"foreground": 1, "background": 2, "ignore": 3}  # the Oxford trimap value each role becomes
TRIMAP_VALUES = ((1, 1, "foreground"), (2, 2, "background"), (3, 3, "ignore"))
TRIMAP_CONVENTION = "Oxford trimaps (1 pet, 2 background, 3 border)"  # what a mask read as a trimap says
BINARY_VALUES = {(0, 1): ((0, 0, "background"), (1, 1, "foreground")),
                 (0, 255): ((0, 0, "background"), (255, 255, "foreground"))}


BY_CLASS = "classes"  # --mask-values classes: value k is class k of the model's segmentation


def stored_classes(classes: np.ndarray, count: int) -> np.ndarray:
    """A mask's classes (class k as k + 1, 0 none) in the smallest unsigned type that holds `count` of them."""
    return np.asarray(classes).astype(np.uint8 if count < 255 else np.uint16)


def _range_text(low: int, high: int) -> str:
    return str(low) if low == high else f"{low}-{high}"


@dataclass(frozen=True)
class MaskValues:
    """What the values stored in a mask file mean: ranges of values, each foreground, background or
    ignore (left out of every IoU, as Oxford's border band is of the pet's). The statistics measure
    the foreground: an Oxford trimap's pet, else the foreground, named as --labels names a binary
    output's class 1.

    Or, with `--mask-values classes`, stored value k is class k (0..N-1) of the model's N-class
    segmentation, named by --labels; `classes,255=ignore` leaves the pixels of 255 out of every class.
    Or the values are named by the segmentation's class names, `0=background,255=pet`: a ROLE that
    is not foreground, background or ignore makes every ROLE but ignore a class name.

    Without `--mask-values`, each mask says itself: values within 1-3 are an Oxford trimap; 0 and 1,
    or 0 and 255, a binary mask (0 background)."""

    ranges: tuple[tuple[int, int, str], ...] = ()  # (low, high, role), both ends included; () = by the mask
    by_class: bool = False  # values 0..N-1 are the segmentation's classes
    classes: tuple[str, ...] = ()  # the segmentation's classes, in stored order, once it is described (`for_classes`)
    binary_model: bool = False  # the segmentation is a one-channel sigmoid (no value k for class k)

    @property
    def by_name(self) -> bool:
        """Whether the ROLEs are the segmentation's class names."""
        return any(role not in MASK_ROLES for *_, role in self.ranges)

    @property
    def class_count(self) -> int:
        return len(self.classes)

    @classmethod
    def parse(cls, text: str | None) -> "MaskValues":
        """`0=background,255=foreground`, `0=background,1-4=foreground,255=ignore`, or `classes,255=ignore`."""
        if not text:
            return cls()
        parts = [part.strip() for part in text.split(",")]
        by_class = BY_CLASS in parts
        ranges = []
        for part in parts:
            if part == BY_CLASS:
                continue
            values, _, role = part.partition("=")
            low, _, high = values.strip().partition("-")
            if not role.strip() or role.strip() == BY_CLASS or not low.strip().isdigit() or \
                    (high and not high.strip().isdigit()):
                raise InputError(f"--mask-values takes VALUE=ROLE or LOW-HIGH=ROLE, comma-separated, ROLE one of "
                                 f"{', '.join(MASK_ROLES)} or a class name, or classes (value k is class k); "
                                 f"got {part.strip()!r}")
            low_value, high_value = int(low), int(high or low)
            if high_value < low_value:
                raise InputError(f"--mask-values range {values.strip()!r} runs backwards")
            ranges.append((low_value, high_value, role.strip()))
        if by_class:
            if any(role != "ignore" for *_, role in ranges):
                raise InputError("--mask-values classes takes VALUE=ignore beside it, no other role: the values "
                                 "0..N-1 are the classes")
            return cls(tuple(ranges), by_class=True)
        found = cls(tuple(ranges))
        if not found.by_name and not any(role == "foreground" for *_, role in ranges):
            raise InputError("--mask-values names no foreground value: the mask statistics measure the foreground")
        return found

    @property
    def of_segmentation(self) -> bool:
        """Whether the values are read as the model's segmentation classes (by index or by name)."""
        return self.by_class or self.by_name

    @property
    def padding(self) -> int:
        """What a padded pixel's mask class is: the Oxford border (out of the pet's IoU), or no class."""
        return 0 if self.of_segmentation else PAD_TRIMAP

    def for_classes(self, classes, binary: bool = False) -> "MaskValues":
        """These values for a model whose segmentation stores these classes (mask_classes.MaskClasses.names,
        class k as k + 1), or none (None); `binary`: a one-channel sigmoid's."""
        if not self.of_segmentation or classes is None:
            return self
        return dataclasses.replace(self, classes=tuple(classes), binary_model=binary)

    def convention(self, values: np.ndarray) -> tuple[tuple[int, int, str], ...] | None:
        """The ranges that apply to a mask with these distinct values, or None if none does."""
        if self.ranges:
            return self.ranges
        present = set(int(v) for v in values)
        if present <= {1, 2, 3}:
            return TRIMAP_VALUES
        return next((ranges for pair, ranges in BINARY_VALUES.items() if present <= set(pair)), None)

    def describe(self, ranges) -> str:
        if self.by_class:
            ignored = "".join(f",{_range_text(low, high)}={role}" for low, high, role in ranges)
            return f"--mask-values classes{ignored} (value k is the segmentation's class k)"
        if ranges == TRIMAP_VALUES:
            return TRIMAP_CONVENTION
        if not self.ranges:
            return f"binary masks ({ranges[0][0]} background, {ranges[1][0]} foreground)"
        shown = ",".join(f"{_range_text(low, high)}={role}" for low, high, role in ranges)
        return f"--mask-values {shown}"

    def to_classes(self, mask: np.ndarray, where: str) -> tuple[np.ndarray, str]:
        """A stored mask as the statistics' classes (class k as k + 1, mask_classes.MaskClasses), and its
        convention: an Oxford trimap's 1 foreground, 2 background, 3 ignore; or `by_class`, value k as
        k + 1 and 0 where ignored."""
        if self.by_class:
            return self._by_class(mask, where)
        if self.by_name:
            return self._by_name(mask, where)
        values = np.unique(mask)
        ranges = self.convention(values)
        if ranges is None:
            shown = ", ".join(str(v) for v in values[:6]) + (", ..." if len(values) > 6 else "")
            raise InputError(f"mask {where} has values {shown}: neither an Oxford trimap (1-3) nor a binary mask "
                             "(0/1 or 0/255); say what they mean with --mask-values, e.g. 0=background,1-255=foreground")
        trimap = np.zeros(mask.shape, np.uint8)
        for low, high, role in ranges:
            trimap[(mask >= low) & (mask <= high)] = MASK_ROLES[role]
        if (trimap == 0).any():
            stray = ", ".join(str(v) for v in np.unique(mask[trimap == 0])[:6])
            raise InputError(f"mask {where} has values {stray} that --mask-values does not name")
        return trimap, self.describe(ranges)

    def check_names(self) -> None:
        """With class names for ROLEs, that the model's segmentation has them: once it is described,
        before any image is read."""
        if not self.by_name:
            return
        if not self.classes:
            raise InputError("--mask-values names classes, but the model has no segmentation output to name them: "
                             "say foreground, background or ignore")
        unknown = sorted({role for *_, role in self.ranges if role != "ignore" and role not in self.classes})
        if unknown:
            raise InputError(f"--mask-values names {', '.join(map(repr, unknown))}, not one of the model's classes "
                             f"({', '.join(self.classes)}); --labels names them")

    def _by_name(self, mask: np.ndarray, where: str) -> tuple[np.ndarray, str]:
        self.check_names()
        stored = np.zeros(mask.shape, np.int64)
        named = np.zeros(mask.shape, bool)
        for low, high, role in self.ranges:
            chosen = (mask >= low) & (mask <= high)
            stored[chosen] = 0 if role == "ignore" else self.classes.index(role) + 1
            named |= chosen
        if not named.all():
            stray = ", ".join(str(v) for v in np.unique(mask[~named])[:6])
            raise InputError(f"mask {where} has values {stray} that --mask-values does not name")
        return stored_classes(stored, self.class_count), self.describe(self.ranges)

    def _by_class(self, mask: np.ndarray, where: str) -> tuple[np.ndarray, str]:
        if self.class_count < 2 or self.binary_model:
            raise InputError("--mask-values classes needs a model whose output scores two classes or more per pixel: "
                             "its values are that output's classes; for a one-channel sigmoid, say "
                             "0=background,255=foreground")
        ignored = np.zeros(mask.shape, bool)
        for low, high, _ in self.ranges:
            ignored |= (mask >= low) & (mask <= high)
        stray = np.unique(mask[~ignored & ((mask < 0) | (mask >= self.class_count))])
        if stray.size:
            shown = ", ".join(str(v) for v in stray[:6])
            raise InputError(f"mask {where} has values {shown}, but the model's segmentation has {self.class_count} "
                             f"classes (0-{self.class_count - 1}); name other values with --mask-values "
                             "classes,VALUE=ignore")
        classes = np.where(ignored, 0, mask.astype(np.int64) + 1)
        return stored_classes(classes, self.class_count), self.describe(self.ranges)
