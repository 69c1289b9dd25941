"""Activations of every conv layer on disk as float16, one file per layer, read one image at a time.

The capture pass writes; the per-layer workers read. Memory does not grow with --images, and a
worker process needs only a small, picklable `SpilledLayer` to find its layer's data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

FLOAT16_MAX = 65000.0


@dataclass(frozen=True)
class SpilledLayer:
    """Where one layer's activations lie: an .npy file of N x (shape) float16 values."""

    path: Path
    offset: int  # bytes of the .npy header
    shape: tuple[int, ...]  # one image's activations, without the batch axis
    count: int  # images in the file

    @property
    def _values(self) -> int:
        return int(np.prod(self.shape))

    def raw(self, index: int) -> np.ndarray:
        """Image `index`'s activations as stored (float16), read with plain file I/O.

        Not a memory map: its touched pages would stay resident and memory would grow with the images.
        """
        count = self._values
        with open(self.path, "rb") as handle:
            handle.seek(self.offset + index * count * 2)
            data = np.frombuffer(handle.read(count * 2), dtype=np.float16)
        return data.reshape(self.shape)

    def image(self, index: int) -> np.ndarray:
        """Image `index`'s activations as float32."""
        return self.raw(index).astype(np.float32)


class Spill:
    """Writes each layer's batches into its file; files are created on the first batch, from the shapes
    the model really produced, so models with a dynamic input size work too."""

    def __init__(self, folder: Path, count: int):
        self.folder, self.count = folder, count
        self.layers: list[SpilledLayer] = []

    def write(self, layer: int, start: int, values: np.ndarray) -> None:
        """One batch of one layer; float16 values must be finite (the capture graph makes them so)."""
        if values.dtype != np.float16:
            values = np.nan_to_num(values, nan=0.0, posinf=FLOAT16_MAX, neginf=-FLOAT16_MAX)
            values = np.clip(values, -FLOAT16_MAX, FLOAT16_MAX).astype(np.float16)
        if layer == len(self.layers):
            path = self.folder / f"layer{layer:03d}.npy"
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)), "fortran_order": False,
                      "shape": (self.count, *values.shape[1:])}
            with open(path, "wb") as handle:
                np.lib.format.write_array_header_1_0(handle, header)
                offset = handle.tell()
            self.layers.append(SpilledLayer(path, offset, tuple(int(d) for d in values.shape[1:]), self.count))
        spilled = self.layers[layer]
        with open(spilled.path, "r+b") as handle:
            handle.seek(spilled.offset + start * values[0].nbytes)
            handle.write(np.ascontiguousarray(values).tobytes())
