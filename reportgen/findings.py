"""Findings: plain sentences computed from the statistics, each number with its 90% interval.

Peaks and "first reaches" are found among the hidden layers; the head, whose output is the
prediction itself, is reported apart. Where two intervals overlap, a finding says it cannot tell.
"""

from __future__ import annotations

import math

import numpy as np

PEAK_SHARE = 0.9
NAN_PAIR = (float("nan"), float("nan"))


def first_reaching(values: list[float], share: float) -> tuple[int, float] | None:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None
    peak = max(finite)
    for i, v in enumerate(values):
        if math.isfinite(v) and v >= share * peak:
            return i, peak
    return None


def hidden_layers(results) -> list:
    """The layers peaks are found among: every conv but the head, whose output is the prediction itself."""
    return [r for r in results if not r.conv.is_output] or list(results)


def _argmax(values: list[float]) -> int | None:
    finite = [(v, i) for i, v in enumerate(values) if math.isfinite(v)]
    return max(finite)[1] if finite else None


def with_interval(value: float, interval: tuple[float, float]) -> str:
    """'0.46 (0.40-0.52)': a number and its 90% interval, or the number alone when that is undefined."""
    low, high = interval
    if math.isfinite(low) and math.isfinite(high):
        return f"{value:.2f} ({low:.2f}-{high:.2f})"
    return f"{value:.2f}"


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return not (a[1] < b[0] or b[1] < a[0]) if all(map(math.isfinite, (*a, *b))) else True


class _Series:
    """One per-layer statistic over the hidden layers, with its intervals."""

    def __init__(self, layers, value, interval):
        self.layers = layers
        self.values = [float(value(r)) for r in layers]
        self.intervals = [interval(r) for r in layers]


def compute(description, chance: float = float("nan")) -> list[str]:
    """Sentences with the numbers behind them (`description`: a describe.Description); a sentence is
    left out when its numbers are undefined."""
    results, records = description.layers, description.records
    if not results:
        return []
    hidden = hidden_layers(results)
    heads = [r for r in results if r.conv.is_output]
    name = {id(r): f"conv {r.conv.index} ({r.conv.qualified_name})" for r in results}
    images = results[0].stats.images
    sentences = []
    if images > len(records):
        sentences.append(f"The statistics cover {images} images of the source, of which {len(records)} are "
                         "pictured; the probes are scored on all of them, each image held out of its fold's fit. "
                         f"The ranges are 90% intervals from a delete-one-fold jackknife over {images} images.")
    elif images:
        sentences.append(f"Every number below covers {images} images; the ranges are 90% intervals from a "
                         f"delete-one-fold jackknife over the {images} images.")
    classes = description.mask_classes
    focus, focus_name = classes.focus, classes.focus_name
    sentences += probe_findings(hidden, heads, name, classes)
    source = "the model's own prediction" if any(r.mask_is_prediction for r in records) else "the ground-truth mask"
    best = _Series(hidden, lambda r: r.stats.iou_summary(focus)[0], lambda r: r.stats.interval("best_iou_focus_max"))
    top = _argmax(best.values)
    if top is not None:
        sentences.append(
            f"The most mask-like single channel of the hidden layers is in {name[id(hidden[top])]}: thresholded at "
            f"the {focus_name}'s own area it overlaps the {focus_name} with IoU "
            f"{with_interval(best.values[top], best.intervals[top])} (mask: {source}).")
    ntv = [(r, float(r.stats.ntv_median)) for r in hidden if math.isfinite(r.stats.ntv_median)]
    if len(ntv) >= 6:
        early = float(np.median([v for _, v in ntv[:5]]))
        late = float(np.median([v for _, v in ntv[-5:]]))
        direction = "falls" if late < early else "rises"
        sentences.append(
            f"Detail versus abstraction: the median normalised total variation {direction} from {early:.3f} per "
            f"input pixel in the first five conv layers to {late:.3f} in the last five hidden ones "
            f"(characteristic length {1 / early:.0f} to {1 / late:.0f} input pixels).")
    sentences.extend(class_findings(hidden, name, chance, images))
    sentences.extend(_claim(results, hidden, name))
    sentences.extend(attribution_findings(hidden, name))
    sentences.extend(explanation_findings(hidden, name, description))
    return sentences


SANITY_KEPT = 0.7  # a rank correlation at or above this: the map hardly changed (the layer page's words)


def trusted_explanations(hidden) -> tuple[list, list]:
    """The hidden layers whose Grad-CAM was localised, those that pass the sanity check first, each group
    by its map's mass on the focus class, largest first; and those that fail it (their map hardly changes
    when every layer after them is random)."""
    localised = [r for r in hidden if r.stats is not None and math.isfinite(r.stats.value("cam_mass_focus"))]
    kept = [r for r in hidden if r.stats is not None and r.stats.value("sanity_rank") >= SANITY_KEPT]
    failing = {id(r) for r in kept}
    ranked = sorted(localised, key=lambda r: (id(r) in failing, -r.stats.value("cam_mass_focus")))
    return ranked, kept


