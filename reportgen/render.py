"""Feature maps to pictures: grids composed with numpy, encoded by Pillow.

No matplotlib figure per channel: a grid is one array assembled from tiles,
mapped through a colormap lookup table and written once.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

MIN_TILE = 32  # small maps are enlarged (nearest) so each pixel stays visible
MAX_TILE = 96  # bigger maps are averaged down 2x: the whole site must stay under 50 MB
GAP = 2
WEBP_QUALITY = 70
JPEG_QUALITY = 85
DEFAULT_CMAP = "viridis"  # perceptually uniform and colour-blind safe


@functools.cache
def colormap_lut(name: str) -> np.ndarray:
    """256 x 3 uint8 lookup table from a matplotlib colormap; index 0..255 is value 0..1."""
    from matplotlib import colormaps

    if name not in colormaps:
        from reportgen.errors import InputError

        raise InputError(f"unknown colormap {name!r}; try viridis, cividis, magma or gray")
    return (colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)


@dataclass(frozen=True)
class GridLayout:
    """How the channels of one layer are arranged in its grid pictures."""

    columns: int
    rows: int
    tile_h: int  # one tile in stored pixels
    tile_w: int
    scale: int  # the page shows the picture this many times larger (pixelated), so small maps stay visible
    shrink: int = 1  # integer reduction of the map to the tile
    gap: int = GAP
    levels: int = 256  # colour levels of a lossless grid: fewer for models with very many small maps

    def height_of(self, rows: int) -> int:
        return max(1, rows * (self.tile_h + self.gap) - self.gap)

    @property
    def height(self) -> int:
        return self.height_of(self.rows)

    @property
    def width(self) -> int:
        return self.columns * (self.tile_w + self.gap) - self.gap

    @property
    def lossless(self) -> bool:
        """Small maps are stored exactly: lossy coding smears their few, enlarged pixels."""
        return min(self.tile_h, self.tile_w) < 40

    @classmethod
    def for_maps(cls, height: int, width: int, channels: int) -> "GridLayout":
        """Square-ish maps go in a grid; 1 x L strips (1-D convs) stack into one channel-by-position strip."""
        if height == 1:
            scale = max(1, -(-MIN_TILE * 8 // max(width, 1)))
            return cls(columns=1, rows=channels, tile_h=1, tile_w=width, scale=scale, gap=0)
        columns = min(8 if channels <= 64 else 16, channels)
        rows = -(-channels // columns)
        if min(height, width) > MAX_TILE and height % 2 == 0 and width % 2 == 0:
            return cls(columns=columns, rows=rows, tile_h=height // 2, tile_w=width // 2, scale=1, shrink=2)
        scale = max(1, -(-MIN_TILE // max(min(height, width), 1)))
        return cls(columns=columns, rows=rows, tile_h=height, tile_w=width, scale=scale,
                   gap=GAP if scale == 1 else 1)


GRID_LEVELS = (256, 128, 64, 32, 16)
# A lossless grid's bytes at each number of levels, against 256: measured on the 7 and 14 px grids
# of EfficientNetV2B0 (60 grids; activation maps are noisy, so fewer levels is the only real saving:
# lossless WebP gives 3%).
LEVEL_BYTES = {256: 1.0, 128: 0.88, 64: 0.78, 32: 0.68, 16: 0.57}


def grid_levels(lossless_pixels: int, budget: int) -> int:
    """The most colour levels whose lossless grids fit `budget` stored pixels' worth of bytes."""
    return next((levels for levels in GRID_LEVELS if lossless_pixels * LEVEL_BYTES[levels] <= budget),
                GRID_LEVELS[-1])


