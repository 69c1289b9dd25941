"""What `pip install .` must carry: templates, static files, the model builder and its card."""

from importlib import resources

import reportgen


def test_templates_and_models_travel_with_the_package():
    templates = resources.files("reportgen.templates")
    for name in ("base.html", "index.html", "layer.html", "image.html", "about.html", "404.html", "changes.html",
                 "static/style.css", "static/site.js"):
        assert templates.joinpath(name).is_file(), name
    models = resources.files("reportgen.models")
    assert models.joinpath("sd_unet.py").is_file()
    assert reportgen.__version__
