"""`reportgen compare MODEL_A MODEL_B`: two models on the same images, layer by layer.

Both models run over the statistics images in the build's batches; each batch adds the unbiased
HSIC of every pair among both models' layers to one `cka.MinibatchCKA` (minibatch CKA, Nguyen,
Raghu and Kornblith 2021), whose A x B block is the cross-model CKA, and the probe images' rows to
each model's `fingerprint.FingerprintSums`, whose channel profiles match the channels of layers of
equal width. It runs in process, the two models in memory, or, with `--runner`, on Beam over shards
of the statistics images (compare_pass.py): the sums merge, so both give the same result.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reportgen import fingerprint, representation
from reportgen.cka import MinibatchCKA
from reportgen.errors import InputError

DEFAULT_IMAGES = fingerprint.PROBE_IMAGES


@dataclass(frozen=True)
class Side:
    """One model as compared: its name, its conv layers' names and widths, which ones are spatial."""

    name: str
    layers: tuple[str, ...]
    widths: tuple[int, ...]
    spatial: tuple[int, ...]  # positions (in `layers`) of the layers in the CKA


@dataclass
class Result:
    """Two models compared: A x B CKA over the statistics images, best matches, matched channels."""

    a: Side
    b: Side
    images: int
    cka: np.ndarray  # len(a.spatial) x len(b.spatial)
    best: list[dict]  # per spatial layer of A: its best match in B
    channels: list[dict]  # per pair of equal width (each A layer with its best match, if equal)
    findings: list[str]


CKA_KEY = "cka"  # the joint MinibatchCKA of A's spatial layers then B's
FINGERPRINT_KEYS = ("fingerprint A", "fingerprint B")  # each model's FingerprintSums of the probe images


def measure_batch(found: dict, probes, plans, batch, total: int) -> None:
    """One batch (measure.Batch of the statistics images, `total` of them) through both models, into
    `found`'s mergeable sums: the unbiased HSIC of every pair among both models' spatial layers
    (CKA_KEY), and each model's probe-image rows (FINGERPRINT_KEYS). In process and on Beam alike."""
    named = [probe(batch.images, total, attributed=False) for probe in probes]
    joint = found.setdefault(CKA_KEY, MinibatchCKA(sum(len(plan.spatial) for plan in plans)))
    joint.add([values.activations[k] for values, plan in zip(named, plans) for k in plan.spatial])
    for key, values in zip(FINGERPRINT_KEYS, named):
        fingerprint.add_batch(found, key, total, values.activations, batch.indices)


def measure(probes, plans, items) -> dict:
    """The two models over `items` (sources.SourceImage) in the plans' batches, in process."""
    from reportgen.measure import batches_of

    found: dict = {}
    for batch in batches_of(plans[0], items):
        measure_batch(found, probes, plans, batch, len(items))
    return found


def _checked(found: dict, total: int) -> tuple[MinibatchCKA, list]:
    """The joint CKA and both fingerprints' sums of what was measured, all `total` images in them."""
    joint = found.get(CKA_KEY)
    if joint is None or joint.images != total:
        raise InputError(f"the comparison measured {0 if joint is None else joint.images} of {total} images: "
                         "batches of fewer than 4 images give no CKA; use more images")
    return joint, [found.get(key) for key in FINGERPRINT_KEYS]


def summarise(a: Side, b: Side, joint: MinibatchCKA, probes: list, ids: tuple[str, ...]) -> Result:
    """The measured sums as a Result: the cross block, each A layer's best match, its channels matched."""
    matrix = joint.finalise()[:len(a.spatial), len(a.spatial):]
    prints = [p.finalise(ids[:p.count], side.layers) for p, side in zip(probes, (a, b))]
    best, channels = [], []
    for row, k in enumerate(a.spatial):
        values = matrix[row]
        if not np.isfinite(values).any():
            continue
        column = int(np.nanargmax(values))
        match = b.spatial[column]
        best.append({"index": k + 1, "name": a.layers[k], "match_index": match + 1, "match_name": b.layers[match],
                     "cka": float(values[column]), "same_position": match == k})
        if a.widths[k] == b.widths[match]:
            found = representation.match_channels(prints[0].profiles[k], prints[1].profiles[match])
            channels.append({"index": k + 1, "match_index": match + 1, "pairs": found.pairs,
                             "sentence": representation.channels_sentence(found, f"A's conv {k + 1}",
                                                                          f"B's conv {match + 1}")})
    findings = _findings(a, b, matrix, best)
    return Result(a, b, joint.images, matrix, best, channels, findings)


