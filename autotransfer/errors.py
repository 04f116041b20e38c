"""One error hierarchy: user errors print one line and exit non-zero, with no traceback."""
from __future__ import annotations


class AutotransferError(Exception):
    """Base class of every error autotransfer raises on purpose."""


class UserInputError(AutotransferError, ValueError):
    """Bad input from the user: the message names the file/field, what was wrong and the fix."""


class MissingDependencyError(AutotransferError, ImportError):
    """An optional dependency is missing; the message says which extra to install."""


class BackboneError(AutotransferError):
    """A backbone handle could not be resolved, loaded or does not follow the module contract."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C ended a run: the running trial was saved as interrupted and nothing was exported;
    ``run(..., resume=True)`` into ``run_dir`` continues it."""

    def __init__(self, run_dir: object) -> None:
        super().__init__(f"interrupted: {run_dir}")
        self.run_dir = run_dir


def check_param(name: str, value: object, owner: str, constraint: str, ok: bool) -> None:
    """Raise the one well-formed message for a bad parameter value (scikit-learn style)."""
    if not ok:
        raise UserInputError(
            f"The {name!r} parameter of {owner} must be {constraint}. Got {value!r} instead."
        )
