"""Nothing of the user's is lost and nothing is left behind: the output folder as users keep it
(a Pages folder with CNAME and .git/, a symlink, a mount point, the current folder), interrupted
and concurrent builds, and one line for every bad input instead of a traceback."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reportgen import outdir
from reportgen.cli import app

REPORTGEN = Path(sys.executable).with_name("reportgen")  # the console command a user runs


def _build(runner, out, model, images, *extra):
    """A build in this process. Without Grad-CAM and importances, which these tests do not look at
    (the backward pass is a third of a tiny build); `_start`'s builds keep them, so that the folders
    TensorFlow's tracing may write are still watched. One worker: the pool is the subject of `_start`'s
    builds only, and each pool process is a TensorFlow of its own to start."""
    return runner.invoke(app, ["build", "--model", str(model), "--image-dir", str(images), "--out", str(out),
                               "-q", "--no-attribution", "--workers", "1", *extra])


def _one_line(result, fragment, code=None):
    assert result.exit_code != 0 and (code is None or result.exit_code == code), result.output
    lines = [line for line in result.output.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.output


def _digest(folder: Path) -> dict[str, str]:
    """Every file under `folder`, by relative path, with a hash of its bytes."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def one_image_site(tmp_path_factory, small_model_path, pets_folder):
    """A site built with one image, once for the module."""
    from typer.testing import CliRunner

    out = tmp_path_factory.mktemp("one_image") / "site"
    result = _build(CliRunner(), out, small_model_path, pets_folder[0], "--images", "1")
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture()
def site(tmp_path, one_image_site):
    """A copy of the one-image site in tmp_path/pages/site, each test's own to change."""
    out = tmp_path / "pages" / "site"
    shutil.copytree(one_image_site, out, symlinks=True)
    return out


def test_files_the_user_adds_to_the_site_survive_every_rebuild(runner, site, small_model_path, pets_folder):
    (site / "CNAME").write_text("maps.example.org\n")
    (site / ".git").mkdir()
    (site / ".git" / "HEAD").write_text("ref: refs/heads/gh-pages\n")
    (site / "notes").mkdir()
    (site / "notes" / "why.md").write_text("kept\n")
    scratch_like = site.with_name(f".{site.name}.old")  # the name the swap once used as scratch
    scratch_like.mkdir()
    (scratch_like / "mine.txt").write_text("mine\n")
    kept = {"CNAME": "maps.example.org\n", ".git/HEAD": "ref: refs/heads/gh-pages\n", "notes/why.md": "kept\n"}
    for extra in (["--images", "2"],):
        result = _build(runner, site, small_model_path, pets_folder[0], *extra)
        assert result.exit_code == 0, result.output
        for path, text in kept.items():
            assert (site / path).read_text() == text, path
        assert (scratch_like / "mine.txt").read_text() == "mine\n"
        assert sorted(p.name for p in site.parent.iterdir()) == sorted([site.name, scratch_like.name])
    written = outdir.written_files(site)
    assert "index.html" in written and not {"CNAME", ".git/HEAD", "notes/why.md"} & written
    assert len(json.loads((site / "data" / "manifest.json").read_text())["data"]["image_ids"]) == 2


def test_a_cloned_pages_folder_is_a_first_out_and_keeps_its_files(runner, tmp_path, small_model_path, pets_folder):
    """A gh-pages checkout holds CNAME, .nojekyll and .git before any build: the first build goes into
    it, the user's CNAME and .git stay, and the .nojekyll is the site's from then on."""
    pages = tmp_path / "gh-pages"
    (pages / ".git").mkdir(parents=True)
    (pages / ".git" / "HEAD").write_text("ref: refs/heads/gh-pages\n")
    (pages / "CNAME").write_text("maps.example.org\n")
    (pages / ".nojekyll").write_text("")
    for images in ("1", "2"):
        result = _build(runner, pages, small_model_path, pets_folder[0], "--images", images)
        assert result.exit_code == 0, result.output
        assert (pages / "CNAME").read_text() == "maps.example.org\n" and (pages / ".git" / "HEAD").is_file()
        assert (pages / "index.html").is_file() and (pages / ".nojekyll").is_file()
    assert ".nojekyll" in outdir.written_files(pages) and "CNAME" not in outdir.written_files(pages)


def test_a_user_file_inside_the_sites_own_folders_stops_the_build_untouched(runner, site, small_model_path,
                                                                            pets_folder):
    (site / "layers" / "my-notes.txt").write_text("mine\n")
    before = _digest(site)
    result = _build(runner, site, small_model_path, pets_folder[0], "--images", "2")
    _one_line(result, "layers/my-notes.txt' were not written by reportgen", 4)
    assert _digest(site) == before


