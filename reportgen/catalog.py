"""The catalog of statistics: every per-layer number the accumulator finalises, defined once.

Each row says what the number is (key, label, one-line definition), where it lives (per layer or per
channel), its range (which decides the scale its jackknife interval is computed on), how it is
printed, what it needs (a mask, image classes, a target for gradients), and where it appears in the
downloads (its stats.json key, its layers.csv column, how it is read back from a stats.json row).
stats.json, layers.csv, the layer table and pages, the architecture map, compare and about.html
iterate these rows, so a new statistic is one row here and one term in the accumulator (`stats._numbers`).

No TensorFlow and no reportgen imports: every layer of the package may read it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

UNIT = (0.0, 1.0)  # IoU, accuracy, CKA, shares
SIGNED_UNIT = (-1.0, 1.0)  # correlations
POSITIVE = (0.0, float("inf"))  # std, nTV
ANY = (float("-inf"), float("inf"))

SANITY_STAGES = 4  # the Grad-CAM sanity check's randomisation steps by default (--sanity-stages)
TOP_IMPORTANT = 8  # the channels whose share of a layer's importance is reported, and that ablation removes
NEAR_ZERO = 1e-3  # |a| below this counts as near zero
PROBE_RIDGE = 1e-1  # the ridge of the mask and class probes, on standardised features
POOL_GRID = 20  # CKA, probes and covariance work on maps pooled to at most this grid
MAX_FOLDS = 10  # the probes' and the jackknife's folds: min(MAX_FOLDS, images)
CKA_GRID = 5  # layer x layer CKA compares every layer on one common grid
EXAMPLES = 6  # dataset examples kept per channel
INTERVAL_LEVEL = 0.9

LAYER, CHANNEL = "layer", "channel"
BETWEEN = "between"  # a layer compared with another build's or model's (representation.py), from fingerprints
STATISTICS_IMAGES, PICTURED_IMAGES = "statistics images", "pictured images"  # where a number is measured
NEEDS = {"": "nothing", "mask": "a mask", "classes": "image classes", "target": "gradients of a target",
         "sanity": "the sanity check (with --stats-images)", "faithfulness": "--faithfulness-images"}


def needs_text(needs: str) -> str:
    """What a row needs, in words; several needs are joined by "+" (`layer_table.has`)."""
    return " and ".join(NEEDS[part] for part in needs.split("+"))


def focus_class(row: dict) -> str:
    """The class a stats.json row's headline mask numbers are about (rows before it was recorded: the pet)."""
    return row.get("focus_class", "pet")


def transform(bounds: tuple[float, float]) -> str:
    """The scale a statistic's interval is computed on, so that it never leaves the range."""
    low, high = bounds
    if math.isfinite(low) and math.isfinite(high):
        return "logit"
    return "log" if math.isfinite(low) else "none"


@dataclass(frozen=True)
class Statistic:
    """One number of the report. `label` and `definition` may name "{focus}", the focus class."""

    key: str  # its name in LayerStats.numbers and in stats.json's `intervals_90`
    label: str  # as the layer page names it
    bounds: tuple[float, float]  # its range: its interval never leaves it
    needs: str = ""  # "mask", "classes" or "target": shown only where the build has one
    definition: str = ""  # one line, for the page's row and about.html
    scope: str = LAYER
    digits: int = 3  # significant digits on the pages
    json: str | None = None  # its top-level key in a stats.json row; None: written inside another field
    csv: str | None = None  # its layers.csv column; None: not a column
    csv_interval: bool = True  # whether layers.csv also has its interval (`<csv>_low`, `<csv>_high`)
    read: Callable[[dict], object] | None = None  # its value from a stats.json row, where `json` is None
    column: tuple[str, str, str] | None = None  # (key, table heading, map label) in the layer table and the
    # architecture map; None: not there
    tracked: str = ""  # its name in a build-to-build comparison; "": not compared
    measured_on: str = STATISTICS_IMAGES  # the accumulator's (stats._numbers), or the sanity check's on the
    # pictured images (reportgen.sanity)

    def label_for(self, classes) -> str:
        return self.label.format(focus=classes.focus_name)

    def definition_for(self, classes) -> str:
        return self.definition.format(focus=classes.focus_name)

    @property
    def transform(self) -> str:
        return transform(self.bounds)

    def from_record(self, row: dict):
        """Its value in a stats.json row (None where the row does not have it)."""
        if self.read is not None:
            return self.read(row)
        return row.get(self.json or self.key)


