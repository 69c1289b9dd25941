"""No way to break it: hostile names, random bytes, a full disk and Ctrl-C."""

import csv
import errno
import html
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from keras import layers
from PIL import Image

from reportgen import paths, pipeline, workers
from reportgen.cli import app

HOSTILE = "<img src=x onerror=alert(1)>"
# Keras refuses "/" in layer names; everything else is fair game.
names = st.text(alphabet=st.characters(blacklist_characters="/", blacklist_categories=("Cs",)), min_size=1,
                max_size=60)


def _two_conv_model(first: str, second: str):
    inputs = keras.Input((32, 32, 3))
    x = layers.Conv2D(2, 3, padding="same", name=first)(inputs)
    x = layers.Conv2D(3, 3, padding="same", activation="softmax", name=second)(x)
    return keras.Model(inputs, x)


def _files_inside(out: Path) -> bool:
    root = out.resolve()
    return all(root in p.resolve().parents for p in out.rglob("*"))


def _one_image(folder: Path, name: str = "pet.png") -> Path:
    folder.mkdir(exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / name)
    return folder


def test_hostile_layer_and_file_names_render_as_text(runner, tmp_path):
    model = tmp_path / "m.keras"
    _two_conv_model(HOSTILE, "..").save(model)
    images = _one_image(tmp_path / "images", f"{HOSTILE}.png")
    out = tmp_path / "site"
    result = runner.invoke(app, ["build", "--model", str(model), "--image-dir", str(images), "--images", "1",
                                 "--out", str(out), "-q", "--workers", "1"])
    assert result.exit_code == 0, result.output
    for page in out.rglob("*.html"):
        assert HOSTILE not in page.read_text()
    index = (out / "index.html").read_text()
    assert html.escape(HOSTILE, quote=False) in index
    assert _files_inside(out) and not (tmp_path / "escape.html").exists()


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=names, second=names, image_name=st.text(min_size=1, max_size=40).filter(
    lambda s: "/" not in s and "\x00" not in s and not s.startswith(".")))  # hidden files are never read
def test_random_names_never_break_the_build(runner, tmp_path_factory, first, second, image_name):
    if first == second:
        second = second + "_2"
    tmp_path = tmp_path_factory.mktemp("random")
    model = tmp_path / "m.keras"
    try:
        _two_conv_model(first, second).save(model)
    except ValueError:  # a name Keras itself refuses is not ours to test
        return
    try:
        images = _one_image(tmp_path / "images", f"{image_name}.png")
    except OSError:  # a name the file system refuses (too long in bytes, say)
        return
    out = tmp_path / "site"
    result = runner.invoke(app, ["build", "--model", str(model), "--image-dir", str(images), "--images", "1",
                                 "--out", str(out), "-q", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert _files_inside(out)
    stats = json.loads((out / "data" / "stats.json").read_text())["layers"]
    assert [row["name"] for row in stats] == [first, second]


def _encoded(fmt: str, seed: int) -> bytes:
    """A small real image file in `fmt`, for the fuzzer to damage: random bytes alone seldom get past
    the decoders' first check."""
    import io

    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (int(rng.integers(1, 40)), int(rng.integers(1, 40)), 3),
                                 dtype=np.uint8)).save(buffer, fmt)
    return buffer.getvalue()


def _png_with_a_short_idat() -> bytes:
    """A PNG whose IDAT length says 10: the decoder reads on into compressed bytes as the next chunk,
    and Pillow raises SyntaxError ("broken PNG file"), which Hypothesis once found."""
    import struct

    data = bytearray(_encoded("PNG", 3))
    start = data.index(b"IDAT") - 4
    data[start:start + 4] = struct.pack(">I", 10)
    return bytes(data)


