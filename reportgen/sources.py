"""Image sources: each yields `SourceImage`s in a stable order, resized as training did.

Three sources behind one shape: a folder of image files with an optional folder
of Oxford-style trimaps, arrays already in memory (the Python API), both here,
and the project's `synthetic_pets` and the real `oxford_iiit_pet` through
TensorFlow Datasets (tfds_source.py).
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from reportgen import outdir
from reportgen.errors import InputError
from reportgen.inputs import InputGeometry, MaskValues

log = logging.getLogger(__name__)


def _readable_suffixes() -> frozenset[str]:
    """The file name endings of every format Pillow can open here (JPEG, PNG, GIF, BMP, TIFF, WebP...)."""
    Image.init()
    return frozenset(suffix for suffix, kind in Image.registered_extensions().items() if kind in Image.OPEN)


IMAGE_SUFFIXES = _readable_suffixes()
MAX_IMAGE_PIXELS = 80_000_000  # a bigger file is refused rather than decoded into gigabytes


@dataclass(frozen=True)
class SourceImage:
    """One input as the model sees it."""

    id: str  # stable, unique within the source; not safe as a file name (see naming.slug)
    image: np.ndarray  # uint8, height x width x channels, as the model takes it (InputGeometry)
    trimap: np.ndarray | None  # uint8, height x width, 1 pet / 2 background / 3 border
    label: str | None = None  # the class folder it came from (image_dataset_from_directory layout)
    original_size: tuple[int, int] | None = None  # height, width before fitting
    mask_convention: str | None = None  # what the stored mask's values meant (inputs.MaskValues.describe)
    shown: np.ndarray | None = None  # uint8 picture as shown, where `image` holds more than 8 bits (float32)
    bit_depth: int = 8  # of the stored file: 8, 16 (PIL's I;16 and I modes) or 32 (float, mode F)
    exif_rotated: bool = False  # the file's EXIF orientation says it is stored turned or mirrored

    @property
    def picture(self) -> np.ndarray:
        """The image as the site shows it: uint8, height x width x channels."""
        return self.image if self.shown is None else self.shown


def as_geometry(geometry: InputGeometry | int) -> InputGeometry:
    """A bare size means the notebook's convention: square RGB, stretched with nearest neighbours."""
    return geometry if isinstance(geometry, InputGeometry) else InputGeometry(geometry, geometry, 3)


DEEP_MODES = ("I;16", "I;16B", "I;16L", "I")
DEPTHS = ("scale", "raw")  # --depth: what a 16-bit image's values become
EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class Reading:
    """How an image folder's files are read: what mask values mean (--mask-values), what a 16-bit
    image's values become (--depth), and whether EXIF orientation is applied (--exif; Keras'
    image_dataset_from_directory does not)."""

    mask_values: MaskValues = MaskValues()
    depth: str = "scale"
    exif: bool = False


def deep_rgb(image: Image.Image, depth: str) -> np.ndarray | None:
    """A 16-bit image (PIL's I;16 and I modes) at its full depth, float32 RGB: 0-65535 scaled to 0-255
    (`scale`, every level kept) or the stored values as they are (`raw`). None for 8-bit modes."""
    if image.mode not in DEEP_MODES:
        return None
    wide = np.asarray(image, dtype=np.float32)
    if depth == "scale":
        wide = wide * np.float32(255.0 / 65535.0)
    return np.repeat(wide[..., None], 3, axis=2)


