"""The representation fingerprint: CKA from stored fingerprints against CKA from the features, the
checks of CKA's invariances, channel matching, Kornblith's two-seed check and Beam against in process."""

import keras
import numpy as np
import pytest
from keras import layers

from conftest import measure_in_process
from reportgen import fingerprint, model_compare, representation, stats_pass
from reportgen.cka import common_grid
from reportgen.inputs import InputConvention
from reportgen.probe import Probe
from reportgen.sources import LoadedImages, SourceImage
from reportgen.targets import Targets

SIZE = 16


def _chain(seed: int, widths=(6, 8, 10)) -> keras.Model:
    """Three 3x3 convs with ReLU, the second with stride 2."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = inputs
    for k, width in enumerate(widths):
        x = layers.Conv2D(width, 3, strides=2 if k == 1 else 1, padding="same", activation="relu", name=f"c{k}")(x)
    return keras.Model(inputs, x)


def _items(count: int, seed: int = 0) -> tuple[SourceImage, ...]:
    rng = np.random.default_rng(seed)
    return tuple(SourceImage(f"img_{i}", rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8), None)
                 for i in range(count))


def _measured(path, items, batch_size: int = 5):
    targets = Targets.decide([item.id for item in items])
    return measure_in_process(path, items, targets, InputConvention("none"), batch_size)


def _fingerprint(path, items) -> fingerprint.Fingerprint:
    found, measured = _measured(path, items)
    sums = measured.fingerprint
    return sums.finalise(found.targets.ids[:sums.count], [layer.conv.qualified_name for layer in found.layers])


def _features(path, items) -> list[np.ndarray]:
    """Each layer's probe activations (what every statistic is measured on), one row per image on the
    common CKA grid: the raw features a fingerprint is made of."""
    model = keras.saving.load_model(path)
    found, _ = _measured(path, items)
    probe = Probe(model, [layer.conv for layer in found.layers], found)
    named = probe(np.stack([item.image for item in items]), len(items), attributed=False)
    return [common_grid(np.asarray(maps, np.float32)).reshape(len(items), -1).astype(np.float64)
            for maps in named.activations]


def _unbiased_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA with the unbiased HSIC (Song et al. 2012), written out: K = XXᵀ, L = YYᵀ with zero
    diagonals, HSIC_1(K, L) = [tr(KL) + 1ᵀK1 1ᵀL1 / ((n-1)(n-2)) - 2/(n-2) 1ᵀKL1] / (n(n-3))."""
    n = len(x)

    def hsic(k, l):
        k, l = k.copy(), l.copy()
        np.fill_diagonal(k, 0)
        np.fill_diagonal(l, 0)
        one = np.ones(n)
        return (np.trace(k @ l) + one @ k @ one * (one @ l @ one) / ((n - 1) * (n - 2))
                - 2 / (n - 2) * one @ k @ l @ one) / (n * (n - 3))

    k, l = x @ x.T, y @ y.T
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fingerprint")
    paths = []
    for seed in (0, 1):
        path = folder / f"chain_{seed}.keras"
        _chain(seed).save(path)
        paths.append(path)
    return paths


def test_cka_from_stored_fingerprints_equals_cka_from_the_features(two_models, tmp_path):
    items = _items(12)
    for k, path in enumerate(two_models):
        _fingerprint(path, items).save(tmp_path / f"{k}.npz")
    stored = [fingerprint.load(tmp_path / f"{k}.npz") for k in range(2)]
    assert stored[0].ids == tuple(item.id for item in items)
    from_prints = representation.cross_cka(stored[0].grams, stored[1].grams, representation.UNBIASED)
    features = [_features(path, items) for path in two_models]
    for i, x in enumerate(features[0]):
        for j, y in enumerate(features[1]):
            assert from_prints[i, j] == pytest.approx(np.clip(_unbiased_cka(x, y), 0, 1), abs=1e-6)


def test_a_model_against_itself_gives_one_on_the_diagonal(two_models):
    found = _fingerprint(two_models[0], _items(12))
    matrix = representation.cross_cka(found.grams, found.grams)
    np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-6)
    inside = representation.between_builds(found, found, [1, 2, 3])
    assert [row["status"] for row in inside.rows] == ["identical"] * 3
    assert inside.findings == ["conv 1 to conv 3 are identical to the previous build's (CKA 1)."]


def _permuted_scaled_copy(model: keras.Model, seed: int) -> tuple[keras.Model, list[np.ndarray], float]:
    """The chain with each conv's output channels permuted and multiplied by one positive factor per
    layer (ReLU commutes with it), the next conv's input channels undone: the same function."""
    rng = np.random.default_rng(seed)
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    previous, scale_before, orders = None, 1.0, []
    for name in ("c0", "c1", "c2"):
        kernel, bias = model.get_layer(name).get_weights()
        order = rng.permutation(kernel.shape[-1])
        scale = float(rng.uniform(0.5, 3.0))
        if previous is not None:
            kernel = kernel[:, :, previous, :] / scale_before
        copy.get_layer(name).set_weights([kernel[..., order] * scale, bias[order] * scale])
        previous, scale_before = order, scale
        orders.append(order)
    return copy, orders, scale_before


