"""Linear CKA (centred kernel alignment): of a layer's features with a target, from centred
cross-products (`cka`, `linear_cka`), and layer x layer over any number of images in constant memory
(`MinibatchCKA`, with the unbiased HSIC estimator).
"""

from __future__ import annotations

import numpy as np

from reportgen.casts import as_float32
from reportgen.catalog import CKA_GRID


def cka(cross: np.ndarray, gram_x: np.ndarray, gram_y: np.ndarray) -> float:
    """Linear CKA from centred cross-products: ||Y'X||_F^2 / (||X'X||_F ||Y'Y||_F)."""
    denom = np.linalg.norm(gram_x) * np.linalg.norm(gram_y)
    if not np.isfinite(denom) or denom <= 1e-20:
        return float("nan")
    return float(np.clip(np.sum(cross ** 2) / denom, 0.0, 1.0))


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """CKA of two example x feature matrices (rows are the same examples)."""
    x = np.asarray(x, np.float64) - np.mean(x, axis=0)
    y = np.asarray(y, np.float64) - np.mean(y, axis=0)
    return cka(y.T @ x, x.T @ x, y.T @ y)


def common_grid(maps: np.ndarray) -> np.ndarray:
    """N x H x W x C onto N x 5 x 5 x C: area-pooled where 5 divides, else sampled (maps under 5 x 5 repeat)."""
    n, h, w, c = maps.shape
    if h >= CKA_GRID and w >= CKA_GRID and h % CKA_GRID == 0 and w % CKA_GRID == 0:
        return maps.reshape(n, CKA_GRID, h // CKA_GRID, CKA_GRID, w // CKA_GRID, c).mean(axis=(2, 4))
    rows = (np.arange(CKA_GRID) * h // CKA_GRID)
    cols = (np.arange(CKA_GRID) * w // CKA_GRID)
    return maps[:, rows][:, :, cols]


def unbiased_hsic(grams: np.ndarray) -> np.ndarray:
    """L x L matrix of the unbiased HSIC estimator (Song et al. 2012) between L n x n Gram matrices.

    HSIC_1(K, L) = [tr(K~L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3)), with K~ the
    Gram matrix with its diagonal set to 0; every pair at once, through matrix products.
    """
    count, n, _ = grams.shape
    if n < 4:
        raise ValueError(f"the unbiased HSIC needs at least 4 rows, got {n}")
    tilde = grams.astype(np.float64).copy()
    tilde[:, np.arange(n), np.arange(n)] = 0.0
    flat = tilde.reshape(count, n * n)
    sums = flat.sum(axis=1)
    rows = tilde.sum(axis=2)  # L x n: K~ 1
    return (flat @ flat.T + np.outer(sums, sums) / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (rows @ rows.T)) / (n * (n - 3))


class MinibatchCKA:
    """Layer x layer linear CKA over any number of images in constant memory: minibatch CKA with
    the unbiased HSIC estimator (Nguyen, Raghu and Kornblith, ICLR 2021).

    Each batch of images (its pixels on every layer's common 5 x 5 grid as rows) adds its L x L
    unbiased HSIC matrix to a running sum; CKA_ij = S_ij / sqrt(S_ii S_jj). Unlike the plain (biased)
    estimator, it does not inflate CKA when a batch has few rows for many channels, and merging is
    adding the sums. The result depends on which images form a batch: every executor batches images
    the same way (consecutive indices, the plan's batch size).
    """

    def __init__(self, layers: int):
        self.layers = layers
        self.sums = np.zeros((layers, layers))
        self.batches = 0
        self.images = 0

    def add(self, layer_maps: list[np.ndarray]) -> None:
        """One batch: the N x H x W x C output of every layer, in the accumulator's layer order."""
        rows = [np.nan_to_num(common_grid(as_float32(m)), nan=0.0, posinf=0.0, neginf=0.0)
                for m in layer_maps]
        features = [r.reshape(-1, r.shape[-1]) for r in rows]
        if features[0].shape[0] < 4:
            return
        grams = np.stack([f @ f.T for f in features])
        self.sums += unbiased_hsic(grams)
        self.batches += 1
        self.images += len(layer_maps[0])

    def merge(self, other: "MinibatchCKA") -> "MinibatchCKA":
        merged = MinibatchCKA(self.layers)
        merged.sums = self.sums + other.sums
        merged.batches, merged.images = self.batches + other.batches, self.images + other.images
        return merged

    def finalise(self) -> np.ndarray:
        """L x L matrix of CKA; NaN where a layer is constant (its HSIC with itself is not positive)."""
        diagonal = np.diag(self.sums)
        with np.errstate(invalid="ignore", divide="ignore"):
            norms = np.sqrt(np.where(diagonal > 1e-20, diagonal, np.nan))
            return np.clip(self.sums / np.outer(norms, norms), 0.0, 1.0) if self.batches else \
                np.full((self.layers, self.layers), np.nan)
