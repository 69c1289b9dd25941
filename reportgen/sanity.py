"""Sanity checks of every layer's Grad-CAM (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS
2018), on the pictured images.

- Cascading randomisation: the model's trainable weights are replaced by random ones from the head
  down, in `stages` cumulative steps (step s randomises every layer from the s-th cut on, in the
  graph's topological order; the first cut is the last conv, the others split the rest into equal
  groups). After each step every
  layer's Grad-CAM is computed again, one forward and backward pass over the images. A layer's map
  that stays the same once the layers after it (those that make the decision) are random shows the
  layer's own structure, edges for instance, not the decision.
- Target swap: the maps of another target (the background for a segmentation with a foreground,
  each image's runner-up class for a classifier, each pixel's runner-up class otherwise) must differ.

Similarity is Spearman's rank correlation of the two maps over the layer's positions, and SSIM of
the maps each scaled to its own peak (as they are drawn), averaged over the images, with the
delete-one-image jackknife for its interval. A random weight keeps its tensor's mean and standard
deviation, so activations keep their scale; it is seeded by the layer's position, so the steps
are cumulative. The model's own weights are restored afterwards.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from reportgen import attribution
from reportgen.catalog import SANITY_STAGES, SIGNED_UNIT
from reportgen.intervals import mean_with_interval

SIMILARITY = SIGNED_UNIT
SSIM_WINDOW = 7  # skimage's default window; smaller maps use the largest odd window that fits, down to 3


def cuts(layers: int, stages: int) -> list[int]:
    """The first conv (0-based) each cumulative step randomises from, head first: the last conv alone (and
    what follows it: the head), then the other convs in equal groups. With equal groups throughout, the
    layers of the head's group (a quarter of the SD-UNet, where its best-localising maps are) never had
    the layers after them random while they were intact, and got no sanity number."""
    stages = max(1, min(stages, layers))
    rest = layers - 1
    return [rest] + [rest - round(rest * s / (stages - 1)) for s in range(1, stages)]


def downstream_step(layer: int, found_cuts: list[int]) -> int | None:
    """The last step that leaves `layer` itself intact: every layer after its group is random there;
    None for a layer of the head's group (nothing after it is randomised apart from it)."""
    steps = [s for s, cut in enumerate(found_cuts) if cut > layer]
    return steps[-1] if steps else None


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho of two maps over their positions; NaN where either is constant."""
    from scipy.stats import rankdata

    a, b = rankdata(np.ravel(a)), rankdata(np.ravel(b))
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two maps each scaled to its own peak (zero maps stay zero); NaN under 3 x 3 positions."""
    from skimage.metrics import structural_similarity

    side = min(a.shape)
    window = min(SSIM_WINDOW, side if side % 2 else side - 1)
    if a.ndim != 2 or window < 3:
        return float("nan")

    def scaled(m):
        m = np.nan_to_num(np.asarray(m, np.float64))
        peak = m.max(initial=0.0)
        return m / peak if peak > 0 else np.zeros_like(m)

    return float(structural_similarity(scaled(a), scaled(b), data_range=1.0, win_size=window))


def _summary(values: np.ndarray) -> tuple[float, tuple[float, float]]:
    return mean_with_interval(values, SIMILARITY)


def compare_maps(original: list, changed: list, measure) -> np.ndarray:
    """Per layer, per image: `measure` of the original map against the changed one."""
    return np.array([[measure(np.asarray(a, np.float32), np.asarray(b, np.float32)) for a, b in zip(first, second)]
                     for first, second in zip(original, changed)])


@dataclass(frozen=True)
class Sanity:
    """What the checks found, per conv layer (in the plan's order)."""

    cuts: list[int]  # each step's first randomised conv (0-based), head first
    rank: np.ndarray  # L x steps: mean rank correlation with the original map
    ssim: np.ndarray  # L x steps
    swap_rank: np.ndarray | None  # L: mean rank correlation of the swapped target's map with the target's
    swapped: str  # the swapped target, in words ("" without one)
    numbers: list[dict]  # per layer: catalog key -> value
    intervals: list[dict]  # per layer: catalog key -> (low, high)
    images: int


def _swapped(target: attribution.Target, specs) -> attribution.Target | None:
    """Another target to explain: the background (or next class) of a foreground, the runner-up class."""
    if target.kind == attribution.FOREGROUND and not target.binary:
        classes = specs[target.output].mask_classes()
        other = classes.background if classes.background is not None else (target.channel + 1) % classes.count
        return dataclasses.replace(target, channel=other, name=specs[target.output].class_name(other))
    if target.kind in (attribution.CLASS, attribution.PIXEL_CLASSES) and target.channel is None:
        return dataclasses.replace(target, rank=2)
    return None  # a one-channel sigmoid's background is its foreground's negation: the same map's sign


