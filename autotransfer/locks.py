"""Advisory file locks (``fcntl.flock``): one owner per run directory or temporary export.

The kernel drops a flock when its holder exits, crashed or not, so a lock never outlives its
process. Flocks are advisory: every writer that must not overlap takes the same lock.
"""
from __future__ import annotations

import fcntl
import os
import socket
from datetime import datetime
from pathlib import Path


def try_lock(path: str | Path, *, create: bool = True) -> int | None:
    """A file descriptor holding an exclusive lock on ``path``, or None when another process holds
    it (or, with ``create=False``, when ``path`` does not exist). Release with :func:`unlock`."""
    path = Path(path)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
        except FileNotFoundError:
            if create:
                raise
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        # The previous holder may have unlinked the file before releasing it: a lock on that
        # orphaned file guards nothing, so lock the file now at ``path`` instead.
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
        if not create:
            return None


def write_holder(fd: int) -> str:
    """Record this process (``host:pid``, start time) in the locked file; returns the text."""
    text = f"{socket.gethostname()}:{os.getpid()} (started {datetime.now().astimezone():%Y-%m-%d %H:%M:%S %z})"
    os.ftruncate(fd, 0)
    os.pwrite(fd, text.encode(), 0)
    return text


def read_holder(path: str | Path) -> str:
    """What the holder of ``path`` wrote with :func:`write_holder` ('' when nothing yet)."""
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""


def unlock(fd: int, path: str | Path | None = None) -> None:
    """Release the lock; with ``path``, remove the file first (while still holding it, so that a
    process that opened it meanwhile sees it was removed and locks a fresh one)."""
    try:
        if path is not None:
            Path(path).unlink(missing_ok=True)
    finally:
        os.close(fd)


__all__ = ["read_holder", "try_lock", "unlock", "write_holder"]
