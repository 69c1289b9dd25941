"""Charts with matplotlib as SVG, one light and one dark copy of each."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from reportgen import profiles
from reportgen.downloads import focus_class

# Each chart is drawn once per site theme, with ink that reads on that theme's background; the
# two drawings are independent jobs, so two worker processes draw them at the same time.
THEMES = {
    "light": {"fg": "#3a3a3a", "grid": "#00000024", "shade": ("#4a90d928", "#e69f0028", "#009e7328")},
    "dark": {"fg": "#cfcfcf", "grid": "#ffffff30", "shade": ("#4a90d940", "#e69f0040", "#009e7340")},
}
SECTIONS = ("encoder", "bottleneck", "decoder")

# Each chart is also drawn for two widths, the width it is shown at: a desktop column (1000 CSS px)
# and a phone (340 px: a 360 px screen less the page margins), picked by the page's <picture>. Shown at its own size, text set in this one
# type scale is that many CSS pixels on the screen: at least 11, never above the body text's 15.
# matplotlib's SVG sizes are points, which a browser draws at 4/3 px.
WIDTHS = {"": 1000, "-narrow": 340}
NARROW_BELOW = 1060  # CSS px of viewport under which pages show the narrow drawings
TEXT_PX = {"title": 13, "label": 12, "tick": 11}


def _pt(kind: str) -> float:
    return TEXT_PX[kind] * 0.75


def _inches(px: float) -> float:
    return px / 96


def figure_inches(chart: str, width_px: int, panels: int = 0) -> tuple[float, float]:
    """Each chart's figure size, which fixes its SVG's size: the pages give it to their pictures
    (width and height attributes), so nothing moves when a lazy chart loads."""
    width = _inches(width_px)
    if chart == "metrics":
        rows = -(-panels // (2 if width_px >= 600 else 1))
        return width, 0.9 + (2.3 if width_px >= 600 else 2.1) * rows
    if chart == "channels":
        return width, width * (0.6 if width_px >= 600 else 0.85)
    return width, width * 0.92  # the CKA heatmap


CHART_FILES = {"metrics": "img/charts/metrics", "channels": "img/charts/channels", "cka": "img/charts/cka"}


def _svg(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg", transparent=True, metadata={"Date": None, "Creator": None})
    return buffer.getvalue()


def _shade(ax, results, theme):
    sections = profiles.of_layers(results).sections
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


def _heatmap(plt, results, rows, layer_cka, theme, width_px: int):
    """Layer x layer CKA with the CKA-to-mask (or to-class) strip along its right edge, where defined.
    The strip and the colour bar are cut from the heatmap's own axes, so the strip's rows are the
    heatmap's rows."""
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    strip_key, strip_title = next(((key, title) for key, title in (("cka_mask", "mask"), ("cka_class", "class"))
                                   if any(r[key] is not None for r in rows)), (None, ""))
    width, height = figure_inches("cka", width_px)
    # Fixed margins, with room on the right for the colour bar's numbers: constrained layout does not
    # see the axes cut off by make_axes_locatable and let those numbers fall off the picture.
    fig, ax = plt.subplots(figsize=(width, height), gridspec_kw={
        "left": 0.55 / width, "right": 1 - 0.45 / width, "top": 1 - 0.35 / height, "bottom": 0.5 / height})
    masked = np.ma.masked_invalid(layer_cka)
    image = ax.imshow(masked, cmap="viridis", vmin=0, vmax=1, interpolation="nearest",
                      extent=(0.5, len(results) + 0.5, len(results) + 0.5, 0.5))
    divider = make_axes_locatable(ax)
    axes = [ax]
    if strip_key:
        strip = divider.append_axes("right", size="4%", pad=0.08)
        to_target = np.array([[np.nan if r[strip_key] is None else r[strip_key]] for r in rows])
        strip.imshow(np.ma.masked_invalid(to_target), cmap="viridis", vmin=0, vmax=1, aspect="auto",
                     interpolation="nearest", extent=(0, 1, len(results) + 0.5, 0.5))
        strip.set_xticks([])
        strip.set_yticks([])
        strip.set_title(strip_title, color=theme["fg"], fontsize=_pt("tick"))
        axes.append(strip)
    bar = fig.colorbar(image, cax=divider.append_axes("right", size="4%", pad=0.35 if strip_key else 0.08))
    ax.set_xlabel("conv layer", color=theme["fg"], fontsize=_pt("label"))
    ax.set_ylabel("conv layer", color=theme["fg"], fontsize=_pt("label"))
    ax.set_title("Linear CKA between layers" + ("" if width_px < 600 else
                 " (1 = same representation up to rotation and scale)"), color=theme["fg"], fontsize=_pt("title"))
    for axis in (*axes, bar.ax):
        axis.tick_params(colors=theme["fg"], labelsize=_pt("tick"))
        for spine in axis.spines.values():
            spine.set_color(theme["grid"])
    return fig


