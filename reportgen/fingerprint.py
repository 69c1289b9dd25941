"""A build's representation fingerprint: what comparing its layers with a later build's, or another
model's, needs, without the weights.

For a fixed probe set (the first `PROBE_IMAGES` statistics images, or all when fewer, their ids
recorded), per layer:
- the centred Gram matrix of the probe images' features, each image's maps on the common CKA grid
  (cka.common_grid) flattened to one row: linear CKA between any two fingerprints on the same
  images needs only these (`cross_cka`);
- each channel's response profile, its map's mean on every probe image, for matching channels;
- the Grad-CAM maps of the pictured images pooled to a small grid, where the build has them.

`FingerprintSums` is the term of the one measuring function (measure.measure_batch): it keeps the
probe images' rows, merged by union of image indices, so it holds at most `PROBE_IMAGES` images
whatever the number of statistics images, on any executor. `finalise` reduces it to a `Fingerprint`,
stored as data/fingerprint.npz (`save`, `load`).
"""

from __future__ import annotations

import dataclasses
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reportgen.casts import as_float32
from reportgen.catalog import CKA_GRID
from reportgen.errors import ReportgenError

PROBE_IMAGES = 64  # the probe set: the first statistics images, at most this many
CAM_GRID = 8  # the pictured images' Grad-CAM maps are stored pooled to CAM_GRID x CAM_GRID
FORMAT = 1  # data/fingerprint.npz's format version
FILE = "fingerprint.npz"

# The arrays of data/fingerprint.npz, as about.html and stats.json's `fingerprint` describe them.
ARRAYS = {
    "format": "the format version (1)",
    "probe_ids": "the probe images' ids, n of them: the first statistics images (at most 64)",
    "layers": "the layers' names (nested models joined by /), L of them, in graph order",
    "widths": "each layer's channel count C",
    "features": f"each layer's feature count per image: {CKA_GRID} x {CKA_GRID} x C for H x W x C maps "
                "(on the common CKA grid), else the output's size",
    "grams": "L x n x n float32: per layer, the centred Gram matrix H X Xᵀ H of the probe images' features X "
             "(one row per image), H = I − 11ᵀ/n",
    "profiles": "n x ΣC float16: per channel, its map's mean on each probe image, the layers' channels one "
                "after the other (layer k's from the sum of the widths before it)",
    "cam_ids": "the pictured images whose Grad-CAM maps are stored, P of them",
    "cams": f"L x P x {CAM_GRID} x {CAM_GRID} float16: each layer's Grad-CAM map on each pictured image, "
            f"area-averaged to {CAM_GRID} x {CAM_GRID} (all zero for a layer without Grad-CAM)",
    "cam_layers": "L booleans: whether the layer has Grad-CAM maps",
}
ROUNDING = ("The Gram matrices are float32 (relative rounding below 6e-8: CKA from them matches CKA from the "
            "features to 1e-6); the profiles and Grad-CAM maps are float16 (relative rounding below 5e-4, far "
            "below what moves a correlation between channels).")


def probe_count(images: int) -> int:
    return min(PROBE_IMAGES, images)


def _area_pooled(maps: np.ndarray) -> bool:
    """Whether cka.common_grid averages these maps' areas (else it samples them)."""
    h, w = maps.shape[1:3]
    return maps.ndim == 4 and h >= CKA_GRID and w >= CKA_GRID and h % CKA_GRID == 0 and w % CKA_GRID == 0


