"""Each option is declared once (reportgen.options), and BuildOptions, the build command, the Python
API and the checks of choices all follow the declaration. No TensorFlow: nothing here builds a site."""

import dataclasses
import inspect
import os
import re
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from reportgen import api
from reportgen.cli import app
from reportgen.inputs import MaskValues
from reportgen.options import BY_NAME, DECLARED, PANELS, BuildOptions, worker_count
from reportgen.pipeline import BuildOptions as FromPipeline

WIDE = {"COLUMNS": "200", "TERMINAL_WIDTH": "200"}


def _build_command():
    return typer.main.get_command(app).commands["build"]


def test_every_field_is_declared_once():
    names = [option.name for option in DECLARED]
    assert len(names) == len(set(names))
    fields = [field.name for field in dataclasses.fields(BuildOptions)]
    assert sorted(fields) == sorted(option.name for option in DECLARED if option.field)
    flags = [flag for option in DECLARED for spec in option.flags for flag in spec.split("/")]
    assert len(flags) == len(set(flags))
    assert FromPipeline is BuildOptions  # the old import keeps working, and is the same class


def test_build_options_take_the_declared_defaults():
    made = BuildOptions()
    for field in dataclasses.fields(BuildOptions):
        assert field.default == BY_NAME[field.name].default, field.name
        if field.name != "workers":
            assert getattr(made, field.name) == BY_NAME[field.name].default, field.name
    assert made.mask_values == MaskValues()
    # One workers default everywhere: 4, never more than the cores.
    assert BY_NAME["workers"].default == 4
    assert made.workers == min(4, os.cpu_count() or 1)
    assert BuildOptions(workers=10_000).workers == (os.cpu_count() or 1)
    assert worker_count(None) == made.workers


def test_every_build_parameter_of_the_command_line_has_the_declared_default_and_panel():
    params = {param.name: param for param in _build_command().params if param.name != "help"}
    declared = {option.cli_param: option for option in DECLARED if option.flags}
    assert sorted(params) == sorted(declared)
    for name, param in params.items():
        option = declared[name]
        assert param.default == option.cli_default, name
        assert param.rich_help_panel == option.panel in PANELS, name
        assert set(param.opts + param.secondary_opts) == {f for spec in option.flags for f in spec.split("/")}, name
        if option.parse is not None:  # not given on the command line: what the field defaults to
            assert param.default is None and option.parse(None) == option.default, name
    assert params["workers"].default == 4 and params["images"].default == 10 and params["out"].default == "site"


def test_the_api_takes_the_declared_defaults(monkeypatch):
    assert inspect.signature(api.build).parameters["out"].default == BY_NAME["out"].default == "site"
    seen = {}

    def capture(out, options, in_memory):
        seen.update(out=out, options=options)

    monkeypatch.setattr(api, "_build", capture)
    api.build(object(), [b"one", b"two", b"three"])
    options = seen["options"]
    assert str(seen["out"]) == "site"
    assert options.images == 3  # the API's own default: every image it was given
    for field in dataclasses.fields(BuildOptions):
        if field.name not in ("images", "workers"):
            assert getattr(options, field.name) == BY_NAME[field.name].default, field.name
    assert options.workers == min(4, os.cpu_count() or 1)


def _panels(text: str) -> dict[str, str]:
    """The --help output cut into its panels: title -> the panel's lines."""
    found, title = {}, None
    for line in text.splitlines():
        top = re.match(r"╭─ (.+?) ─", line)
        if top:
            title = top.group(1)
            found[title] = ""
        elif line.startswith("╰"):
            title = None
        elif title is not None:
            found[title] += line + "\n"
    return found


def test_help_is_grouped_into_the_declared_panels_and_keeps_its_brackets():
    result = CliRunner().invoke(app, ["build", "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "pip install 'reportgen[beam]'" in result.output
    panels = _panels(result.output)
    assert [title for title in panels if title != "Options"] == list(PANELS)
    for option in DECLARED:
        if option.flags:  # each option's row starts with its first flag, in its declared panel only
            row = re.compile(rf"^│ {re.escape(option.flag)}\s", re.M)
            assert [title for title, body in panels.items() if row.search(body)] == [option.panel], option.name


def test_every_choice_is_named_in_its_help():
    for option in DECLARED:
        for choice in option.choices or ():
            assert re.search(rf"\b{re.escape(choice)}\b", option.help), (option.name, choice)


@pytest.mark.parametrize("option", [o for o in DECLARED if o.choices], ids=lambda o: o.name)
def test_a_bad_choice_gets_one_line_naming_the_choices(option, tmp_path):
    flag = option.flags[0]
    result = CliRunner().invoke(app, ["build", flag, "bogus", "--out", str(tmp_path / "site"), "-q"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line]
    named = "--preprocess mode" if option.name == "preprocess" else flag  # its own words, as before
    assert lines == [f"error: unknown {named} 'bogus'; choose one of {', '.join(option.choices)}"]
    assert not (tmp_path / "site").exists()


def test_the_fit_error_is_the_one_users_have_seen(tmp_path):
    result = CliRunner().invoke(app, ["build", "--fit", "squash", "--out", str(tmp_path / "site"), "-q"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: unknown --fit 'squash'; choose one of stretch, crop, pad"


def test_help_and_a_bad_choice_need_no_tensorflow():
    """Checked in a fresh interpreter: earlier tests of the session have imported TensorFlow."""
    script = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from reportgen.cli import app\n"
        "runner = CliRunner()\n"
        "assert runner.invoke(app, ['build', '--help']).exit_code == 0\n"
        "assert runner.invoke(app, ['build', '--fit', 'squash', '-q']).exit_code == 2\n"
        "print('tensorflow' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **WIDE})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