@st.composite
def image_bytes(draw):
    """Random bytes, or a real PNG/JPEG/GIF/BMP/TIFF cut short or with bytes overwritten."""
    kind = draw(st.sampled_from(["random", "truncated", "overwritten"]))
    if kind == "random":
        return draw(st.binary(max_size=2000))
    real = _encoded(draw(st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "TIFF"])), draw(st.integers(0, 50)))
    if kind == "truncated":
        return real[:draw(st.integers(0, len(real)))]
    data = bytearray(real)
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=image_bytes(), suffix=st.sampled_from([".png", ".jpg", ".jpeg"]))
@example(content=_png_with_a_short_idat(), suffix=".png")
def test_random_image_bytes_are_an_image_or_one_line(tmp_path_factory, content, suffix):
    """The image reader, where random bytes meet the product: a file gives the input-sized uint8
    picture of what Pillow decodes, or one InputError line naming it; never another exception."""
    import io

    from reportgen import sources
    from reportgen.errors import InputError

    folder = tmp_path_factory.mktemp("bytes")
    path = folder / f"random{suffix}"
    path.write_bytes(content)
    try:
        item = sources._load_file(folder, path, None, sources.as_geometry(32), None)
    except InputError as error:
        message = str(error)
        assert "\n" not in message and str(path) in message, message
        return
    with Image.open(io.BytesIO(content)) as independent:  # it decoded: so must Pillow on its own
        independent.load()
        assert item.original_size == (independent.height, independent.width)
    assert item.image.dtype == np.uint8 and item.image.shape == (32, 32, 3)


def test_unreadable_image_bytes_end_to_end_are_one_line(runner, tmp_path, tiny_model_path):
    """The reader's fuzzer above, pinned once through the whole command: a damaged JPEG."""
    folder = tmp_path / "bytes"
    folder.mkdir()
    (folder / "random.jpg").write_bytes(_encoded("JPEG", 1)[:200])
    result = runner.invoke(app, ["build", "--model", str(tiny_model_path), "--image-dir", str(folder),
                                 "--images", "1", "--out", str(folder / "site"), "-q", "--workers", "1"])
    assert "Traceback" not in result.output
    assert result.exit_code == 2 and result.output.startswith("error: cannot read image file ") \
        and result.output.count("\n") == 1, result.output
    assert not (folder / "site").exists()


def _previous_site(tmp_path, tiny_site):
    """A copy of the session's site: what a failed build must leave as it was."""
    out = tmp_path / "site"
    shutil.copytree(tiny_site, out, symlinks=True)
    return out, sorted(p.relative_to(out) for p in out.rglob("*"))


@pytest.mark.parametrize("workers", ["1", "2"])  # the disk fills in this process, or in a worker's
def test_full_disk_leaves_the_previous_site(runner, tmp_path, tiny_model_path, pets_folder, tiny_site, monkeypatch,
                                           workers):
    out, before = _previous_site(tmp_path, tiny_site)
    real_write = Path.write_bytes

    def full_disk(self, data):
        if ".reportgen-" in str(self):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    result = runner.invoke(app, ["build", "--model", str(tiny_model_path), "--image-dir", str(pets_folder[0]),
                                 "--images", "2", "--out", str(out), "-q", "--workers", workers])
    assert result.exit_code == 4 and "No space left on device" in result.output
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert not list(tmp_path.glob(".reportgen-*"))  # the temporary folder is cleaned up


def test_ctrl_c_mid_build_leaves_the_previous_site(runner, tmp_path, tiny_model_path, pets_folder, tiny_site,
                                                   monkeypatch):
    out, before = _previous_site(tmp_path, tiny_site)

    def interrupted(*args, **kwargs):  # Ctrl-C while the worker processes render the layers
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "as_completed", interrupted)
    # The scratch folder is removed only once no worker can write into it any more: removed under a
    # busy worker, it was left behind on a loaded machine.
    real_rmtree, alive_at_removal = shutil.rmtree, []

    def rmtree(path, *args, **kwargs):
        if Path(path).name.startswith(".reportgen-"):
            alive_at_removal.append({pid for pid in workers.pool_pids() if Path(f"/proc/{pid}").exists()})
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", rmtree)
    result = runner.invoke(app, ["build", "--model", str(tiny_model_path), "--image-dir", str(pets_folder[0]),
                                 "--images", "2", "--out", str(out), "-q", "--workers", "2"])
    assert result.exit_code == 130 and "interrupted" in result.output
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert not list(tmp_path.glob(".reportgen-*"))
    assert alive_at_removal and not any(alive_at_removal)


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")
hostile_text = st.text(alphabet=st.one_of(st.sampled_from(list("<>\"'&=+-@/\\\x1b\x07\r\t;:()")),
                                          st.characters(blacklist_categories=("Cs",))), min_size=1, max_size=30)


