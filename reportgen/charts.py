"""Charts with matplotlib as SVG, one light and one dark copy of each."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

# Each chart is drawn once per site theme, with ink that reads on that theme's background; the
# two drawings are independent jobs, so two worker processes draw them at the same time.
THEMES = {
    "light": {"fg": "#3a3a3a", "grid": "#00000024", "shade": ("#4a90d928", "#e69f0028", "#009e7328")},
    "dark": {"fg": "#cfcfcf", "grid": "#ffffff30", "shade": ("#4a90d940", "#e69f0040", "#009e7340")},
}
SECTIONS = ("encoder", "bottleneck", "decoder")
CHART_FILES = {"metrics": "img/charts/metrics", "channels": "img/charts/channels", "cka": "img/charts/cka"}


def _section(name: str) -> int | None:
    if name.startswith(("e", "d")) and name[1:2].isdigit():
        return 0
    if name.startswith("daspp"):
        return 1
    if name.startswith("u") and name[1:2].isdigit() or name == "head":
        return 2
    return None


def _svg(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg", transparent=True, metadata={"Date": None, "Creator": None})
    return buffer.getvalue()


def _shade(ax, results, theme):
    sections = [_section(r.conv.name) for r in results]
    start = 0
    for i in range(1, len(sections) + 1):
        if i == len(sections) or sections[i] != sections[start]:
            if sections[start] is not None:
                ax.axvspan(start + 0.5, i + 0.5, color=theme["shade"][sections[start]], zorder=0, lw=0)
            start = i
    heights = [r.shape[0] for r in results]
    changes = [i + 0.5 for i in range(1, len(heights)) if heights[i] != heights[i - 1]]
    if changes:  # one collection, not a line per change: far quicker to draw
        ax.vlines(changes, 0, 1, transform=ax.get_xaxis_transform(), color=theme["grid"], lw=0.6, ls=":",
                  zorder=1)


def _heatmap(plt, results, rows, layer_cka, theme):
    """Layer x layer CKA with the CKA-to-mask strip along its right edge."""
    fig, (ax, strip) = plt.subplots(1, 2, figsize=(7.5, 6.5), gridspec_kw={"width_ratios": [20, 1], "wspace": 0.05},
                                    constrained_layout=True)
    masked = np.ma.masked_invalid(layer_cka)
    image = ax.imshow(masked, cmap="viridis", vmin=0, vmax=1, interpolation="nearest",
                      extent=(0.5, len(results) + 0.5, len(results) + 0.5, 0.5))
    to_mask = np.array([[np.nan if r["cka_mask"] is None else r["cka_mask"]] for r in rows])
    strip.imshow(np.ma.masked_invalid(to_mask), cmap="viridis", vmin=0, vmax=1, aspect="auto",
                 interpolation="nearest", extent=(0, 1, len(results) + 0.5, 0.5))
    strip.set_xticks([])
    strip.yaxis.tick_right()
    strip.set_title("mask", color=theme["fg"], fontsize=8)
    ax.set_xlabel("conv layer", color=theme["fg"])
    ax.set_ylabel("conv layer", color=theme["fg"])
    ax.set_title("Linear CKA between layers (1 = same representation up to rotation and scale)",
                 color=theme["fg"], fontsize=9)
    for axis in (ax, strip):
        axis.tick_params(colors=theme["fg"], labelsize=7)
        for spine in axis.spines.values():
            spine.set_color(theme["grid"])
    bar = fig.colorbar(image, ax=strip, fraction=1.0, pad=0.6)
    bar.ax.tick_params(colors=theme["fg"], labelsize=7)
    return fig


def write_charts(root: Path, results, rows, layer_cka=None, theme_name: str = "light") -> None:
    """Small multiples against conv index, the channel scatter and the layer CKA heatmap (CHART_FILES),
    in the ink of one site theme."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    plt.rcParams["svg.hashsalt"] = "reportgen"  # deterministic ids in the SVG
    plt.rcParams["svg.fonttype"] = "none"  # text as text: smaller files, faster to write
    out = root / "img" / "charts"
    out.mkdir(parents=True, exist_ok=True)
    x = np.arange(1, len(results) + 1)

    def band(key):
        values = np.array([[np.nan if v is None else v for v in row[key]] for row in rows], float)
        return values[:, 0], values[:, 1], values[:, 2]

    panels = [
        ("Mask decodability (probe IoU, pet)", [np.array([np.nan if r["probe_iou"]["pet"] is None
                                                          else r["probe_iou"]["pet"] for r in rows])], None,
         np.array([np.nan if r["rgb_probe_iou"]["pet"] is None else r["rgb_probe_iou"]["pet"] for r in rows])),
        ("Linear CKA with the mask", [np.array([np.nan if r["cka_mask"] is None else r["cka_mask"] for r in rows])],
         None, None),
        ("Best single-channel IoU, pet", [np.array([np.nan if r["best_channel_iou"]["pet"]["max"] is None else
                                                    r["best_channel_iou"]["pet"]["max"] for r in rows])],
         (np.array([np.nan if r["best_channel_iou"]["pet"]["p90"] is None else r["best_channel_iou"]["pet"]["p90"]
                    for r in rows]), None), None),
        ("nTV per input pixel (median, 10-90%)", [band("ntv_p10_p50_p90")[1]], band("ntv_p10_p50_p90"), None),
        ("Effective area fraction (median, 10-90%)", [band("effective_area_p10_p50_p90")[1]],
         band("effective_area_p10_p50_p90"), None),
        ("Participation ratio / C", [np.array([np.nan if r["participation_ratio_over_c"] is None
                                               else r["participation_ratio_over_c"] for r in rows])], None, None),
    ]
    theme = THEMES[theme_name]
    # Fixed margins: constrained layout measures every label and costs a third of the drawing time.
    fig, axes = plt.subplots(3, 2, figsize=(10, 7.5), sharex=True,
                             gridspec_kw={"left": 0.05, "right": 0.99, "top": 0.96, "bottom": 0.1,
                                          "hspace": 0.32, "wspace": 0.12})
    for ax, (title, lines, spread, baseline) in zip(axes.ravel(), panels):
        _shade(ax, results, theme)
        if spread is not None and len(spread) == 3:
            ax.fill_between(x, spread[0], spread[2], color="#56B4E9", alpha=0.35, lw=0, label="10-90% of channels")
        elif spread is not None:
            ax.plot(x, spread[0], color="#56B4E9", lw=1, label="90th percentile channel")
        for line in lines:
            ax.plot(x, line, color="#3b8fd6", lw=1.8, marker="o", ms=2.5)
        if baseline is not None:
            ax.plot(x, baseline, color="#D55E00", lw=1, ls="--", label="raw RGB baseline")
        ax.set_title(title, color=theme["fg"], fontsize=10)
        ax.tick_params(colors=theme["fg"], labelsize=8)
        for spine in ax.spines.values():
            spine.set_color(theme["grid"])
        ax.grid(True, color=theme["grid"], lw=0.4)
        if spread is not None or baseline is not None:
            # A fixed place: matplotlib's search for the "best" one costs a third of a second.
            ax.legend(fontsize=7, frameon=False, labelcolor=theme["fg"], loc="upper left")
    for ax in axes[-1]:
        ax.set_xlabel("conv layer (graph order)", color=theme["fg"], fontsize=8)
    fig.text(0.5, 0.01, "shading: encoder (blue), bottleneck (yellow), decoder (green); dotted lines: resolution changes",
             color=theme["fg"], fontsize=8, ha="center")
    (out / f"metrics-{theme_name}.svg").write_bytes(_svg(fig))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5), gridspec_kw={"left": 0.1, "right": 0.98, "top": 0.97, "bottom": 0.12})
    xs, ys, cs = [], [], []
    for r, row in zip(results, rows):
        ntv = np.array([np.nan if v is None else v for v in row["channels"]["ntv"]], float)
        iou = np.array([np.nan if v is None else v for v in row["channels"]["best_iou_pet"]], float)
        keep = np.isfinite(ntv) & np.isfinite(iou)
        xs.append(ntv[keep]); ys.append(iou[keep]); cs.append(np.full(keep.sum(), r.conv.index))
    xs, ys, cs = (np.concatenate(v) if v else np.array([]) for v in (xs, ys, cs))
    if xs.size:
        points = ax.scatter(xs, ys, c=cs, cmap="viridis", s=4, alpha=0.6, rasterized=True, lw=0)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))  # no mathtext
        bar = fig.colorbar(points, ax=ax)
        bar.set_label("conv layer", color=theme["fg"])
        bar.ax.tick_params(colors=theme["fg"])
    ax.set_xlabel("nTV per input pixel (log): high = edges and texture", color=theme["fg"])
    ax.set_ylabel("best IoU with the pet mask", color=theme["fg"])
    ax.tick_params(colors=theme["fg"])
    for spine in ax.spines.values():
        spine.set_color(theme["grid"])
    (out / f"channels-{theme_name}.svg").write_bytes(_svg(fig))
    plt.close(fig)

    if layer_cka is not None:
        fig = _heatmap(plt, results, rows, layer_cka, theme)
        (out / f"cka-{theme_name}.svg").write_bytes(_svg(fig))
        plt.close(fig)