def _focus_iou(field: str):
    return lambda row: row["best_channel_iou"][focus_class(row)][field]


STATISTICS = (
    Statistic("cka_mask", "Linear CKA with the mask", UNIT, "mask",
              "centred linear CKA of the pooled pixels' features with the one-hot mask",
              json="cka_mask", csv="cka_mask", column=("cka", "CKA mask", "Linear CKA with the mask"), tracked="CKA with mask"),
    Statistic("best_iou_focus_max", "Best single-channel IoU, {focus} (max)", UNIT, "mask",
              "the best channel's IoU with the {focus} at an area-matched threshold",
              csv="best_channel_iou_focus_max", read=_focus_iou("max"), column=("iou", "Best ch. IoU", "Best channel IoU with the {focus}"),
              tracked="best channel IoU (focus class)"),
    Statistic("best_iou_focus_p90", "Best single-channel IoU, {focus} (p90)", UNIT, "mask",
              "the 90th percentile over channels of that IoU",
              csv="best_channel_iou_focus_p90", read=_focus_iou("p90"), csv_interval=False),
    Statistic("best_iou_focus_share_above_half", "Best single-channel IoU, {focus} (share of channels > 0.5)",
              UNIT, "mask", "the share of channels whose IoU with the {focus} is above 0.5",
              csv="best_channel_iou_focus_fraction_above_0_5", read=_focus_iou("fraction_above_0_5"),
              csv_interval=False),
    Statistic("best_iou_background_max", "Best single-channel IoU, background (max)", UNIT, "mask",
              "the best channel's IoU with the background",
              read=lambda row: row["best_channel_iou"].get("background", {}).get("max")),
    Statistic("cka_class", "Linear CKA with the class", UNIT, "classes",
              "centred linear CKA of the globally pooled features with the one-hot class",
              json="cka_class", csv="cka_class", column=("cka_class", "CKA class", "Linear CKA with the class")),
    Statistic("ntv_median", "nTV per input pixel, median over channels", POSITIVE, "",
              "mean absolute neighbour difference over mean absolute deviation, per input pixel",
              csv="ntv_median", read=lambda row: row["ntv_p10_p50_p90"][1], column=("ntv", "nTV", "Median nTV (fine detail)"),
              tracked="median nTV"),
    Statistic("ntv_p10", "nTV per input pixel, p10 of channels", POSITIVE,
              read=lambda row: row["ntv_p10_p50_p90"][0]),
    Statistic("ntv_p90", "nTV per input pixel, p90 of channels", POSITIVE,
              read=lambda row: row["ntv_p10_p50_p90"][2]),
    Statistic("effective_area_median", "Effective area fraction, median over channels", UNIT, "",
              "exp(entropy of |a| over positions) / positions",
              csv="effective_area_median", read=lambda row: row["effective_area_p10_p50_p90"][1],
              column=("area", "Eff. area", "Median effective area")),
    Statistic("effective_area_top_median",
              f"Effective area fraction, median over the {TOP_IMPORTANT} strongest channels", UNIT, "",
              f"the median effective area of the {TOP_IMPORTANT} channels of highest strength (the grids' first)",
              json="effective_area_top_median", csv="effective_area_top_median"),
    Statistic("participation", "Participation ratio / C", UNIT, "",
              "(sum of the covariance's eigenvalues)^2 / sum of their squares, over C",
              json="participation_ratio_over_c", csv="participation_ratio_over_c",
              column=("participation", "PR / C", "Participation ratio / channels")),
    Statistic("importance_top_share", f"Importance held by the {TOP_IMPORTANT} most important channels", UNIT,
              "target", "their share of the summed Taylor importance |sum a * dy/da| of every channel",
              json="importance_top_share", csv="importance_top_share",
              column=("importance", f"Top-{TOP_IMPORTANT} importance",
                      f"Share of importance in the top {TOP_IMPORTANT} channels")),
    # Localisation of the layer's Grad-CAM (reportgen.localisation); the baselines are the build's, in stats.json.
    Statistic("cam_mass_focus", "Grad-CAM mass on the {focus}", UNIT, "mask+target",
              "the share of the Grad-CAM map's positive mass (upsampled to the image) on the {focus}'s pixels, "
              "averaged over the images (relevance mass accuracy)",
              json="cam_mass_focus", csv="cam_mass_focus",
              column=("cam_mass", "CAM on focus", "Grad-CAM mass on the {focus}")),
    Statistic("cam_rank_focus", "Grad-CAM top pixels on the {focus}", UNIT, "mask+target",
              "the share of the map's k highest pixels on the {focus}, k its area, ties counted by their expected "
              "share (relevance rank accuracy)",
              json="cam_rank_focus", csv="cam_rank_focus"),
    # Sanity checks of the layer's Grad-CAM (reportgen.sanity), on the pictured images.
    Statistic("sanity_rank", "Grad-CAM kept when the layers after it are random (rank correlation)", SIGNED_UNIT,
              "target+sanity", "Spearman's correlation of the layer's Grad-CAM with itself once every layer after its "
              "group is randomised (cascading randomisation); near 1: the map shows the layer, not the decision",
              json="sanity_rank", csv="sanity_rank",
              column=("sanity", "Sanity ρ", "Grad-CAM kept when later layers are random (lower is better)"),
              measured_on=PICTURED_IMAGES),
    Statistic("sanity_ssim", "Grad-CAM kept when the layers after it are random (SSIM)", SIGNED_UNIT, "target+sanity",
              "SSIM of the two maps, each scaled to its peak", json="sanity_ssim", csv="sanity_ssim",
              measured_on=PICTURED_IMAGES),
    Statistic("swap_rank", "Grad-CAM of another target (rank correlation)", SIGNED_UNIT, "target+sanity",
              "Spearman's correlation of the layer's Grad-CAM with its map of another target (the background, "
              "or the runner-up class); near 1: the map does not depend on what is explained",
              json="swap_rank", csv="swap_rank", measured_on=PICTURED_IMAGES),
    Statistic("faithfulness", "Grad-CAM faithfulness (LeRF − MoRF, in units of y)", ANY, "target+faithfulness",
              "the mean gap between the target with the map's least and its most relevant pixels blurred away, over "
              "removed fractions up to 40% (larger: the map ranks what the model uses); with --faithfulness-images",
              json="faithfulness", csv="faithfulness", column=("faithfulness", "Faithful", "Grad-CAM faithfulness"),
              measured_on=PICTURED_IMAGES),
    Statistic("mean", "Mean", ANY, json="mean", csv="mean", csv_interval=False),
    Statistic("std", "Standard deviation", POSITIVE, json="std", csv="std", csv_interval=False),
    Statistic("near_zero_fraction", f"Near-zero share (|a| < {NEAR_ZERO:g})", UNIT,
              json="near_zero_fraction", csv="near_zero_fraction", csv_interval=False),
    # Per channel: the channel view's and the search page's columns (the page script finds them by key).
    Statistic("strength", "Strength (spatial std)", POSITIVE, scope=CHANNEL,
              definition="the channel's standard deviation over positions, averaged over the images"),
    Statistic("ntv", "nTV per input pixel", POSITIVE, scope=CHANNEL,
              definition="mean absolute neighbour difference over mean absolute deviation, per input pixel"),
    Statistic("effective_area", "Effective area fraction", UNIT, scope=CHANNEL,
              definition="exp(entropy of |a| over positions) / positions"),
    Statistic("best_iou_focus", "Best IoU, {focus}", UNIT, "mask", scope=CHANNEL,
              definition="the channel's IoU with the {focus} at an area-matched threshold, either polarity"),
    Statistic("taylor_importance", "Taylor importance", POSITIVE, "target", scope=CHANNEL,
              definition="|sum over positions of a * dy/da|, averaged over the images"),
    # Between two builds (the changes page) or two models (reportgen compare).
    Statistic("cka_previous", "CKA with its previous self", UNIT, scope=BETWEEN,
              definition="linear CKA of the layer's features on the probe images in this build and in the previous, "
                         "from the two fingerprints; its interval a delete-one-image jackknife"),
    Statistic("cka_final", "CKA with its final self", UNIT, scope=BETWEEN,
              definition="linear CKA of the layer's features on the probe images at a checkpoint and at the run's "
                         "last checkpoint; its interval a delete-one-image jackknife"),
    Statistic("matched_channel_r", "Matched channel's response correlation", (-1.0, 1.0), scope=BETWEEN,
              definition="Pearson r of a channel's means on the probe images with those of the channel the optimal "
                         "one-to-one assignment gives it"),
    Statistic("gradcam_shift", "Grad-CAM shift", POSITIVE, "target", scope=BETWEEN,
              definition="the distance the Grad-CAM map's centre of mass moved on the pictured images both builds "
                         "share, in image widths (with the maps' correlation)"),
    Statistic("cka_other_model", "Linear CKA with a layer of the other model", UNIT, scope=BETWEEN,
              definition="minibatch linear CKA (unbiased HSIC) over the statistics images, each image's pixels on "
                         "the common grid as rows"),
)


