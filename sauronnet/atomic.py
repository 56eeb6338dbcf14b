"""Atomic file writes: write to a temporary file beside the target, then ``os.replace``.

A crash or a SIGKILL at any moment leaves either the old file or the new one, never half of one; the temporary
file (``.NAME.XXXX.suffix``) is removed on errors, and a kill can at worst leave such a hidden file behind.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yields a temporary path to write; on success it replaces ``path``.

    ``suffix`` matters to writers that pick a format from the name (SimpleITK, matplotlib, numpy).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yields a temporary folder beside ``path`` to fill; on success it replaces ``path`` (an existing folder is
    removed first), on any error it is deleted — a failure leaves no half-written folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def exclusive_lock(folder: str | Path, what: str) -> Iterator[None]:
    """Holds an exclusive lock on ``folder`` (created if needed; no file is written) while the block runs; if
    another process holds it, raises ValueError at once saying someone is already doing ``what`` there. The lock
    dies with its process (``kill -9`` too), so a crash never leaves a folder locked. Without ``fcntl``
    (Windows) no lock is taken."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"{folder}: another process is already {what} here; wait for it to finish (two runs "
                             "writing one folder would mix their files)") from None
        yield
    finally:
        os.close(fd)  # releases the lock