def test_a_file_of_the_users_that_the_new_site_would_overwrite_stops_the_swap(tmp_path):
    out, staging, scratch = tmp_path / "site", tmp_path / "staging", tmp_path / "scratch"
    for folder in (out, staging, scratch):
        folder.mkdir()
    (out / outdir.SITE_MARKER).write_text(f"{outdir.MARKER_HEADER}\nindex.html\n")
    (out / "index.html").write_text("old")
    (out / "about.html").write_text("the user's")  # not in the old site's list
    (staging / "index.html").write_text("new")
    (staging / "about.html").write_text("new")
    with pytest.raises(outdir.OutputError, match="about.html' were not written by reportgen"):
        outdir.swap_in(staging, out, scratch)
    assert (out / "index.html").read_text() == "old" and (out / "about.html").read_text() == "the user's"


def test_a_site_inside_a_class_folder_image_dir_is_never_read_as_images(runner, tmp_path, small_model_path,
                                                                        pets_folder):
    images = tmp_path / "photos"
    for k, path in enumerate(sorted(pets_folder[0].iterdir())):
        (images / ("cat" if k % 2 else "dog")).mkdir(parents=True, exist_ok=True)
        (images / ("cat" if k % 2 else "dog") / path.name).write_bytes(path.read_bytes())
    for out in (images / "site",):  # beside the class folders, where it would be taken for one
        ids = []
        for _ in range(2):
            colours = "gray" if ids else "viridis"  # a second build that is not "up to date"
            result = _build(runner, out, small_model_path, images, "--images", "6", "--cmap", colours)
            assert result.exit_code == 0, result.output
            ids.append(json.loads((out / "data" / "manifest.json").read_text())["data"]["image_ids"])
        assert ids[0] == ids[1] and all(i.split("/")[0] in ("cat", "dog") and "site" not in i for i in ids[0])


def test_a_symlinked_out_is_rebuilt_through_the_link(runner, tmp_path, small_model_path, pets_folder):
    target, link = tmp_path / "real" / "site", tmp_path / "link"
    target.parent.mkdir()
    link.symlink_to(target, target_is_directory=True)
    for images in ("1", "2"):  # the second rebuild through a link was the one that failed
        result = _build(runner, link, small_model_path, pets_folder[0], "--images", images)
        assert result.exit_code == 0, result.output
        assert link.is_symlink() and (target / "index.html").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["site"]


def test_a_mount_point_is_rebuilt_in_place(runner, tmp_path, small_model_path, pets_folder, monkeypatch):
    """A Docker volume cannot be renamed and is another file system: the site is swapped inside it.
    A real mount needs root; the folder here is one that os.path.ismount calls a mount point."""
    volume = tmp_path / "volume"
    volume.mkdir()
    real_ismount = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda path: Path(path) == volume or real_ismount(path))
    inode = volume.stat().st_ino
    for images in ("1", "2"):
        result = _build(runner, volume, small_model_path, pets_folder[0], "--images", images)
        assert result.exit_code == 0, result.output
    assert volume.stat().st_ino == inode
    scratch = [p for p in volume.iterdir() if p.name.startswith(outdir.SCRATCH_PREFIX) and p.name != outdir.SITE_MARKER]
    assert scratch == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["volume"]
    assert len(json.loads((volume / "data" / "manifest.json").read_text())["data"]["image_ids"]) == 2


def test_the_current_folder_and_an_empty_out(runner, tmp_path, small_model_path, pets_folder, monkeypatch):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    for images in ("1", "2"):
        result = _build(runner, ".", small_model_path, pets_folder[0], "--images", images)
        assert result.exit_code == 0, result.output
        assert (here / "index.html").is_file() and Path.cwd() == here
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here"]
    _one_line(_build(runner, "", small_model_path, pets_folder[0]), "--out is empty", 4)


def test_what_a_killed_build_left_is_removed_by_the_next(runner, site, small_model_path, pets_folder):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    abandoned = outdir.scratch_folder(site)
    (abandoned / outdir.OWNER_FILE).write_text(f"{dead.pid}\n")
    (abandoned / "site").mkdir()
    living = outdir.scratch_folder(site)  # this process's: a build still running
    (site.parent / f"{outdir.SCRATCH_PREFIX}{site.name}.lock").write_text(f"{dead.pid}\n")  # its flock ended with it
    result = _build(runner, site, small_model_path, pets_folder[0], "--images", "2")
    assert result.exit_code == 0, result.output
    assert not abandoned.exists() and living.is_dir()
    living.joinpath(outdir.OWNER_FILE).unlink()
    living.rmdir()
    assert sorted(p.name for p in site.parent.iterdir()) == ["site"]


