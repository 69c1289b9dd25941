"""The publishing workflow, checked offline: schema, security lint, shape, and its build command."""

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "report-site.yml"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _steps(workflow, job):
    return workflow["jobs"][job]["steps"]


def test_workflow_matches_github_schema():
    result = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
                             str(WORKFLOW)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_passes_the_security_linter():
    result = subprocess.run([str(BIN / "zizmor"), "--offline", "--config", str(ROOT / ".github" / "zizmor.yml"),
                             str(WORKFLOW)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_triggers_permissions_and_concurrency(workflow):
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "schedule" in triggers and "workflow_dispatch" in triggers
    assert triggers["push"]["branches"] == ["main"]
    assert workflow["permissions"] == {}
    assert workflow["concurrency"]["group"] and workflow["concurrency"]["cancel-in-progress"] is False
    assert workflow["jobs"]["deploy"]["permissions"] == {"pages": "write", "id-token": "write"}
    assert "write" not in workflow["jobs"]["build"]["permissions"].values()


def test_builds_uploads_then_deploys_with_the_official_actions(workflow):
    uses = [step.get("uses", "").split("@")[0] for step in _steps(workflow, "build")]
    for action in ("actions/checkout", "actions/setup-python", "actions/cache", "actions/configure-pages",
                   "actions/upload-artifact", "actions/upload-pages-artifact"):
        assert action in uses
    artifact = next(s for s in _steps(workflow, "build") if s.get("uses", "").startswith("actions/upload-artifact"))
    assert artifact["with"]["path"] == "site/" and 1 <= artifact["with"]["retention-days"] <= 90
    assert workflow["jobs"]["deploy"]["needs"] == "build"  # a failed build deploys nothing
    assert _steps(workflow, "deploy")[0]["uses"].startswith("actions/deploy-pages@")
    cached = [s["with"]["path"] for s in _steps(workflow, "build") if s.get("uses", "").startswith("actions/cache")]
    assert "~/tensorflow_datasets" in cached


def _build_step(workflow) -> str:
    return next(s["run"] for s in _steps(workflow, "build") if s.get("name", "").startswith("Build the report"))


def test_workflow_runs_the_readme_build_command(workflow):
    readme = (ROOT / "README.md").read_text().split("```sh", 1)[1].split("```", 1)[0]
    first_command = readme.strip().splitlines()[0].split("#")[0].strip()
    assert _build_step(workflow).startswith(first_command)


@pytest.mark.slow
def test_the_workflow_build_command_builds_the_default_site(workflow, tmp_path):
    """Run what `make site PREVIOUS=previous` runs, with this environment's reportgen, in a scratch folder."""
    dry = subprocess.run(["make", "-s", "-n", "-C", str(ROOT), "-o", ".venv/.installed", *shlex.split(
        _build_step(workflow))[1:]], capture_output=True, text=True, check=True).stdout
    command = shlex.split(next(line for line in dry.splitlines() if "reportgen build" in line))
    command[0] = str(BIN / "reportgen")
    # The nightly build's statistics pass covers the 240 test images and checks the ablations on 10,
    # 400 s of this suite. The same command over 10 images (two batches) without the ablation check
    # (tested on the tiny model in test_attribution) runs every other stage of it in a tenth of the
    # time; its probes, fitted on 9 images a fold, still find the pet mask (IoU 0.76 at best of the
    # last three hidden convs). Click reads the last value of a repeated option.
    # Two pictured images instead of ten: the pictures of 51 layers are per image, and their count
    # follows --images on every model (test_cli); the command's other options stay the workflow's.
    command += ["--stats-images", "10", "--ablation-images", "0", "--images", "2"]
    previous = tmp_path / "previous"
    previous.mkdir()
    result = subprocess.run([*command, "-q"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    site = tmp_path / "site"
    assert len(list((site / "layers").glob("*.html"))) == 51
    assert len(list((site / "images").glob("*.html"))) == 2
    assert "First build" in (site / "index.html").read_text()
    # Counts pass on an empty site: a number too. The shipped model's last hidden convs hold the pet
    # mask linearly (the README's finding), which garbage weights or misread trimaps would not.
    stats = json.loads((site / "data" / "stats.json").read_text())["layers"]
    hidden = [row for row in stats if not row["is_head"]][-3:]
    assert max(row["probe_iou"]["pet"] for row in hidden) > 0.7, [(r["name"], r["probe_iou"]) for r in hidden]
