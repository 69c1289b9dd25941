"""Page contexts, findings and the whole site from a description built by hand (no model, no TensorFlow).

The fake has three conv layers (two hidden, one head) and two pictured images, with some statistics
undefined (NaN). It comes in three variants: with a ground-truth mask, with no mask at all, and a
classifier over labelled images. Every expected number below follows from the hand-made values.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from concurrent.futures import Executor, Future
from pathlib import Path

import numpy as np
import pytest

import reportgen
from reportgen import answers, assets, channels, charts, findings, pages, prose, render, site, stats
from reportgen.architecture import ArchitectureMap, Edge, Node
from reportgen.capture import ConvLayer
from reportgen.describe import Description, ModelCard
from reportgen.inputs import InputGeometry
from reportgen.layer_stage import ImageRecord, LayerResult
from reportgen.mask_classes import OXFORD
from reportgen.options import BuildOptions
from reportgen.outdir import KEY_FILE
from reportgen.outputs import OutputSpec
from reportgen.render import GridLayout
from reportgen.targets import Targets

NAN = float("nan")
SIZE = 16  # the fake model's input: 16 x 16 x 3
IDS = ("pet_0", "pet_1")
MASK, NO_MASK, CLASSIFIER = "mask", "no mask", "classifier"


@dataclasses.dataclass(frozen=True)
class FakeLayer:
    """One layer's hand-made numbers (per class for the probes: pet, background, border)."""

    name: str
    shape: tuple[int, ...]
    best_iou_pet: tuple[float, ...]  # per channel
    ntv: tuple[float, ...]  # per channel
    cka_mask: float
    probe_pet: float
    rgb_pet: float
    class_accuracy: float
    cka_class: float
    is_output: bool = False


LAYERS = (
    FakeLayer("enc", (SIZE, SIZE, 4), (0.2, 0.5, NAN, 0.1), (NAN,) * 4, cka_mask=0.3, probe_pet=0.4, rgb_pet=0.2,
              class_accuracy=0.5, cka_class=0.1),
    FakeLayer("mid", (8, 8, 6), (0.8, 0.3, 0.1, 0.2, 0.4, NAN), (0.5, 0.25, 0.75, 1.0, NAN, 0.5), cka_mask=NAN,
              probe_pet=0.6, rgb_pet=0.2, class_accuracy=0.9, cka_class=0.7),
    FakeLayer("head", (SIZE, SIZE, 3), (0.95, 0.1, 0.05), (0.1, 0.2, 0.3), cka_mask=0.9, probe_pet=0.9, rgb_pet=0.2,
              class_accuracy=0.6, cka_class=0.2, is_output=True),
)


def _around(value: float, half: float = 0.1) -> tuple[float, float]:
    return (value - half, value + half) if np.isfinite(value) else (NAN, NAN)


def _layer_stats(fake: FakeLayer, variant: str) -> stats.LayerStats:
    channels_ = fake.shape[-1]
    masked, classed = variant == MASK, variant == CLASSIFIER
    best = np.full((3, channels_), NAN)
    if masked:
        best[0] = fake.best_iou_pet
    ntv = np.array(fake.ntv)
    numbers = {key: NAN for key in stats.LAYER_NUMBERS}
    numbers.update(mean=0.5, std=0.25, near_zero_fraction=0.125, participation=0.375,
                   ntv_median=float(np.nanmedian(ntv)) if np.isfinite(ntv).any() else NAN,
                   effective_area_median=0.2, cka_mask=fake.cka_mask if masked else NAN,
                   best_iou_focus_max=float(np.nanmax(best[0])) if masked else NAN,
                   cka_class=fake.cka_class if classed else NAN)
    intervals = {key: _around(value) for key, value in numbers.items()}
    return stats.LayerStats(
        mean=0.5, std=0.25, near_zero_fraction=0.125, channel_strength=np.arange(channels_, 0, -1, dtype=float),
        ntv=ntv, effective_area=np.full(channels_, 0.2), best_iou=best, cka_mask=numbers["cka_mask"],
        participation=0.375, probe_weights=[], cka_class=numbers["cka_class"], images=4, folds=2,
        intervals=intervals, numbers=numbers)


