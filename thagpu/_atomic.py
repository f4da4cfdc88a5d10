"""Atomic file writes: a temporary file in the target folder, then a rename."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

from .errors import OutputError

__all__ = ["atomic_path", "atomic_paths", "atomic_write_text", "check_writable"]

_DOUBLE_SUFFIXES = (".nii.gz",)


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for double in _DOUBLE_SUFFIXES:
        if name.endswith(double):
            return path.name[-len(double):]
    return path.suffix


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary name keeps the final suffix (``.nii.gz``, ``.png``...) because
    writers such as SimpleITK choose the format from it. On any exception the
    temporary file is removed and ``path`` is left as it was, so no
    half-written file ever carries the final name.

    Parameters
    ----------
    path : str or Path
        Final destination. Its folder is created if missing.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_path(d / "a.txt") as tmp:
    ...     _ = tmp.write_text("done")
    >>> (d / "a.txt").read_text(encoding="utf-8")
    'done'
    """
    with atomic_paths([path]) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_paths(paths):
    """Yield a temporary path beside each of ``paths``; rename them all onto ``paths`` on success.

    The outputs of one case are written together: every file is complete under its temporary name
    before the first rename, and each destination is checked again just before (no folder in the
    way), so a failure while writing leaves the old set whole rather than new labels beside old
    measurements, and folders made for it are removed again if empty. The renames themselves run
    one after another: a process killed between two of them leaves a mixed set (and its temporary
    files, hidden). A file system error (a file where a folder should be, no permission) is an
    :class:`~thagpu.errors.OutputError` naming the path, on one line.

    Parameters
    ----------
    paths : sequence of str or Path
        Final destinations; their folders are created if missing.
    """
    paths = [Path(p) for p in paths]
    temps, created, done = [], [], False
    try:
        for path in paths:
            check_writable(path)
            created += _missing_folders(path.parent)
            _io(path.parent, lambda: path.parent.mkdir(parents=True, exist_ok=True))
            temps.append(path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial{_suffix(path)}"))
        yield tuple(temps)
        for path in paths:
            check_writable(path)
        for tmp, path in zip(temps, paths):
            _io(path, lambda: os.replace(tmp, path))
        done = True
    finally:
        for tmp in temps:
            with contextlib.suppress(OSError):
                tmp.unlink()
        if not done:  # folders made for outputs that never came are taken away again, deepest first
            for folder in sorted(set(created), key=lambda f: len(f.parts), reverse=True):
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only if empty


def _missing_folders(folder: Path) -> list:
    """``folder`` and its ancestors that do not exist yet (what ``mkdir(parents=True)`` would make)."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def check_writable(path) -> None:
    """Raise :class:`~thagpu.errors.OutputError` when ``path`` could not become a file.

    A folder already at ``path``, or a file where one of its folders should be, is refused; so is a
    first existing folder above it that this process may not write to. Nothing is created.
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise OutputError(path, "a folder is in the way of this output file")
        missing = _missing_folders(path.parent)
        for link in (f for f in missing if f.is_symlink()):  # a dangling link: mkdir would fail on it
            raise OutputError(link, "a broken link is in the way of this output folder")
        folder = missing[-1].parent if missing else path.parent
        if not folder.is_dir():
            raise OutputError(folder, "is a file, not a folder; outputs cannot go under it")
    except PermissionError as error:  # a folder above that may not be entered
        raise OutputError(path, f"cannot write here ({error.strerror})") from error
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(folder, "no permission to write in this folder")


def _io(path, action):
    """Run a file-system ``action``; its ``OSError`` becomes a one-line :class:`OutputError` on ``path``."""
    try:
        return action()
    except OutputError:
        raise
    except OSError as error:
        raise OutputError(path, f"cannot write here ({error.strerror or type(error).__name__})") from error


def atomic_write_text(path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