def _column(rows, getter) -> np.ndarray:
    values = []
    for row in rows:
        value = getter(row)
        values.append(np.nan if value is None else value)
    return np.array(values, float)


def _band(rows, key) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    values = np.array([[np.nan if v is None else v for v in row[key]] for row in rows], float).reshape(-1, 3)
    return values[:, 0], values[:, 1], values[:, 2]


def _interval(rows, name) -> tuple[np.ndarray, np.ndarray]:
    pairs = [row["intervals_90"].get(name, [None, None]) for row in rows]
    return tuple(np.array([np.nan if p[i] is None else p[i] for p in pairs], float) for i in (0, 1))


def _focus(rows) -> str:
    """The class the headline mask numbers are about: one for every row of a build."""
    return focus_class(rows[0]) if rows else focus_class({})


# The 90% interval drawn around each panel's line: panel key -> name in a row's `intervals_90`.
PANEL_INTERVALS = {"probe": "probe_iou_focus", "cka_mask": "cka_mask", "best_iou": "best_iou_focus_max",
                   "class_probe": "class_probe_accuracy", "cka_class": "cka_class", "ntv": "ntv_median",
                   "area": "effective_area_median", "participation": "participation"}


def _panels(rows, chance: float) -> list[tuple]:
    """Every small multiple the report can draw:
    (key, title, line, spread, baseline, baseline label, 90% interval of the line)."""
    ntv, area = _band(rows, "ntv_p10_p50_p90"), _band(rows, "effective_area_p10_p50_p90")
    focus = _focus(rows)
    return [(*panel, _interval(rows, PANEL_INTERVALS[panel[0]])) for panel in [
        ("probe", f"Mask decodability (probe IoU, {focus})", _column(rows, lambda r: r["probe_iou"][focus]), None,
         _column(rows, lambda r: r["rgb_probe_iou"][focus]), "raw RGB baseline"),
        ("cka_mask", "Linear CKA with the mask", _column(rows, lambda r: r["cka_mask"]), None, None, ""),
        ("best_iou", f"Best single-channel IoU, {focus}",
         _column(rows, lambda r: r["best_channel_iou"][focus]["max"]),
         (_column(rows, lambda r: r["best_channel_iou"][focus]["p90"]),), None, ""),
        ("class_probe", "Class decodability (probe accuracy)", _column(rows, lambda r: r["class_probe_accuracy"]),
         None, np.full(len(rows), chance), "chance (most common class)"),
        ("cka_class", "Linear CKA with the class", _column(rows, lambda r: r["cka_class"]), None, None, ""),
        ("ntv", "nTV per input pixel (median, 10-90%)", ntv[1], ntv, None, ""),
        ("area", "Effective area fraction (median, 10-90%)", area[1], area, None, ""),
        ("participation", "Participation ratio / C", _column(rows, lambda r: r["participation_ratio_over_c"]),
         None, None, ""),
    ]]