def _findings(a: Side, b: Side, matrix: np.ndarray, best: list[dict]) -> list[str]:
    """Sentences: how many layers match their own position best, and, for one architecture, which
    layers carry the same representation in both."""
    said = []
    if not best:
        return ["No layer of A has a defined CKA with a layer of B."]
    mean = float(np.mean([row["cka"] for row in best]))
    said.append(f"Each layer of A matched with its most similar layer of B: CKA {mean:.2f} on average.")
    if a.layers == b.layers:
        same = sum(row["same_position"] for row in best)
        said.append(f"{same} of {len(best)} layers of A match best the layer at the same position in B.")
        own = {a.spatial[row] + 1: float(matrix[row, row]) for row in range(min(matrix.shape))}
        unchanged = [i for i, value in own.items() if value >= representation.UNCHANGED]
        if unchanged:
            said.append(f"{', '.join(representation.span(*s) for s in representation.runs(unchanged))} carry the "
                        f"same representation in both (CKA {representation.UNCHANGED} or above).")
        moved = [i for i, value in own.items() if value < representation.UNCHANGED]
        if moved:
            values = [own[i] for i in moved]
            said.append(f"{', '.join(representation.span(*s) for s in representation.runs(moved))} differ (CKA with "
                        f"their counterpart {min(values):.2f} to {max(values):.2f}).")
    return said


def side_of(name: str, convs, plan) -> Side:
    return Side(name, tuple(c.qualified_name for c in convs), tuple(int(c.output_shape[-1]) for c in convs),
                tuple(plan.spatial))


def compare_models(model_a, model_b, items, convention, batch_size: int = 5, names=("A", "B"),
                   beam=None) -> Result:
    """Two Keras models over `items` (sources.SourceImage of the size both take), as a Result; in
    process, or on Beam where `beam` (compare_pass.OnBeam) says how."""
    from reportgen import plan
    from reportgen.probe import Probe

    convs, plans, targets = plan.for_items((model_a, model_b), items, convention, batch_size)
    if beam is None:
        found = measure([Probe(m, c, p) for m, c, p in zip((model_a, model_b), convs, plans)], plans, items)
    else:
        from reportgen import compare_pass

        found = compare_pass.run_beam(plans, beam)
    joint, probes = _checked(found, len(items))
    return summarise(side_of(names[0], convs[0], plans[0]), side_of(names[1], convs[1], plans[1]), joint, probes,
                     targets.ids)


def run(model_a: Path, model_b: Path, options, out: Path, runner: str | None = None) -> Result:
    """The command: both models loaded, the statistics images read once (at model A's input size), the
    comparison measured (in process, or on Beam with `runner` and the options' Beam options and
    workers) and written as a site into `out`."""
    from reportgen import pipeline, plan, site
    from reportgen.capture import image_input

    loaded = [pipeline._load_model(dataclasses.replace(options, model_path=path), None) for path in (model_a, model_b)]
    geometries = [plan.geometry(one.model, options.input_size, image_input(one.model, None), options)
                  for one in loaded]
    if geometries[0].size != geometries[1].size or geometries[0].channels != geometries[1].channels:
        raise InputError(f"the two models take different inputs ({geometries[0].describe()} and "
                         f"{geometries[1].describe()}); give --input-size where one is dynamic")
    counted = dataclasses.replace(options, stats_images=options.stats_images or DEFAULT_IMAGES)
    items = pipeline._stats_images(counted, geometries[0])
    beam = None
    if runner is not None:
        from reportgen import compare_pass, stats_pass

        size = options.input_size
        specs = tuple(stats_pass.ModelSpec(path, None, size[0] if size else None, options.unsafe_load,
                                           options.imports, one.checksum or None)
                      for path, one in zip((model_a, model_b), loaded))
        beam = compare_pass.OnBeam(specs, pipeline.worker_images(counted, geometries[0], len(items)), runner,
                                   options.beam_options, options.workers)
    result = compare_models(loaded[0].model, loaded[1].model, items, options.convention, options.batch_size,
                            (Path(model_a).name, Path(model_b).name), beam)
    site.write_comparison(out, result)
    return result
