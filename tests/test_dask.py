"""The statistics pass on a real distributed engine: a Dask cluster of one scheduler and two worker
processes on 127.0.0.1, started here and stopped by process id, through Beam's DaskRunner."""

import asyncio
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import BEAM_BUILD
from dask_cluster import WORKER_CONFIG, free_port, local_cluster

from reportgen import stats_pass
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


def test_a_scheduler_nobody_listens_at_is_one_line(runner, tmp_path, tiny_model_path, pets_folder):
    """The connection waits as Dask's configuration says, then the build stops with one line."""
    import dask
    import distributed  # noqa: F401  (its defaults join dask's configuration on import)

    address = f"127.0.0.1:{free_port()}"
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        result = runner.invoke(app, ["build", "--model", str(tiny_model_path), "--image-dir", str(pets_folder[0]),
                                     "--images", "2", "--stats-images", "4", "--runner", "dask",
                                     "--beam-option", f"dask_client_address={address}", "--out", str(tmp_path / "s"),
                                     "-q"])
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert f"cannot reach the Dask scheduler at {address}: Timed out" in line
    assert not (tmp_path / "s").exists()


def _trim_warnings(records) -> list[str]:
    return [r.getMessage() for r in records if r.levelno == logging.WARNING and "MALLOC_TRIM_THRESHOLD_" in r.getMessage()]


def test_workers_configured_as_the_readme_asks_keep_freed_memory(dask_cluster, caplog):
    """The README's worker configuration reaches the workers: no trim threshold, and no warning."""
    found, asked = stats_pass._ask_dask_cluster(dask_cluster)
    assert len(found) == 2 and asked == [None, None]
    with caplog.at_level(logging.WARNING):
        assert stats_pass.worker_layout(stats_pass.DASK_RUNNER, (f"dask_client_address={dask_cluster}",)) == (2, 1)
    assert _trim_warnings(caplog.records) == []


def test_the_scheduler_is_asked_from_inside_a_running_event_loop(dask_cluster):
    """As a notebook's cell calls reportgen: its thread runs an event loop already."""
    async def cell():
        return stats_pass.worker_layout(stats_pass.DASK_RUNNER, (f"dask_client_address={dask_cluster}",))

    assert asyncio.run(cell()) == (2, 1)


def test_workers_started_with_dask_defaults_are_named_in_a_warning(tmp_path, caplog):
    """Dask's nanny sets glibc's trim threshold in every worker it starts, which halves the accumulators'
    speed: the build still runs, and says so once, with the value the workers have."""
    with local_cluster(1, tmp_path, dask_defaults=True) as (address, _):
        with caplog.at_level(logging.WARNING):
            assert stats_pass.worker_layout(stats_pass.DASK_RUNNER, (f"dask_client_address={address}",)) == (1, 1)
    (message,) = _trim_warnings(caplog.records)
    assert "MALLOC_TRIM_THRESHOLD_=65536" in message and "'On a Dask cluster'" in message


def test_the_readme_gives_the_worker_configuration_the_tests_use():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    given = readme.split("reportgen.yaml <<'EOF'", 1)[1].split("\n", 1)[1].split("\nEOF\n", 1)[0] + "\n"
    assert given == WORKER_CONFIG