class _Markup(HTMLParser):
    """Every tag and attribute of a page, as a browser would see them."""

    def __init__(self):
        super().__init__()
        self.tags, self.attributes = set(), set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layer=hostile_text, classes=st.lists(hostile_text, min_size=2, max_size=2, unique=True),
       labels=st.lists(hostile_text, min_size=2, max_size=2), file_name=hostile_text)
@example(layer="\\", classes=["a", "b"], labels=["a", "b"], file_name="x")  # Keras takes it; TF op names do not
def test_fuzzed_names_never_reach_markup_formulas_or_the_terminal(runner, tmp_path_factory, layer, classes, labels,
                                                                  file_name):
    """Layer names, class folders, labels and file names drawn to be hostile: the pages hold only the
    templates' own tags and no event handler, layers.csv no formula cell, the terminal no control
    character, and an error is one line."""
    layer, file_name = layer.replace("/", "_").replace("\x00", "_"), _file_name(file_name)  # Keras cannot save these
    classes = [_file_name(c) for c in classes]
    classes[1] += "_2" if classes[1] == classes[0] else ""
    labels = [" ".join(line.split()) or "x" for line in labels]
    folder = tmp_path_factory.mktemp("fuzz")
    inputs = keras.Input((16, 16, 3))
    try:
        x = layers.Conv2D(2, 3, padding="same", name=layer)(inputs)
    except ValueError:  # a name Keras itself refuses
        return
    model = keras.Model(inputs, layers.Dense(2, activation="softmax")(layers.GlobalAveragePooling2D()(x)))
    model.save(folder / "m.keras")
    images = folder / "images"
    images.mkdir()
    for name in classes:
        _one_image(images / name, f"{file_name}.png")
    (folder / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    out = folder / "site"
    common = ["--model", str(folder / "m.keras"), "--image-dir", str(images), "--labels", str(folder / "labels.txt"),
              "--out", str(out), "-q", "--workers", "1"]
    result = runner.invoke(app, ["build", *common, "--images", "2"])
    assert result.exit_code == 0, result.output
    assert not CONTROL.search(result.output)
    for page in [*out.rglob("*.html"), *out.rglob("*.svg")]:
        markup = _Markup()
        markup.feed(page.read_text(encoding="utf-8"))
        if page.suffix == ".html":
            assert markup.tags <= TEMPLATE_TAGS, (page.name, markup.tags - TEMPLATE_TAGS)
        assert not markup.tags & {"script", "foreignobject", "iframe"} or page.suffix == ".html", page.name
        assert not {a for a in markup.attributes if a.startswith("on")}, page.name
    with open(out / "data" / "layers.csv", newline="", encoding="utf-8") as handle:
        for row in csv.reader(handle):
            assert not [cell for cell in row if cell.startswith(FORMULA_STARTS)], row
    inspect = runner.invoke(app, ["inspect", "--model", str(folder / "m.keras")])
    assert inspect.exit_code == 0 and not CONTROL.search(inspect.output), inspect.output
    missing = runner.invoke(app, ["build", *common, "--id", f"{layer}{file_name}"])
    lines = missing.output.strip().splitlines()
    assert missing.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ") \
        and not CONTROL.search(missing.output), missing.output


def _file_name(text: str) -> str:
    """`text` as a name a file system takes: no separator, no NUL, not hidden."""
    name = text.replace("/", "_").replace("\x00", "_").lstrip(".")
    return name if name not in ("", "..") else "x"


# The tags the templates write: a page with any other tag has markup injected into it.
TEMPLATE_TAGS = frozenset(tag.lower() for template in paths.templates_dir().glob("*.html")
                          for tag in re.findall(r"<([a-zA-Z][a-zA-Z0-9]*)", template.read_text()))
assert TEMPLATE_TAGS, "no template found: the markup check would refuse every tag"