def plan(rows, layer_cka, chance: float = float("nan")) -> dict:
    """Which charts and panels this report can draw: only what is defined, so no axes stay empty."""
    panels = [(key, title) for key, title, line, *_ in _panels(rows, chance) if np.isfinite(line).any()]
    images = rows[0]["images"] if rows else 0
    has_scatter = any(v is not None for row in rows for v in row["channels"]["best_iou_focus"]) and \
        any(v is not None for row in rows for v in row["channels"]["ntv"])
    has_cka = layer_cka is not None and np.isfinite(layer_cka).any()
    return {
        "metrics": CHART_FILES["metrics"] if panels else None,
        "panels": [key for key, _ in panels],
        "metrics_alt": f"{len(panels)} panels of statistics against conv layer index, each over {images} images "
                       "with its 90% interval: " + ", ".join(title for _, title in panels),
        "images": images,
        "channels": CHART_FILES["channels"] if has_scatter else None,
        "cka": CHART_FILES["cka"] if has_cka else None,
        "chance": chance,
        "narrow_below": NARROW_BELOW,
        # CSS pixels of each drawing: chart -> suffix -> (width, height)
        "sizes": {chart: {suffix: tuple(round(v * 96) for v in figure_inches(chart, px, len(panels)))
                          for suffix, px in WIDTHS.items()} for chart in CHART_FILES},
    }


