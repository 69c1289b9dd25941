"""The one measuring function, and the one scoring function, that every executor calls.

`measure_batch(plan, sums, named, batch)` adds a batch of the probe's named outputs to the sums:
every layer's accumulator (through `targets.feed`), the layer x layer CKA, the model's own results
and the masks measured against. It returns what the leave-out probes read of the batch
(`probe_inputs`: each image's pooled maps and channel means, its masks): small, so the first pass
keeps it (spill.BatchStore) and the second, `score_batch(plan, scores, inputs, fits)`,
scores the probes fitted from every image's sums without running the model again. The in-process
executor (`in_process`, the pictured images) and the Beam workers (stats_pass.py, any runner)
differ only in where the batches come from and how the sums meet (`merge`); what is measured is
decided once, by the plan.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from reportgen import fingerprint
from reportgen.cka import MinibatchCKA
from reportgen.errors import ReportgenError
from reportgen.linear_probes import (FoldRatio, ProbeScores, add_to_fold, can_fit_probe, pool_to, pooled_shape,
                                     probe_features, probe_predict, probe_weights)
from reportgen.localisation import Baselines
from reportgen.mask_classes import MaskGrids, grid_truth, mask_onehot
from reportgen.plan import BuildPlan, Graded
from reportgen.probe import Named
from reportgen.spill import BatchStore
from reportgen.targets import MASK_PREDICTION, MASK_TRIMAP, Targets, feed, mask_truth, score_features

CKA_KEY = -1  # the key of the layer x layer CKA among the per-layer keys 0..L-1
MASKS_KEY = -2  # the key of the predicted masks, where the prediction stands in
SECONDS_KEY = -3  # the key of the worker-seconds each part took
QUALITY_KEY = -4  # the key of the model's own results on the statistics images (`Quality`)
ABLATION_KEY = -5  # the key of the ablation check's sums (ablation.AblationSums)
BASELINES_KEY = -6  # the key of the Grad-CAM localisation's baselines (localisation.Baselines)
FINGERPRINT_KEY = -7  # the key of the probe images' fingerprint rows (fingerprint.FingerprintSums)
TOP_CLASSES = 5


@dataclass(frozen=True)
class Batch:
    """Consecutive statistics images `start`, `start + 1`, ...: one forward pass, and one minibatch of CKA."""

    start: int
    images: np.ndarray  # B x H x W x C uint8
    trimaps: np.ndarray | None  # B x H x W trimaps, or None

    @property
    def indices(self) -> np.ndarray:
        return np.arange(self.start, self.start + len(self.images))


def batches_of(plan: BuildPlan, items: Sequence, start: int = 0) -> list[Batch]:
    """Statistics images `start`, ... (sources.SourceImage) in the plan's batches, with their trimaps
    where the plan measures against them."""
    with_trimaps = plan.targets.mask_source == MASK_TRIMAP
    found = []
    for first in range(0, len(items), plan.batch_size):
        chunk = items[first:first + plan.batch_size]
        found.append(Batch(start + first, np.stack([item.image for item in chunk]),
                           np.stack([item.trimap for item in chunk]) if with_trimaps else None))
    return found


@dataclass
class Quality:
    """The model's own results on statistics images, mergeable like every accumulator: each image's
    best classes (by the start of its batch) and its segmentation's IoU counts per class and fold,
    against the trimaps (the convention of `reportgen evaluate`: three classes, every pixel)."""

    ranked: dict = dataclasses.field(default_factory=dict)  # batch start -> B x TOP_CLASSES class indices
    iou: FoldRatio | None = None

    def merge(self, other: "Quality") -> "Quality":
        iou = self.iou if other.iou is None else other.iou if self.iou is None else self.iou.merge(other.iou)
        return Quality({**self.ranked, **other.ranked}, iou)

    def stacked_ranks(self) -> np.ndarray | None:
        return np.concatenate([self.ranked[k] for k in sorted(self.ranked)]) if self.ranked else None


def grade(quality: Quality, graded: Graded, outputs: list, start: int, trimaps, targets: Targets) -> None:
    """Add a batch's graded outputs (`outputs`: every model output, B x ... each) to `quality`."""
    from reportgen.outputs import as_mask

    if graded.class_output is not None:
        scores = np.asarray(outputs[graded.class_output], np.float64)
        quality.ranked[start] = np.argsort(-scores, axis=1, kind="stable")[:, :TOP_CLASSES]
    if graded.mask_output is not None and trimaps is not None:
        if quality.iou is None:
            quality.iou = FoldRatio(targets.fold_count, targets.mask_classes.count)
        predicted = as_mask(np.asarray(outputs[graded.mask_output], np.float32)).astype(np.int64) - 1
        for k, (mask, truth) in enumerate(zip(predicted, trimaps)):
            quality.iou.add_pixels(mask, np.asarray(truth, np.int64) - 1, int(targets.folds[start + k]))


