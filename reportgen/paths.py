"""Where the templates and the shipped model are.

The design card puts `templates/` and `models/` beside the package. Installed, setuptools maps them into
it (`reportgen/templates`, `reportgen/models`); in a checkout they are found beside it, so Python
started there (the benchmarks, a notebook) reads the same files as `pip install .` gives.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """The installed copy of `name` (templates or models) if there is one, else the checkout's."""
    for root in (_PACKAGE / name, _PACKAGE.parent / name):
        if root.is_dir():
            return root
    raise FileNotFoundError(f"reportgen's {name}/ folder is missing: reinstall with `pip install .`")


def templates_dir() -> Path:
    return data_dir("templates")


def models_dir() -> Path:
    return data_dir("models")
