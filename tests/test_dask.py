"""The statistics pass on a real distributed engine: a Dask cluster of one scheduler and two worker
processes on 127.0.0.1, started here and stopped by process id, through Beam's DaskRunner."""

import json
import os

import numpy as np
import pytest
from conftest import BEAM_BUILD
from dask_cluster import local_cluster

from reportgen.cli import app


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    with local_cluster(2, tmp_path_factory.mktemp("dask")) as (address, pids):
        yield address
    for pid in pids:  # stopped, and reaped
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def _numbers(rows):
    """Every number of stats.json's layers, flattened in order, and every key path they sit on."""
    found = []

    def walk(value, path):
        if isinstance(value, dict):
            for key in sorted(value):
                walk(value[key], f"{path}.{key}")
        elif isinstance(value, list):
            for k, item in enumerate(value):
                walk(item, f"{path}[{k}]")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            found.append((path, float(value)))
        elif value is None:
            found.append((path, float("nan")))

    walk(rows, "")
    return found


def test_dask_cluster_gives_the_direct_runners_statistics(dask_cluster, runner, tmp_path, tiny_model_path,
                                                          pets_folder, beam_site):
    """The build of `beam_site` (on the DirectRunner) again, on the Dask cluster."""
    images, trimaps = pets_folder
    common = [*BEAM_BUILD, "--model", str(tiny_model_path), "--image-dir", str(images), "--trimap-dir", str(trimaps)]
    dask = runner.invoke(app, [*common, "--out", str(tmp_path / "dask"), "--runner", "dask",
                               "--beam-option", f"dask_client_address={dask_cluster}"])
    assert dask.exit_code == 0, dask.output
    ours = json.loads((tmp_path / "dask" / "data" / "stats.json").read_text())
    theirs = json.loads((beam_site.out / "data" / "stats.json").read_text())
    assert all(row["images"] == 6 for row in ours["layers"])
    mine, reference = _numbers(ours["layers"]), _numbers(theirs["layers"])
    assert [p for p, _ in mine] == [p for p, _ in reference]
    np.testing.assert_allclose([v for _, v in mine], [v for _, v in reference], rtol=1e-9, atol=1e-12,
                               equal_nan=True)
    manifest = json.loads((tmp_path / "dask" / "data" / "manifest.json").read_text())
    assert manifest["statistics"]["engine"] == "Apache Beam, apache_beam.runners.dask.dask_runner.DaskRunner"
    assert manifest["statistics"]["images"] == 6


def test_a_malformed_scheduler_address_is_one_line(runner, tmp_path, tiny_model_path, pets_folder):
    result = runner.invoke(app, ["build", "--model", str(tiny_model_path), "--image-dir", str(pets_folder[0]),
                                 "--images", "2", "--stats-images", "4", "--runner", "dask",
                                 "--beam-option", "dask_client_address=127.0.0.1:12x", "--out", str(tmp_path / "s"),
                                 "-q"])
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert "dask_client_address='127.0.0.1:12x' is not HOST:PORT" in line
