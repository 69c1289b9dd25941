"""Safe, unique, deterministic file names for untrusted text (layer names, image ids)."""

from __future__ import annotations

import hashlib
import re
import unicodedata

MAX_SLUG = 48


def slug(text: str) -> str:
    """ASCII letters, digits, '-' and '_' only; never empty, never '.' or '..'."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "-", ascii_text).strip("-_").lower()
    return cleaned[:MAX_SLUG] or "item"


class Namer:
    """Hands out file-name stems: the slug itself when it is faithful and free, else slug + hash."""

    def __init__(self):
        self._taken: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        base = slug(text)
        name = base
        faithful = base == text
        if not faithful or name in self._taken and self._taken[name] != text:
            digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
            name = f"{base}-{digest}"
        counter = 2
        while name in self._taken and self._taken[name] != text:  # a hash collision: vanishingly rare
            name = f"{base}-{counter}"
            counter += 1
        self._taken[name] = text
        return name


def printable(text: str) -> str:
    """Text for a terminal: control characters (ESC, BEL, CR...) and bytes that are not UTF-8 shown as
    Python escapes (\\x1b), so a hostile layer name cannot move the cursor or rewrite a line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
