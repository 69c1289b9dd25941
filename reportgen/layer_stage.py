"""The per-layer stage: the statistics and pictures of one conv layer, run in a worker process.

A job reads its layer's spilled activations one image at a time and draws the pictures, the
channels ranked by the layer's statistics; the statistics and the probes' scores come measured
(measure.py) and are only read here. Jobs of different layers share nothing, so they run on every
core. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from reportgen import assets, channels, render, stats
from reportgen.targets import Targets
from reportgen.capture import ConvLayer
from reportgen.intervals import wilson_interval
from reportgen.linear_probes import FoldRatio, ProbeScores
from reportgen.mask_classes import MaskClasses
from reportgen.spill import SpilledLayer


@dataclass
class ImageRecord:
    """One selected image and what the model made of it."""

    id: str
    slug: str
    image: np.ndarray  # as shown: uint8 RGB (a grayscale input repeated three times)
    trimap: np.ndarray | None
    prediction: np.ndarray | None  # class ids at input size; None when the model does not segment
    label: int | None = None  # index of the image's class (class sub-folders), for the class probe
    mask_classes: "MaskClasses | None" = None  # the mask's classes, when `prediction` is in them

    @property
    def mask_is_prediction(self) -> bool:
        """No ground truth: the model's own prediction stands in for the mask."""
        return self.trimap is None and self.prediction is not None and self.mask_classes is not None

    @property
    def mask(self) -> np.ndarray | None:
        """The mask to measure against (class k as k + 1): the ground truth, else the prediction."""
        if self.trimap is not None:
            return self.trimap
        return (self.prediction + 1).astype(np.uint16) if self.mask_is_prediction else None


@dataclass
class LayerResult:
    """One conv layer with its statistics and the files rendered for it."""

    conv: ConvLayer
    slug: str
    role: str
    receptive_field: float
    stride: float
    layout: render.GridLayout
    shape: tuple[int, ...]  # the captured output, without the batch axis
    stats: stats.LayerStats | None = None
    order: np.ndarray | None = None  # channels ranked strongest first
    probe_iou: np.ndarray = field(default_factory=lambda: np.full(3, np.nan))
    rgb_probe_iou: np.ndarray = field(default_factory=lambda: np.full(3, np.nan))
    class_accuracy: float = float("nan")  # the leave-out class probe on globally pooled features
    intervals: dict = field(default_factory=dict)  # the probes' 90% jackknife intervals, by name
    channel_numbers: dict = field(default_factory=dict)  # the layer page's channel data (channels.py)
    stored_note: str = ""  # what storing changed: NaN or infinite values, values beyond float16 (capture.damage_note)
    attribution_note: str = ""  # why the layer has no Grad-CAM and importance, where it has none
    attributed_after: str = ""  # the per-channel normalisation they are taken after (attribution.attribution_source)
    cam_peaks: np.ndarray | None = None  # per pictured image, the largest Grad-CAM value (0: no positive evidence)
    ablation: dict | None = None  # ablation.LayerAblation.summary(), where the ablation check ran


@dataclass(frozen=True)
class LayerJob:
    """Everything a worker needs for one layer; small, so it crosses to the worker quickly."""

    layer: LayerResult  # filled in by the job
    spilled: SpilledLayer
    records_path: Path  # the build's ImageRecords, pickled once and read once per worker
    staging: Path
    input_height: int
    input_width: int
    cmap: str
    scale: str
    targets: Targets  # the statistics images' folds, classes and mask source: the build's one decision
    measured: stats.LayerAccumulator  # the layer's sums over the statistics images, finalised here
    scores: ProbeScores | None = None  # the probes scored on every statistics image; None: no probe
    rgb: FoldRatio | None = None  # the RGB baseline on every statistics image
    cams: np.ndarray | None = None  # N x H x W Grad-CAM maps of the pictured images


def save_records(records: list[ImageRecord], path: Path) -> Path:
    with open(path, "wb") as handle:
        pickle.dump(records, handle, protocol=pickle.HIGHEST_PROTOCOL)
    return path


_loaded_records: dict[Path, list[ImageRecord]] = {}


def _records(path: Path) -> list[ImageRecord]:
    """The build's records, read once per worker."""
    if path not in _loaded_records:
        _loaded_records.clear()  # a worker outlives builds: keep only the current one's
        with open(path, "rb") as handle:
            _loaded_records[path] = pickle.load(handle)
    return _loaded_records[path]


_writers: dict[tuple, assets.AssetWriter] = {}


def _writer(staging: Path, cmap: str, scale: str) -> assets.AssetWriter:
    """One writer per build and worker, so its caches (the RGB probe per grid) serve every layer."""
    key = (staging, cmap, scale)
    if key not in _writers:
        _writers.clear()
        _writers[key] = assets.AssetWriter(staging, cmap, scale)
    return _writers[key]


def with_probe_scores(result: LayerResult, scores: ProbeScores | None, rgb: FoldRatio | None,
                      targets: Targets) -> LayerResult:
    """The layer's probe numbers and their intervals, read from the measured scores (an empty score
    where the layer has no probe: its numbers are NaN)."""
    scores = scores or ProbeScores(targets.fold_count, [], [], targets.mask_classes.count)
    focus = targets.mask_classes.focus
    result.probe_iou = scores.mask.ratio()
    result.intervals["probe_iou_focus"] = scores.mask.class_interval(focus)
    result.intervals["probe_iou_mean"] = scores.mask.interval(stats.mean_defined)
    if scores.has_classes:
        result.class_accuracy = float(scores.classes.ratio()[0])
        result.intervals["class_probe_accuracy"] = wilson_interval(scores.classes.numerator.sum(),
                                                                    scores.classes.denominator.sum())
    if rgb is not None:
        result.rgb_probe_iou = rgb.ratio()
        result.intervals["rgb_probe_iou_focus"] = rgb.class_interval(focus)
    return result


def run(job: LayerJob) -> LayerResult:
    """Channel ranking, pictures and the measured probe numbers of one layer."""
    records = _records(job.records_path)
    layer_stats = stats.finalise(job.measured)
    order = np.argsort(-np.nan_to_num(layer_stats.channel_strength, nan=-1.0), kind="stable")
    result = with_probe_scores(replace(job.layer, stats=layer_stats, order=order, intervals={}), job.scores, job.rgb,
                               job.targets)
    writer = _writer(job.staging, job.cmap, job.scale)
    ranges = writer.layer_pictures(result, job.spilled.image, records)
    if job.cams is not None and not result.attribution_note and len(result.shape) == 3:
        result.cam_peaks = writer.cam_pictures(result, job.cams, records)
    result.channel_numbers = channels.channel_numbers(result, (job.input_height, job.input_width), ranges)
    # The probes' weights served the scores; the site needs only the scores.
    result.stats = replace(layer_stats, probe_weights=[], class_probe_weights=[])
    return result
