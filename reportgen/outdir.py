"""The output folder: checked before a build starts, locked while it runs, recognised when it is
up to date, and given the new site's files only when the whole build succeeded.

The folder belongs to reportgen only where reportgen wrote it. The site's marker file lists every
file a build wrote; whatever else is at the folder's top (a `CNAME`, `.nojekyll`, a `.git/` to
publish from) stays where it is through every rebuild. The folder itself is never renamed: its
entries are swapped, so a symlinked `--out`, a mount point and the current folder are rebuilt in
place. Scratch files and folders (the staging site, the previous site during the swap, the lock)
all begin with `SCRATCH_PREFIX`, a name reportgen never writes into a site and never reads images
from.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from reportgen.errors import OutputError

SITE_MARKER = ".reportgen-site"
MARKER_HEADER = "built by reportgen; the files it wrote:"
SCRATCH_PREFIX = ".reportgen-"
KEY_FILE = "data/build-key.txt"
PAGES_FILES = frozenset({"CNAME", ".nojekyll", ".git"})  # what a GitHub Pages folder holds before a first build
OWNER_FILE = "owner.pid"  # in a scratch folder: the build that made it


def real_path(out: Path) -> Path:
    """The folder a build writes: `out` made absolute, through any symlink."""
    if str(out) == "":
        raise OutputError("--out is empty; give the folder to build the site in")
    return Path(os.path.realpath(out))


def scratch_parent(out: Path) -> Path:
    """Where the scratch folders go: beside `out`, or inside it when it is a mount point (a Docker
    volume), since a rename cannot cross into another file system."""
    return out if os.path.ismount(out) else out.parent


def written_files(out: Path) -> set[str] | None:
    """The files (relative paths) the build that made `out` wrote; None when its marker does not list them."""
    try:
        lines = (out / SITE_MARKER).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    if not lines or lines[0] != MARKER_HEADER:
        return None  # a site from before the marker listed its files
    return set(lines[1:])


def _is_scratch(name: str) -> bool:
    return name.startswith(SCRATCH_PREFIX) and name != SITE_MARKER


def user_entries(out: Path, site_names: set[str] | None = None) -> list[str]:
    """The top-level names in `out` that no reportgen build wrote, sorted. For a site whose marker does
    not list its files, the names the new site writes (`site_names`) count as reportgen's."""
    if not out.is_dir():
        return []
    written = written_files(out)
    ours = {path.split("/", 1)[0] for path in written} if written is not None else set(site_names or ())
    return sorted(entry.name for entry in out.iterdir()
                  if entry.name not in ours and entry.name != SITE_MARKER and not _is_scratch(entry.name))


def _unlisted_inside(out: Path, written: set[str]) -> list[str]:
    """Files that are inside the site's own folders but that no build wrote."""
    folders = {path.split("/", 1)[0] for path in written if "/" in path}
    found = []
    for folder in sorted(folders):
        root = out / folder
        if root.is_dir() and not root.is_symlink():
            found += [p.relative_to(out).as_posix() for p in root.rglob("*")
                      if not p.is_dir() and p.relative_to(out).as_posix() not in written]
    return sorted(found)


