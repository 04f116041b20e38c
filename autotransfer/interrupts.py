"""Ctrl-C that never lands inside a database commit.

The CLI installs :func:`install`: the first SIGINT raises KeyboardInterrupt (the running trial
is then saved as interrupted), unless the code is inside :func:`shielded` (a write to the study's
storage, which an exception in mid-commit would leave broken), in which case it is raised as the
shielded block ends; a second SIGINT exits at once. Without the handler (the Python API under
Python's default one) :func:`shielded` does nothing.
"""
from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

_state = {"depth": 0, "pending": False, "seen": False}


@contextmanager
def shielded() -> Iterator[None]:
    """Hold back a first Ctrl-C until the block is done."""
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        if not _state["depth"] and _state["pending"]:
            _state["pending"] = False
            raise KeyboardInterrupt


def _on_sigint(signum: int, frame: object) -> None:
    if _state["seen"]:
        os._exit(130)  # the second Ctrl-C: at once, whatever is being saved
    _state["seen"] = True
    if _state["depth"]:
        _state["pending"] = True
        return
    raise KeyboardInterrupt


def requested() -> bool:
    """Whether a first Ctrl-C arrived since :func:`install`, whatever became of the exception it
    raised: C code that calls back into Python (TensorFlow's) may report a KeyboardInterrupt raised
    inside it as another error, e.g. SystemError. Callers that catch errors check this first."""
    return _state["seen"]


def check() -> None:
    """Raise KeyboardInterrupt when a first Ctrl-C arrived: its exception can be lost on the way
    (raised inside a garbage-collection or weakref callback, Python prints "Exception ignored" and
    goes on), so long loops and stage boundaries ask here too. Only under :func:`install`'s handler:
    Python's own raises where the signal lands, and a Ctrl-C an earlier run in this process
    handled must not stop the next one."""
    if _state["seen"] and signal.getsignal(signal.SIGINT) is _on_sigint:
        raise KeyboardInterrupt


def install() -> None:
    """First Ctrl-C: KeyboardInterrupt (outside shielded blocks); second: exit 130 at once."""
    _state.update(depth=0, pending=False, seen=False)
    signal.signal(signal.SIGINT, _on_sigint)


@contextmanager
def handling() -> Iterator[None]:
    """:func:`install` for the block, then Python's previous handler and a clean state again (an
    in-process caller, e.g. a test running the CLI, must not inherit a Ctrl-C the block saw)."""
    previous = signal.getsignal(signal.SIGINT)
    install()
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _state.update(depth=0, pending=False, seen=False)


__all__ = ["check", "handling", "install", "requested", "shielded"]
