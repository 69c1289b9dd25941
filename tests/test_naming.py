"""Untrusted names become safe, unique, stable file names."""

from hypothesis import given
from hypothesis import strategies as st

from reportgen.naming import Namer, slug


def test_plain_names_stay_readable():
    namer = Namer()
    assert namer("e2_sa_attn_conv2") == "e2_sa_attn_conv2"
    assert namer("e2_sa_attn_conv2") == "e2_sa_attn_conv2"  # same text, same name


def test_hostile_names_are_defused():
    namer = Namer()
    for text in ("../../etc/passwd", "<img src=x onerror=alert(1)>", "a/b", "..", ".", "", "ümlaut ☃", "x" * 500):
        name = namer(text)
        assert name and "/" not in name and ".." not in name and len(name) <= 60
        assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-_")


def test_names_that_collide_after_slugging_stay_distinct():
    namer = Namer()
    names = {namer(t) for t in ("Conv A", "conv-a", "conv_a ", "CONV A", "conv a")}
    assert len(names) == 5


@given(st.lists(st.text(max_size=80), max_size=30))
def test_any_texts_get_unique_safe_names(texts):
    namer = Namer()
    seen = {}
    for text in texts:
        name = namer(text)
        assert seen.setdefault(name, text) == text
        assert name == slug(name) or "-" in name
        assert "/" not in name and not name.startswith(".")
