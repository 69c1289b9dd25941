"""Pictures of the site: feature grids, top channels, overlays, inputs and masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from reportgen import render
from reportgen.mask_classes import MaskClasses
from reportgen.naming import Namer

TOP_OVERLAYS = 4
THUMB = 64
OVERLAY_HEIGHT = 120  # CSS pixels on the layer page (style.css .overlays img)
EXAMPLE_QUALITY = 80  # statistics images shown only as dataset examples


def layer_dir(slug: str) -> str:
    return f"img/layers/{slug}"


def grid_path(layer_slug: str, image_slug: str, exact: bool) -> str:
    """Grids of small maps are stored exactly (lossy coding smears their few, enlarged pixels)."""
    return f"{layer_dir(layer_slug)}/{image_slug}.{'png' if exact else 'jpg'}"


def top_path(layer_slug: str, image_slug: str) -> str:
    return f"{layer_dir(layer_slug)}/{image_slug}-top.webp"


def example_path(image_slug: str) -> str:
    return f"img/examples/{image_slug}.webp"


def overlay_path(layer_slug: str, image_slug: str) -> str:
    return f"{layer_dir(layer_slug)}/{image_slug}-overlay.jpg"


def cam_path(layer_slug: str, image_slug: str) -> str:
    return f"{layer_dir(layer_slug)}/{image_slug}-gradcam.jpg"


def image_path(image_slug: str, kind: str) -> str:
    # Photographs compress far better as WebP; masks are a few flat colours and stay exact as PNG.
    return f"img/images/{image_slug}-{kind}.{'webp' if kind == 'input' else 'png'}"


class AssetWriter:
    """Writes every picture of a build into the staging folder."""

    def __init__(self, root: Path, cmap: str, scale: str = "channel"):
        self.root = root
        self.cmap = cmap
        self.scale = scale
        self._folders: set[Path] = set()
        self._backdrops: dict[int, np.ndarray] = {}

    def _write(self, relative: str, data: bytes) -> None:
        path = self.root / relative
        if path.parent not in self._folders:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._folders.add(path.parent)
        path.write_bytes(data)

    def layer_pictures(self, result, read_image, records) -> np.ndarray:
        """Grid, top channel and overlays for every image.

        `read_image(k)` returns image k's activations of this layer; one image is in memory at a time.
        Returns each tile's colour range, images x C x (low, high).
        """
        order = result.order
        top = order[:TOP_OVERLAYS]
        low = high = None
        if self.scale == "layer":  # one range for every channel and image of the layer: mean +- 3 std
            s = result.stats
            channels = result.shape[-1]
            low, high = np.full(channels, s.mean - 3 * s.std), np.full(channels, s.mean + 3 * s.std)
        ranges = np.zeros((len(records), result.shape[-1], 2), np.float32)
        for i, record in enumerate(records):
            maps = as_image_maps(read_image(i)[None])[0]
            values = maps.astype(np.float32)  # the spill's float16 values are finite
            tile_low = values.min(axis=(0, 1)) if low is None else low
            tile_high = values.max(axis=(0, 1)) if high is None else high
            ranges[i, :, 0], ranges[i, :, 1] = tile_low, tile_high
            tiles = render.normalise_channels(values, tile_low, tile_high)[order]
            grid = render.compose_grid(tiles, result.layout, fill=0)
            exact = result.layout.lossless
            self._write(grid_path(result.slug, record.slug, exact),
                        render.encode_indexed_png(render.quantise(grid, result.layout.levels), self.cmap) if exact
                        else render.encode_jpeg(render.colorize(grid, self.cmap)))
            best = render.colorize(tiles[0], self.cmap)
            self._write(top_path(result.slug, record.slug), render.encode_webp(render.enlarge(best, THUMB)))
            if record.image.ndim == 3 and maps.shape[0] > 1:
                # Overlays always use each channel's own range: with --scale channel the tiles have it.
                heats = tiles[:len(top)] if self.scale == "channel" else render.normalise_channels(maps[..., top])
                backdrop = self._overlay_backdrop(i, record.image)
                strip = np.concatenate([render.overlay(backdrop, heat, self.cmap) for heat in heats], axis=1)
                self._write(overlay_path(result.slug, record.slug), render.encode_jpeg(strip))
        return ranges

    def cam_pictures(self, result, cams: np.ndarray, records) -> np.ndarray:
        """Each pictured image's Grad-CAM map of this layer over the image, scaled to its own peak as
        Grad-CAM maps are shown; returns the peaks (0 where the map is zero everywhere)."""
        peaks = np.zeros(len(records))
        for i, record in enumerate(records):
            cam = np.nan_to_num(np.asarray(cams[i], np.float32))
            peaks[i] = float(cam.max(initial=0.0))
            heat = (np.clip(cam / peaks[i], 0, 1) * 255).astype(np.uint8) if peaks[i] > 0 else \
                np.zeros(cam.shape, np.uint8)
            backdrop = self._overlay_backdrop(i, record.image)
            self._write(cam_path(result.slug, record.slug), render.encode_jpeg(render.overlay(backdrop, heat, self.cmap)))
        return peaks

    def _overlay_backdrop(self, index: int, image: np.ndarray) -> np.ndarray:
        """The input at the overlays' stored height, which is the height the layer page shows them at."""
        if index not in self._backdrops:
            height, width = image.shape[:2]
            size = (max(1, round(width * OVERLAY_HEIGHT / height)), OVERLAY_HEIGHT)
            self._backdrops[index] = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX)) \
                if height > OVERLAY_HEIGHT else image
        return self._backdrops[index]

    def example_pictures(self, images, used, records) -> dict[int, dict]:
        """The statistics images that are some channel's dataset example, once each for every layer:
        a page crops each example from its image. Pictured images reuse their input picture.
        Returns, by statistics image index, its id, picture and page (None unless pictured)."""
        pictured = {record.id: record for record in records}
        namer = Namer()
        for record in records:
            namer(record.id)  # keeps the pictured images' names for them
        found = {}
        for index in sorted(used):
            item = images[index]
            record = pictured.get(item.id)
            if record is not None:
                found[index] = {"id": item.id, "src": image_path(record.slug, "input"),
                                "href": f"images/{record.slug}.html"}
                continue
            relative = example_path(namer(item.id))
            self._write(relative, render.encode_webp(render.as_rgb(item.picture), quality=EXAMPLE_QUALITY))
            found[index] = {"id": item.id, "src": relative, "href": None}
        return found

    def image_pictures(self, records, classes: MaskClasses) -> None:
        """Each image's input, its mask and the model's prediction in `classes` (the masks'), and
        where the prediction is wrong about the focus class."""
        trimap_order = classes.in_trimap_order
        for record in records:
            self._write(image_path(record.slug, "input"), render.encode_webp(record.image, quality=90))
            if record.trimap is not None:
                self._write(image_path(record.slug, "trimap"),
                            render.encode_png(render.mask_rgb(record.trimap, trimap_order)))
            if record.prediction is None:
                continue
            in_mask_classes = record.mask_classes is not None
            predicted = record.prediction + 1
            picture = render.mask_rgb(predicted, trimap_order) if in_mask_classes else \
                render.classes_rgb(record.prediction)
            self._write(image_path(record.slug, "prediction"), render.encode_png(picture))
            if record.trimap is not None and in_mask_classes:
                self._write(image_path(record.slug, "error"), render.encode_png(
                    render.error_rgb(record.trimap, predicted, classes.focus + 1, trimap_order)))

    def colorbar(self) -> str:
        relative = f"img/colorbar-{self.cmap}.png"
        self._write(relative, render.encode_png(render.colorbar(self.cmap)))
        return relative


