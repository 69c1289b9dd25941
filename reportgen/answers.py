"""The index's first screen: what the report found, as short answers to the questions a reader comes
with, each a line with its numbers and intervals (the findings below say them in full).

- Where does the representation become the mask, or the class? The hidden layer from which a linear
  probe decodes it at 90% of its best, and a curve of the probe across depth with its 90% band.
- Which layers does the decision depend on? Where removing the most important channels costs most.
- Which layer's explanation to trust? The hidden layer whose Grad-CAM falls most on the focus class
  among those that pass the sanity check, and a scoreboard of the best three.
- The pictured images, small, each a link to its page.
An answer is there only where the build measured what it needs.
"""

from __future__ import annotations

import math

from reportgen.findings import PEAK_SHARE, first_reaching, hidden_layers, trusted_explanations
from reportgen.prose import fmt, fmt_interval

CURVE = (320, 56)  # the decodability curve's plot area, CSS pixels
BOARD = 3  # layers on the explanation scoreboard
NAN_PAIR = (float("nan"), float("nan"))


def _name(r) -> str:
    return f"conv {r.conv.index} ({r.conv.qualified_name})"


def _curve(values: list[float], intervals: list[tuple[float, float]], label: str) -> dict | None:
    """A polyline and its interval band over conv index, on a 0-1 scale (probe IoU, accuracy)."""
    defined = [k for k, v in enumerate(values) if math.isfinite(v)]
    if len(defined) < 2:
        return None
    width, height = CURVE
    last = max(len(values) - 1, 1)

    def point(k, v):
        return f"{width * k / last:.1f},{height * (1 - min(max(v, 0.0), 1.0)):.1f}"

    line = " ".join(point(k, values[k]) for k in defined)
    banded = [k for k in defined if all(map(math.isfinite, intervals[k]))]
    band = " ".join([point(k, intervals[k][1]) for k in banded] + [point(k, intervals[k][0]) for k in reversed(banded)])
    peak = max(defined, key=lambda k: values[k])
    return {"line": line, "band": band if len(banded) > 1 else "", "width": width, "height": height,
            "label": f"{label} across the {len(values)} conv layers, highest {fmt(values[peak])} at conv {peak + 1}"}


def _decodable(layers, hidden, value, interval, label: str, what: str, baseline: str) -> dict | None:
    """Where `what` becomes linearly decodable: the first hidden layer at 90% of the best, and the curve."""
    values = [float(value(r)) for r in hidden]
    reached = first_reaching(values, PEAK_SHARE)
    if reached is None or reached[1] <= 0:
        return None
    first, peak = reached
    top = max((k for k, v in enumerate(values) if math.isfinite(v)), key=lambda k: values[k])
    text = (f"From {_name(hidden[first])} on: a linear probe decodes {what} at {PEAK_SHARE:.0%} of its best, "
            f"{fmt_interval(peak, interval(hidden[top]))} at {_name(hidden[top])}{baseline}.")
    return {"text": [text], "curve": _curve([float(value(r)) for r in layers], [interval(r) for r in layers], label)}


def _decision(hidden) -> dict | None:
    checked = [r for r in hidden if r.ablation]
    if not checked:
        return None
    worst = max(checked, key=lambda r: r.ablation["top_k_drop"][0])
    found = worst.ablation
    drop, random = found["top_k_drop"], found["random_k_drop"]
    return {"question": "Which layers does the decision depend on?",
            "text": [f"Most on {_name(worst)}: removing its {found['k']} most important channels lowers the "
                     f"{found['metric']} by {fmt_interval(drop[0], drop[1:])}; {found['k']} random ones, by "
                     f"{fmt_interval(random[0], random[1:])} ({found['images']} images)."]}


def _trusted(hidden, description) -> dict | None:
    baselines = description.localisation_baselines
    ranked, _ = trusted_explanations(hidden)
    if not (baselines and ranked):
        return None
    best, focus = ranked[0], description.mask_classes.focus_name
    rank = best.stats.value("sanity_rank")
    checked = (f"; its map changes when the layers after it are random (ρ {fmt_interval(rank, best.stats.interval('sanity_rank'))})"
               if math.isfinite(rank) else "")
    text = (f"{_name(best)}: {fmt_interval(best.stats.value('cam_mass_focus'), best.stats.interval('cam_mass_focus'))} "
            f"of its Grad-CAM lies on the {focus}, against {baselines['uniform']['value']:.2f} for a uniform map "
            f"and {baselines['edges_mass']['value']:.2f} for the image's edges{checked}.")

    def shown(r, key):
        value = r.stats.value(key)
        return fmt_interval(value, r.stats.interval(key)) if math.isfinite(value) else "–"

    board = [{"name": _name(r), "href": f"layers/{r.slug}.html", "mass": shown(r, "cam_mass_focus"),
              "sanity": shown(r, "sanity_rank"), "faithfulness": shown(r, "faithfulness")} for r in ranked[:BOARD]]
    return {"question": "Which layer's explanation to trust?", "text": [text], "board": board}


def answers(description, chance: float = float("nan"), images: list[dict] | None = None) -> list[dict]:
    """The questions this build can answer: each a question, its answer in a line or two, and a curve, a
    scoreboard or the pictured images (`pages.image_views`)."""
    layers = description.layers
    if not layers or layers[0].stats is None:
        return []
    hidden = hidden_layers(layers)
    classes = description.mask_classes
    focus = classes.focus
    found = []
    rgb = [r for r in hidden if math.isfinite(r.rgb_probe_iou[focus])]
    best_rgb = max(rgb, key=lambda r: r.rgb_probe_iou[focus]) if rgb else None
    mask = _decodable(layers, hidden, lambda r: r.probe_iou[focus],
                      lambda r: r.intervals.get("probe_iou_focus", NAN_PAIR), "Probe IoU with the mask",
                      f"the {classes.focus_name}'s mask",
                      f"; on raw RGB at best {fmt_interval(best_rgb.rgb_probe_iou[focus], best_rgb.intervals.get('rgb_probe_iou_focus', NAN_PAIR))}"
                      if best_rgb is not None else "")
    if mask:
        found.append({"question": f"Where does the representation become the {classes.focus_name}'s mask?", **mask})
    decoded = _decodable(layers, hidden, lambda r: r.class_accuracy,
                         lambda r: r.intervals.get("class_probe_accuracy", NAN_PAIR), "Class probe accuracy",
                         "the class", f"; always guessing the commonest class: {chance:.2f}" if math.isfinite(chance) else "")
    if decoded:
        found.append({"question": "Where does it become the class?", **decoded})
    for answer in (_decision(hidden), _trusted(hidden, description)):
        if answer:
            found.append(answer)
    if images:
        found.append({"question": "The pictured images", "text": [], "images": images})
    return [{"curve": None, "board": [], "images": [], **answer} for answer in found]