@dataclass
class Masks:
    """The masks the statistics were measured against, by batch start: merged by union."""

    masks: dict = dataclasses.field(default_factory=dict)

    def merge(self, other: "Masks") -> "Masks":
        return Masks({**self.masks, **other.masks})

    def stacked(self) -> np.ndarray:
        return np.concatenate([self.masks[start] for start in sorted(self.masks)])


def batch_masks(plan: BuildPlan, named: Named, batch: Batch) -> np.ndarray | None:
    """The batch's masks as the plan says they are made: the trimaps, the prediction, or none."""
    targets = plan.targets
    if targets.mask_source == MASK_PREDICTION:
        return targets.mask_of_prediction(np.asarray(named.outputs[targets.prediction_output], np.float32))
    return batch.trimaps if targets.mask_source == MASK_TRIMAP else None


def measure_batch(plan: BuildPlan, sums: dict, named: Named, batch: Batch) -> ProbeInputs:
    """Add a batch to `sums`: conv index -> LayerAccumulator, CKA_KEY -> the layer x layer CKA,
    QUALITY_KEY -> the graded outputs, MASKS_KEY -> the predicted masks (where they stand in),
    BASELINES_KEY -> the Grad-CAM localisation's baselines (where maps are explained against masks),
    FINGERPRINT_KEY -> the probe images' rows of the representation fingerprint. Returns the batch's
    `ProbeInputs`, from the means and pooled maps the accumulators computed."""
    targets = plan.targets
    masks = batch_masks(plan, named, batch)
    if plan.graded.outputs:
        grade(sums.setdefault(QUALITY_KEY, Quality()), plan.graded, named.outputs, batch.start, batch.trimaps,
              targets)
    grids = None if masks is None else MaskGrids(masks, targets.mask_classes.count)  # shared by the layers
    computed = {}
    for k, layer in enumerate(plan.layers):
        maps = named.activations[k]
        if k not in sums:
            sums[k] = targets.accumulator(maps.shape[1:], plan.input_height)
        attributed = named.taylor is not None and layer.attributed
        computed[k] = feed(sums[k], maps, batch.indices, targets, grids, named.taylor[k] if attributed else None,
             named.cams[k] if attributed else None, spatial=layer.spatial)
    if masks is not None and named.cams is not None and targets.measures:
        baselines = sums.setdefault(BASELINES_KEY, Baselines(targets.fold_count))
        for image, mask, index in zip(batch.images, masks, batch.indices):
            baselines.add(image, mask, int(targets.folds[index]), targets.mask_classes.count, targets.mask_classes.focus)
    spatial = [named.activations[k] for k in plan.spatial]
    if spatial and targets.measures:
        sums.setdefault(CKA_KEY, MinibatchCKA(len(spatial))).add(spatial)
    if targets.mask_source == MASK_PREDICTION:  # the RGB baseline is measured against them too
        sums.setdefault(MASKS_KEY, Masks()).masks[batch.start] = masks
    fingerprint.add_batch(sums, FINGERPRINT_KEY, len(targets), named.activations, batch.indices)
    return probe_inputs(plan, named, batch, computed, masks)


@dataclass(frozen=True)
class ProbeInputs:
    """What the leave-out probes read of a batch: per layer, each image's (channel means, pooled maps)
    (`linear_probes.probe_features`), or None for a layer without probes; and the batch's masks."""

    indices: np.ndarray  # the batch's statistics images
    features: list
    masks: np.ndarray | None