def grid_and_profiles(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B x F grid features, B x C channel means), float32, from one pass over the maps where it can.

    Grid features: H x W x C maps on the common CKA grid (cka.common_grid), one row per image; other
    outputs flattened. Area-pooled maps are averaged with float32 sums (numpy's, on maps widened by
    TensorFlow: twice as fast as numpy's casts on the way), and their channel means are the means of
    the grid's equal cells."""
    from reportgen.cka import common_grid

    maps = as_float32(maps)
    n = len(maps)
    if maps.ndim == 4 and _area_pooled(maps):
        h, w, c = maps.shape[1:]
        grid = maps.reshape(n, CKA_GRID, h // CKA_GRID, CKA_GRID, w // CKA_GRID, c).mean(axis=(2, 4), dtype=np.float32)
        return _finite(grid.reshape(n, -1)), _finite(grid.mean(axis=(1, 2)))
    means = maps.reshape(n, -1, maps.shape[-1]).mean(axis=1, dtype=np.float32)
    rows = common_grid(maps) if maps.ndim == 4 else maps
    return _finite(rows.reshape(n, -1)), _finite(means)


def _finite(values: np.ndarray) -> np.ndarray:
    return np.nan_to_num(values.astype(np.float32, copy=False), nan=0.0, posinf=0.0, neginf=0.0)


def centred_gram(features: np.ndarray) -> np.ndarray:
    """n x n: H X Xᵀ H, in float64."""
    x = np.asarray(features, np.float64)
    x = x - x.mean(axis=0)
    return x @ x.T


@dataclass
class FingerprintSums:
    """The probe images' rows, by statistics image index: merged by union, so bounded by `count` images."""

    count: int  # the probe set: statistics images 0 .. count-1
    features: dict = dataclasses.field(default_factory=dict)  # image index -> per layer, its grid features
    profiles: dict = dataclasses.field(default_factory=dict)  # image index -> per layer, C channel means

    def add(self, activations: list, indices) -> None:
        """A batch: per layer, B x ... maps of statistics images `indices`; those past the probe set are skipped."""
        keep = [k for k, i in enumerate(indices) if int(i) < self.count]
        if not keep:
            return
        rows, means = zip(*(grid_and_profiles(np.asarray(maps)[keep]) for maps in activations))
        for j, k in enumerate(keep):
            image = int(indices[k])
            self.features[image] = [r[j] for r in rows]
            self.profiles[image] = [m[j] for m in means]

    def merge(self, other: "FingerprintSums") -> "FingerprintSums":
        return FingerprintSums(self.count, {**self.features, **other.features}, {**self.profiles, **other.profiles})

    def finalise(self, ids, layers, cam_ids=(), cams=None) -> "Fingerprint":
        """The fingerprint of probe images `ids` (as many as `count`) on `layers` (their names);
        `cams`: per layer, the pictured images' (`cam_ids`) Grad-CAM maps, None where a layer has none."""
        ids = tuple(ids)
        if sorted(self.features) != list(range(self.count)) or len(ids) != self.count:
            raise ReportgenError(f"the fingerprint came back with {len(self.features)} of {self.count} probe images; "
                                 "the runner lost results")
        order = range(self.count)
        per_layer = [np.stack([self.features[i][k] for i in order]) for k in range(len(layers))]
        profiles = [np.stack([self.profiles[i][k] for i in order]) for k in range(len(layers))]
        return Fingerprint(
            ids=ids, layers=tuple(layers), widths=tuple(int(p.shape[1]) for p in profiles),
            features=tuple(int(f.shape[1]) for f in per_layer),
            grams=np.stack([centred_gram(f) for f in per_layer]).astype(np.float32),
            profiles=tuple(p.astype(np.float16) for p in profiles),
            cam_ids=tuple(cam_ids), cams=pooled_cams(cams, len(layers), len(cam_ids)))


def pooled_cams(cams, layers: int, images: int) -> tuple[np.ndarray, np.ndarray]:
    """(L x P x CAM_GRID x CAM_GRID float16, L booleans) from per layer N x H x W maps or None."""
    found = np.zeros((layers, images, CAM_GRID, CAM_GRID), np.float16)
    present = np.zeros(layers, bool)
    for k, maps in enumerate(cams or []):
        if maps is None or images == 0:
            continue
        maps = np.nan_to_num(np.asarray(maps, np.float32))
        if maps.ndim != 3 or maps.shape[1] < 2:
            continue
        rows = (np.arange(maps.shape[1]) * CAM_GRID) // maps.shape[1]
        cols = (np.arange(maps.shape[2]) * CAM_GRID) // maps.shape[2]
        sums = np.zeros((len(maps), CAM_GRID, CAM_GRID))
        counts = np.zeros((CAM_GRID, CAM_GRID))
        np.add.at(counts, (rows[:, None], cols[None, :]), 1.0)
        for n, single in enumerate(maps):
            np.add.at(sums[n], (rows[:, None], cols[None, :]), single)
        found[k] = (sums / np.maximum(counts, 1.0)).astype(np.float16)
        present[k] = bool(np.any(maps))
    return found, present


@dataclass(frozen=True, eq=False)
class Fingerprint:
    """A build's fingerprint (see the module's docstring), as stored."""

    ids: tuple[str, ...]  # the probe images, n
    layers: tuple[str, ...]  # L layer names
    widths: tuple[int, ...]  # per layer, C
    features: tuple[int, ...]  # per layer, the feature count per image the Gram matrix was made of
    grams: np.ndarray  # L x n x n float32, centred
    profiles: tuple[np.ndarray, ...]  # per layer, n x C float16
    cam_ids: tuple[str, ...] = ()
    cams: tuple[np.ndarray, np.ndarray] = (np.zeros((0, 0, CAM_GRID, CAM_GRID), np.float16), np.zeros(0, bool))

    def save(self, path: Path) -> None:
        """An npz file (np.load reads it), written with fixed entry dates: the same fingerprint gives
        the same bytes (np.savez_compressed stamps each entry with the time of writing)."""
        cams, present = self.cams
        arrays = {"format": np.int64(FORMAT), "probe_ids": np.array(self.ids, dtype=str),
                  "layers": np.array(self.layers, dtype=str), "widths": np.array(self.widths, np.int64),
                  "features": np.array(self.features, np.int64), "grams": self.grams.astype(np.float32),
                  "profiles": np.concatenate(self.profiles, axis=1) if self.profiles else
                  np.zeros((len(self.ids), 0), np.float16),
                  "cam_ids": np.array(self.cam_ids, dtype=str), "cams": cams, "cam_layers": present}
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, array in arrays.items():
                entry = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                entry.compress_type = zipfile.ZIP_DEFLATED
                with archive.open(entry, "w", force_zip64=True) as handle:
                    np.lib.format.write_array(handle, np.asanyarray(array), allow_pickle=False)

    def restricted(self, ids) -> "Fingerprint":
        """The fingerprint of probe images `ids` only (a subset of its own, in that order): the centred
        Gram matrices re-centred on them, the profiles cut."""
        where = [self.ids.index(i) for i in ids]
        n = len(where)
        centre = np.eye(n) - 1.0 / n
        grams = np.stack([centre @ g.astype(np.float64)[np.ix_(where, where)] @ centre for g in self.grams]) \
            if n else np.zeros((len(self.layers), 0, 0))
        return dataclasses.replace(self, ids=tuple(ids), grams=grams.astype(np.float32),
                                   profiles=tuple(p[where] for p in self.profiles))


def load(path: Path) -> Fingerprint | None:
    """A stored fingerprint; None where there is none or it is not one this version reads."""
    try:
        with np.load(path, allow_pickle=False) as found:
            if int(found["format"]) != FORMAT:
                return None
            widths = [int(w) for w in found["widths"]]
            edges = np.cumsum([0, *widths])
            profiles = found["profiles"]
            return Fingerprint(
                ids=tuple(str(i) for i in found["probe_ids"]), layers=tuple(str(n) for n in found["layers"]),
                widths=tuple(widths), features=tuple(int(f) for f in found["features"]),
                grams=np.asarray(found["grams"], np.float32),
                profiles=tuple(profiles[:, a:b] for a, b in zip(edges[:-1], edges[1:])),
                cam_ids=tuple(str(i) for i in found["cam_ids"]),
                cams=(np.asarray(found["cams"], np.float16), np.asarray(found["cam_layers"], bool)))
    except (OSError, ValueError, KeyError, IndexError, TypeError, EOFError, zipfile.BadZipFile):
        return None


def of_build(sums: FingerprintSums | None, statistics_ids, layers, cam_ids=(), cams=None) -> Fingerprint:
    """A build's fingerprint from what its executor measured: the first `sums.count` of the statistics
    images' ids; no sums at all is a lost result."""
    if sums is None:
        raise ReportgenError("the statistics pass came back without the fingerprint; the runner lost results")
    return sums.finalise(tuple(statistics_ids)[:sums.count], layers, cam_ids, cams)


def add_batch(sums: dict, key: int, images: int, activations: list, indices) -> None:
    """measure_batch's term: the batch's probe images into `sums[key]`, a FingerprintSums of the
    first probe_count(images) statistics images."""
    sums.setdefault(key, FingerprintSums(probe_count(images))).add(activations, indices)