def check_output(out: Path) -> None:
    """Refuse an output path that is a file, unwritable, a folder that is not a reportgen site, or a
    site with files of the user's inside its own folders (the next build would replace those folders)."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"output path {str(out)!r} is a file, not a folder")
    if out.is_dir() and not (out / SITE_MARKER).exists():
        foreign = sorted(e.name for e in out.iterdir() if e.name not in PAGES_FILES and not _is_scratch(e.name))
        if foreign:
            raise OutputError(f"output folder {str(out)!r} is not empty and was not made by reportgen "
                              f"(it holds {', '.join(map(repr, foreign[:3]))}); choose another --out")
    written = written_files(out) if out.is_dir() else None
    if written is not None:
        unlisted = _unlisted_inside(out, written)
        if unlisted:
            more = f" and {len(unlisted) - 3} more" if len(unlisted) > 3 else ""
            raise OutputError(f"{', '.join(repr(str(out / p)) for p in unlisted[:3])}{more} were not written by "
                              "reportgen but are inside the site's own folders, which the build replaces: move "
                              "them to the site's top level, where they are kept, or elsewhere")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create {str(parent)!r}: {error.strerror}") from None
    if not os.access(scratch_parent(out) if out.exists() else parent, os.W_OK):
        raise OutputError(f"output folder {str(parent)!r} is not writable")


@contextlib.contextmanager
def lock(out: Path) -> Iterator[None]:
    """Hold `out` for one build: a second build into the same folder is refused in one line while
    this one runs. The lock is an flock, so it ends with its process, even after a kill -9; the
    scratch folders that such a build left are removed here."""
    parent = scratch_parent(out) if out.exists() else out.parent
    path = parent / f"{SCRATCH_PREFIX}{out.name or 'site'}.lock"
    while True:
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise OutputError(f"cannot lock {str(out)!r}: {error.strerror}") from None
            raise OutputError(f"another build into {str(out)!r} is running (process {holder or 'unknown'}); "
                              "wait for it to end or choose another --out") from None
        try:
            if os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino:
                break  # not a lock file that the previous holder removed as we opened it
        except FileNotFoundError:
            pass
        handle.close()
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        remove_abandoned_scratch(parent)
        remove_abandoned_scratch(Path(tempfile.gettempdir()), "reportgen-")  # a killed statistics pass's
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        handle.close()


def scratch_folder(out: Path) -> Path:
    """A new scratch folder for a build into `out`, on the same file system, owned by this process."""
    return owned_folder(f"{SCRATCH_PREFIX}{out.name or 'site'}-", scratch_parent(out))


def owned_folder(prefix: str, parent: Path) -> Path:
    """A new folder in `parent` that records the process it belongs to, so that a later build removes
    it if this one is killed (`remove_abandoned_scratch`)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    (folder / OWNER_FILE).write_text(f"{os.getpid()}\n")
    return folder


def remove_abandoned_scratch(parent: Path, prefix: str = SCRATCH_PREFIX) -> None:
    """Scratch folders in `parent` whose build is no longer running (it was killed) are removed."""
    for folder in parent.glob(f"{prefix}*"):
        owner = folder / OWNER_FILE
        if not folder.is_dir() or not owner.is_file():
            continue
        try:
            pid = int(owner.read_text().strip())
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, OSError):
            continue


def is_up_to_date(out: Path, key: str) -> bool:
    key_file = out / KEY_FILE
    try:
        return key_file.is_file() and key_file.read_text().strip() == key and (out / "index.html").is_file()
    except (OSError, UnicodeDecodeError):
        return False


def image_count(out: Path) -> int:
    try:
        return len(json.loads((out / "data" / "manifest.json").read_text())["data"]["image_ids"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def site_size(out: Path) -> int:
    """The bytes of the site's own files, not of what the user keeps beside them (a .git/)."""
    kept = set(user_entries(out))
    return sum(p.stat().st_size for p in out.rglob("*")
               if p.is_file() and p.relative_to(out).parts[0] not in kept)


def _write_marker(staging: Path) -> set[str]:
    files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if not p.is_dir())
    (staging / SITE_MARKER).write_text("\n".join([MARKER_HEADER, *files]) + "\n", encoding="utf-8")
    return {path.split("/", 1)[0] for path in files}


def swap_in(staging: Path, out: Path, scratch: Path) -> None:
    """Give `out` the new site in `staging`: the previous site's entries move into `scratch`, then the
    new ones move in, each a rename; on a failure the moves are undone. Entries the user put at the
    top of `out` stay where they are; one the new site would overwrite stops the swap, untouched."""
    names = _write_marker(staging) | {SITE_MARKER}
    if not out.exists():
        staging.rename(out)
        return
    # A Pages folder's own .nojekyll is the one the site writes too: the new site's replaces it.
    kept = [name for name in user_entries(out, names) if not (name in PAGES_FILES and name in names)]
    clash = sorted(set(kept) & names)
    if clash:
        raise OutputError(f"{', '.join(repr(str(out / n)) for n in clash)} were not written by reportgen, and the new "
                          "site writes them: move them away and build again")
    previous = scratch / "previous"
    previous.mkdir()
    moved_out, moved_in = [], []
    try:
        for entry in sorted(out.iterdir()):
            if entry.name not in kept and not _is_scratch(entry.name):
                entry.rename(previous / entry.name)
                moved_out.append(entry.name)
        for entry in sorted(staging.iterdir()):
            entry.rename(out / entry.name)
            moved_in.append(entry.name)
    except BaseException:
        for name in moved_in:
            (out / name).rename(staging / name)
        for name in moved_out:
            (previous / name).rename(out / name)
        raise