def _layer(index: int, fake: FakeLayer, variant: str) -> LayerResult:
    conv = ConvLayer(index=index, name=fake.name, path=(), kind="Conv2D", kernel=(3, 3), strides=(1, 1),
                     dilation=(1, 1), filters=fake.shape[-1], params=10, output_shape=fake.shape,
                     tap_name=fake.name, is_output=fake.is_output, layer_name=fake.name)
    s = _layer_stats(fake, variant)
    probe = np.array([fake.probe_pet, 0.7, 0.1]) if variant == MASK else np.full(3, NAN)
    rgb = np.array([fake.rgb_pet, 0.5, 0.1]) if variant == MASK else np.full(3, NAN)
    accuracy = fake.class_accuracy if variant == CLASSIFIER else NAN
    result = LayerResult(
        conv=conv, slug=fake.name, role=f"role of {fake.name}", receptive_field=3.0 * index, stride=SIZE / fake.shape[0],
        layout=GridLayout.for_maps(*fake.shape), shape=fake.shape, stats=s,
        order=np.argsort(-s.channel_strength, kind="stable"), probe_iou=probe, rgb_probe_iou=rgb,
        class_accuracy=accuracy,
        intervals={"probe_iou_focus": _around(probe[0]), "rgb_probe_iou_focus": _around(rgb[0]),
                   "probe_iou_mean": _around(np.nanmean(probe)) if variant == MASK else (NAN, NAN),
                   "class_probe_accuracy": _around(accuracy)})
    ranges = np.zeros((len(IDS), fake.shape[-1], 2), np.float32)
    return dataclasses.replace(result, channel_numbers=channels.channel_numbers(result, (SIZE, SIZE), ranges))


