"""Channel importance checked against what the model does: zero channels, run the model on, measure.

For each layer with a Taylor importance, three ablations on the first statistics images:
- its k most important channels zeroed (k = catalog.TOP_IMPORTANT, or every channel of a smaller layer);
- k channels drawn at random (seeded by the layer's index), the control;
- each channel alone, on the layers where that is affordable (`single_channel_layers`), to rank-correlate
  the measured change of the target y with the Taylor estimate of it.

The model is rerun from the ablated layer on: every value of the graph is kept from one plain run,
and only the operations downstream of the layer are called again (`Rerun`), for several ablations
at once (the batch repeated once each). The drop is measured on
the target metric: the foreground IoU against the trimaps (or, without them, against the model's own
unablated prediction), or the probability of the image's class (its folder's, else the predicted one).
Sums are kept per fold, so every number has the delete-one-fold jackknife interval.

Over 400 lines because the rerun of the graph (`Rerun`, several ablations a rerun) stays beside the
ablations that are its only use, with their summaries for the pages.
"""

from __future__ import annotations

import collections
import collections.abc
from dataclasses import dataclass, field

import numpy as np

from reportgen import attribution
from reportgen.catalog import TOP_IMPORTANT
from reportgen.intervals import jackknife_interval
from reportgen.linear_probes import FoldRatio
from reportgen.prose import fmt, fmt_interval

ABLATION_IMAGES = 10  # statistics images ablated by default (--ablation-images)
SINGLE_CHANNEL_BUDGET = 24.0  # forward passes (per image) spent on single-channel ablations, cheapest layers first
RANDOM_SEED = 20170601  # the random channels of layer i are drawn with seed RANDOM_SEED + i
# Ablations run together in one rerun, the batch repeated once each: the top-k and random-k variants
# of a layer, then its single channels. The rerun's values grow with it (20 images for batches of 5).
GATES_PER_RERUN = 4


@dataclass(frozen=True)
class LayerPlan:
    """Which channels one layer's ablations zero."""

    top: tuple[int, ...]
    random: tuple[int, ...]
    single: bool  # every channel alone too
    downstream: float = 0.0  # the share of the graph a rerun from this layer runs (Rerun.downstream_share)


def plans(rerun: "Rerun", importances: dict[int, np.ndarray]) -> dict[int, LayerPlan]:
    """Every layer's ablations, from the layers' Taylor importances (conv index -> C values)."""
    usable = {k: v for k, v in importances.items() if v is not None and rerun.tap_node[k] is not None}
    single = single_channel_layers({k: len(v) for k, v in usable.items()},
                                   {k: rerun.downstream_share(k) for k in usable})
    found = {k: plan_layer(k, v, k in single, rerun.downstream_share(k)) for k, v in usable.items()}
    return {k: plan for k, plan in found.items() if plan is not None}


def plan_layer(index: int, importance: np.ndarray | None, single: bool, downstream: float = 0.0) -> LayerPlan | None:
    """The ablations of conv layer `index` (0-based) from its Taylor importances, or None without them."""
    if importance is None or not np.isfinite(importance).any():
        return None
    channels = len(importance)
    k = min(TOP_IMPORTANT, channels)
    top = np.argsort(-np.nan_to_num(importance, nan=-1.0), kind="stable")[:k]
    random = np.random.default_rng(RANDOM_SEED + index).choice(channels, size=k, replace=False)
    return LayerPlan(tuple(int(c) for c in top), tuple(int(c) for c in np.sort(random)), single, downstream)


def single_channel_layers(channels: dict[int, int], downstream: dict[int, float],
                          budget: float = SINGLE_CHANNEL_BUDGET) -> set[int]:
    """The layers whose every channel is ablated alone: cheapest first (channels x the share of the
    graph downstream of the layer, in forward passes), while the total stays within `budget`."""
    chosen, spent = set(), 0.0
    for layer in sorted(channels, key=lambda k: (channels[k] * downstream[k], k)):
        cost = channels[layer] * downstream[layer]
        if channels[layer] < 2 or spent + cost > budget:
            continue
        chosen.add(layer)
        spent += cost
    return chosen