def _weighted_operations(model, convs, found_cuts: list[int]) -> list[list]:
    """Per step, the operations whose weights it randomises: those at or after its cut's conv in the
    graph's topological order (a nested model whole)."""
    from reportgen import graph

    order, position = graph.nodes(model), {}
    for k, node in enumerate(order):
        position.setdefault(id(node.operation), k)
    starts = []
    for cut in found_cuts:
        conv = convs[cut]
        owner = model.get_layer(conv.path[0] if conv.path else conv.layer_name or conv.name)
        starts.append(position[id(owner)])
    # Operations that are not layers (keras.ops called on symbolic tensors) hold no weights.
    operations = [op for op in dict.fromkeys(node.operation for node in order)
                  if getattr(op, "trainable_weights", None)]
    return [[op for op in operations if position[id(op)] >= start] for start in starts]


def _randomise(operation, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for variable in operation.trainable_weights:
        value = np.asarray(variable.numpy(), np.float64)
        variable.assign((value.mean() + value.std() * rng.standard_normal(value.shape)).astype(value.dtype))


def check(model, convs, probe, images: np.ndarray, original: list, target: attribution.Target, specs,
          batch_size: int, stages: int = SANITY_STAGES) -> Sanity:
    """Both checks on `images` (N x H x W x C, 0-255), `original` each layer's N Grad-CAM maps of
    `target`; `probe` is the build's probe (probe.Probe), whose traced graph reads the weights."""
    found_cuts = cuts(len(convs), stages)
    steps = _weighted_operations(model, convs, found_cuts)
    saved = {id(v): v.numpy() for op in steps[-1] for v in op.trainable_weights}
    seeds = {id(op): k for k, op in enumerate(steps[-1])}  # the same random weights in every later step
    rank, similar, done = [], [], set()
    try:
        for operations in steps:
            for op in operations:
                if id(op) not in done:
                    _randomise(op, seeds[id(op)])
                    done.add(id(op))
            maps = _cams(probe, images, batch_size)
            rank.append(compare_maps(original, maps, rank_correlation))
            similar.append(compare_maps(original, maps, ssim))
    finally:
        for op in steps[-1]:
            for variable in op.trainable_weights:
                variable.assign(saved[id(variable)])
    swap = _swapped(target, specs)
    swap_rank = None
    if swap is not None:
        swapped_probe = attribution.attributed_probe(model, convs, [model.outputs[target.output]], swap,
                                                     probe.plan.image_index)
        swap_rank = compare_maps(original, _swapped_cams(swapped_probe, probe, images, batch_size, len(convs)),
                                 rank_correlation)
    return _found(found_cuts, np.stack(rank, axis=-1), np.stack(similar, axis=-1), swap_rank,
                  swap.describe() if swap is not None else "", len(images))


def _cams(probe, images, batch_size: int) -> list:
    found = [[] for _ in probe.plan.layers]
    for _, named in probe.stream(images, batch_size):
        for layer, maps in enumerate(named.cams):
            found[layer].extend(maps[:len(images)])
    return [np.stack(maps)[:len(images)] for maps in found]


def _swapped_cams(swapped_probe, probe, images, batch_size: int, layers: int) -> list:
    from reportgen import capture

    found = [[] for _ in range(layers)]
    for _, values in capture.stream_activations(swapped_probe, images, batch_size, probe.plan.image_index,
                                                probe.plan.convention.apply):
        for layer in range(layers):
            found[layer].extend(values[1 + layer])
    return [np.stack(maps)[:len(images)] for maps in found]


def _found(found_cuts, rank: np.ndarray, similar: np.ndarray, swap_rank, swapped: str, images: int) -> Sanity:
    """Per layer: the mean similarities of the step that randomises everything after it, and of the swap."""
    layers = rank.shape[0]
    means = {"rank": np.full((layers, rank.shape[-1]), np.nan), "ssim": np.full((layers, rank.shape[-1]), np.nan)}
    numbers, intervals = [], []
    for layer in range(layers):
        for step in range(rank.shape[-1]):
            means["rank"][layer, step] = _summary(rank[layer, :, step])[0]
            means["ssim"][layer, step] = _summary(similar[layer, :, step])[0]
        step = downstream_step(layer, found_cuts)
        found, spans = {}, {}
        for key, values in (("sanity_rank", rank), ("sanity_ssim", similar)):
            found[key], spans[key] = _summary(values[layer, :, step]) if step is not None else \
                (float("nan"), (float("nan"), float("nan")))
        if swap_rank is not None:
            found["swap_rank"], spans["swap_rank"] = _summary(swap_rank[layer])
        numbers.append(found)
        intervals.append(spans)
    swap_means = None if swap_rank is None else np.array([_summary(v)[0] for v in swap_rank])
    return Sanity(found_cuts, means["rank"], means["ssim"], swap_means, swapped, numbers, intervals, images)


def record(found: Sanity) -> dict:
    """The checks as plain data (stats.json's `sanity`, the pages): each step's first randomised conv
    (from 1), per layer the mean similarity after each step, and the swap."""
    def plain(values):
        return [[None if not np.isfinite(v) else round(float(v), 4) for v in row] for row in values]

    return {"images": found.images, "randomised_from": [cut + 1 for cut in found.cuts],
            "rank": plain(found.rank), "ssim": plain(found.ssim), "swapped": found.swapped or None,
            "swap_rank": None if found.swap_rank is None else plain([found.swap_rank])[0]}
