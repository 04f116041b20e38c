"""Ctrl-C handling: a lost KeyboardInterrupt still stops a CLI run, never a later one."""
from __future__ import annotations

import signal

import pytest

from autotransfer import interrupts


def test_check_raises_only_under_the_cli_handler_after_a_ctrl_c(monkeypatch):
    previous = signal.getsignal(signal.SIGINT)
    try:
        interrupts.install()
        interrupts.check()  # no Ctrl-C yet
        monkeypatch.setitem(interrupts._state, "seen", True)  # one arrived; its exception was lost
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        interrupts.check()  # the Python API under Python's handler: a stale flag stops nothing
    finally:
        signal.signal(signal.SIGINT, previous)


def test_the_cli_handler_is_gone_after_its_block(monkeypatch):
    previous = signal.getsignal(signal.SIGINT)
    with interrupts.handling():
        assert signal.getsignal(signal.SIGINT) is interrupts._on_sigint
        monkeypatch.setitem(interrupts._state, "seen", True)
    assert signal.getsignal(signal.SIGINT) is previous and not interrupts.requested()
    interrupts.check()  # a later in-process run is not stopped by that Ctrl-C