def to_rgb_uint8(image: Image.Image) -> np.ndarray:
    """Any PIL mode (grayscale, palette, RGBA, 16-bit) to uint8 RGB, as shown; alpha is dropped (PIL's
    RGB conversion) and a palette is looked up. A 16-bit image is stretched to its brightest pixel,
    so that a 12-bit scan is not shown black."""
    if image.mode in DEEP_MODES:
        wide = np.asarray(image, dtype=np.float64)
        peak = max(wide.max(initial=0), 1.0)
        return np.repeat(np.clip(wide / peak * 255.0, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    if image.mode == "F":
        wide = np.nan_to_num(np.asarray(image, dtype=np.float64))
        span = max(wide.max(initial=0) - wide.min(initial=0), 1e-12)
        scaled = ((wide - wide.min(initial=0)) / span * 255).astype(np.uint8)
        return np.repeat(scaled[..., None], 3, axis=2)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _open_image(path: Path) -> Image.Image:
    """Open and fully decode an image file, turning every way it can fail into an InputError."""
    name = str(path)  # with its folder: class folders hold files of the same name
    try:
        if path.stat().st_size == 0:
            raise InputError(f"image file {name!r} is empty (0 bytes)")
        with Image.open(path) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise InputError(f"image file {name!r} is {image.width}x{image.height}, "
                                 f"over the {MAX_IMAGE_PIXELS:,}-pixel limit")
            image.load()
            return image
    except InputError:
        raise
    # Pillow's decoders raise SyntaxError on a broken PNG chunk, and EOFError or struct.error on other
    # truncations: each is a file that cannot be read, not a bug of ours.
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, struct.error,
            Image.DecompressionBombError) as error:
        raise InputError(f"cannot read image file {name!r}: {error.__class__.__name__}") from None


def _is_site(folder: Path) -> bool:
    """A reportgen site or scratch folder (an --out inside the image folder): never read as images."""
    return folder.name.startswith(outdir.SCRATCH_PREFIX) or (folder / outdir.SITE_MARKER).exists()


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and not _is_site(p))


def _files(folder: Path, recursive: bool) -> list[Path]:
    """The visible files of `folder`, and with `recursive` of its visible sub-folders that are not sites."""
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file():
            found.append(entry)
        elif recursive and entry.is_dir() and not _is_site(entry):
            found.extend(_files(entry, recursive))
    return found


def labelled_files(folder: Path) -> list[tuple[Path, str | None]]:
    """The image files of `folder` with their class: sub-folders are classes when the folder holds no
    images of its own (the layout of keras.utils.image_dataset_from_directory).

    Classes are taken in turn (round-robin, files sorted by name within each), so the first N images
    cover every class, as a probe of the class needs.
    """
    return _survey(folder)[0]


