"""The output folder: checked before a build starts, recognised when it is up to date, and
replaced by the new site in two renames only when the whole build succeeded."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from reportgen.errors import OutputError

SITE_MARKER = ".reportgen-site"
KEY_FILE = "data/build-key.txt"


def check_output(out: Path) -> None:
    """Refuse an output path that is a file, unwritable, or a folder that is not a reportgen site."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"output path {str(out)!r} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / SITE_MARKER).exists():
        raise OutputError(f"output folder {str(out)!r} is not empty and was not made by reportgen; "
                          "choose another --out")
    parent = out.parent if out.parent != Path("") else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create {str(parent)!r}: {error.strerror}") from None
    if not os.access(parent, os.W_OK):
        raise OutputError(f"output folder {str(parent)!r} is not writable")


def is_up_to_date(out: Path, key: str) -> bool:
    key_file = out / KEY_FILE
    return key_file.is_file() and key_file.read_text().strip() == key and (out / "index.html").is_file()


def image_count(out: Path) -> int:
    try:
        return len(json.loads((out / "data" / "manifest.json").read_text())["data"]["image_ids"])
    except (OSError, ValueError, KeyError):
        return 0


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def swap_in(staging: Path, out: Path) -> None:
    """Replace `out` with `staging` in two renames; the old site survives until the new one is in place."""
    (staging / SITE_MARKER).write_text("built by reportgen\n")
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        if old.exists():
            shutil.rmtree(old)
        out.rename(old)
    try:
        staging.rename(out)
    except OSError:
        if old is not None:
            old.rename(out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