def test_a_permuted_and_scaled_copy_gives_cka_one_and_matching_recovers_the_permutation(two_models, tmp_path):
    model = keras.saving.load_model(two_models[0])
    copy, orders, last_scale = _permuted_scaled_copy(model, 5)
    images = np.stack([item.image for item in _items(4, 9)])
    expected = model.predict(images, verbose=0)
    np.testing.assert_allclose(copy.predict(images, verbose=0)[..., np.argsort(orders[-1])] / last_scale, expected,
                               rtol=1e-4, atol=1e-4 * float(np.abs(expected).max()))
    path = tmp_path / "copy.keras"
    copy.save(path)
    items = _items(16)
    original, permuted = _fingerprint(two_models[0], items), _fingerprint(path, items)
    matrix = representation.cross_cka(original.grams, permuted.grams)
    np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-4)
    for k, order in enumerate(orders):
        found = representation.match_channels(original.profiles[k], permuted.profiles[k])
        # channel order[j] of the original is channel j of the copy
        assert [b for _, b, _ in found.pairs] == list(np.argsort(order))
        assert min(r for _, _, r in found.pairs) > 0.999


def test_two_unrelated_random_models_give_low_cka(two_models):
    items = _items(24)
    a, b = _fingerprint(two_models[0], items), _fingerprint(two_models[1], items)
    same = representation.cross_cka(a.grams, a.grams)
    other = representation.cross_cka(a.grams, b.grams)
    np.testing.assert_allclose(np.diag(same), 1.0, atol=1e-6)
    assert np.all(other < 0.3), np.round(other, 3)  # measured: 0.02 to 0.15


def test_beam_and_in_process_give_the_same_fingerprint(two_models):
    items = _items(12)
    found, measured = _measured(two_models[0], items, batch_size=5)
    beam = stats_pass.run_beam(stats_pass.PassSetup(stats_pass.ModelSpec(two_models[0]), found, LoadedImages(items)),
                               workers=2, options=("direct_running_mode=in_memory",))
    names = [layer.conv.qualified_name for layer in found.layers]
    mine = beam.fingerprint.finalise(found.targets.ids, names)
    theirs = measured.fingerprint.finalise(found.targets.ids, names)
    np.testing.assert_allclose(mine.grams, theirs.grams, rtol=1e-6)
    for ours, reference in zip(mine.profiles, theirs.profiles):
        np.testing.assert_array_equal(ours, reference)


def test_the_fingerprint_keeps_the_first_64_images_whatever_their_number():
    """Batches of 10 of 100 images, summed in two shards and merged: images 0-63 are kept, once."""
    rng = np.random.default_rng(0)
    shards = [fingerprint.FingerprintSums(fingerprint.probe_count(100)) for _ in range(2)]
    for start in range(0, 100, 10):
        shards[start // 50].add([rng.normal(size=(10, 10, 10, 3))], np.arange(start, start + 10))
    merged = shards[0].merge(shards[1])
    assert sorted(merged.features) == list(range(64)) and not shards[1].features.keys() - set(range(50, 64))
    found = merged.finalise([f"i{k}" for k in range(64)], ["a"])
    assert found.grams.shape == (1, 64, 64) and found.profiles[0].shape == (64, 3)
    with pytest.raises(Exception, match="1 of 64 probe images"):
        fingerprint.FingerprintSums(64, {0: merged.features[0]}).finalise([str(i) for i in range(64)], ["a"])


def test_a_stored_fingerprint_reads_back_and_the_same_one_gives_the_same_bytes(tmp_path):
    import time

    rng = np.random.default_rng(1)
    sums = fingerprint.FingerprintSums(6)
    sums.add([rng.normal(size=(6, 10, 10, 3)), rng.normal(size=(6, 4))], np.arange(6))
    cams = [rng.random((2, 10, 10)), None]
    found = sums.finalise([f"i{k}" for k in range(6)], ["a", "b"], ["p0", "p1"], cams)
    found.save(tmp_path / "one.npz")
    time.sleep(2.1)  # a zip entry's date has a 2 s resolution
    found.save(tmp_path / "two.npz")
    assert (tmp_path / "one.npz").read_bytes() == (tmp_path / "two.npz").read_bytes()
    back = fingerprint.load(tmp_path / "one.npz")
    assert back.ids == found.ids and back.layers == ("a", "b") and back.widths == (3, 4)
    assert back.features == (75, 4) and back.cam_ids == ("p0", "p1")
    np.testing.assert_array_equal(back.grams, found.grams)
    for mine, theirs in zip(back.profiles, found.profiles):
        np.testing.assert_array_equal(mine, theirs)
    np.testing.assert_array_equal(back.cams[1], [True, False])
    np.testing.assert_array_equal(back.cams[0], found.cams[0])
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    assert fingerprint.load(tmp_path / "broken.npz") is None


def test_the_fingerprint_of_the_tiny_sd_unet_is_small(tiny_model_path, tmp_path):
    """The 51-conv tiny SD-UNet over 8 images: every layer, stored in well under 200 kB."""
    rng = np.random.default_rng(3)
    items = tuple(SourceImage(f"pet_{i}", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), None) for i in range(8))
    found = _fingerprint(tiny_model_path, items)
    found.save(tmp_path / "f.npz")
    assert len(found.layers) == 51 and sum(found.widths) == 1051
    print("tiny SD-UNet fingerprint over 8 images:", (tmp_path / "f.npz").stat().st_size, "bytes")
    assert (tmp_path / "f.npz").stat().st_size < 200_000