def explanation_findings(hidden, name, description) -> list[str]:
    """Which hidden layer's Grad-CAM to trust: where it falls on the focus class against the baselines,
    and whether it survives randomising the layers that make the decision (the head's map is made
    from the prediction's own pixels, so it is left out)."""
    measured = [r for r in hidden if r.stats is not None]
    sentences = []
    sanity = [r for r in measured if math.isfinite(r.stats.value("sanity_rank"))]
    ranked, kept = trusted_explanations(hidden)
    if sanity:
        images = description.sanity.get("images", 0)
        listed = ", ".join(f"conv {r.conv.index}" for r in kept[:8]) + (", ..." if len(kept) > 8 else "")
        sentences.append(
            f"Sanity check of Grad-CAM on {images} pictured images: randomising every layer after a layer's group "
            f"leaves the map of {len(kept)} of the {len(sanity)} layers checked nearly unchanged (rank correlation "
            f"{SANITY_KEPT} or more{': ' + listed if kept else ''}); those maps show the layer's own structure more "
            "than the decision.")
    baselines = description.localisation_baselines
    if not (baselines and ranked):
        return sentences
    focus = description.mask_classes.focus_name
    edges = baselines["edges_mass"]["value"]
    best, passing = ranked[0], [r for r in ranked if r not in kept]
    above = [r for r in ranked if r.stats.interval("cam_mass_focus")[0] > edges]
    text = (f"Grad-CAM on the {focus}: {name[id(best)]} puts the largest share of its map's mass on the {focus}"
            f"{' among the layers that pass the sanity check' if sanity and passing else ''}, "
            f"{with_interval(best.stats.value('cam_mass_focus'), best.stats.interval('cam_mass_focus'))}, against "
            f"{baselines['uniform']['value']:.2f} for a uniform map and {edges:.2f} for the image's own edges; "
            f"{len(above)} of the {len(ranked)} layers localise better than the edges (the interval above them).")
    sentences.append(text)
    return sentences


def attribution_findings(hidden, name) -> list[str]:
    """What the ablation check found: where removing the most important channels costs most, and how
    often the Taylor ranking beat random channels and predicted single channels' effects."""
    checked = [r for r in hidden if r.ablation]
    if not checked:
        return []
    worst = max(checked, key=lambda r: r.ablation["top_k_drop"][0])
    passes = checked[0].ablation["forward_passes"]
    cost = (f" (all {checked[0].ablation['layers']} layers for the work of {passes:,.0f} forward passes of one image, "
            f"{passes / checked[0].ablation['images']:,.0f} an image)")
    sentences = [f"Removing channels, checked on {checked[0].ablation['images']} statistics images{cost}: the costliest "
                 f"layer to lose its {worst.ablation['k']} most important channels is {name[id(worst)]}. "
                 + worst.ablation["sentences"][0]]
    beaten = [r for r in checked if math.isfinite(r.ablation["gap"][1]) and r.ablation["gap"][1] > 0]
    worse = [r for r in checked if math.isfinite(r.ablation["gap"][2]) and r.ablation["gap"][2] < 0]
    sentences.append(f"On {len(beaten)} of the {len(checked)} layers checked, removing the channels the Taylor "
                     f"ranking calls most important costs more than removing as many random ones (the 90% interval of "
                     f"the gap is above 0); on {len(worse)} it costs less; on the others the two cannot be told apart.")
    correlated = [(r, r.ablation["spearman"]) for r in checked if r.ablation.get("spearman") is not None]
    if correlated:
        values = [rho for _, rho in correlated]
        low = min(correlated, key=lambda pair: pair[1])
        sentences.append(f"Where every channel was removed alone ({len(correlated)} layers), the Taylor estimate and "
                         f"the measured change of the target have a median rank correlation of "
                         f"{float(np.median(values)):.2f}, lowest at {name[id(low[0])]} ({low[1]:.2f}).")
    return sentences