def _start(out: Path, model: Path, images: Path, *extra, tmp: Path | None = None) -> subprocess.Popen:
    env = dict(os.environ, **({"TMPDIR": str(tmp)} if tmp else {}))
    return subprocess.Popen([str(REPORTGEN), "build", "--model", str(model), "--image-dir", str(images),
                             "--out", str(out), "-q", *extra], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the build never reached the stage"
        time.sleep(0.05)


def _alive_in_group(group: int) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[2]) == group and stat[0] != "Z":
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    return found


def test_a_second_build_into_the_same_out_is_refused_while_the_first_runs(site, tiny_model_path, pets_folder):
    first = _start(site, tiny_model_path, pets_folder[0], "--images", "2", "--cmap", "gray")
    _wait_for(lambda: list(site.parent.glob(f"{outdir.SCRATCH_PREFIX}{site.name}-*")), first)
    second = _start(site, tiny_model_path, pets_folder[0], "--images", "2")
    out, err = second.communicate(timeout=120)
    assert second.returncode == 4, err
    assert err.strip().splitlines() == [f"error: another build into '{site}' is running (process {first.pid}); "
                                        "wait for it to end or choose another --out"]
    out, err = first.communicate(timeout=240)
    assert first.returncode == 0 and out.startswith(f"built {site}"), err
    assert "gray" in (site / "data" / "manifest.json").read_text()
    assert sorted(p.name for p in site.parent.iterdir()) == ["site"]