def image_maps_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """H x W x C of `as_image_maps` for a conv output of `shape` (without the batch axis), without data."""
    if len(shape) == 2:
        return 1, shape[0], shape[1]
    if len(shape) == 4:
        return tuple(shape[1:])
    if len(shape) == 3:
        return tuple(shape)
    return 1, 1, int(np.prod(shape))


def as_image_maps(values: np.ndarray) -> np.ndarray:
    """Any conv output as N x H x W x C: 1-D (N x L x C) as 1 x L strips, 3-D as its middle depth slice."""
    if values.ndim == 3:
        return values[:, None, :, :]
    if values.ndim == 5:
        return values[:, values.shape[1] // 2]
    if values.ndim == 4:
        return values
    return values.reshape(values.shape[0], 1, 1, -1)


def example_boxes(centre_y: np.ndarray, centre_x: np.ndarray, field: float, height: int,
                  width: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Tops, lefts and the side of dataset examples: squares of the receptive field's side (at least 4
    pixels, at most the image) around points given as fractions of the height and width, moved inside
    the image."""
    side = int(round(field)) if np.isfinite(field) else min(height, width)
    side = max(4, min(side, height, width))
    tops = np.clip(np.round(np.asarray(centre_y) * height - side / 2), 0, height - side).astype(int)
    lefts = np.clip(np.round(np.asarray(centre_x) * width - side / 2), 0, width - side).astype(int)
    return tops, lefts, side
