"""One error hierarchy: user errors print one line and exit non-zero, with no traceback."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


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


class ParamError(UserInputError):
    """A bad value of parameter ``name`` of ``owner`` (e.g. ``autotransfer.run``).

    The message names the Python parameter; a front end that took the value from a flag rephrases
    it with :meth:`for_flag` (the CLI does, so its users read ``--seed``, not ``'seed' parameter``).
    """

    def __init__(self, name: str, value: object, owner: str, constraint: str) -> None:
        super().__init__(f"The {name!r} parameter of {owner} must be {constraint}. Got {value!r} instead.")
        self.name, self.value, self.owner, self.constraint = name, value, owner, constraint

    def __reduce__(self) -> tuple:
        return type(self), (self.name, self.value, self.owner, self.constraint)

    def for_flag(self, flag: str) -> str:
        """The same message naming the command-line ``flag`` instead of the parameter."""
        return f"{flag} must be {self.constraint}. Got {self.value!r} instead."


def check_param(name: str, value: object, owner: str, constraint: str, ok: bool) -> None:
    """Raise the one well-formed message for a bad parameter value (scikit-learn style)."""
    if not ok:
        raise ParamError(name, value, owner, constraint)


def unknown_keys(given: Iterable[object], allowed: Iterable[str], where: str, what: str = "key") -> None:
    """Raise one line for keys of ``given`` not in ``allowed``, with a "did you mean" per misspelling.

    ``where`` names the file and place (e.g. ``search space s.yaml, candidates[0]``).
    """
    allowed = list(allowed)
    bad = sorted((str(k) for k in given if k not in allowed), key=str)
    if not bad:
        return
    parts = []
    for k in bad:
        close = difflib.get_close_matches(k, allowed, n=1, cutoff=0.6)
        parts.append(f"{k!r} (did you mean {close[0]!r}?)" if close else repr(k))
    raise UserInputError(f"{where}: unknown {what}{'s' if len(bad) > 1 else ''} {', '.join(parts)}. "
                         f"Allowed: {', '.join(allowed)}.")