def write_charts(root: Path, results, rows, layer_cka=None, theme_name: str = "light", chart_plan=None) -> None:
    """Small multiples against conv index, the channel scatter and the layer CKA heatmap (CHART_FILES),
    in the ink of one site theme; only the charts and panels of `chart_plan` (see `plan`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    chart_plan = chart_plan or plan(rows, layer_cka)
    plt.rcParams["svg.hashsalt"] = "reportgen"  # deterministic ids in the SVG
    plt.rcParams["svg.fonttype"] = "none"  # text as text: smaller files, faster to write
    out = root / "img" / "charts"
    out.mkdir(parents=True, exist_ok=True)
    x = np.arange(1, len(results) + 1)
    panels = [panel for panel in _panels(rows, chart_plan["chance"]) if panel[0] in chart_plan["panels"]]
    theme = THEMES[theme_name]
    for suffix, width_px in WIDTHS.items():
        name = f"{theme_name}{suffix}"
        if panels:
            _small_multiples(plt, out, results, panels, x, theme, name, width_px)
        if chart_plan["channels"]:
            _scatter(plt, out, results, rows, theme, name, FuncFormatter, width_px)
        if chart_plan["cka"]:
            fig = _heatmap(plt, results, rows, layer_cka, theme, width_px)
            (out / f"cka-{name}.svg").write_bytes(_svg(fig))
            plt.close(fig)


def _small_multiples(plt, out: Path, results, panels, x, theme, name: str, width_px: int) -> None:
    from matplotlib.ticker import MaxNLocator

    columns = 2 if width_px >= 600 else 1
    rows_of_panels = -(-len(panels) // columns)
    # Fixed margins (in inches, so the same at either width): constrained layout measures every
    # label and costs a third of the drawing time.
    panel = 2.3 if columns == 2 else 2.1
    width, height = figure_inches("metrics", width_px, len(panels))
    fig, axes = plt.subplots(rows_of_panels, columns, figsize=(width, height), sharex=True, squeeze=False,
                             gridspec_kw={"left": 0.5 / width, "right": 1 - 0.12 / width, "top": 1 - 0.3 / height,
                                          "bottom": 0.85 / height, "hspace": 0.45 * 2.3 / panel,
                                          "wspace": 0.12 * 10 / width})
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    for ax, (_, title, line, spread, baseline, baseline_label, interval) in zip(axes.ravel(), panels):
        _shade(ax, results, theme)
        if spread is not None and len(spread) == 3:
            ax.fill_between(x, spread[0], spread[2], color="#56B4E9", alpha=0.25, lw=0, label="10-90% of channels")
        elif spread is not None:
            ax.plot(x, spread[0], color="#56B4E9", lw=1, label="90th percentile channel")
        if np.isfinite(interval[0]).any():
            ax.fill_between(x, interval[0], interval[1], color="#3b8fd6", alpha=0.35, lw=0,
                            label="90% interval (jackknife)")
        ax.plot(x, line, color="#3b8fd6", lw=1.8, marker="o", ms=2.5)
        if baseline is not None and np.isfinite(baseline).any():
            ax.plot(x, baseline, color="#D55E00", lw=1, ls="--", label=baseline_label)
        ax.set_title(title, color=theme["fg"], fontsize=_pt("title"))
        ax.tick_params(colors=theme["fg"], labelsize=_pt("tick"))
        ax.tick_params(labelbottom=True)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=10 if columns == 2 else 6))
        ax.yaxis.set_major_locator(MaxNLocator(nbins=4))
        for spine in ax.spines.values():
            spine.set_color(theme["grid"])
        ax.grid(True, color=theme["grid"], lw=0.4)
        if spread is not None or np.isfinite(interval[0]).any() or (baseline is not None and np.isfinite(baseline).any()):
            # A fixed place: matplotlib's search for the "best" one costs a third of a second.
            ax.legend(fontsize=_pt("tick"), frameon=False, labelcolor=theme["fg"], loc="upper left")
    for ax in axes[-1]:
        ax.set_xlabel("conv layer (graph order)", color=theme["fg"], fontsize=_pt("label"))
    said = ["shading: encoder (blue), bottleneck (yellow), decoder (green)"] \
        if any(section is not None for section in profiles.of_layers(results).sections) else []
    if columns == 2:
        said.append("dotted lines: resolution changes")
    if said:
        fig.text(0.5, 0.12 / height, "; ".join(said), color=theme["fg"], fontsize=_pt("tick"), ha="center")
    (out / f"metrics-{name}.svg").write_bytes(_svg(fig))
    plt.close(fig)


def _scatter(plt, out: Path, results, rows, theme, name: str, FuncFormatter, width_px: int) -> None:
    from matplotlib.colors import ListedColormap
    from matplotlib import colormaps

    width, height = figure_inches("channels", width_px)
    fig, ax = plt.subplots(figsize=(width, height), gridspec_kw={
        "left": 0.6 / width, "right": 1 - 0.1 / width, "top": 1 - 0.1 / height, "bottom": 0.55 / height})
    # On the dark background viridis' darkest purples vanish: the dark drawing starts at its blue.
    viridis = colormaps["viridis"]
    cmap = viridis if theme is THEMES["light"] else ListedColormap(viridis(np.linspace(0.3, 1.0, 256)))
    xs, ys, cs = [], [], []
    for r, row in zip(results, rows):
        ntv = np.array([np.nan if v is None else v for v in row["channels"]["ntv"]], float)
        iou = np.array([np.nan if v is None else v for v in row["channels"]["best_iou_focus"]], float)
        keep = np.isfinite(ntv) & np.isfinite(iou)
        xs.append(ntv[keep]); ys.append(iou[keep]); cs.append(np.full(keep.sum(), r.conv.index))
    xs, ys, cs = (np.concatenate(v) if v else np.array([]) for v in (xs, ys, cs))
    if xs.size:
        points = ax.scatter(xs, ys, c=cs, cmap=cmap, s=6 if width_px >= 600 else 4, alpha=0.6, rasterized=True, lw=0)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))  # no mathtext
        bar = fig.colorbar(points, ax=ax, pad=0.02)
        bar.set_label("conv layer", color=theme["fg"], fontsize=_pt("label"))
        bar.ax.tick_params(colors=theme["fg"], labelsize=_pt("tick"))
    ax.set_xlabel("nTV per input pixel (log)" + (": high = edges and texture" if width_px >= 600 else ""),
                  color=theme["fg"], fontsize=_pt("label"))
    ax.set_ylabel(f"best IoU with the {_focus(rows)} mask", color=theme["fg"], fontsize=_pt("label"))
    ax.tick_params(colors=theme["fg"], labelsize=_pt("tick"))
    for spine in ax.spines.values():
        spine.set_color(theme["grid"])
    (out / f"channels-{name}.svg").write_bytes(_svg(fig))
    plt.close(fig)