def probe_findings(hidden, heads, name, classes) -> list[str]:
    focus = classes.focus
    probe = _Series(hidden, lambda r: r.probe_iou[focus], lambda r: r.intervals.get("probe_iou_focus", NAN_PAIR))
    reached = first_reaching(probe.values, PEAK_SHARE)
    if not reached or reached[1] <= 0:
        return []
    first, peak = reached
    top = _argmax(probe.values)
    rgb = _Series(hidden, lambda r: r.rgb_probe_iou[focus],
                  lambda r: r.intervals.get("rgb_probe_iou_focus", NAN_PAIR))
    sentences = []
    text = (f"A linear probe (class-balanced decision) decodes the {classes.focus_name} from a hidden layer's "
            f"features at IoU {with_interval(peak, probe.intervals[top])} at best ({name[id(hidden[top])]}); it first reaches "
            f"{PEAK_SHARE:.0%} of that at {name[id(hidden[first])]}.")
    base = _argmax(rgb.values)
    if base is not None:
        baseline, interval = rgb.values[base], rgb.intervals[base]
        if _overlap(probe.intervals[top], interval):
            verdict = "the two cannot be told apart on these images"
        else:
            verdict = f"so the layers add {peak - baseline:+.2f} of decodability over the pixels"
        text += f" The same probe on raw RGB reaches {with_interval(baseline, interval)}: {verdict}."
    sentences.append(text)
    for head in heads:
        if math.isfinite(head.probe_iou[focus]):
            score = with_interval(float(head.probe_iou[focus]), head.intervals.get("probe_iou_focus", NAN_PAIR))
            sentences.append(f"The head, {name[id(head)]}, is the prediction itself and is left out of these peaks; "
                             f"the probe on it scores {score}.")
    return sentences


def class_findings(hidden, name, chance: float, images: int) -> list[str]:
    """Where the class of labelled images becomes linearly decodable from the pooled features."""
    accuracy = _Series(hidden, lambda r: r.class_accuracy, lambda r: r.intervals.get("class_probe_accuracy", NAN_PAIR))
    top = _argmax(accuracy.values)
    if top is None:
        return []
    peak = accuracy.values[top]
    first = next((i for i, v in enumerate(accuracy.values) if math.isfinite(v) and v >= PEAK_SHARE * peak), top)
    low = accuracy.intervals[top][0]
    if math.isfinite(chance) and math.isfinite(low):
        beats = " (its interval is above chance)" if low > chance else "; its interval includes chance, so it cannot tell"
    else:
        beats = ""
    sentences = [
        f"A linear probe on each layer's globally pooled features, tested on images it never saw, decodes the "
        f"class at accuracy {with_interval(peak, accuracy.intervals[top])} at best ({name[id(hidden[top])]}), "
        f"against {chance:.2f} for always guessing the most common class{beats}; it first reaches "
        f"{PEAK_SHARE:.0%} of that at {name[id(hidden[first])]}."
        + (f" With {images} images this is a coarse estimate." if images < 30 else "")]
    cka_class = _Series(hidden, lambda r: r.stats.cka_class, lambda r: r.stats.interval("cka_class"))
    best = _argmax(cka_class.values)
    if best is not None:
        sentences.append(f"Linear CKA with the one-hot class is highest at {name[id(hidden[best])]} "
                         f"({with_interval(cka_class.values[best], cka_class.intervals[best])}).")
    return sentences


def _claim(results, hidden, name) -> list[str]:
    """The original author's 'mask-like around conv layer 43', tested by linear CKA with the mask: a
    claim about the shipped SD-UNet, made for no other model."""
    from reportgen.profiles import of_layers

    CLAIM_LAYER = of_layers(results).claim_layer  # noqa: N806  (the claim's own number, as it is written)
    if CLAIM_LAYER is None or len(results) < CLAIM_LAYER:
        return []
    claimed = results[CLAIM_LAYER - 1]
    cka = _Series(hidden, lambda r: r.stats.cka_mask, lambda r: r.stats.interval("cka_mask"))
    top = _argmax(cka.values)
    first = first_reaching(cka.values, PEAK_SHARE)
    value, interval = float(claimed.stats.cka_mask), claimed.stats.interval("cka_mask")
    if top is None or first is None or not math.isfinite(value):
        return []
    peak, peak_interval = cka.values[top], cka.intervals[top]
    bar = (PEAK_SHARE * peak_interval[0], PEAK_SHARE * peak_interval[1])
    if all(map(math.isfinite, (*interval, *bar))):
        if interval[0] >= bar[1]:
            verdict = "holds"
        elif interval[1] < bar[0]:
            verdict = "does not hold"
        else:
            verdict = "cannot be decided (the intervals overlap)"
    else:
        verdict = "holds" if value >= PEAK_SHARE * peak else "does not hold"
    return [f"The original claim, 'mask-like around conv layer {CLAIM_LAYER}', {verdict} here by linear CKA with the "
            f"mask: conv {CLAIM_LAYER} scores {with_interval(value, interval)} against a peak among the hidden layers "
            f"of {with_interval(peak, peak_interval)} at {name[id(hidden[top])]}, where {PEAK_SHARE:.0%} of the peak "
            f"is {PEAK_SHARE * peak:.2f}; the first hidden layer within {PEAK_SHARE:.0%} of the peak is "
            f"{name[id(hidden[first[0]])]}."]