def probe_inputs(plan: BuildPlan, named: Named, batch: Batch, computed: dict | None = None,
                 masks: np.ndarray | None = None) -> ProbeInputs:
    """A batch's `ProbeInputs` from the probe's named outputs: a few MB an image (maps pooled to at most
    20 x 20), where the activations are tens; scored as float32, as the sums saw them. `computed`:
    conv index -> (means, pooled maps) of the batch's images, where the accumulators computed them
    (measure_batch), and `masks` the batch's; what is not given is computed here."""
    targets = plan.targets
    probed = targets.measures and targets.fold_count >= 2 and (
        targets.mask_source is not None or targets.labels is not None)
    features = []
    for k, layer in enumerate(plan.layers):
        if not (probed and layer.spatial):
            features.append(None)
            continue
        given = (computed or {}).get(k)
        if given is None:
            found = [probe_features(_as_image_maps(np.asarray(maps, np.float32))) for maps in named.activations[k]]
        else:  # as probe_features gives them: no pooled maps for a map of one row
            means, pooled = given
            found = [(means[i:i + 1], pooled[i] if pooled.shape[1] > 1 else None) for i in range(len(means))]
        features.append([(means, pooled if targets.mask_source else None) for means, pooled in found])
    return ProbeInputs(batch.indices, features, batch_masks(plan, named, batch) if masks is None else masks)


def probe_inputs_bytes(plan: BuildPlan) -> int:
    """An upper bound of one image's `ProbeInputs` on disk (float32 pooled maps, float64 means)."""
    total = 0
    for layer in plan.layers:
        shape = layer.conv.output_shape
        if layer.spatial and all(isinstance(d, int) for d in shape):
            total += 4 * int(np.prod(pooled_shape(*shape[:2]))) * shape[-1] + 8 * shape[-1]
    return total + 8 * plan.input_height * plan.geometry.width


def score_batch(plan: BuildPlan, scores: dict, inputs: ProbeInputs, fits: dict) -> None:
    """Score the leave-out probes on a batch: conv index -> ProbeScores, each image predicted by the
    probe fitted without its fold, from the batch's `ProbeInputs`."""
    targets = plan.targets
    for layer, fitted in fits.items():
        if not (fitted[1] or fitted[2]):
            continue
        found = scores.setdefault(layer, ProbeScores(*fitted[:3], targets.mask_classes.count))
        for k, (means, pooled) in enumerate(inputs.features[layer]):
            truth = mask_truth(None if inputs.masks is None else inputs.masks[k], targets)
            score_features(found, means, pooled, int(inputs.indices[k]), targets, truth)


def ablate_batch(plan: BuildPlan, scores: dict, probe, rerun, batch: Batch, fits: dict, plans: dict,
                 share: int = 0, shares: int = 1) -> None:
    """The ablation check on a batch the plan ablates: ABLATION_KEY -> ablation.AblationSums; with
    `shares` > 1, only the layers of share `share` (ablation.shares), so that workers split a batch.
    `plans` caches each layer's ablations, made from the fitted importances on the first call."""
    from reportgen import ablation, capture

    if rerun is None or batch.start not in plan.ablated_starts:
        return
    targets = plan.targets
    if not plans:
        plans.update(ablation.plans(rerun, {k: fitted[3] for k, fitted in fits.items()}))
    single = batch.start == 0
    chosen = ablation.shares(rerun, plans, shares, single)[share] if shares > 1 else set(plans)
    images = plan.convention.apply(np.asarray(batch.images, np.float32))
    feeds = capture.model_feeds(probe, images, plan.image_index)
    labels = None if plan.ablation_classes is None else np.asarray(plan.ablation_classes)[batch.indices]
    sums = scores.setdefault(ABLATION_KEY, ablation.AblationSums(targets.fold_count))
    ablation.ablate_batch(rerun, feeds, {k: v for k, v in plans.items() if k in chosen}, targets.explained,
                          targets.folds[batch.indices], batch.trimaps, labels, sums, single=single,
                          baseline_counted=share == 0)


def _as_image_maps(maps: np.ndarray) -> np.ndarray:
    """One image's maps as H x W x C, as the pictures show them (assets.as_image_maps)."""
    from reportgen.assets import as_image_maps

    return as_image_maps(maps[None])[0]