class Rerun:
    """A model's graph run operation by operation, eagerly, keeping every value, so that one layer's
    output can be changed and only what lies downstream of it computed again."""

    def __init__(self, model, convs, target: attribution.Target):
        from reportgen import graph

        self.model = model
        self.nodes = [node for node in graph.nodes(model) if not node.is_input]
        self.taps = [attribution.attribution_source(model, conv)[0] for conv in convs]  # what Taylor estimates
        produced = {id(t): i for i, node in enumerate(self.nodes) for t in node.output_tensors}
        self.tap_node = [produced.get(id(t)) for t in self.taps]  # None: not in this graph (nested models)
        # The last node that reads each value: a rerun lets go of a value once it is read for the last time.
        self.last_read = {id(t): i for i, node in enumerate(self.nodes) for t in node.input_tensors}
        self.channels_first = [conv.channels_first for conv in convs]
        self.output = model.outputs[target.output]

    def downstream_share(self, layer: int) -> float:
        """The share of the graph's operations that run again when the layer's output changes."""
        position = self.tap_node[layer]
        return 0.0 if position is None else (len(self.nodes) - position - 1) / max(len(self.nodes), 1)

    def run(self, feeds) -> dict:
        """Every value of the graph on a batch, by the id of its symbolic tensor."""
        import tensorflow as tf

        values = {id(t): tf.convert_to_tensor(x) for t, x in zip(self.model.inputs, feeds)}
        for node in self.nodes:
            self._call(node, values, values)
        return values

    @staticmethod
    def _call(node, lookup, into: dict) -> None:
        import keras

        args, kwargs = node.arguments.fill_in(lookup)
        if "training" in getattr(node.operation, "_call_context_args", {}):
            kwargs["training"] = False
        outputs = node.operation(*args, **kwargs)
        for tensor, value in zip(node.outputs, keras.tree.flatten(outputs)):
            into[id(tensor)] = value

    def output_with(self, values: dict, layer: int, gate: np.ndarray):
        """The target output with the layer's channels multiplied by `gate` (C values: 0 removes one)."""
        return self.outputs_with(values, layer, [gate])[0]

    def outputs_with(self, values: dict, layer: int, gates: list) -> list:
        """The target output under each of `gates`, in one rerun: the batch repeated once a gate, so
        the operations downstream of the layer are called once for all of them."""
        import tensorflow as tf

        tap = self.taps[layer]
        shape = [1] * len(tap.shape)
        shape[1 if self.channels_first[layer] else -1] = len(gates[0])
        original = values[id(tap)]
        changed = {id(tap): tf.concat([original * np.asarray(gate, np.float32).reshape(shape) for gate in gates],
                                      axis=0)}
        lookup = _Repeated(changed, values, len(gates), int(original.shape[0]))
        for position in range(self.tap_node[layer] + 1, len(self.nodes)):
            node = self.nodes[position]
            if any(id(t) in changed for t in node.input_tensors):
                self._call(node, lookup, changed)
                lookup.release([id(t) for t in node.input_tensors if self.last_read.get(id(t)) == position
                                and t is not self.output])
        return tf.split(lookup[id(self.output)], len(gates), axis=0)


class _Repeated(collections.abc.Mapping):
    """A rerun's values by tensor id: those it changed (batch x gates), and the plain run's others,
    repeated once a gate along the batch when a changed operation reads them."""

    def __init__(self, changed: dict, values: dict, copies: int, batch: int):
        self.changed, self.values, self.copies, self.batch = changed, values, copies, batch
        self.repeated: dict = {}

    def __getitem__(self, key):
        if key in self.changed:
            return self.changed[key]
        if key not in self.repeated:
            value = self.values[key]
            shape = getattr(value, "shape", ())
            if self.copies > 1 and len(shape) and shape[0] == self.batch:
                import tensorflow as tf

                value = tf.concat([value] * self.copies, axis=0)
            self.repeated[key] = value
        return self.repeated[key]

    def __iter__(self):
        return iter({**self.values, **self.changed})

    def __len__(self) -> int:
        return len({**self.values, **self.changed})

    def release(self, keys) -> None:
        """Values no later operation reads."""
        for key in keys:
            self.changed.pop(key, None)
            self.repeated.pop(key, None)


