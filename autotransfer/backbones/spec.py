"""BackboneSpec: a candidate backbone as data (a handle plus what we must know to feed it)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from autotransfer.errors import UserInputError


@dataclass(frozen=True)
class BackboneSpec:
    """One candidate backbone from a search space.

    ``handle`` is a local TF-Hub-format directory, ``file://...``, ``zoo://NAME/OUTPUT`` (the offline
    zoo) or a tfhub.dev / Kaggle URL. ``classifier_handle`` optionally points at the same network with
    its source-task head, for scorers that use source-label predictions (LEEP).
    """

    name: str
    handle: str
    input_size: int
    classifier_handle: str | None = None
    output_key: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "BackboneSpec":
        """Build from a YAML mapping; ``where`` names the place for error messages."""
        if not isinstance(d, dict):
            raise UserInputError(f"{where}: each candidate must be a mapping with 'name', 'handle' and 'input_size'. Got {d!r}.")
        known = {"name", "handle", "input_size", "classifier_handle", "output_key"}
        missing = [k for k in ("name", "handle", "input_size") if k not in d]
        if missing:
            raise UserInputError(f"{where}: candidate {d.get('name', '?')!r} is missing {', '.join(missing)}. Add it (e.g. 'input_size: 224').")
        size = d["input_size"]
        if not isinstance(size, int) or isinstance(size, bool) or not 8 <= size <= 1024:
            raise UserInputError(f"{where}: 'input_size' of candidate {d['name']!r} must be an integer in [8, 1024]. Got {size!r}.")
        for key in ("name", "handle"):
            if not isinstance(d[key], str) or not d[key].strip():
                raise UserInputError(f"{where}: {key!r} of candidate {d.get('name')!r} must be a non-empty string. Got {d[key]!r}.")
        return cls(
            name=d["name"],
            handle=d["handle"],
            input_size=size,
            classifier_handle=d.get("classifier_handle"),
            output_key=d.get("output_key"),
            extra={k: v for k, v in d.items() if k not in known},
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (inverse of ``from_dict``)."""
        d = asdict(self)
        extra = d.pop("extra")
        d.update(extra)
        return {k: v for k, v in d.items() if v is not None}
