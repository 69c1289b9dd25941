"""The classes of the masks that the statistics are measured against (`MaskClasses`), and a mask on
a layer's grid: each class's share of every grid pixel (`mask_onehot`), or its majority class
(`grid_truth`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np


@dataclass(frozen=True)
class MaskClasses:
    """The classes of the masks measured against. A mask stores class k as k + 1, and 0 where a
    pixel has no class (`--mask-values ...=ignore`): such a pixel is in no class's IoU.

    The per-layer headline numbers are about one class, the focus: the pet of an Oxford trimap,
    the foreground of a binary mask, and for N classes the first one not named background. Every
    class's IoU is kept as well (`LayerStats.best_iou`, the probes' IoU per class).

    `layout` says how the classes are stored: TRIMAP (1 pet, 2 background, 3 border, a class as in
    Oxford's evaluation), BINARY (1 foreground, 2 background; 3, the pixels `--mask-values` calls
    ignore, in no class), or BY_CLASS (class k as k + 1)."""

    names: tuple[str, ...] = ("pet", "background", "border")
    focus: int = 0
    layout: str = "trimap"

    TRIMAP: ClassVar[str] = "trimap"
    BINARY: ClassVar[str] = "binary"
    BY_CLASS: ClassVar[str] = "classes"

    @classmethod
    def named(cls, names) -> "MaskClasses":
        """A segmentation's classes in order, the first not named background in focus."""
        names = tuple(str(name) for name in names)
        if names == OXFORD.names:
            return OXFORD
        focus = next((k for k, name in enumerate(names) if name.lower() != "background"), 0)
        return cls(names, focus, cls.BY_CLASS)

    @classmethod
    def binary(cls, foreground: str = "foreground", background: str = "background") -> "MaskClasses":
        return cls((foreground, background), 0, cls.BINARY)

    @property
    def in_trimap_order(self) -> bool:
        """Stored as 1 focus, 2 background, 3 not classified: drawn and scored as Oxford trimaps are."""
        return self.layout in (self.TRIMAP, self.BINARY)

    @property
    def count(self) -> int:
        return len(self.names)

    @property
    def focus_name(self) -> str:
        return self.names[self.focus]

    @property
    def background(self) -> int | None:
        """The background class: the second in trimap order, else the class named background, if one is."""
        if self.in_trimap_order:
            return 1
        return next((k for k, name in enumerate(self.names) if name.lower() == "background"), None)


OXFORD = MaskClasses()


def mask_onehot(masks: np.ndarray, height: int, width: int, classes: int) -> np.ndarray:
    """N x SH x SW masks (class k stored as k + 1) to N x height x width x K class fractions, area-pooled."""
    n, sh, sw = masks.shape
    onehot = np.stack([(masks == k + 1) for k in range(classes)], axis=-1).astype(np.float32)
    if sh % height == 0 and sw % width == 0:
        return onehot.reshape(n, height, sh // height, width, sw // width, classes).mean(axis=(2, 4))
    from PIL import Image

    return np.stack([
        np.stack([np.asarray(Image.fromarray(onehot[i, ..., k]).resize((width, height), Image.Resampling.BOX))
                  for k in range(classes)], axis=-1)
        for i in range(n)
    ])


class MaskGrids:
    """A batch's masks (N x SH x SW, class k stored as k + 1) as class fractions on any grid, each grid
    computed once: a batch's layers come in a few grid sizes, and `mask_onehot` is a pass over every
    mask pixel. What it returns is shared: read it, do not change it."""

    def __init__(self, masks: np.ndarray, classes: int):
        self.masks, self.classes = masks, classes
        self._made: dict = {}

    def onehot(self, height: int, width: int) -> np.ndarray:
        """`mask_onehot` of the masks on height x width."""
        return self.kept(("onehot", height, width), lambda: mask_onehot(self.masks, height, width, self.classes))

    def kept(self, key, make):
        """`make()`, made once for `key`."""
        if key not in self._made:
            self._made[key] = make()
        return self._made[key]


def grid_truth(masks: np.ndarray, height: int, width: int, classes: int) -> np.ndarray:
    """Class id per grid pixel where one class covers most of it, else -1 (a tie, or no class, has no truth)."""
    fractions = mask_onehot(masks, height, width, classes)
    truth = fractions.argmax(axis=-1)
    truth[fractions.max(axis=-1) <= 0.5] = -1
    return truth