def rgb_baselines(plan: BuildPlan, images: Sequence[np.ndarray], masks: np.ndarray | None, shapes: list) -> dict:
    """The probe baseline over every statistics image (`images`: RGB as shown), per conv index: the
    leave-out probe on RGB pooled to the layer's grid (`shapes`: each layer's maps as measured, one
    fit per grid size), against the masks the layers were measured on; none without masks or for a
    layer of one row."""
    if masks is None:
        return {}
    by_grid, found = {}, {}
    for k, (layer, shape) in enumerate(zip(plan.layers, shapes)):
        if not layer.spatial or shape[0] <= 1:
            continue
        grid = pooled_shape(*shape[:2])
        if grid not in by_grid:
            by_grid[grid] = rgb_probe_iou(images, masks, grid, plan.targets)
        found[k] = by_grid[grid]
    return found


def rgb_probe_iou(images, masks: np.ndarray, grid_shape, targets) -> FoldRatio:
    """The probe baseline: the leave-out ridge probe on the images' RGB pooled to a layer's grid,
    against `masks` in the targets' classes, image i in the statistics' fold `targets.folds[i]`."""
    fold_sums: dict = {}
    classes, folds = targets.mask_classes.count, targets.folds
    pooled_images = [pool_to(image[None].astype(np.float32), max(grid_shape))[0] for image in images]
    for i, pooled in enumerate(pooled_images):
        y = mask_onehot(masks[i:i + 1], *pooled.shape[:2], classes)[0]
        add_to_fold(fold_sums, int(folds[i]), pooled.reshape(-1, pooled.shape[-1]), y.reshape(-1, classes))
    weights = probe_weights(fold_sums)
    score = FoldRatio(targets.fold_count, classes)
    for i, pooled in enumerate(pooled_images):
        predicted = probe_predict(weights, pooled, int(folds[i]), balanced=True)
        if predicted is not None:
            score.add_pixels(predicted, grid_truth(masks[i:i + 1], *pooled.shape[:2], classes)[0],
                             int(folds[i]))
    return score


def merge(accumulators):
    merged = None
    for accumulator in accumulators:
        if accumulator is not None:
            merged = accumulator if merged is None else merged.merge(accumulator)
    return merged


@dataclass
class Measurement:
    """What an executor measured: per conv layer its accumulator and its probes' scores, and the rest."""

    layers: dict  # conv index -> stats.LayerAccumulator
    cka: MinibatchCKA | None
    scores: dict = dataclasses.field(default_factory=dict)  # conv index -> ProbeScores
    masks: np.ndarray | None = None  # N x H x W: the masks measured against (trimaps or predicted), or None
    seconds: dict = dataclasses.field(default_factory=dict)  # worker-seconds by part (stats_pass.WorkerSeconds)
    quality: Quality | None = None  # the model's own results on the statistics images (`Graded`)
    ablation: object = None  # ablation.AblationSums of the plan's ablated images, or None
    baselines: Baselines | None = None  # what a uniform map and the edges score where Grad-CAM is localised
    fingerprint: fingerprint.FingerprintSums | None = None  # the probe images' rows


def layer_fit(key: int, accumulator):
    """A layer's probe weights per fold and its Taylor importances, (key, (folds, the mask probe's, the
    class probe's, the importances)), from its sums; nothing for a layer without a probe or an
    importance (or a key that is not a layer)."""
    if key < 0:
        return
    attributed = float(accumulator.attributed.sum())
    fitted = (accumulator.fold_count, probe_weights(accumulator.folds),
              probe_weights(accumulator.class_folds),
              accumulator.taylor.sum(axis=0) / attributed if attributed else None)
    if fitted[1] or fitted[2] or fitted[3] is not None:
        yield key, fitted


def probe_fits(sums: dict) -> dict:
    """Every layer's probe fits, conv index -> (folds, mask probe weights, class probe weights, importances)."""
    return dict(fit for key, accumulator in sums.items() for fit in layer_fit(key, accumulator))


