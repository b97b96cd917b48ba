"""Files and folders that a crash never leaves half-written.

Every write goes to a temporary name in the destination's own folder (so the rename
cannot cross filesystems), is flushed to disk, and is then renamed over the
destination: a reader sees the old content or the new, never a mix. `durable=False`
skips the fsyncs where losing the newest version in a power cut costs nothing but a
redo (a generated corpus, a cache), and saves their time.

    write_atomic(path, text_or_bytes)
    with atomic_path(path) as tmp:        # for writers that want a file name
        torch.save(state, tmp)
    publish_dir(folder, lambda tmp: ...)  # a whole folder, built aside, renamed in
    move_durably(upload, media / digest)  # an existing file put in place for good
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def fsync_dir(folder: str | Path) -> None:
    """Make a rename inside `folder` survive a power cut (the entry lives in the folder)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _new_file_mode() -> int:
    """What open() gives a new file: 0o666 less the process's umask (read, not set: a
    set-and-restore of the umask races other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o644


@contextmanager
def atomic_path(path: str | Path, *, durable: bool = True) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed over `path` when the block
    ends without an error, removed when it raises. The file gets the mode open() would
    give it: mkstemp's 0600 made a model's metrics.json unreadable to the container's
    user once copied into an image."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, _new_file_mode())
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if durable:
            fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def write_atomic(path: str | Path, data: bytes | str, *, durable: bool = True) -> None:
    """Replace `path` with `data` (str is written as UTF-8)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_bytes(raw)


def move_durably(source: str | Path, target: str | Path) -> None:
    """Put an already written file (on the same filesystem) in place for good: its bytes
    on disk, then the rename, then the folder entry on disk."""
    source, target = Path(source), Path(target)
    fsync_file(source)
    os.replace(source, target)
    fsync_dir(target.parent)


def publish_dir(
    folder: str | Path, build: Callable[[Path], None], *, durable: bool = False
) -> bool:
    """Build a folder's content in a temporary folder beside it, then rename it into
    place. True when this call published it; False when another process published the
    same folder first (its content wins: callers publish content determined by the
    folder's name). Nothing half-built is ever visible under `folder`."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        build(tmp)
        if durable:
            for child in tmp.rglob("*"):
                if child.is_file():
                    fsync_file(child)
            fsync_dir(tmp)
        try:
            os.replace(tmp, folder)
        except OSError:
            if folder.is_dir():  # a lost race: the same content is already there
                return False
            raise
        if durable:
            fsync_dir(folder.parent)
        return True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
