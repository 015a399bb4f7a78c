"""Atomic file writes: a crash, a full disk or Ctrl-C mid-write never leaves half a file."""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

# ".<target name>.<pid of the writer>.<8 random characters>.tmp"
_TEMPORARY = re.compile(r"\.(?P<target>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]{8}\.tmp")
# What older versions wrote (no pid): only removed once clearly abandoned.
_OLD_TEMPORARY = re.compile(r"\.(?P<target>.+)\.[A-Za-z0-9_]{8}\.tmp")
OLD_TEMPORARY_AGE = 3600.0  # seconds


def as_path(path: object, name: str = "path") -> Path:
    """``path`` as a Path; anything but a str or os.PathLike is a TypeError naming it."""
    if not isinstance(path, (str, os.PathLike)) or (isinstance(path, str) and not path):
        raise TypeError(f"{name} must be a non-empty str or Path, got {path!r}")
    return Path(path)


def _process_running(pid: int) -> bool:
    """Is ``pid`` a live process on this machine? (True when it cannot be told.)"""
    if pid == os.getpid():
        return True  # another thread of ours may be writing it
    if os.name == "nt":
        return True  # os.kill(pid, 0) would terminate the process on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    try:  # a killed child that nobody has waited for yet is a zombie: dead all the same
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete temporary files that a killed writer left in ``folder``; return them.

    A temporary file is stale when the process that wrote it (its pid is in the name) no
    longer runs, or, for names without a pid, when it has not changed for an hour.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not (name.startswith(".") and name.endswith(".tmp")):
            continue
        try:
            match = _TEMPORARY.fullmatch(name)
            if match:
                stale = not _process_running(int(match["pid"]))
            elif _OLD_TEMPORARY.fullmatch(name):
                stale = time.time() - entry.stat().st_mtime > OLD_TEMPORARY_AGE
            else:
                continue
            if stale and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue  # another process removed it first, or it is not ours to remove
    return removed


def _write_target(path: Path) -> Path:
    """The file a write to ``path`` replaces: ``path``, or where it points if it is a link.

    ``os.replace`` onto a link would replace the link itself with a plain file; the
    temporary file must also sit beside the real target, on its file system, or the
    rename would fail.
    """
    if not path.is_symlink():
        return path
    target = Path(os.path.realpath(path))
    if target.is_symlink():  # realpath stops where the links go round in a circle
        raise OSError(f"cannot write {path}: its symbolic links form a loop")
    return target


@contextmanager
def atomic_open(
    path: str | os.PathLike,
    mode: str = "wb",
    verify: Callable[[Path], None] | None = None,
    **open_kwargs,
) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success make it ``path`` in one step.

    The temporary file is flushed to disk (``fsync``) before ``os.replace`` renames it over
    the target, which is atomic on POSIX and Windows: readers see the old file or the new
    one, never a mixture. On any error the temporary file is removed and ``path`` is left
    as it was. ``verify(temporary_path)``, if given, runs on the finished temporary file
    before the rename; if it raises, ``path`` is left as it was (a file that cannot be read
    back never replaces a good one). Temporary files left by killed writers in the same
    folder are removed first. A symbolic link is written through: the file it points to is
    replaced (atomically, from a temporary file beside it) and the link stays a link.
    """
    path = _write_target(as_path(path))
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Safe without locks: a temporary file is removed only when the pid in its name no
    # longer runs (an old name without a pid: after an hour unchanged), so no writer on
    # this machine can still be filling it. A live writer's file, ours included, stays.
    remove_stale_temporaries(path.parent)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if verify is not None:
            verify(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp makes owner-only files; ours are for everyone
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """UTF-8 with "\\n" newlines on every platform, atomically."""
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """JSON with sorted keys, indent 1 and a trailing newline (stable, diff-friendly)."""
    write_text(path, json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=False) + "\n")