def check_sums(sums: dict, plan: BuildPlan) -> None:
    """A result that lost a layer, the CKA or an image is an error: never a report built on part of the data."""
    expected, count = len(plan.targets), len(plan.layers)
    missing = [k for k in range(count) if k not in sums]
    short = [k for k in range(count) if k in sums and int(sums[k].images.sum()) != expected]
    if missing or short:
        raise ReportgenError(f"the statistics pass came back incomplete: {len(missing)} of {count} layers "
                             f"missing, {len(short)} with fewer than {expected} images; the runner lost results")
    spatial = [k for k in range(count) if sums[k].examples is not None]
    if spatial and (CKA_KEY not in sums or sums[CKA_KEY].images != expected):
        raise ReportgenError("the statistics pass came back without the layer x layer CKA of every image; "
                             "the runner lost results")
    if plan.targets.mask_source == MASK_PREDICTION and (
            MASKS_KEY not in sums or len(sums[MASKS_KEY].stacked()) != expected):
        raise ReportgenError("the statistics pass came back without the predicted masks; the runner lost results")
    quality, graded = sums.get(QUALITY_KEY), plan.graded
    if graded.outputs and (
            quality is None
            or (graded.class_output is not None and len(quality.stacked_ranks()) != expected)
            or (graded.mask_output is not None and plan.targets.mask_source == MASK_TRIMAP
                and (quality.iou is None or quality.iou.denominator.sum() == 0))):
        raise ReportgenError("the statistics pass came back without the model's own results on every image; "
                             "the runner lost results")


def _probed(accumulator) -> tuple[bool, bool]:
    """Whether a layer's sums give a mask probe and a class probe."""
    return can_fit_probe(accumulator.folds), can_fit_probe(accumulator.class_folds)


def check_scores(scores: dict, sums: dict, plan: BuildPlan) -> None:
    """Every probe scored on every image, and the ablation check on every image planned, or an error."""
    expected = len(plan.targets)
    probed = {k: _probed(acc) for k, acc in sums.items() if k >= 0 and any(_probed(acc))}
    lost = [k for k, (_, classes) in probed.items()
            if k not in scores or (classes and scores[k].classes.denominator.sum() != expected)]
    if lost:
        raise ReportgenError(f"the probe scores came back for {len(probed) - len(lost)} of {len(probed)} layers; "
                             "the runner lost results")
    planned, found = len(plan.ablated), scores.get(ABLATION_KEY)
    if planned and (found is None or found.images != planned):
        raise ReportgenError(f"the ablation check came back for {found.images if found else 0} of {planned} images; "
                             "the runner lost results")


def result(sums: dict, scores: dict, trimaps: np.ndarray | None = None) -> Measurement:
    """The checked sums and scores as one Measurement; `trimaps`: the masks, where they were given."""
    masks = sums[MASKS_KEY].stacked() if MASKS_KEY in sums else trimaps
    took = merge([sums.get(SECONDS_KEY), scores.get(SECONDS_KEY)])  # stats_pass.WorkerSeconds
    return Measurement({k: v for k, v in sums.items() if k >= 0}, sums.get(CKA_KEY),
                       {k: v for k, v in scores.items() if k >= 0}, masks, {} if took is None else took.seconds,
                       quality=sums.get(QUALITY_KEY), ablation=scores.get(ABLATION_KEY),
                       baselines=sums.get(BASELINES_KEY), fingerprint=sums.get(FINGERPRINT_KEY))


def in_process(plan: BuildPlan, probe, batches: Sequence[Batch],
               on_batch: Callable[[Batch, Named], None] | None = None) -> Measurement:
    """The in-process executor: every batch through the probe once, `measure_batch` and `probe_inputs`
    (kept on disk), then the probes fitted from the sums scored by `score_batch`. `on_batch` sees
    each batch's named outputs (the capture spills them)."""
    import tempfile

    total = sum(len(batch.images) for batch in batches)
    sums: dict = {}
    with tempfile.TemporaryDirectory(prefix="reportgen-probe-inputs-") as folder:
        kept = BatchStore(folder)
        for batch in batches:
            named = probe(batch.images, total)
            kept.put(batch.start, measure_batch(plan, sums, named, batch))
            if on_batch is not None:
                on_batch(batch, named)
        check_sums(sums, plan)
        fits = probe_fits(sums)
        scores: dict = {}
        rerun, plans = probe.rerun(), {}
        for batch in batches:
            inputs = kept.take(batch.start)
            if inputs is None:
                inputs = probe_inputs(plan, probe(batch.images, total, attributed=False), batch)
            score_batch(plan, scores, inputs, fits)
            ablate_batch(plan, scores, probe, rerun, batch, fits, plans)
    check_scores(scores, sums, plan)
    trimaps = np.concatenate([batch.trimaps for batch in batches]) if batches and batches[0].trimaps is not None \
        else None
    return result(sums, scores, trimaps)
