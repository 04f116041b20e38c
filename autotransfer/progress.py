"""Progress display: one rich progress bar per stage, fed by a plain callback the stages call."""
from __future__ import annotations

import re
import sys
import time
from typing import Callable, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class ProgressFn(Protocol):
    def __call__(self, stage: str, done: int, total: int, message: str = "") -> None: ...


console = Console(stderr=True)


class RichProgress:
    """Context manager giving a ``progress(stage, done, total, message)`` callback with ETA per stage."""

    def __init__(self, enabled: bool = True) -> None:
        # Live bars only on a terminal; in logs (CI, `make demo | tee`) one line per finished stage step.
        self.enabled = enabled and sys.stderr.isatty()
        self.quiet = not enabled
        self._progress = Progress(
            TextColumn("[bold]{task.fields[stage]:<8}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            disable=not self.enabled,
        )
        self._tasks: dict[str, int] = {}
        self._last_step: dict[str, str] = {}
        self._last_time: dict[str, float] = {}

    def __enter__(self) -> "RichProgress":
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)

    def __call__(self, stage: str, done: int, total: int, message: str = "") -> None:
        if stage not in self._tasks:
            self._tasks[stage] = self._progress.add_task(message, total=total, stage=stage)
        self._progress.update(self._tasks[stage], completed=done, total=total, description=message)
        if not self.enabled and not self.quiet and done > 0:
            # Plain logs get a line per finished step, or per 15 s inside a long step, not per batch.
            now = time.monotonic()
            step = re.sub(r"\d+/\d+", "", message)
            if done >= total or step != self._last_step.get(stage) or now - self._last_time.get(stage, 0) > 15:
                console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {stage}: {done}/{total} {message}", highlight=False)
                self._last_step[stage], self._last_time[stage] = step, now


def log(message: str) -> None:
    """One line of run narration on stderr."""
    console.print(message)


NullProgress: Callable[..., None] = lambda *a, **k: None  # noqa: E731
