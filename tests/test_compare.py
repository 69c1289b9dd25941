"""Build-to-build comparison."""

import json

import pytest

from reportgen import compare


def _stats(value):
    return [{"index": 1, "name": "conv", "cka_mask": value, "probe_iou": {"pet": 0.5},
             "best_channel_iou": {"pet": {"max": 0.7}}, "ntv_p10_p50_p90": [0.1, 0.2, 0.3]}]


def _manifest(sha, ids):
    return {"model": {"sha256": sha}, "data": {"image_ids": ids}, "build_time": "2026-11-23T03:00:00Z"}


def test_no_previous_build_says_first_build(tmp_path):
    assert compare.load_previous(tmp_path) is None
    result = compare.compare(None, _manifest("a" * 64, ["x"]), _stats(0.5))
    assert result.first_build and "First build" in result.summary[0]


def test_changes_in_model_images_and_statistics_are_reported(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.json").write_text(json.dumps(_manifest("a" * 64, ["x", "y"])))
    (data / "stats.json").write_text(json.dumps({"layers": _stats(0.30)}))
    previous = compare.load_previous(tmp_path)
    result = compare.compare(previous, _manifest("b" * 64, ["x", "z"]), _stats(0.42))
    assert not result.first_build
    assert any("model changed" in line for line in result.summary)
    assert any("1 added, 1 removed" in line for line in result.summary)
    cka = next(c for c in result.rows[0]["cells"] if c["label"] == "CKA with mask")
    assert cka["delta"] == "+0.120" and cka["notable"]
    assert result.notable == 1


@pytest.mark.parametrize("manifest, stats", [("{not json", "{}"), ("[1, 2]", "{}"), ("{}", '{"layers": 3}'),
                                             ('{"model": 1, "data": []}', '{"layers": [{"name": "conv"}]}')],
                         ids=["not-json", "a-list", "layers-not-a-list", "foreign-shapes"])
def test_a_damaged_previous_build_is_named_and_not_compared(tmp_path, manifest, stats):
    (tmp_path / "manifest.json").write_text(manifest)
    (tmp_path / "stats.json").write_text(stats)
    result = compare.compare(compare.load_previous(tmp_path), _manifest("b" * 64, ["x"]), _stats(0.42))
    assert result.first_build and not result.rows
    (line,) = result.summary
    assert line.startswith(f"The previous build in {tmp_path} was not compared with: its files")