def _trimap() -> np.ndarray:
    """Oxford's values: the pet (1) in the top half, the background (2) below."""
    trimap = np.full((SIZE, SIZE), 2, np.uint8)
    trimap[:SIZE // 2] = 1
    return trimap


def _prediction() -> np.ndarray:
    """Class ids (0: pet): the pet predicted in the top three quarters."""
    predicted = np.ones((SIZE, SIZE), np.int64)
    predicted[:SIZE * 3 // 4] = 0
    return predicted


def _records(variant: str) -> list[ImageRecord]:
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    if variant == MASK:
        return [ImageRecord(i, i, image, _trimap(), _prediction(), mask_classes=OXFORD) for i in IDS]
    if variant == CLASSIFIER:
        return [ImageRecord(i, i, image, None, None, label=k) for k, i in enumerate(IDS)]
    return [ImageRecord(i, i, image, None, None) for i in IDS]


def _outputs(variant: str) -> tuple[list[OutputSpec], list]:
    if variant == MASK:
        scores = np.eye(3)[_prediction()]  # one-hot scores: the prediction as the model gave it
        return [OutputSpec("mask", (SIZE, SIZE, 3), "segmentation")], [[scores, scores]]
    if variant == CLASSIFIER:
        return ([OutputSpec("probs", (2,), "classification", ("cat", "dog"))],
                [[np.array([0.8, 0.2]), np.array([0.3, 0.7])]])
    return [OutputSpec("features", (4,), "other")], [[np.arange(4.0), np.ones(4)]]


def _architecture() -> ArchitectureMap:
    nodes = [Node(((), "image", 0), "image", "InputLayer", "input", (SIZE, SIZE), "16x16x3", 64.0, 16.0)]
    nodes += [Node(((), f.name, 0), f.name, "Conv2D", "conv", f.shape[:2], "x".join(map(str, f.shape)),
                   64.0 + 22 * k, 16.0, conv=k) for k, f in enumerate(LAYERS, start=1)]
    edges = [Edge(k, k + 1, f"{nodes[k].x:.0f},16 {nodes[k + 1].x:.0f},16") for k in range(len(LAYERS))]
    return ArchitectureMap(nodes, edges, [(16.0, "16x16")], 150, 48)


def fake_description(variant: str = MASK, card: ModelCard | None = None) -> Description:
    """The hand-made build: three layers, two images, in one of the three variants."""
    outputs, predictions = _outputs(variant)
    classed = variant == CLASSIFIER
    return Description(
        model=card or ModelCard(description="a hand-made model", parameters=1234, checksum="ab" * 32, trained=True,
                                meta={}, file_name="fake.keras", image_input="image"),
        architecture=_architecture(), options=BuildOptions(), records=_records(variant),
        layers=[_layer(k, fake, variant) for k, fake in enumerate(LAYERS, start=1)], key="fake-key",
        geometry=InputGeometry(SIZE, SIZE, 3), colorbar="assets/colorbar.png", previous=None,
        layer_cka=np.array([[1.0, 0.5, NAN], [0.5, 1.0, 0.25], [NAN, 0.25, 1.0]]), outputs=outputs,
        predictions=predictions, class_names=["cats", "dogs"] if classed else [], warnings=["a warning"],
        input_layers=(), original_sizes=[(SIZE, SIZE), (SIZE, 2 * SIZE)],
        targets=Targets.decide(IDS, labels=[0, 1] if classed else None, trimaps_given=variant == MASK,
                               class_names=("cats", "dogs") if classed else ()))


@pytest.fixture(params=[MASK, NO_MASK, CLASSIFIER])
def variant(request) -> str:
    return request.param


def test_the_model_card_says_the_model_s_facts():
    card = ModelCard(description="a hand-made model", parameters=1234567, checksum="", trained=False, meta={},
                     file_name=None, image_input="image", other_inputs=("extra",), unfed_convs=("cb",))
    view = pages.model_view(fake_description(card=card))
    assert view["parameters"] == "1,234,567"
    assert view["conv_layers"] == 3
    assert view["input"] == (InputGeometry(SIZE, SIZE, 3).describe() + " (input 'image'; the other inputs, 'extra', "
                             "were fed zeros; 1 conv layer calls that this input does not reach are left out: cb)")
    assert view["reshaped"] == "1 of the 2 images had another aspect ratio and were stretched to fit."
    assert view["checksum"] == "none (initialised weights)"
    assert view["trained_on"] == "not trained"
    assert view["tap"] == "conv output (before normalisation and activation)"
    one_input = pages.model_view(fake_description())
    assert one_input["input"] == InputGeometry(SIZE, SIZE, 3).describe()
    assert one_input["parameters"] == "1,234" and one_input["checksum"] == "ab" * 32
    assert one_input["trained_on"] == "not stated"


def test_the_index_table_has_the_columns_of_what_the_build_measured(variant):
    description = fake_description(variant)
    context = pages.index_context(description, pages.common(description))
    assert ("Probe IoU" in context["columns"]) == (variant == MASK)
    assert ("CKA mask" in context["columns"]) == (variant == MASK)
    assert ("Class probe acc." in context["columns"]) == (variant == CLASSIFIER)
    assert "nTV" in context["columns"] and "PR / C" in context["columns"]
    rows = context["layers"]
    assert [row["name"] for row in rows] == ["enc", "mid", "head"]
    assert [row["href"] for row in rows] == ["layers/enc.html", "layers/mid.html", "layers/head.html"]
    ntv = context["columns"].index("nTV")
    # enc's nTV is undefined on every channel: said so, and sorted apart, never a 0.
    assert rows[0]["cells"][ntv] == {"text": "undefined", "sort": ""}
    assert rows[1]["cells"][ntv] == {"text": "0.5", "sort": "0.5"}  # the median of 0.25, 0.5, 0.5, 0.75, 1
    assert [s["channel"] for s in rows[1]["strongest"]] == [0, 1, 2]
    if variant == MASK:
        probe = context["columns"].index("Probe IoU")
        assert [row["cells"][probe]["text"] for row in rows] == ["0.4", "0.6", "0.9"]
        cka = context["columns"].index("CKA mask")
        assert rows[1]["cells"][cka]["text"] == "undefined"
    if variant == CLASSIFIER:
        accuracy = context["columns"].index("Class probe acc.")
        assert [row["cells"][accuracy]["text"] for row in rows] == ["0.5", "0.9", "0.6"]
    assert context["warnings"] == ["a warning"]
    assert context["changes"].first_build


def test_the_map_colours_each_statistic_from_its_lowest_to_its_highest_layer():
    description = fake_description(MASK)
    arch = pages.common(description).arch
    first = arch["statistics"][0]
    assert first == {"label": "Mask decodability (probe IoU, pet)", "low": "0.4", "high": "0.9"}
    lut = render.colormap_lut(description.options.cmap)
    assert arch["fills"][0][0] == "#%02x%02x%02x" % tuple(lut[0])
    assert arch["fills"][0][2] == "#%02x%02x%02x" % tuple(lut[255])
    cka = [s["label"] for s in arch["statistics"]].index("Linear CKA with the mask")
    assert arch["fills"][cka][1] == "" and arch["inks"][cka][1] == "undefined"  # mid's CKA is NaN: no colour
    assert arch["map"] is description.architecture and sorted(arch["rows"]) == [1, 2, 3]


def test_a_layer_page_holds_its_numbers_with_their_intervals(variant):
    description = fake_description(variant)
    shared = pages.common(description)
    context = pages.layer_context(description, shared, 1)
    rows = dict(context["stat_rows"])
    assert rows["Images measured"].startswith("4; ")
    assert rows["Receptive field"] == "6 input pixels" and rows["Stride"] == "2 input pixels per map pixel"
    assert rows["nTV per input pixel, median over channels"] == "0.5 (0.4 to 0.6)"
    assert ("Mask decodability (probe IoU, pet)" in rows) == (variant == MASK)
    if variant == MASK:
        assert rows["Mask decodability (probe IoU, pet)"] == "0.6 (0.5 to 0.7)"
        assert rows["RGB baseline (the same probe on pooled pixels, pet)"] == "0.2 (0.1 to 0.3)"
        assert rows["Linear CKA with the mask"] == "undefined"
        assert rows["Best single-channel IoU, pet (max)"] == "0.8 (0.7 to 0.9)"
    if variant == CLASSIFIER:
        assert rows["Class decodability (leave-out probe accuracy)"] == "0.9 (0.8 to 1) (chance 0.5)"
        assert rows["Linear CKA with the class"] == "0.7 (0.6 to 0.8)"
    assert context["layer"] is shared.rows[1]
    assert context["prev"]["name"] == "enc" and context["next"]["name"] == "head"
    assert context["channels"] == 6 and context["map_size"] == "8x8"
    assert context["channel_data"]["images"] == [{"id": i, "href": f"images/{i}.html",
                                                  "input": assets.image_path(i, "input")} for i in IDS]
    assert context["channel_data"]["order"] == [0, 1, 2, 3, 4, 5]
    first = pages.layer_context(description, shared, 0)
    assert first["prev"] is None and first["next"]["name"] == "mid"


def test_a_layer_page_s_depth_charts_show_what_is_defined():
    description = fake_description(MASK)
    charts = pages.layer_context(description, pages.common(description), 2)["depth_charts"]
    titles = [chart["title"] for chart in charts]
    assert titles == ["Linear CKA with the mask", "Mask decodability (probe IoU, pet)", "Median nTV (detail)"]
    cka = charts[0]["bars"]
    assert [bar["current"] for bar in cka] == [False, False, True]
    assert cka[1]["h"] == "0.0" and cka[1]["label"] == "conv 2: undefined"  # NaN: no bar
    assert cka[2]["h"] == "40.0" and cka[0]["h"] == f"{40 * 0.3 / 0.9:.1f}"
    no_mask = fake_description(NO_MASK)
    titles = [c["title"] for c in pages.layer_context(no_mask, pages.common(no_mask), 0)["depth_charts"]]
    assert titles == ["Median nTV (detail)"]


def test_an_image_page_links_each_layer_s_strongest_channel_and_grades_the_prediction(variant):
    description = fake_description(variant)
    shared = pages.common(description)
    context = pages.image_context(description, shared, 0)
    assert context["image"]["id"] == "pet_0" and context["prev"] is None and context["next"]["id"] == "pet_1"
    assert [s["href"] for s in context["strip"]] == ["layers/enc.html#c0", "layers/mid.html#c0", "layers/head.html#c0"]
    view = context["image"]
    if variant == MASK:
        # The pet is the top 8 rows; the top 12 are predicted pet: IoU 8 / 12.
        assert view["iou"] == prose.fmt(8 / 12) == "0.667"
        assert view["outputs"][0]["text"] == "predicted area: class 0 75%, class 1 25%"
    else:
        assert view["iou"] is None and view["error"] is None
    if variant == CLASSIFIER:
        assert view["label"] == "cats"
        assert view["outputs"][0]["text"] == "cat 0.800, dog 0.200"
        assert view["outputs"][0]["score"] == "probability"


def test_the_findings_name_the_layers_the_numbers_point_to():
    said = findings.compute(fake_description(MASK), NAN)
    assert said[0].startswith("The statistics cover 4 images of the source, of which 2 are pictured")
    assert said[1] == ("A linear probe (class-balanced decision) decodes the pet from a hidden layer's features at "
                       "IoU 0.60 (0.50-0.70) at best (conv 2 (mid)); it first reaches 90% of that at conv 2 (mid). "
                       "The same probe on raw RGB reaches 0.20 (0.10-0.30): so the layers add +0.40 of "
                       "decodability over the pixels.")
    assert said[2] == ("The head, conv 3 (head), is the prediction itself and is left out of these peaks; the probe "
                       "on it scores 0.90 (0.80-1.00).")
    # The head's 0.95 is the largest best-channel IoU, but the head is the prediction: mid's 0.8 is named.
    assert said[3] == ("The most mask-like single channel of the hidden layers is in conv 2 (mid): thresholded at "
                       "the pet's own area it overlaps the pet with IoU 0.80 (0.70-0.90) (mask: the ground-truth "
                       "mask).")
    assert len(said) == 4  # fewer than six layers: no detail-versus-abstraction sentence; no classes, no claim


def _with_explanations(description):
    """The hand-made build with Grad-CAM localised and sanity-checked: enc's map survives randomising what
    follows it (0.9), mid's does not (0.2), the head's group has nothing after it."""
    made = {"enc": (0.3, 0.9), "mid": (0.6, 0.2), "head": (0.9, NAN)}
    layers = []
    for result in description.layers:
        mass, rank = made[result.conv.name]
        numbers = {**result.stats.numbers, "cam_mass_focus": mass, "sanity_rank": rank}
        intervals = {**result.stats.intervals, "cam_mass_focus": _around(mass), "sanity_rank": _around(rank)}
        layers.append(dataclasses.replace(result, stats=dataclasses.replace(result.stats, numbers=numbers,
                                                                             intervals=intervals)))
    baselines = {"uniform": {"value": 0.5, "interval": [0.4, 0.6]}, "edges_mass": {"value": 0.35, "interval": [0.3, 0.4]},
                 "edges_rank": {"value": 0.4, "interval": [0.3, 0.5]}}
    return dataclasses.replace(description, layers=layers, localisation_baselines=baselines,
                               sanity={"images": 2, "randomised_from": [3, 2, 1]})


def test_the_findings_say_which_layer_s_grad_cam_to_trust():
    """mid's map, which changes when what follows it is random, is the one named, though the head's mass
    on the pet is larger: the head is the prediction itself."""
    description = _with_explanations(fake_description(MASK))
    said = findings.compute(description, NAN)
    assert said[-2] == ("Sanity check of Grad-CAM on 2 pictured images: randomising every layer after a layer's group "
                        "leaves the map of 1 of the 2 layers checked nearly unchanged (rank correlation 0.7 or more: "
                        "conv 1); those maps show the layer's own structure more than the decision.")
    assert said[-1] == ("Grad-CAM on the pet: conv 2 (mid) puts the largest share of its map's mass on the pet among "
                        "the layers that pass the sanity check, 0.60 (0.50-0.70), against 0.50 for a uniform map and "
                        "0.35 for the image's own edges; 1 of the 2 layers localise better than the edges (the "
                        "interval above them).")


def test_the_index_answers_first_with_the_numbers_behind_each_answer():
    description = _with_explanations(fake_description(MASK))
    found = answers.answers(description, NAN, pages.image_views(description))
    questions = [a["question"] for a in found]
    assert questions == ["Where does the representation become the pet's mask?", "Which layer's explanation to trust?",
                         "The pictured images"]
    mask, trusted, pictured = found
    # The probe is 0.4 at enc and 0.6 at mid: 90% of the best is first reached at mid; RGB's best is 0.2.
    assert mask["text"] == ["From conv 2 (mid) on: a linear probe decodes the pet's mask at 90% of its best, 0.6 "
                            "(0.5 to 0.7) at conv 2 (mid); on raw RGB at best 0.2 (0.1 to 0.3)."]
    assert mask["curve"]["line"] == "0.0,33.6 160.0,22.4 320.0,5.6"  # 0.4, 0.6, 0.9 on a 56 px high 0-1 scale
    assert trusted["text"] == ["conv 2 (mid): 0.6 (0.5 to 0.7) of its Grad-CAM lies on the pet, against 0.50 for a "
                               "uniform map and 0.35 for the image's edges; its map changes when the layers after it "
                               "are random (ρ 0.2 (0.1 to 0.3))."]
    assert [row["name"] for row in trusted["board"]] == ["conv 2 (mid)", "conv 1 (enc)"]  # enc fails the sanity check
    assert [image["id"] for image in pictured["images"]] == list(IDS)
    assert answers.answers(fake_description(NO_MASK), NAN, []) == []  # nothing measured that answers a question


def test_without_a_mask_no_finding_speaks_of_one():
    said = findings.compute(fake_description(NO_MASK), NAN)
    assert said == ["The statistics cover 4 images of the source, of which 2 are pictured; the probes are scored on "
                    "all of them, each image held out of its fold's fit. The ranges are 90% intervals from a "
                    "delete-one-fold jackknife over 4 images."]


def test_a_classifier_s_findings_compare_the_class_probe_with_chance():
    description = fake_description(CLASSIFIER)
    chance = pages.chance(description)
    assert chance == 0.5
    said = findings.compute(description, chance)
    assert said[1] == ("A linear probe on each layer's globally pooled features, tested on images it never saw, "
                       "decodes the class at accuracy 0.90 (0.80-1.00) at best (conv 2 (mid)), against 0.50 for "
                       "always guessing the most common class (its interval is above chance); it first reaches 90% "
                       "of that at conv 2 (mid). With 4 images this is a coarse estimate.")
    assert said[2] == "Linear CKA with the one-hot class is highest at conv 2 (mid) (0.70 (0.60-0.80))."
    assert len(said) == 3


def test_the_about_changes_and_search_pages(variant):
    description = fake_description(variant)
    shared = pages.common(description)
    assert pages.changes_context(shared)["changes"].summary == ["First build: there is no previous build to compare "
                                                                "with."]
    search = pages.search_context(description, channels.every_channel(description.layers, shared.rows))
    assert search["layer_count"] == 3 and search["channel_count"] == 4 + 6 + 3
    about = pages.about_context(description.mask_classes)
    assert {row["key"] for row in about["statistics"]} >= {"cka_mask", "ntv_median"}
    site_context = pages.site_context(description)
    assert site_context["model"] == "a hand-made model" and site_context["focus"] == "pet"


def test_the_manifest_states_the_model_card_s_facts():
    manifest = pages.common(fake_description(MASK)).manifest
    assert manifest["model"]["parameters"] == 1234 and manifest["model"]["file"] == "fake.keras"
    assert manifest["model"]["sha256"] == "ab" * 32 and manifest["data"]["image_ids"] == list(IDS)
    assert manifest["statistics"]["images"] == 2 and manifest["statistics"]["folds"] == 2


class _ChartJobs(Executor):
    """Records the chart drawings write_site asks for instead of drawing them: matplotlib takes
    seconds, and the charts are drawn from the same plain data by the fresh-interpreter test below."""

    def __init__(self):
        self.jobs = []

    def submit(self, fn, /, *args, **kwargs) -> Future:
        self.jobs.append((fn, args))
        done: Future = Future()
        done.set_result(None)
        return done


def test_write_site_renders_every_page_from_the_description(variant, tmp_path):
    description = fake_description(variant)
    drawings = _ChartJobs()
    count = site.write_site(tmp_path, description, drawings)
    assert [(fn, args[-2]) for fn, args in drawings.jobs] == [(charts.write_charts, theme) for theme in charts.THEMES]
    plan = json.dumps(pages.common(description).chart_plan, sort_keys=True, default=str)  # NaN != NaN: as text
    assert all(args[1] is description.layers and json.dumps(args[-1], sort_keys=True, default=str) == plan
               for _, args in drawings.jobs)
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.html"))
    assert count == len(written) == 10
    assert written == sorted(["index.html", "changes.html", "about.html", "search.html", "404.html",
                              "layers/enc.html", "layers/mid.html", "layers/head.html",
                              "images/pet_0.html", "images/pet_1.html"])
    index = (tmp_path / "index.html").read_text()
    assert "a hand-made model" in index
    for sentence in findings.compute(description, pages.chance(description)):
        assert sentence.replace("'", "&#39;") in index
    data = json.loads((tmp_path / "data" / "stats.json").read_text())
    assert [layer["name"] for layer in data["layers"]] == ["enc", "mid", "head"]
    assert data["layer_cka"][0][2] is None  # NaN is null, never 0
    layer = (tmp_path / "layers" / "mid.html").read_text()
    for label, value in pages.layer_context(description, pages.common(description), 1)["stat_rows"]:
        assert value in layer
    assert (tmp_path / KEY_FILE).read_text() == "fake-key\n"


def test_the_site_stage_imports_and_writes_without_tensorflow(tmp_path):
    """In a fresh interpreter (in the whole suite, earlier tests have imported TensorFlow): the site
    stage's modules import, and a whole site is written from the hand-made description, one theme's
    charts drawn (the other differs in colours only), with neither TensorFlow nor Keras loaded."""
    script = ("import sys\n"
              "import reportgen.site, reportgen.findings, reportgen.downloads, reportgen.pages, reportgen.describe\n"
              "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
              "from pathlib import Path\n"
              "from test_contexts import _ChartJobs, fake_description\n"
              "drawings = _ChartJobs()\n"
              f"print(reportgen.site.write_site(Path({str(tmp_path)!r}), fake_description(), drawings))\n"
              "draw, arguments = drawings.jobs[0]\n"
              "draw(*arguments)\n"
              "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n")
    package_root = str(Path(reportgen.__file__).resolve().parent.parent)
    path = os.pathsep.join(filter(None, (package_root, str(Path(__file__).parent), os.environ.get("PYTHONPATH"))))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": path})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["[]", "10", "[]"]
    assert "conv 2 (mid)" in (tmp_path / "index.html").read_text()
    assert {p.name for p in (tmp_path / "img" / "charts").glob("*.svg")} >= {"cka-light.svg", "metrics-light.svg"}
