r"""Writing files safely: a fresh temporary file beside the target, then an atomic rename.

A crash mid-write leaves the previous file whole (the new one is synced to disk before
the rename), and no fixed temporary name exists for a link planted in a shared folder to
redirect the write onto another file of the user's: ``tempfile.mkstemp`` creates its file
exclusively, and ``os.replace`` replaces a link at the target itself rather than following
it.

Example:
    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> atomic_write_text(os.path.join(folder, "run.json"), "{}")
    >>> open(os.path.join(folder, "run.json")).read()
    '{}'
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import IO, Any

__all__ = ["atomic_save", "atomic_write", "atomic_write_text"]


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    r"""Calls ``write(f)`` on a fresh temporary file beside ``path``, then renames it to
    ``path`` (the temporary file is removed if ``write`` fails)."""
    folder = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(os.fspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        # mkstemp's file is private (0600): give it the mode a plain open() would.
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename makes it the file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: The process's umask, read once: setting it to read it races with other threads.
_UMASK = _umask()


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    r"""Writes ``text`` to ``path`` atomically (:func:`atomic_write`)."""
    atomic_write(path, lambda f: f.write(text.encode(encoding)))


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    r"""``torch.save(obj)`` to ``path`` atomically (:func:`atomic_write`)."""
    import torch

    atomic_write(path, lambda f: torch.save(obj, f))