def _unit_ratio(folds: int) -> FoldRatio:
    return FoldRatio(folds, 1)


@dataclass
class AblationSums:
    """The ablations' results summed per fold, mergeable like every accumulator (one for all layers)."""

    folds: int
    metric: str = ""
    baseline: FoldRatio | None = None
    top: dict = field(default_factory=dict)  # layer -> FoldRatio of the metric with the top k removed
    random: dict = field(default_factory=dict)  # layer -> FoldRatio with k random channels removed
    single: dict = field(default_factory=dict)  # layer -> C: sum over images of the change of y, each channel alone
    single_images: dict = field(default_factory=dict)  # layer -> images in `single`
    images: int = 0

    plans: dict = field(default_factory=dict)  # layer -> the LayerPlan its ablations followed
    seconds: float = 0.0  # worker-seconds the check took, summed over workers (for benchmarks; never on the site,
    # which is byte for byte the same on every build of the same inputs)

    def merge(self, other: "AblationSums") -> "AblationSums":
        baseline = other.baseline if self.baseline is None else \
            self.baseline if other.baseline is None else self.baseline.merge(other.baseline)
        return AblationSums(self.folds, self.metric or other.metric, baseline, _joined(self.top, other.top),
                            _joined(self.random, other.random), _joined(self.single, other.single),
                            _joined(self.single_images, other.single_images), self.images + other.images,
                            {**self.plans, **other.plans}, self.seconds + other.seconds)


def _joined(mine: dict, theirs: dict) -> dict:
    """Two by-layer dicts of sums (FoldRatio, arrays or counts), summed where both have a layer."""
    found = dict(mine)
    for key, value in theirs.items():
        if key not in found:
            found[key] = value
        elif isinstance(value, FoldRatio):
            found[key] = found[key].merge(value)
        else:
            found[key] = found[key] + value
    return found


class Metric:
    """The target metric of one batch: what ablation lowers. `score(output)` gives, per image, the
    (numerator, denominator) of its contribution to the ratio."""

    def __init__(self, target: attribution.Target, baseline_output: np.ndarray, trimaps, labels):
        self.target = target
        baseline_output = np.asarray(baseline_output, np.float32)
        if target.kind == attribution.FOREGROUND:
            self.name = "foreground IoU" if trimaps is None else f"{target.name} IoU against the trimaps"
            self.truth = self._foreground(baseline_output) if trimaps is None else np.asarray(trimaps) == 1
        elif target.kind == attribution.CLASS:
            self.name = "probability of the image's class" if labels is not None else \
                "probability of the class predicted without ablation"
            if target.channel is not None:
                self.name, self.classes = f"probability of the class {target.name}", \
                    np.full(len(baseline_output), target.channel)
            else:
                self.classes = np.asarray(labels) if labels is not None else baseline_output.argmax(axis=-1)
        else:
            self.name = "pixel agreement with the unablated prediction"
            self.truth = baseline_output.argmax(axis=-1)

    def _foreground(self, output: np.ndarray) -> np.ndarray:
        if self.target.binary:
            return output[..., 0] > 0.5
        return output.argmax(axis=-1) == self.target.channel

    def score(self, output) -> tuple[np.ndarray, np.ndarray]:
        output = np.asarray(output, np.float32)
        if self.target.kind == attribution.FOREGROUND:
            predicted = self._foreground(output)
            axes = tuple(range(1, predicted.ndim))
            return (predicted & self.truth).sum(axis=axes), (predicted | self.truth).sum(axis=axes)
        if self.target.kind == attribution.CLASS:
            return output[np.arange(len(output)), self.classes], np.ones(len(output))
        agree = output.argmax(axis=-1) == self.truth
        return agree.sum(axis=(1, 2)), np.full(len(output), agree[0].size)


