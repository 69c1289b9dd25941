"""The CKA heatmap of one set of layers against another (two builds, two models), as SVG in the
site's two themes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reportgen.charts import THEMES, _pt, _svg

CELLS_PX = (720, 720)  # the cells fill at most this width and height; the drawing scales down with the page
MAX_CELL_PX = 40
MARGINS_PX = (190, 120)  # labels, ticks and the colour bar around the cells


def size(rows: int, columns: int) -> tuple[int, int]:
    """The drawing's CSS pixels, width and height: square cells, as large as fit."""
    cell = min(CELLS_PX[0] / max(columns, 1), CELLS_PX[1] / max(rows, 1), MAX_CELL_PX)
    return int(cell * columns + MARGINS_PX[0]), int(cell * rows + MARGINS_PX[1])


def write_heatmap(folder: Path, name: str, matrix: np.ndarray, label_rows: str, label_columns: str,
                  title: str, column_names: list[str] | None = None) -> dict:
    """`folder`/`name`-light.svg and -dark.svg; returns what a page needs to show them (src without the
    theme, width, height). `column_names` label the columns (else they are numbered from 1)."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    width, height = size(*matrix.shape)
    for theme_name, theme in THEMES.items():
        fig, ax = plt.subplots(figsize=(width / 96, height / 96), layout="constrained")
        rows, columns = matrix.shape
        image = ax.imshow(np.ma.masked_invalid(matrix), cmap="viridis", vmin=0, vmax=1, interpolation="nearest",
                          aspect="auto", extent=(0.5, columns + 0.5, rows + 0.5, 0.5))
        bar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
        # Layers are numbered from 1 and columns by name: no tick between two of them (matplotlib's own
        # ticks fall on halves where there are few rows, "conv 1.5").
        ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        if column_names is not None:
            ax.set_xticks(np.arange(1, columns + 1), column_names, rotation=45, ha="right")
        else:
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel(label_columns, color=theme["fg"], fontsize=_pt("label"))
        ax.set_ylabel(label_rows, color=theme["fg"], fontsize=_pt("label"))
        ax.set_title(title, color=theme["fg"], fontsize=_pt("title"))
        for axis in (ax, bar.ax):
            axis.tick_params(colors=theme["fg"], labelsize=_pt("tick"))
            for spine in axis.spines.values():
                spine.set_color(theme["grid"])
        (folder / f"{name}-{theme_name}.svg").write_bytes(_svg(fig))
        plt.close(fig)
    return {"name": name, "width": width, "height": height}
