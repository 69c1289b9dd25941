"""Each channel's strongest images, the dataset examples of the channel view (`ChannelTopK`): kept in
constant memory as images are measured, and merged across any split of the images.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from reportgen.catalog import EXAMPLES


@dataclass
class ChannelTopK:
    """Each channel's `k` strongest images: the value and place of its maximum on each, best first.

    One candidate per image and channel (its spatial maximum), so the examples are k different images.
    Ties go to the lower image index: the order is total, and merging any split of the images gives
    exactly what one pass over all of them gives.
    """

    channels: int
    k: int = EXAMPLES
    values: np.ndarray = field(default=None)  # C x k, descending; -inf where fewer than k images were seen
    images: np.ndarray = field(default=None)  # C x k image indices (the statistics images'), -1 where empty
    rows: np.ndarray = field(default=None)  # C x k, the maximum's place on the layer's grid
    cols: np.ndarray = field(default=None)

    def __post_init__(self):
        if self.values is None:
            self.values = np.full((self.channels, self.k), -np.inf, np.float32)
            self.images = np.full((self.channels, self.k), -1, np.int64)
            self.rows = np.zeros((self.channels, self.k), np.int32)
            self.cols = np.zeros((self.channels, self.k), np.int32)

    def add(self, maps: np.ndarray, image_indices) -> None:
        """N x H x W x C finite activations of images `image_indices`."""
        n, h, w, c = maps.shape
        self.add_by_channel(np.ascontiguousarray(maps.reshape(n, h * w, c).transpose(0, 2, 1)), w, image_indices)

    def add_by_channel(self, by_channel: np.ndarray, width: int, image_indices) -> None:
        """`add` of the maps as N x C x (H x W): each channel's map a row of its pixels, `width` to a map
        row (the layout in which the accumulator ranks them)."""
        n, c, _ = by_channel.shape
        where = by_channel.argmax(axis=2)  # n x C
        peak = np.take_along_axis(by_channel, where[:, :, None], axis=2)[:, :, 0]
        images = np.broadcast_to(np.asarray(image_indices, np.int64)[:, None], (n, c))
        self._keep(np.concatenate([self.values, peak.T.astype(np.float32)], axis=1),
                   np.concatenate([self.images, images.T], axis=1),
                   np.concatenate([self.rows, (where // width).T.astype(np.int32)], axis=1),
                   np.concatenate([self.cols, (where % width).T.astype(np.int32)], axis=1))

    def _keep(self, values, images, rows, cols) -> None:
        # Highest value first, then the lowest image index; empty slots (image -1, -inf) last.
        order = np.lexsort((np.where(images < 0, np.iinfo(np.int64).max, images), -values), axis=1)[:, :self.k]
        self.values, self.images, self.rows, self.cols = (np.take_along_axis(a, order, axis=1)
                                                          for a in (values, images, rows, cols))

    def used_images(self) -> list[int]:
        """The image indices that are some channel's example, in order."""
        return sorted({int(i) for i in self.images.ravel() if i >= 0})

    def merge(self, other: "ChannelTopK") -> "ChannelTopK":
        merged = ChannelTopK(self.channels, self.k, self.values, self.images, self.rows, self.cols)
        merged._keep(*(np.concatenate([a, b], axis=1) for a, b in
                       ((self.values, other.values), (self.images, other.images), (self.rows, other.rows),
                        (self.cols, other.cols))))
        return merged