def _add(ratio: FoldRatio, scored: tuple[np.ndarray, np.ndarray], folds: np.ndarray) -> None:
    numerator, denominator = scored
    np.add.at(ratio.numerator[:, 0], folds, numerator)
    np.add.at(ratio.denominator[:, 0], folds, denominator)


def shares(rerun: Rerun, plans: dict[int, LayerPlan], parts: int, single: bool) -> list[set[int]]:
    """The layers of `plans` in `parts` shares of about equal work (in forward passes: the share of the
    graph downstream of a layer, times its reruns: two, and one a channel where `single`), so that
    workers can split one batch's check between them. The same plans give the same shares."""
    found = [set() for _ in range(max(1, parts))]
    work = [0.0] * len(found)
    cost = {layer: plan.downstream * (2 + (int(rerun.taps[layer].shape[1 if rerun.channels_first[layer] else -1])
                                           if plan.single and single else 0)) for layer, plan in plans.items()}
    for layer in sorted(cost, key=lambda k: (-cost[k], k)):
        lightest = min(range(len(found)), key=lambda k: (work[k], k))
        found[lightest].add(layer)
        work[lightest] += cost[layer]
    return found


def ablate_batch(rerun: Rerun, feeds, plans: dict[int, LayerPlan], target: attribution.Target, folds: np.ndarray,
                 trimaps, labels, found: AblationSums, single: bool = True, baseline_counted: bool = True) -> None:
    """Every layer's ablations on one batch, added to `found`; the single-channel ones where the plan
    has them and `single` (the statistics pass runs them on its first batch only). A batch's layers
    may be split over calls (`shares`): one of them, `baseline_counted`, counts its images and
    unablated metric."""
    import time

    started = time.monotonic()
    values = rerun.run(feeds)
    baseline = np.asarray(values[id(rerun.output)], np.float32)
    metric = Metric(target, baseline, trimaps, labels)
    found.metric = metric.name
    if baseline_counted:
        if found.baseline is None:
            found.baseline = _unit_ratio(found.folds)
        _add(found.baseline, metric.score(baseline), folds)
        found.images += len(baseline)
    y = np.asarray(target.scores(baseline), np.float64)
    for layer, plan in plans.items():
        if rerun.tap_node[layer] is None:
            continue
        found.plans[layer] = plan
        channels = int(rerun.taps[layer].shape[1 if rerun.channels_first[layer] else -1])
        singles = range(channels) if plan.single and single else range(0)
        gates = [_without(channels, plan.top), _without(channels, plan.random),
                 *(_without(channels, (channel,)) for channel in singles)]
        ablated = []
        for first in range(0, len(gates), GATES_PER_RERUN):
            ablated += rerun.outputs_with(values, layer, gates[first:first + GATES_PER_RERUN])
        for output, into in zip(ablated[:2], (found.top, found.random)):
            _add(into.setdefault(layer, _unit_ratio(found.folds)), metric.score(output), folds)
        if singles:
            changes = found.single.setdefault(layer, np.zeros(channels))
            for channel, output in zip(singles, ablated[2:]):
                changes[channel] += np.abs(y - np.asarray(target.scores(output), np.float64)).sum()
            found.single_images[layer] = found.single_images.get(layer, 0) + len(baseline)
    found.seconds += time.monotonic() - started


def _without(channels: int, removed) -> np.ndarray:
    """The gate that zeroes the `removed` channels of a layer of `channels`."""
    gate = np.ones(channels, np.float32)
    gate[list(removed)] = 0.0
    return gate


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either side is constant."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3 or np.ptp(a[keep]) == 0 or np.ptp(b[keep]) == 0:
        return float("nan")
    return float(spearmanr(a[keep], b[keep]).statistic)