def channel_statistics() -> tuple[Statistic, ...]:
    return tuple(s for s in STATISTICS if s.scope == CHANNEL)


def layer_statistics() -> tuple[Statistic, ...]:
    """The per-layer rows, read at call time so that a row added to STATISTICS reaches every output."""
    return tuple(s for s in STATISTICS if s.scope == LAYER)


def between_statistics() -> tuple[Statistic, ...]:
    """The rows of a layer compared with another build's or model's."""
    return tuple(s for s in STATISTICS if s.scope == BETWEEN)


def by_key(key: str) -> Statistic:
    return next(s for s in STATISTICS if s.key == key)


# What a target y is made of (reportgen.attribution scores outputs so): the class's log-odds where the
# output is probabilities, since a probability near 1 has a vanishing gradient.
TARGET_SCORE = "log-odds"
TARGET_SCORE_DEFINITION = ("log-odds (log p − log of the other classes' p after a softmax, the logit after a sigmoid; "
                           "an output that is not a probability as it is)")
TARGET_SCORE_WHY = ("Log-odds, not probabilities, because a probability near 1 has a vanishing gradient: a sure model "
                    "would show no evidence anywhere.")
_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def _words(number: int) -> str:
    return _WORDS[number] if 0 <= number < len(_WORDS) else str(number)


def constants() -> dict:
    """The numbers about.html states, from the code that uses them."""
    return {"target_score": TARGET_SCORE_DEFINITION, "target_score_short": TARGET_SCORE,
            "target_score_why": TARGET_SCORE_WHY,
            "examples_words": _words(EXAMPLES), "max_folds_words": _words(MAX_FOLDS),
            "top_important": TOP_IMPORTANT, "near_zero": f"{NEAR_ZERO:g}", "probe_ridge": f"{PROBE_RIDGE:g}",
            "pool_grid": POOL_GRID, "max_folds": MAX_FOLDS, "cka_grid": CKA_GRID, "examples": EXAMPLES,
            "interval_percent": round(INTERVAL_LEVEL * 100), "sanity_stages": SANITY_STAGES}
