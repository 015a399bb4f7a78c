"""Atomic file writes: a crash, a full disk or Ctrl-C mid-write never leaves half a file."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **open_kwargs) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success make it ``path`` in one step.

    The temporary file is flushed to disk (``fsync``) before ``os.replace`` renames it over
    the target, which is atomic on POSIX and Windows: readers see the old file or the new
    one, never a mixture. On any error the temporary file is removed and ``path`` is left
    as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
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
