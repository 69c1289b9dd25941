"""Numbers and the pages' short sentences, as people read them.

The findings' longer sentences are in `findings`; everything here is a plain function of plain
values, so a page's wording is tested without building a site.
"""

from __future__ import annotations

import math

FITTED = {"stretch": "stretched", "crop": "cropped", "pad": "padded"}
METRIC_LABELS = (("pet_iou", "Pet IoU"), ("background_iou", "Background IoU"), ("border_iou", "Border IoU"),
                 ("mean_iou", "Mean IoU (3 classes)"), ("pixel_accuracy", "Pixel accuracy"))


def fmt(value, digits: int = 3) -> str:
    """Numbers for people: NaN is 'undefined', never a silent 0."""
    if value is None:
        return "undefined"
    value = float(value)
    if math.isnan(value):
        return "undefined"
    if math.isinf(value):
        return "whole input"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def fmt_interval(value, interval) -> str:
    """A number with its 90% interval, '0.753 (0.701 to 0.804)', or the number alone when undefined."""
    low, high = interval
    if math.isfinite(low) and math.isfinite(high) and math.isfinite(float(value)):
        return f"{fmt(value)} ({fmt(low)} to {fmt(high)})"
    return fmt(value)


def class_list(names, limit: int = 20) -> str:
    """'a, b, c and 5 more': at most `limit` names."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def other_inputs_note(card) -> str:
    """What the report fed to a multi-input model's other inputs (describe.ModelCard), said on the index."""
    if not card.other_inputs:
        return ""
    left_out = (f"; {len(card.unfed_convs)} conv layer calls that this input does not reach are left out: "
                f"{class_list(card.unfed_convs)}") if card.unfed_convs else ""
    return (f" (input {card.image_input!r}; the other inputs, {', '.join(map(repr, card.other_inputs))}, "
            f"were fed zeros{left_out})")


def reshaped_note(original_sizes, height: int, width: int, fit: str) -> str:
    """How many images had another aspect ratio than the model's input, and what was done to them."""
    fitted = [size for size in original_sizes if size is not None]
    reshaped = sum(1 for h, w in fitted if abs(w / h - width / height) > 0.01)
    if not reshaped:
        return ""
    return f"{reshaped} of the {len(fitted)} images had another aspect ratio and were {FITTED[fit]} to fit."


def card_metrics(card: dict) -> dict[str, str]:
    """The shipped model's evaluation, labelled for people."""
    metrics = card.get("metrics", {})
    if not metrics:
        return {}
    where = f" (synthetic_pets test, {metrics.get('images', '?')} images)"
    shown = {label + where: f"{metrics[key]:.3f}" for key, label in METRIC_LABELS if key in metrics}
    if card.get("wall_time_s"):
        shown["Training time"] = f"{card['wall_time_s'] / 60:.0f} min on 2 CPU cores, {card.get('epochs_run')} epochs"
    return shown


def tap_note(tap: str) -> str:
    return ("conv output (before normalisation and activation)" if tap == "conv"
            else "block output after normalisation and activation")


def depth_note(shape: tuple[int, ...]) -> str:
    """How a layer page pictures a conv that is not 2-D."""
    if len(shape) == 4:
        return f"3-D conv: each tile is the middle depth slice, {shape[0] // 2 + 1} of {shape[0]}."
    if len(shape) == 2:
        return "1-D conv: one row per channel, position along the row (a channel-by-position heat strip)."
    return ""


def class_accuracy_text(accuracy: float, interval, chance: float) -> str:
    return f"{fmt_interval(accuracy, interval)} (chance {fmt(chance)})"