@pytest.mark.parametrize("stage, sent, code", [
    ("layers", signal.SIGINT, 130), ("layers", signal.SIGTERM, 143),
    ("statistics", signal.SIGINT, 130), ("statistics", signal.SIGTERM, 143), ("layers", signal.SIGKILL, -9),
], ids=["ctrl-c-layers", "sigterm-layers", "ctrl-c-beam", "sigterm-beam", "kill-9-then-rebuild"])
def test_an_interrupted_build_leaves_the_site_and_no_process_or_folder(site, tmp_path, tiny_model_path, pets_folder,
                                                                       stage, sent, code):
    """A signal in the layer stage or in the Beam statistics pass: the previous site is byte-identical,
    no process of the build is alive 5 s later (polled until all are gone), nothing is left beside
    --out (nor in the temporary folder: Beam's scratch included); after a kill -9, the next build
    removes what was left."""
    before = _digest(site)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    extra = ["--stats-images", "all"] if stage == "statistics" else []
    build = _start(site, tiny_model_path, pets_folder[0], "--images", "4", *extra, tmp=tmp)
    if stage == "statistics":
        _wait_for(lambda: list(tmp.glob("reportgen-beam-*")), build)
        time.sleep(3)  # the Beam workers are up and computing
    else:
        _wait_for(lambda: list(site.parent.glob(f"{outdir.SCRATCH_PREFIX}{site.name}-*/site/layers/*")), build)
    build.send_signal(sent)
    out, err = build.communicate(timeout=60)
    assert build.returncode == code, err
    if sent != signal.SIGKILL:
        assert err.strip().splitlines() == ["error: interrupted; the previous site was left as it was"]
    deadline = time.monotonic() + 5  # every process of the build gone within 5 s
    while _alive_in_group(build.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _alive_in_group(build.pid) == []
    assert _digest(site) == before
    if sent == signal.SIGKILL:
        again = _start(site, tiny_model_path, pets_folder[0], "--images", "2", tmp=tmp)
        out, err = again.communicate(timeout=240)
        assert again.returncode == 0, err
    assert sorted(p.name for p in site.parent.iterdir()) == ["site"]
    assert list(tmp.iterdir()) == []


def test_workers_are_capped_at_the_cores(runner, tmp_path):
    from reportgen.cli import _workers

    assert _workers(64) == os.cpu_count() and _workers(None) == min(4, os.cpu_count())
    _one_line(runner.invoke(app, ["build", "--workers", "0", "--out", str(tmp_path / "s"), "-q"]), "--workers", 2)


@pytest.mark.parametrize("extra, fragment", [
    (["--seed", "-1"], "--seed must be 0 or more"),
    (["--split", "testing"], "has no split 'testing'; its splits are train, test"),
    (["--runner", "NopeRunner", "--stats-images", "all"], "unknown --runner 'NopeRunner'"),
    (["--stats-images", "all", "--beam-option", "=3"], "--beam-option takes KEY=VALUE, got '=3'"),
    (["--stats-images", "all", "--beam-option", "direct_num_workers=many"],
     "Beam refuses the --beam-option values: argument --direct_num_workers: invalid int value: 'many'"),
], ids=["negative-seed", "split-typo", "unknown-runner", "option-without-key", "option-beam-refuses"])
def test_options_are_one_line_before_tensorflow(runner, tmp_path, monkeypatch, extra, fragment):
    import reportgen.model_io

    monkeypatch.setattr(reportgen.model_io, "load", lambda *a, **k: pytest.fail("the model was loaded"))
    _one_line(runner.invoke(app, ["build", *extra, "--out", str(tmp_path / "site"), "-q"]), fragment, 2)


def test_a_damaged_previous_build_is_said_and_never_fatal(runner, site, tmp_path, small_model_path, pets_folder):
    """A stats.json that is not JSON inside --out, and a foreign one under --previous."""
    (site / "data" / "stats.json").write_text("{broken")
    elsewhere = tmp_path / "previous"
    elsewhere.mkdir()
    (elsewhere / "manifest.json").write_text("[]")
    (elsewhere / "stats.json").write_text(json.dumps({"layers": {"no": "list"}}))
    for previous in ([], ["--previous", str(elsewhere)]):
        result = _build(runner, site, small_model_path, pets_folder[0], "--images", "2", *previous,
                        "--cmap", "gray" if previous else "magma")
        assert result.exit_code == 0, result.output
        changes = (site / "changes.html").read_text()
        assert "was not compared with: its files" in changes


def test_an_import_that_exits_is_one_line(runner, tmp_path, small_model_path, pets_folder):
    module = tmp_path / "quits.py"
    module.write_text("import sys\nsys.exit(3)\n")
    result = _build(runner, tmp_path / "site", small_model_path, pets_folder[0], "--import", str(module))
    _one_line(result, "called sys.exit(3) while it was imported", 2)


def test_a_file_name_that_is_not_utf8_is_shown_replaced(runner, tmp_path, small_model_path, pets_folder):
    images = tmp_path / "images"
    images.mkdir()
    picture = next(pets_folder[0].iterdir()).read_bytes()
    os.makedirs(images, exist_ok=True)
    with open(os.path.join(os.fsencode(images), b"caf\xe9.jpg"), "wb") as handle:  # Latin-1 bytes
        handle.write(picture)
    (images / "plain.jpg").write_bytes(picture)
    out = tmp_path / "site"
    for _ in range(2):
        result = _build(runner, out, small_model_path, images, "--images", "2", "--cmap", "gray" if _ else "viridis")
        assert result.exit_code == 0, result.output
        ids = json.loads((out / "data" / "manifest.json").read_text())["data"]["image_ids"]
        assert ids == ["caf\ufffd.jpg", "plain.jpg"]
        pages = sorted(p.name for p in (out / "images").glob("*.html"))
        assert len(pages) == 2 and all(name.isascii() for name in pages)
        assert "caf\ufffd.jpg" in (out / "index.html").read_text(encoding="utf-8")


def _labelled(tmp_path, pets_folder, with_masks: list[bool]) -> tuple[Path, Path]:
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for k, path in enumerate(sorted(pets_folder[0].iterdir())[:len(with_masks)]):
        (images / path.name).write_bytes(path.read_bytes())
        if with_masks[k]:
            mask = pets_folder[1] / f"{path.stem}.png"
            (masks / mask.name).write_bytes(mask.read_bytes())
    return images, masks


def test_masks_for_some_images_only_are_refused_naming_the_others(runner, tmp_path, small_model_path, pets_folder):
    images, masks = _labelled(tmp_path, pets_folder, [True, False, True, False])
    result = _build(runner, tmp_path / "site", small_model_path, images, "--images", "4", "--trimap-dir", str(masks))
    _one_line(result, f"2 of 4 images have no mask in '{masks}': 'pet_1.jpg', 'pet_3.jpg'", 2)
    result = _build(runner, tmp_path / "site", small_model_path, images, "--images", "1", "--trimap-dir", str(masks))
    assert result.exit_code == 0, result.output  # the one image used has its mask
    empty = tmp_path / "no-masks"
    empty.mkdir()
    result = _build(runner, tmp_path / "site", small_model_path, images, "--images", "1", "--trimap-dir", str(empty))
    _one_line(result, "no mask in", 2)


def test_labels_lose_a_byte_order_mark(tmp_path):
    from reportgen.outputs import read_labels

    path = tmp_path / "labels.txt"
    path.write_bytes("cat\ndog\n".encode("utf-8-sig"))
    assert read_labels(path) == ("cat", "dog")


def test_every_file_of_an_image_folder_is_used_or_named(runner, tmp_path, small_model_path):
    images = tmp_path / "mixed"
    images.mkdir()
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
    for suffix in ("gif", "bmp", "tiff", "webp", "png", "jpg"):
        Image.fromarray(pixels).save(images / f"pet.{suffix}")
    (images / "readme.txt").write_text("not an image")
    (images / "labels.csv").write_text("a,b\n")
    out = tmp_path / "site"
    result = _build(runner, out, small_model_path, images, "--images", "6")
    assert result.exit_code == 0, result.output
    ids = json.loads((out / "data" / "manifest.json").read_text())["data"]["image_ids"]
    assert sorted(ids) == sorted(f"pet.{s}" for s in ("gif", "bmp", "tiff", "webp", "png", "jpg"))
    index = (out / "index.html").read_text()
    assert "2 files of the image folder are not in a format Pillow reads and were left out: labels.csv, readme.txt" \
        in index


def test_a_config_that_runs_code_is_called_hostile(runner, tmp_path, pets_folder):
    import zipfile

    import keras

    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(2, 3, name="conv")])
    good = tmp_path / "good.keras"
    model.save(good)
    with zipfile.ZipFile(good) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    config["config"]["layers"][1].update(module="subprocess", class_name="Popen", registered_name=None)
    files["config.json"] = json.dumps(config).encode()
    evil = tmp_path / "evil.keras"
    with zipfile.ZipFile(evil, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    result = _build(runner, tmp_path / "site", evil, pets_folder[0], "--images", "1")
    _one_line(result, f"model file '{evil}' names subprocess.Popen, which would run code on this machine", 2)
    assert "--import" not in result.output


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_nan_and_values_beyond_float16_are_said_on_the_layer_page(runner, tmp_path, pets_folder):
    """One conv gives NaN on one of its two channels, another gives values near 1e9: each page says
    how many values and what became of them (0, or float16's ±65,000), and so do stats.json and
    the index; no numpy warning reaches the terminal."""
    import keras
    from keras import layers

    inputs = keras.Input((16, 16, 3))
    broken = layers.Conv2D(2, 3, padding="same", name="broken")(inputs)
    huge = layers.Conv2D(2, 3, padding="same", name="huge")(inputs)
    x = layers.Conv2D(2, 1, name="head")(layers.Concatenate()([broken, huge]))
    model = keras.Model(inputs, x)
    kernel, bias = model.get_layer("broken").get_weights()
    kernel[..., 1] = np.nan
    model.get_layer("broken").set_weights([kernel, bias])
    kernel, bias = model.get_layer("huge").get_weights()
    model.get_layer("huge").set_weights([np.full_like(kernel, 1e7), bias])
    path = tmp_path / "damaged.keras"
    model.save(path)
    out = tmp_path / "site"
    result = _build(runner, out, path, pets_folder[0], "--images", "2", "--workers", "1")  # warnings raise here
    assert result.exit_code == 0 and result.output.startswith("built"), result.output
    pictures = np.stack([np.asarray(Image.open(p).convert("RGB").resize((16, 16), Image.Resampling.NEAREST),
                                    np.float32) for p in sorted(pets_folder[0].iterdir())[:2]])
    largest = float(np.abs(np.asarray(keras.Model(inputs, huge)(pictures))).max())
    rows = {row["name"]: row for row in json.loads((out / "data" / "stats.json").read_text())["layers"]}
    nan_values, all_values = 2 * 16 * 16, 2 * 16 * 16 * 2
    assert rows["broken"]["stored_note"].startswith(
        f"{nan_values:,} of its {all_values:,} values on the pictured images are NaN or infinite (50.0%)")
    assert rows["broken"]["channels"]["strength"][1] == 0  # stored and measured as 0
    beyond = rows["huge"]["stored_note"]
    assert "values reach beyond float16's range (the largest is" in beyond and f"{largest:.3g}" in beyond
    assert rows["head"]["stored_note"] is not None  # the NaN reaches it
    page = next(p for p in (out / "layers").glob("*.html") if "huge" in p.name).read_text()
    assert "Values changed in storing:" in page and "±65,000" in page
    index = (out / "index.html").read_text()
    assert "3 conv layers give values that cannot be stored as they are" in index
    assert "is NaN or infinite in 1,024 of its 1,024 values on the 2 pictured images" in index
