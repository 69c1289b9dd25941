"""The index's first screen: what the report found, as answers to the questions a reader comes with.

- Where does the representation become the mask (or the class)? The probe's decodability across
  depth, as a small curve with its 90% band, and the finding's sentence.
- Which layers does the decision depend on? The ablation check's sentence.
- Which layer's explanation to trust? The localisation and sanity sentences and a scoreboard of the
  best hidden layers.
Each answer is there only where the build measured what it needs; the sentences are the findings'
(findings.py), so the first screen and the findings never disagree.
"""

from __future__ import annotations

import math

from reportgen import findings
from reportgen.prose import fmt, fmt_interval

CURVE = (320, 56)  # the decodability curve's plot area, CSS pixels
BOARD = 3  # layers on the explanation scoreboard
NAN_PAIR = (float("nan"), float("nan"))


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


def _board(description) -> list[dict]:
    """The hidden layers whose Grad-CAM falls most on the focus class, those that pass the sanity check first."""
    hidden = [r for r in description.layers if not r.conv.is_output and r.stats is not None
              and math.isfinite(r.stats.value("cam_mass_focus"))]
    kept = {id(r) for r in hidden if r.stats.value("sanity_rank") >= findings.SANITY_KEPT}
    ranked = sorted(hidden, key=lambda r: (id(r) in kept, -r.stats.value("cam_mass_focus")))[:BOARD]

    def shown(r, key):
        value = r.stats.value(key)
        return fmt_interval(value, r.stats.interval(key)) if math.isfinite(value) else "not measured"

    return [{"name": f"conv {r.conv.index} ({r.conv.qualified_name})", "href": f"layers/{r.slug}.html",
             "mass": shown(r, "cam_mass_focus"), "sanity": shown(r, "sanity_rank"),
             "faithfulness": shown(r, "faithfulness"), "passes": id(r) not in kept} for r in ranked]


def answers(description, chance: float = float("nan")) -> list[dict]:
    """The questions this build can answer: question, its answer in sentences, and a curve or a board."""
    layers = description.layers
    if not layers or layers[0].stats is None:
        return []
    hidden = [r for r in layers if not r.conv.is_output] or list(layers)
    name = {id(r): f"conv {r.conv.index} ({r.conv.qualified_name})" for r in layers}
    heads = [r for r in layers if r.conv.is_output]
    classes = description.mask_classes
    found = []
    probe = findings.probe_findings(hidden, heads, name, classes)
    if probe:
        focus = classes.focus
        found.append({"question": f"Where does the representation become the {classes.focus_name}'s mask?",
                      "text": probe[:1],
                      "curve": _curve([float(r.probe_iou[focus]) for r in layers],
                                      [r.intervals.get("probe_iou_focus", NAN_PAIR) for r in layers],
                                      "Probe IoU with the mask")})
    decoded = findings.class_findings(hidden, name, chance, layers[0].stats.images)
    if decoded:
        found.append({"question": "Where does it become the class?", "text": decoded[:1],
                      "curve": _curve([float(r.class_accuracy) for r in layers],
                                      [r.intervals.get("class_probe_accuracy", NAN_PAIR) for r in layers],
                                      "Class probe accuracy")})
    ablated = findings.attribution_findings(hidden, name)
    if ablated:
        found.append({"question": "Which layers does the decision depend on?", "text": ablated[:2]})
    trusted = findings.explanation_findings(hidden, name, description)
    if trusted:
        found.append({"question": "Which layer's explanation to trust?", "text": trusted[::-1],
                      "board": _board(description) if description.localisation_baselines else []})
    return [{"curve": None, "board": [], **answer} for answer in found]