def test_kornblith_two_seeds_of_a_digits_cnn_match_layer_to_layer():
    """Two seeds of one small CNN trained on scikit-learn's digits: for most layers the best match in the
    other seed is the corresponding layer (Kornblith et al. 2019's sanity check for CKA)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.repeat((digits.images / 16.0 * 255).astype(np.uint8)[..., None], 3, axis=-1)
    y = digits.target

    def trained(seed: int) -> keras.Model:
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((8, 8, 3))
        h = layers.Rescaling(1 / 255)(inputs)
        for k, width in enumerate((16, 16, 32, 32)):
            h = layers.Conv2D(width, 3, padding="same", activation="relu", name=f"conv{k}")(h)
            if k == 1:
                h = layers.MaxPooling2D(2)(h)
        out = layers.Dense(10, activation="softmax")(layers.GlobalAveragePooling2D()(h))
        model = keras.Model(inputs, out)
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(x[:1500], y[:1500], epochs=4, batch_size=64, verbose=0)
        return model

    models = [trained(seed) for seed in (1, 2)]
    items = tuple(SourceImage(f"d{i}", x[1500 + i], None) for i in range(200))
    result = model_compare.compare_models(*models, items, InputConvention("none"), batch_size=20)
    matched = [row for row in result.best if row["same_position"]]
    assert len(result.best) == 4 and len(matched) >= 3, np.round(result.cka, 3)  # measured: 4 of 4


def test_findings_group_the_layers_by_what_happened_to_them():
    """Rows as the shipped SD-UNet's last block gave them after a short fine-tune (RMSprop 1e-2, 2 epochs):
    identical, changed little, moved (the interval below 0.98) and cannot tell, each said once."""
    rows = [{"index": i, "cka": 1.0, "high": 1.0} for i in range(1, 46)] + [
        {"index": 46, "cka": 0.998, "high": 0.999}, {"index": 47, "cka": 0.984, "high": 0.988},
        {"index": 48, "cka": 0.975, "high": 0.979}, {"index": 49, "cka": 0.986, "high": 0.989},
        {"index": 50, "cka": 0.974, "high": 0.9805}, {"index": 51, "cka": 0.984, "high": 0.991}]
    for row in rows:
        row["status"] = representation.status_of(row["cka"], row["high"])
    assert representation.findings(rows) == [
        "conv 1 to conv 45 are identical to the previous build's (CKA 1).",
        "conv 46 to conv 47 changed little (CKA 0.984 to 0.998, 0.98 or above).",
        "conv 49 changed little (CKA 0.986, 0.98 or above).",
        "conv 51 changed little (CKA 0.984, 0.98 or above).",
        "conv 48 moved (CKA 0.975).",
        "Cannot tell whether conv 50 moved: CKA under 0.98, but the 90% interval reaches it (1 layer)."]


def test_the_channels_sentence_names_where_each_channel_went():
    rng = np.random.default_rng(4)
    before = rng.normal(size=(32, 4))
    after = np.column_stack([before[:, 2], before[:, 1], before[:, 0], rng.normal(size=32)])  # 0 <-> 2, 3 is new
    found = representation.match_channels(before, after)
    assert found.pairs[0][:2] == (0, 2) and found.pairs[2][:2] == (2, 0)
    sentence = representation.channels_sentence(found, "conv 7", verb="is now")
    assert sentence.startswith("2 of conv 7's channels changed index: channel 0 is now channel 2 (r = 1.00), "
                               "channel 2 is now channel 0 (r = 1.00)")
    assert sentence.endswith("1 of its 4 channels have no counterpart (r < 0.5)")