def _survey(folder: Path) -> tuple[list[tuple[Path, str | None]], list[Path]]:
    """`labelled_files`, and the visible files beside them that no image reader takes."""
    direct = _files(folder, recursive=False)
    if any(p.suffix.lower() in IMAGE_SUFFIXES for p in direct):
        return ([(p, None) for p in direct if p.suffix.lower() in IMAGE_SUFFIXES],
                [p for p in direct if p.suffix.lower() not in IMAGE_SUFFIXES])
    per_class, others = [], list(direct)
    for sub in _class_folders(folder):
        files = _files(sub, recursive=True)
        per_class.append((sub.name, [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]))
        others += [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
    per_class = [(name, files) for name, files in per_class if files]
    ordered = []
    for rank in range(max((len(files) for _, files in per_class), default=0)):
        ordered.extend((files[rank], name) for name, files in per_class if rank < len(files))
    return ordered, others


def unread_files_note(folder: Path) -> list[str]:
    """A sentence naming the files of an image folder that were not read, none when every file was."""
    unread = _survey(folder)[1]
    if not unread:
        return []
    names = [shown_name(p.relative_to(folder).as_posix()) for p in unread]
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return [f"{len(names)} files of the image folder are not in a format Pillow reads and were left out: "
            f"{', '.join(names[:5])}{more}."]


def shown_name(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 (a Latin-1 name) become U+FFFD."""
    return os.fsencode(name).decode("utf-8", "replace")


class FolderSource(Sequence):
    """The images of an image folder in their stable order, each decoded only when it is taken: the
    file names are listed and sorted at once, so choosing 2 of 150 photos decodes 2."""

    def __init__(self, folder: Path, geometry: InputGeometry, trimap_dir: Path | None = None,
                 reading: Reading = Reading()):
        if not folder.is_dir():
            raise InputError(f"image folder {str(folder)!r} does not exist or is not a folder")
        self.files, self.skipped = _survey(folder)
        if not self.files:
            hidden = sum(1 for entry in folder.iterdir() if entry.name.startswith(".") and entry.is_file())
            note = f"; {hidden} hidden files (names starting with '.') are never read" if hidden else ""
            raise InputError(f"image folder {str(folder)!r} has no image files (nor class sub-folders with any){note}")
        if trimap_dir is not None and not trimap_dir.is_dir():
            raise InputError(f"trimap folder {str(trimap_dir)!r} does not exist or is not a folder")
        self.folder, self.geometry, self.trimap_dir, self.reading = folder, geometry, trimap_dir, reading
        self.ids = [_ident(folder, path, label) for path, label in self.files]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        path, label = self.files[index]
        return _load_file(self.folder, path, label, self.geometry, self.trimap_dir, self.reading)


def _ident(folder: Path, path: Path, label: str | None) -> str:
    return shown_name(path.name if label is None else path.relative_to(folder).as_posix())


def _mask_path(trimap_dir: Path, image: Path) -> Path:
    return trimap_dir / f"{image.stem}.png"


def check_masks(images: list[SourceImage], trimap_dir: Path | None) -> None:
    """With --trimap-dir, every image used has its mask: a mask for some images only would leave the
    others out of every mask statistic, so it is refused, naming the images without one."""
    if trimap_dir is None:
        return
    missing = [item.id for item in images if item.trimap is None]
    if len(missing) == len(images):
        raise InputError(f"no mask in {str(trimap_dir)!r} matches an image (a mask is named like its image, "
                         f"as cat.jpg -> cat.png)")
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise InputError(f"{len(missing)} of {len(images)} images have no mask in {str(trimap_dir)!r}: "
                         f"{', '.join(map(repr, missing[:3]))}{more}; give a mask for each image, or leave out "
                         "--trimap-dir")


def class_names(items: list[SourceImage]) -> list[str]:
    """The sorted class names of labelled images, as image_dataset_from_directory orders them."""
    return sorted({item.label for item in items if item.label is not None})


def image_folder(folder: Path, geometry: InputGeometry | int, trimap_dir: Path | None = None,
                 reading: Reading = Reading()) -> FolderSource:
    """The image files in `folder` (or in its class sub-folders), in any format Pillow reads; masks match
    by stem (`cat.jpg` -> `cat.png`). Files are decoded as they are taken."""
    return FolderSource(folder, as_geometry(geometry), trimap_dir, reading)


def _load_file(folder: Path, path: Path, label: str | None, geometry: InputGeometry,
               trimap_dir: Path | None, reading: Reading = Reading()) -> SourceImage:
    """One image file of an image folder, fitted to the input, with its trimap when there is one."""
    image = _open_image(path)
    rotated = image.getexif().get(EXIF_ORIENTATION, 1) not in (0, 1)
    if rotated and reading.exif:
        image = ImageOps.exif_transpose(image)
    rgb = to_rgb_uint8(image)
    trimap = convention = None
    if trimap_dir is not None:
        trimap_path = _mask_path(trimap_dir, path)
        if trimap_path.is_file():
            raw = np.asarray(_open_image(trimap_path))
            if raw.ndim == 3:
                raw = raw[..., 0]
            if raw.shape[:2] != rgb.shape[:2]:
                raise InputError(f"trimap {str(trimap_path)!r} is {raw.shape[1]}x{raw.shape[0]} "
                                 f"but its image is {rgb.shape[1]}x{rgb.shape[0]}")
            trimap, convention = reading.mask_values.to_classes(raw, repr(str(trimap_path)))
            trimap = geometry.trimap(trimap, reading.mask_values.padding)
    ident = _ident(folder, path, label)
    deep = deep_rgb(image, reading.depth)
    if deep is None:
        return SourceImage(ident, geometry.pixels(rgb), trimap, label, rgb.shape[:2], convention,
                           exif_rotated=rotated)
    return SourceImage(ident, geometry.pixels(deep), trimap, label, rgb.shape[:2], convention,
                       shown=geometry.pixels(rgb), bit_depth=16, exif_rotated=rotated)


@dataclass(frozen=True)
class FolderImages:
    """Statistics images that a worker reads itself: files of an image folder, by their paths.

    Plain values, so a Beam job carries paths, not pixels; `read(start, end)` gives the images
    `start` to `end` of the statistics images, exactly as `image_folder` gives them."""

    folder: str
    files: tuple[tuple[str, str | None], ...]  # (path within the folder, class) in statistics order
    geometry: InputGeometry
    trimap_dir: str | None = None
    reading: Reading = Reading()

    @classmethod
    def of(cls, folder: Path, geometry: InputGeometry, trimap_dir: Path | None, count: int,
           reading: Reading = Reading()) -> "FolderImages":
        files = tuple((path.relative_to(folder).as_posix(), label)
                      for path, label in labelled_files(folder)[:count])
        return cls(str(Path(folder).resolve()), files, geometry,
                   None if trimap_dir is None else str(Path(trimap_dir).resolve()), reading)

    def read(self, start: int, end: int) -> list[SourceImage]:
        folder = Path(self.folder)
        trimaps = None if self.trimap_dir is None else Path(self.trimap_dir)
        return [_load_file(folder, folder / path, label, self.geometry, trimaps, self.reading)
                for path, label in self.files[start:end]]


@dataclass(frozen=True)
class LoadedImages:
    """Statistics images already in memory (the tests, and what no worker can read by itself)."""

    items: tuple[SourceImage, ...]

    def read(self, start: int, end: int) -> list[SourceImage]:
        return list(self.items[start:end])


def from_arrays(images, masks, labels, geometry: InputGeometry) -> list[SourceImage]:
    """Images already in memory (the Python API): arrays of 0-255 values, optional masks (Oxford trimaps
    or binary, as `MaskValues` reads them) and labels."""
    images = list(images)
    if not images:
        raise InputError("no images given")
    masks = [None] * len(images) if masks is None else list(masks)
    labels = [None] * len(images) if labels is None else [None if v is None else str(v) for v in labels]
    if len(masks) != len(images) or len(labels) != len(images):
        raise InputError(f"{len(images)} images but {len(masks)} masks and {len(labels)} labels")
    items = []
    for i, (image, mask, label) in enumerate(zip(images, masks, labels)):
        if isinstance(image, Image.Image):
            rgb = to_rgb_uint8(image)
        else:
            array = np.asarray(image)
            if array.ndim == 3 and array.shape[-1] == 1:
                array = array[..., 0]
            if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
                raise InputError(f"image {i} has shape {array.shape}; expected H x W, H x W x 1, 3 or 4")
            if not np.isfinite(array).all() or array.min() < 0 or array.max() > 255:
                raise InputError(f"image {i} has values outside 0-255; give raw pixels, reportgen applies "
                                 "the input convention itself")
            array = np.round(array).astype(np.uint8)
            rgb = np.repeat(array[..., None], 3, axis=2) if array.ndim == 2 else array[..., :3]
        trimap = convention = None
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape[:2] != rgb.shape[:2]:
                raise InputError(f"mask {i} is {mask.shape[:2]} but its image is {rgb.shape[:2]}")
            trimap, convention = MaskValues().to_classes(mask, f"{i}")
            trimap = geometry.trimap(trimap)
        items.append(SourceImage(f"image_{i:04d}", geometry.pixels(rgb), trimap, label, rgb.shape[:2], convention))
    return items


def select(items: Iterable[SourceImage], count: int, how: str = "first", seed: int = 0,
           ids: list[str] | None = None, pool_limit: int = 2000) -> list[SourceImage]:
    """Pick `count` images: the first ones, a seeded random sample, or explicit ids in the given order."""
    if count < 1:
        raise InputError(f"--images must be at least 1, got {count}")
    if isinstance(items, FolderSource):  # choose by name, then decode only the chosen
        stand_ins = [SourceImage(ident, None, None) for ident in items.ids]
        index = {ident: k for k, ident in enumerate(items.ids)}
        return [items[index[item.id]] for item in select(stand_ins, count, how, seed, ids, pool_limit)]
    if ids:
        wanted = {ident: None for ident in ids}
        for item in items:
            if item.id in wanted:
                wanted[item.id] = item
        missing = [ident for ident, item in wanted.items() if item is None]
        if missing:
            raise InputError(f"image id {missing[0]!r} is not in the source ({len(missing)} missing)")
        return list(wanted.values())
    if how == "first":
        chosen = []
        for item in items:
            chosen.append(item)
            if len(chosen) == count:
                break
    elif how == "random":
        pool = []
        for item in items:
            pool.append(item)
            if len(pool) >= pool_limit:
                break
        order = np.random.default_rng(seed).permutation(len(pool))[:count]
        chosen = [pool[i] for i in sorted(order)]
    else:
        raise InputError(f"unknown selection {how!r}; use first, random or --ids")
    if len(chosen) < count:
        raise InputError(f"asked for {count} images but the source has only {len(chosen)}")
    return chosen

