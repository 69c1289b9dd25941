"""Values kept on local disk so memory does not grow with the images.

`Spill`: the activations of every conv layer as float16, one file per layer, read one image at a
time. The capture pass writes; the per-layer workers read; a worker process needs only a small,
picklable `SpilledLayer` to find its layer's data.

`BatchStore`: what the statistics' second pass needs of each batch (measure.ProbeInputs), one file
a batch, written by the first pass and taken (read, then deleted) by the second.
"""

from __future__ import annotations

import contextlib
import os
import pickle
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


@dataclass(frozen=True)
class BatchStore:
    """One value per batch of statistics images (by the batch's first image), pickled into a folder
    that the client made: workers on its machine (the DirectRunner's, a local Dask cluster's) share it.

    A worker that does not see the folder (another machine), or a store without a folder, keeps
    nothing, and `take` finds nothing: the caller computes the value again.
    """

    folder: str | None = None

    def _path(self, start: int) -> str:
        return os.path.join(self.folder, f"batch{start:09d}.pickle")

    def put(self, start: int, value) -> None:
        if self.folder is None or not os.path.isdir(self.folder):
            return
        path = self._path(start)
        partial = f"{path}.{os.getpid()}.part"  # a retried bundle may write the same batch: whole files only
        with open(partial, "wb") as handle:
            pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(partial, path)

    def take(self, start: int):
        """The batch's value, deleted from the folder, or None where it was not kept."""
        if self.folder is None:
            return None
        path = self._path(start)
        try:
            with open(path, "rb") as handle:
                value = pickle.load(handle)
        except FileNotFoundError:
            return None
        with contextlib.suppress(FileNotFoundError):  # a retried bundle took it first
            os.remove(path)
        return value
