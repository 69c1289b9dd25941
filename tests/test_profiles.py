"""Model profiles: the SD-UNet's roles, sections and claim for the shipped architecture only; every other
model's roles read from its own graph (no TensorFlow needed but for the builder's names)."""

from reportgen.profiles import BOTTLENECK, DECODER, ENCODER, for_model, from_graph


def test_a_unet_shaped_graph_has_an_encoder_a_bottleneck_and_a_decoder():
    shapes = [(64, 64, 8), (32, 32, 16), (16, 16, 32), (16, 16, 32), (32, 32, 16), (64, 64, 8), (64, 64, 2)]
    found = from_graph(shapes)
    assert found.sections == (ENCODER, ENCODER, BOTTLENECK, BOTTLENECK, DECODER, DECODER, DECODER)
    assert found.roles[0] == "encoder, stage 1 of 3 (64x64 maps)"
    assert found.roles[3] == "bottleneck, stage 3 of 3 (16x16 maps)"
    assert found.roles[4] == "decoder, stage 2 of 3 (32x32 maps)"
    assert found.name == "" and found.claim_layer is None


def test_a_classifier_has_stages_but_no_decoder_and_no_claim():
    shapes = [(32, 32, 8), (32, 32, 8), (16, 16, 16), (8, 8, 32), (32,)]  # the last: a Dense on pooled maps
    found = from_graph(shapes)
    assert found.sections == (None,) * 5
    assert found.roles == ("stage 1 of 3 (32x32 maps)", "stage 1 of 3 (32x32 maps)", "stage 2 of 3 (16x16 maps)",
                           "stage 3 of 3 (8x8 maps)", "")
    assert for_model(["c"] * 5, [()] * 5, shapes).claim_layer is None


def test_the_sd_unet_profile_is_the_builders_and_only_the_builders():
    from reportgen.profiles.sd_unet import CLAIM_LAYER, CONV_COUNT, build_sd_unet

    model = build_sd_unet(64, 3, 0.125)
    names = [layer.name for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
    assert len(names) == CONV_COUNT
    shapes = [(1, 1, 1)] * len(names)
    found = for_model(names, [()] * len(names), shapes)
    assert found.name == "SD-UNet" and found.claim_layer == CLAIM_LAYER == 43
    assert found.roles[0].startswith("encoder E1") and found.sections[0] == ENCODER
    assert found.sections[names.index("head")] == DECODER and found.roles[names.index("head")] == "classifier head"
    # The same names one short, or nested in another model, are some other model: no claim, roles from the graph.
    assert for_model(names[:-1], [()] * 50, shapes[:-1]).claim_layer is None
    assert for_model(names, [("outer",)] * 51, shapes).name == ""


def test_the_conv_43_claim_is_not_tested_on_other_models():
    """A user's model with 51 convs and a mask gets no sentence about a claim made of the SD-UNet alone."""
    from types import SimpleNamespace

    from reportgen.findings import _claim

    results = [SimpleNamespace(conv=SimpleNamespace(name=f"conv{k}", path=(), output_shape=(8, 8, 4)))
               for k in range(51)]
    assert _claim(results, results, {}) == []
