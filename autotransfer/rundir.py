"""Run-directory ownership: one run at a time per directory, and no run mixes its files with another's.

A run holds an exclusive lock on ``<run_dir>/.lock`` (its host:pid and start time written in it)
from before the data is loaded until it returns. A directory holding an earlier run's files is
only continued (``--resume``) or cleared first (``--overwrite``), never written over silently.
Workers of a shared study write trials into the chief's directory without this lock: the study,
not the directory, coordinates them.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from autotransfer.errors import UserInputError
from autotransfer.locks import read_holder, try_lock, unlock, write_holder

LOCK_FILE = ".lock"
#: What a run writes into its directory (docs/ARCHITECTURE.md, "Run directory").
RUN_FILES = frozenset({
    "config.json", "data.json", "splits.json", "plan.json", "timings.json", "leaderboard.csv", "trials.csv",
    "best.json", "final_model.json", "test_metrics.json", "test_examples.json", "report.html",
    "probe", "trials", "tuner", "final", "export", "fitted",
})


def _is_leftover(name: str) -> bool:
    """A half-written file of the run's atomic writes (``x.json.tmp``, ``report.html.tmp``)."""
    return name.endswith(".tmp") and name[:-4] in RUN_FILES


def run_files(path: str | Path) -> list[str]:
    """The names in ``path`` that a run writes (empty: not a run directory)."""
    path = Path(path)
    if not path.is_dir():
        return []
    return sorted(p.name for p in path.iterdir() if p.name in RUN_FILES)


class RunDirLock:
    """The claim of one run on its directory; :meth:`claim` takes it, :meth:`release` gives it back."""

    def __init__(self, run_dir: Path, fd: int, created_dir: bool, created_lock: bool) -> None:
        self.run_dir, self._fd = run_dir, fd
        self._created_dir, self._created_lock = created_dir, created_lock

    @classmethod
    def claim(cls, run_dir: str | Path, *, resume: bool = False, overwrite: bool = False) -> "RunDirLock":
        """Create and lock ``run_dir``; with ``overwrite``, clear an earlier run's files from it.

        Raises:
            UserInputError: ``run_dir`` is a file or cannot be created; another run holds it; it
                holds an earlier run and neither ``resume`` nor ``overwrite`` is given; or it holds
                files that are not a run's (never deleted).
        """
        run_dir = Path(run_dir)
        if run_dir.exists() and not run_dir.is_dir():
            raise UserInputError(f"--out {run_dir} is a file, not a directory. Pass a new or empty directory, or a "
                                 "run directory with --resume or --overwrite.")
        created = not run_dir.exists()
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserInputError(f"--out {run_dir}: cannot create the run directory ({exc.strerror or exc}). Pass a "
                                 "directory you can write to.") from exc
        created_lock = not (run_dir / LOCK_FILE).exists()
        fd = try_lock(run_dir / LOCK_FILE)
        if fd is None:
            holder = read_holder(run_dir / LOCK_FILE) or "another process"
            raise UserInputError(f"--out {run_dir} is in use by another autotransfer run: {holder}. Wait for it to "
                                 "finish, or pass another --out.")
        write_holder(fd)
        claim = cls(run_dir, fd, created, created_lock)
        try:
            claim._check_contents(resume=resume, overwrite=overwrite)
        except BaseException:
            claim.release(refused=True)
            raise
        return claim

    def _check_contents(self, *, resume: bool, overwrite: bool) -> None:
        names = sorted(p.name for p in self.run_dir.iterdir() if p.name != LOCK_FILE)
        if not names or resume:  # an empty directory is a fresh run; check_resumable judges the rest
            return
        foreign = [n for n in names if n not in RUN_FILES and not _is_leftover(n)]
        ours = [n for n in names if n in RUN_FILES]
        if not ours:
            raise UserInputError(f"--out {self.run_dir} is not empty and holds no autotransfer run "
                                 f"({', '.join(names[:3])}{', ...' if len(names) > 3 else ''}). Pass a new or empty "
                                 "directory.")
        if not overwrite:
            raise UserInputError(f"--out {self.run_dir} holds an earlier run ({', '.join(ours[:3])}"
                                 f"{', ...' if len(ours) > 3 else ''}). Continue it with --resume, replace it with "
                                 "--overwrite, or pass another --out.")
        if foreign:  # never delete what a run did not write
            raise UserInputError(f"--overwrite: {self.run_dir} also holds files a run does not write "
                                 f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); nothing was "
                                 "deleted. Move them away, or pass another --out.")
        for name in names:
            path = self.run_dir / name
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()

    def release(self, *, refused: bool = False) -> None:
        """Give the directory back. A run that wrote nothing (or was ``refused``) takes its lock
        file away again, and the directory too when it created it: it leaves nothing behind."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        lock = self.run_dir / LOCK_FILE
        try:
            empty = [p.name for p in self.run_dir.iterdir()] == [LOCK_FILE]
        except OSError:
            empty = False
        unlock(fd, lock if empty or (refused and self._created_lock) else None)
        if empty and self._created_dir:
            try:
                self.run_dir.rmdir()
            except OSError:  # something appeared meanwhile: keep it
                pass

    def __enter__(self) -> "RunDirLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


__all__ = ["LOCK_FILE", "RUN_FILES", "RunDirLock", "run_files"]
