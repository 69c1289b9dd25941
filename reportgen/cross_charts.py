"""The CKA heatmap of one set of layers against another (two builds, two models), as SVG in the
site's two themes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reportgen.charts import THEMES, _pt, _svg

WIDTH_PX = 720  # shown at most this wide; it scales down with the page


def size(rows: int, columns: int) -> tuple[int, int]:
    """The drawing's CSS pixels, width and height: the cells square."""
    height = int(WIDTH_PX * min(1.6, max(0.4, rows / max(columns, 1)))) + 60
    return WIDTH_PX, height


def write_heatmap(folder: Path, name: str, matrix: np.ndarray, label_rows: str, label_columns: str,
                  title: str) -> dict:
    """`folder`/`name`-light.svg and -dark.svg; returns what a page needs to show them (src without the
    theme, width, height)."""
    import matplotlib

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
