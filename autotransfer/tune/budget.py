"""When tuning must stop: the run's deadline less what the stages after tuning will need.

A :class:`Deadline` is a wall-clock end (``time.time()``) and a reserve that the tune stage raises
as trials finish (the refit of the likely ensemble members costs about as much as their trials
did), so that tuning uses the budget and the final model still fits in it. Backends ask
:meth:`Deadline.can_start` before starting a trial and the trainer asks :meth:`Deadline.passed`
between batches.
"""
from __future__ import annotations

import time


class Deadline:
    """``end`` (a ``time.time()`` value, or None for no deadline) minus a movable ``reserve``."""

    def __init__(self, end: float | None, reserve_s: float = 0.0, start_s: float = 0.0) -> None:
        self.end = None if end is None else float(end)
        self.reserve_s = float(reserve_s)
        self.start_s = float(start_s)  # what a new trial needs before :attr:`at` to be of use

    @classmethod
    def after(cls, seconds: float | None) -> "Deadline":
        """A deadline ``seconds`` from now (None: none)."""
        return cls(None if seconds is None else time.time() + float(seconds))

    @property
    def at(self) -> float | None:
        """The time tuning must stop by, or None."""
        return None if self.end is None else self.end - self.reserve_s

    def remaining(self) -> float:
        """Seconds until :attr:`at` (infinite without a deadline; negative once passed)."""
        return float("inf") if self.end is None else self.at - time.time()

    def passed(self) -> bool:
        return self.remaining() <= 0

    def can_start(self) -> bool:
        """Whether a new trial still has the :attr:`start_s` seconds it needs."""
        return self.remaining() > self.start_s

    def __float__(self) -> float:
        return float("inf") if self.at is None else self.at

    def __repr__(self) -> str:
        return f"Deadline(end={self.end}, reserve_s={self.reserve_s:.1f}, start_s={self.start_s:.1f})"


def as_deadline(value: "Deadline | float | None") -> Deadline:
    """A :class:`Deadline` from a ``time.time()`` float, None, or a Deadline (returned as is)."""
    return value if isinstance(value, Deadline) else Deadline(value)


__all__ = ["Deadline", "as_deadline"]
