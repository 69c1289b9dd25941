"""The per-layer stage: the statistics and pictures of one conv layer, run in a worker process.

A job reads its layer's spilled activations one image at a time, twice: once to accumulate the
statistics, once to render the pictures with the channels ranked by those statistics. Jobs of
different layers share nothing, so they run on every core. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from reportgen import assets, channels, render, stats
from reportgen.targets import Targets, feed
from reportgen.capture import ConvLayer
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
    mask_classes: "stats.MaskClasses | None" = None  # the mask's classes, when `prediction` is in them

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
    given: stats.LayerStats | None = None  # finalised by the statistics pass (--stats-images)
    scores: stats.ProbeScores | None = None  # the probes scored on every statistics image (--stats-images)
    rgb: stats.FoldRatio | None = None  # the RGB baseline on every statistics image (--stats-images)
    importance: np.ndarray | None = None  # N x C Taylor importances of the pictured images (attribution.py)
    cams: np.ndarray | None = None  # N x H x W Grad-CAM maps of the pictured images


def save_records(records: list[ImageRecord], path: Path) -> Path:
    with open(path, "wb") as handle:
        pickle.dump(records, handle, protocol=pickle.HIGHEST_PROTOCOL)
    return path


_loaded_records: dict[Path, tuple] = {}


def _records(path: Path) -> tuple[list[ImageRecord], np.ndarray | None]:
    """The build's records and their masks stacked (None unless every image has one), read once per worker."""
    if path not in _loaded_records:
        _loaded_records.clear()  # a worker outlives builds: keep only the current one's
        with open(path, "rb") as handle:
            records = pickle.load(handle)
        masks = np.stack([r.mask for r in records]) if all(r.mask is not None for r in records) else None
        _loaded_records[path] = records, masks
    return _loaded_records[path]


_writers: dict[tuple, assets.AssetWriter] = {}


def _writer(staging: Path, cmap: str, scale: str) -> assets.AssetWriter:
    """One writer per build and worker, so its caches (the RGB probe per grid) serve every layer."""
    key = (staging, cmap, scale)
    if key not in _writers:
        _writers.clear()
        _writers[key] = assets.AssetWriter(staging, cmap, scale)
    return _writers[key]


def accumulate(spilled: SpilledLayer, masks: np.ndarray | None, input_height: int,
               targets: Targets, importance: np.ndarray | None = None) -> stats.LayerAccumulator:
    """One layer's statistics over the pictured images, one image at a time, through `targets.feed`."""
    accumulator = targets.accumulator(spilled.shape, input_height)
    for k in range(spilled.count):
        feed(accumulator, spilled.raw(k)[None], [k], targets, None if masks is None else masks[k:k + 1],
             None if importance is None else importance[k:k + 1])
    return accumulator


def run(job: LayerJob) -> LayerResult:
    """Statistics, channel ranking, pictures and the probe's score of one layer."""
    records, masks = _records(job.records_path)
    importance = job.importance if not job.layer.attribution_note else None
    layer_stats = job.given or stats.finalise(accumulate(job.spilled, masks, job.input_height, job.targets,
                                                         importance))
    order = np.argsort(-np.nan_to_num(layer_stats.channel_strength, nan=-1.0), kind="stable")
    result = replace(job.layer, stats=layer_stats, order=order)
    writer = _writer(job.staging, job.cmap, job.scale)
    ranges = writer.layer_pictures(result, job.spilled.image, records, job.targets, job.scores, job.rgb)
    if job.cams is not None and not result.attribution_note and len(result.shape) == 3:
        result.cam_peaks = writer.cam_pictures(result, job.cams, records)
    result.channel_numbers = channels.channel_numbers(result, (job.input_height, job.input_width), ranges)
    # The probes' weights served the render pass; the site needs only their scores.
    result.stats = replace(layer_stats, probe_weights=[], class_probe_weights=[])
    return result
