"""Findings: plain sentences computed from the statistics, including when they contradict the claim."""

from __future__ import annotations

import math

import numpy as np

CLAIM_LAYER = 43  # the original author: maps look "more like the mask" around conv layer 43 of 51
PEAK_SHARE = 0.9


def _first_reaching(values: list[float], share: float) -> tuple[int, float] | None:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None
    peak = max(finite)
    for i, v in enumerate(values):
        if math.isfinite(v) and v >= share * peak:
            return i, peak
    return None


def _argmax(values: list[float]) -> int | None:
    finite = [(v, i) for i, v in enumerate(values) if math.isfinite(v)]
    return max(finite)[1] if finite else None


def compute(report, chance: float = float("nan")) -> list[str]:
    """Sentences with the numbers behind them; a sentence is left out when its numbers are undefined."""
    results, records = report.layers, report.records
    if not results:
        return []
    sentences = []
    names = [f"conv {r.conv.index} ({r.conv.qualified_name})" for r in results]
    probe = [float(r.probe_iou[0]) for r in results]
    rgb = [float(r.rgb_probe_iou[0]) for r in results]
    best_iou = [r.stats.iou_summary(0)[0] for r in results]
    cka_mask = [r.stats.cka_mask for r in results]
    ntv = [r.stats.ntv_median for r in results]
    source = "the model's own prediction" if any(r.mask_is_prediction for r in records) else "the ground-truth trimap"

    reached = _first_reaching(probe, PEAK_SHARE)
    if reached and reached[1] > 0:
        i, peak = reached
        top = _argmax(probe)
        baseline = np.nanmax(rgb) if np.isfinite(rgb).any() else float("nan")
        sentences.append(
            f"A linear probe decodes the pet from the features at IoU {peak:.2f} at best ({names[top]}); "
            f"it first reaches {PEAK_SHARE:.0%} of that at {names[i]}. The same probe on raw RGB reaches "
            f"{baseline:.2f}, so the layers add {peak - baseline:+.2f} of decodability over the pixels.")
    top_channel = _argmax(best_iou)
    if top_channel is not None:
        sentences.append(
            f"The most mask-like single channel is in {names[top_channel]}: thresholded at the pet's own "
            f"area it overlaps the pet with IoU {best_iou[top_channel]:.2f} (mask: {source}).")
    finite_ntv = [(i, v) for i, v in enumerate(ntv) if math.isfinite(v)]
    if len(finite_ntv) >= 6:
        early = np.median([v for _, v in finite_ntv[:5]])
        late = np.median([v for _, v in finite_ntv[-6:-1]])
        direction = "falls" if late < early else "rises"
        sentences.append(
            f"Detail versus abstraction: the median normalised total variation {direction} from {early:.3f} per "
            f"input pixel in the first five conv layers to {late:.3f} in the last five before the head "
            f"(characteristic length {1 / early:.0f} to {1 / late:.0f} input pixels).")
    sentences.extend(_class_findings(results, names, chance, len(records)))
    if len(results) >= CLAIM_LAYER:
        idx = CLAIM_LAYER - 1
        maskness = [c for c in cka_mask]
        peak_i = _argmax(maskness)
        first = _first_reaching(maskness, PEAK_SHARE)
        if peak_i is not None and first is not None and math.isfinite(maskness[idx]):
            holds = maskness[idx] >= PEAK_SHARE * maskness[peak_i]
            verdict = "holds" if holds else "does not hold"
            sentences.append(
                f"The original claim, 'mask-like around conv layer {CLAIM_LAYER}', {verdict} here by linear CKA "
                f"with the mask: conv {CLAIM_LAYER} scores {maskness[idx]:.2f} against a peak of "
                f"{maskness[peak_i]:.2f} at {names[peak_i]}; the first layer within {PEAK_SHARE:.0%} of the "
                f"peak is {names[first[0]]}.")
    return sentences


def _class_findings(results, names: list[str], chance: float, images: int) -> list[str]:
    """Where the class of labelled images becomes linearly decodable from the pooled features."""
    accuracy = [float(r.class_accuracy) for r in results]
    top = _argmax(accuracy)
    if top is None:
        return []
    sentences = []
    peak = accuracy[top]
    first = next((i for i, v in enumerate(accuracy) if math.isfinite(v) and v >= PEAK_SHARE * peak), top)
    beats = peak > chance if math.isfinite(chance) else True
    sentences.append(
        f"A linear probe on each layer's globally pooled features, tested on images it never saw, decodes the "
        f"class at accuracy {peak:.2f} at best ({names[top]}), against {chance:.2f} for always guessing the most "
        f"common class; it first reaches {PEAK_SHARE:.0%} of that at {names[first]}."
        + ("" if beats else " No layer beats chance on these images.")
        + (f" With {images} images this is a coarse estimate." if images < 30 else ""))
    cka_class = [float(r.stats.cka_label) for r in results]
    best = _argmax(cka_class)
    if best is not None:
        sentences.append(f"Linear CKA with the one-hot class is highest at {names[best]} ({cka_class[best]:.2f}).")
    return sentences