def quantise(indices: np.ndarray, levels: int) -> np.ndarray:
    """Colormap indices 0..255 in `levels` evenly spaced levels, each at the middle of its band."""
    if levels >= 256:
        return indices
    step = 256 // levels
    return (indices // step * step + step // 2).astype(np.uint8)


def normalise_channels(maps: np.ndarray, low: np.ndarray | None = None, high: np.ndarray | None = None) -> np.ndarray:
    """H x W x C float to C x H x W uint8 in 0..255, per channel unless `low`/`high` are given.

    A constant channel (no range) maps to the middle of the colormap, not to 0.
    """
    maps = maps if maps.dtype == np.float32 else maps.astype(np.float32)
    if not np.isfinite(maps).all():  # one pass where nan_to_num takes four and a copy
        maps = np.nan_to_num(maps, nan=0.0, posinf=0.0, neginf=0.0)
    if low is None:
        low = maps.min(axis=(0, 1))
    if high is None:
        high = maps.max(axis=(0, 1))
    span = (high - low).astype(np.float32)
    flat = span <= 1e-12
    # In place, a few passes: this runs on every channel of every image of every layer.
    scaled = maps - low.astype(np.float32)
    scaled *= np.where(flat, 0.0, 255.0 / np.where(flat, 1.0, span)).astype(np.float32)
    scaled += np.where(flat, 128.0, 0.5).astype(np.float32)  # + 0.5: round, not truncate
    np.clip(scaled, 0, 255, out=scaled)
    return scaled.astype(np.uint8).transpose(2, 0, 1)


def compose_grid(channels: np.ndarray, layout: GridLayout, fill: int = 0) -> np.ndarray:
    """C x h x w uint8 tiles to one (rows*tile) x (columns*tile) uint8 array with gaps."""
    count, h, w = channels.shape
    if layout.shrink > 1:
        k = layout.shrink
        channels = channels[:, :h - h % k, :w - w % k].reshape(count, h // k, k, w // k, k).mean(
            axis=(2, 4)).round().astype(np.uint8)
    th, tw = channels.shape[1:]
    gap = layout.gap
    cell_h, cell_w = th + gap, tw + gap
    grid = np.full((layout.rows * cell_h - gap, layout.columns * cell_w - gap), fill, np.uint8)
    for i in range(count):
        r, c = divmod(i, layout.columns)
        grid[r * cell_h:r * cell_h + th, c * cell_w:c * cell_w + tw] = channels[i]
    return grid


def colorize(indices: np.ndarray, cmap: str) -> np.ndarray:
    """Colormap indices to RGB through a palette image: Pillow's lookup is several times faster than numpy's."""
    image = Image.fromarray(np.ascontiguousarray(indices))
    image.putpalette(colormap_lut(cmap).tobytes())
    return np.asarray(image.convert("RGB"))


def as_rgb(image: np.ndarray) -> np.ndarray:
    """An input picture as shown: a grayscale (H x W x 1) one repeated into three channels."""
    return image if image.shape[-1] == 3 else np.repeat(image, 3, axis=-1)


def encode_webp(rgb: np.ndarray, quality: int = WEBP_QUALITY) -> bytes:
    """Lossy WebP at the fastest method: method 2 is 40% slower for files 14% smaller."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="WEBP", quality=quality, method=0)
    return buffer.getvalue()


def encode_jpeg(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """JPEG for the big pictures (large grids, overlays): libjpeg-turbo encodes them five times
    faster than WebP at its fastest. Viridis carries a map's detail in lightness, which 4:2:0
    chroma subsampling keeps at full resolution."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def encode_indexed_png(indices: np.ndarray, cmap: str) -> bytes:
    """A palette PNG of colormap indices: exact, and for small maps as small as lossless WebP at a
    quarter of the time, with no colour lookup at all."""
    image = Image.fromarray(indices)
    image.putpalette(colormap_lut(cmap).tobytes())  # an L image with a palette becomes P, indices kept
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def encode_png(rgb_or_gray: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb_or_gray).save(buffer, format="PNG", compress_level=6, optimize=False)
    return buffer.getvalue()


TRIMAP_COLORS = np.array([[0, 0, 0], [230, 159, 0], [60, 60, 60], [240, 240, 240]], np.uint8)  # -, pet, bg, border


def trimap_rgb(trimap: np.ndarray) -> np.ndarray:
    """Trimap classes 1..3 as colours: pet orange (Okabe-Ito), background dark grey, border white."""
    return TRIMAP_COLORS[np.clip(trimap, 0, 3)]


def error_rgb(truth: np.ndarray, predicted: np.ndarray, focus: int = 1, trimap_order: bool = True) -> np.ndarray:
    """Where the prediction is wrong about the focus class (stored as `focus`): right pixels dimmed
    grey, focus missed blue, another class called the focus orange.

    Pixels of no class (0), and in trimap order (mask_classes.MaskClasses.in_trimap_order) the border or
    ignored band (3), are 'not classified' and shown light.
    """
    out = np.full(truth.shape + (3,), 40, np.uint8)
    unclassified = (truth == 0) | ((truth == 3) if trimap_order else False)
    out[unclassified] = (110, 110, 110)
    missed = (truth == focus) & (predicted != focus)
    false_focus = (truth != focus) & ~unclassified & (predicted == focus)
    out[missed] = (0, 114, 178)
    out[false_focus] = (230, 159, 0)
    return out


def colorbar(cmap: str, width: int = 256, height: int = 12) -> np.ndarray:
    return np.repeat(colormap_lut(cmap)[None, np.linspace(0, 255, width).astype(int)], height, axis=0)


def box_size(height: int, width: int, box: int) -> tuple[int, int]:
    """(width, height) of a picture scaled to fit a box x box square, aspect ratio kept."""
    scale = box / max(height, width, 1)
    return max(1, round(width * scale)), max(1, round(height * scale))


def thumb_shape(height: int, width: int) -> tuple[int, int]:
    """The proportions of a map's thumbnail: its own, or square for the 1-pixel strips of 1-D convs."""
    return (height, width) if min(height, width) > 1 else (max(height, width),) * 2


def enlarge(rgb: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a small map to fit size x size for thumbnails, without distortion."""
    box = box_size(*thumb_shape(*rgb.shape[:2]), size)
    return np.asarray(Image.fromarray(rgb).resize(box, Image.Resampling.NEAREST))


# Okabe-Ito, colour-blind safe, for the classes of a segmentation model other than the trimap's three.
CLASS_COLORS = np.array([[0, 0, 0], [230, 159, 0], [86, 180, 233], [0, 158, 115], [240, 228, 66],
                         [0, 114, 178], [213, 94, 0], [204, 121, 167], [153, 153, 153]], np.uint8)


def classes_rgb(class_ids: np.ndarray) -> np.ndarray:
    """Class ids of any segmentation model as colours (classes beyond nine repeat the palette)."""
    return CLASS_COLORS[np.asarray(class_ids) % len(CLASS_COLORS)]


UNCLASSIFIED_COLOR = (240, 240, 240)


def mask_rgb(mask: np.ndarray, trimap_order: bool) -> np.ndarray:
    """A mask (class k stored as k + 1) as colours: in trimap order an Oxford trimap's (`trimap_rgb`),
    else class k in `classes_rgb`'s colour and pixels of no class (0) light."""
    if trimap_order:
        return trimap_rgb(mask)
    mask = np.asarray(mask, np.int64)
    out = classes_rgb(np.maximum(mask - 1, 0))
    out[mask == 0] = UNCLASSIFIED_COLOR
    return out


def class_legend(names, trimap_order: bool) -> list[tuple[str, str]]:
    """Each class's name and its colour in `mask_rgb` as #rrggbb, for a picture's key."""
    colours = TRIMAP_COLORS[1:] if trimap_order else CLASS_COLORS
    return [(name, "#{:02x}{:02x}{:02x}".format(*colours[k % len(colours)])) for k, name in enumerate(names)]


def overlay(image: np.ndarray, heat: np.ndarray, cmap: str, alpha: float = 0.55) -> np.ndarray:
    """Blend a channel (2-D, 0..255) over the input image, upsampled bilinear to its size.

    The colour grows more opaque with the value (weight alpha * v^0.7), so low values leave the
    image visible. Integer arithmetic through lookup tables: the blend is a convex combination in
    256ths, which fits uint16.
    """
    size = image.shape[:2]
    levels = np.asarray(Image.fromarray(heat).resize((size[1], size[0]), Image.Resampling.BILINEAR))
    weight, tinted = _overlay_tables(cmap, alpha)
    return ((image * (256 - weight[levels])[..., None] + tinted[levels]) >> 8).astype(np.uint8)


@functools.cache
def _overlay_tables(cmap: str, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    weight = np.round(256 * alpha * (np.arange(256) / 255.0) ** 0.7).astype(np.uint16)
    return weight, colormap_lut(cmap).astype(np.uint16) * weight[:, None]
