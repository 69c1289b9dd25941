"""What `pip install .` must carry, and what Python started in a checkout must find: the same templates,
static files and shipped model."""

import subprocess
import sys
from pathlib import Path

import reportgen
from reportgen.paths import models_dir, templates_dir

CHECKOUT = Path(__file__).resolve().parent.parent
TEMPLATES = ("base.html", "index.html", "layer.html", "image.html", "about.html", "404.html", "changes.html",
             "models.html", "static/style.css", "static/site.js")
SHIPPED = ("MODEL_CARD.md", "sd_unet_synthetic_pets.json", "sd_unet_synthetic_pets.weights.h5")


def test_templates_and_models_travel_with_the_package():
    for name in TEMPLATES:
        assert (templates_dir() / name).is_file(), name
    for name in SHIPPED:
        assert (models_dir() / name).is_file(), name
    assert reportgen.__version__


def test_the_checkout_has_the_design_cards_layout_and_python_started_there_finds_it():
    """templates/ and models/ beside the package, found by Python started in the checkout (the benchmarks
    run so) with byte-identical contents to what the installed package carries."""
    for folder, names in (("templates", TEMPLATES), ("models", SHIPPED)):
        assert all((CHECKOUT / folder / name).is_file() for name in names), folder
    found = subprocess.run([sys.executable, "-c", "import reportgen.paths as p, reportgen.profiles.sd_unet;"
                            "print(p.templates_dir()); print(p.models_dir())"], cwd=CHECKOUT, env={"PYTHONPATH": ""},
                           capture_output=True, text=True, check=True).stdout.split()
    assert [Path(line) for line in found] == [CHECKOUT / "templates", CHECKOUT / "models"]
    for name in TEMPLATES:
        assert (CHECKOUT / "templates" / name).read_bytes() == (templates_dir() / name).read_bytes(), name