def layer_summary(found: AblationSums, layer: int, plan: LayerPlan, importance: np.ndarray, name: str) -> dict | None:
    """One layer's ablation check for the page and stats.json: the numbers with their 90% intervals,
    and sentences that say them."""
    if layer not in found.top or found.baseline is None:
        return None

    def value(ratio: FoldRatio) -> list:
        return [float(ratio.ratio()[0]), *ratio.interval()]

    baseline, top, random = value(found.baseline), value(found.top[layer]), value(found.random[layer])
    # Paired over the same images: the drops' intervals are far narrower than the metric's own.
    top_drop = difference(found.baseline, found.top[layer])
    random_drop = difference(found.baseline, found.random[layer])
    gap = difference(found.random[layer], found.top[layer])
    k = len(plan.top)
    single = found.single.get(layer)
    rho = spearman(importance, single) if single is not None else float("nan")
    every = k == len(importance)
    what = f"all {k} channels" if every else f"the {k} most important channels"
    sentences = [f"Removing {what} of {name} takes the {found.metric} from {fmt(baseline[0])} to {fmt(top[0])}, "
                 f"a drop of {fmt_interval(top_drop[0], top_drop[1:])}" +
                 ("." if every else f"; {k} random channels take it to {fmt(random[0])}, a drop of "
                                    f"{fmt_interval(random_drop[0], random_drop[1:])}.")]
    if not every:
        if np.isfinite(gap[1]) and gap[1] > 0:
            sentences.append("The Taylor ranking picks channels that matter more than chance: the gap between "
                             f"the two drops is {fmt_interval(gap[0], gap[1:])}.")
        elif np.isfinite(gap[2]) and gap[2] < 0:
            sentences.append("Removing the most important channels costs less than removing random ones "
                             f"(by {fmt_interval(-gap[0], (-gap[2], -gap[1]))}): here the Taylor ranking does not "
                             "predict what matters.")
        else:
            sentences.append("The two drops cannot be told apart on these images: the interval of their gap, "
                             f"{fmt_interval(gap[0], gap[1:])}, holds 0.")
    if single is not None and np.isfinite(rho):
        sentences.append(f"Over its {len(importance)} channels, each removed alone, the measured change of the target "
                         f"and its Taylor estimate have a rank correlation of {rho:.2f} (Spearman, "
                         f"{found.single_images[layer]} images)" +
                         (": the estimate does not predict the effect." if rho < 0.3 else "."))
    return {"images": found.images, "metric": found.metric, "forward_passes": forward_passes(found),
            "layers": len(found.plans), "baseline": baseline, "top_k": top, "random_k": random,
            "top_k_drop": top_drop, "random_k_drop": random_drop, "gap": gap,
            "k": k, "top_channels": list(plan.top), "random_channels": list(plan.random),
            "spearman": None if not np.isfinite(rho) else rho,
            "single_images": found.single_images.get(layer, 0), "sentences": sentences}


def forward_passes(found: AblationSums) -> float:
    """What the whole check cost, in forward passes of the model over one image: each rerun counts
    the share of the graph downstream of its layer. A measure of work that is the same on every
    machine, where seconds are not."""
    total = 0.0
    for layer, plan in found.plans.items():
        total += plan.downstream * (2 * found.images +
                                    found.single_images.get(layer, 0) * len(found.single.get(layer, ())))
    return total


def difference(first: FoldRatio, second: FoldRatio) -> list:
    """first's ratio minus second's, over the same images, with its delete-one-fold jackknife interval."""
    value = float(first.ratio()[0] - second.ratio()[0])
    replicates = [float(first.ratio(drop=k)[0] - second.ratio(drop=k)[0]) for k in range(first.folds)]
    return [value, *jackknife_interval(value, replicates)] if first.folds >= 2 else \
        [value, float("nan"), float("nan")]
