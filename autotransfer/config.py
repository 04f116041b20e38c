"""Run configuration and search-space YAML, validated in one place."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from autotransfer.backbones.spec import BackboneSpec
from autotransfer.errors import UserInputError, check_param, unknown_keys
from autotransfer.params import DEFAULTS as D
from autotransfer.params import PARAMS

BUILTIN_SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"
#: Search-space modalities (``modality:`` at the top of the YAML; image when absent).
MODALITIES = ("image", "text")
#: Tuning trials when neither max_trials nor a time budget is given.
DEFAULT_MAX_TRIALS = 6


@dataclass
class SearchSpace:
    """Candidate backbones plus the tuning space (a ``tune.TuneSpace``)."""

    name: str
    candidates: list[BackboneSpec]
    tuning: Any
    description: str = ""
    path: str = ""
    #: What every candidate takes (:mod:`autotransfer.modalities`); the data must hold the same.
    modality: str = "image"

    def expanded(self) -> list[BackboneSpec]:
        """Every probe candidate: each entry times its ``layers`` and ``input_sizes``."""
        return [c for entry in self.candidates for c in entry.expand()]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "path": self.path,
            "modality": self.modality,
            "candidates": [c.to_dict() for c in self.candidates],
            "tuning": self.tuning.to_dict() if hasattr(self.tuning, "to_dict") else asdict(self.tuning),
        }


def _find_space(ref: str | Path) -> Path:
    path = Path(ref)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise UserInputError(f"Search space {str(ref)!r} does not exist. Pass a YAML file or one of: {', '.join(builtin_spaces())}.")
        return path
    builtin = BUILTIN_SPACES_DIR / f"{ref}.yaml"
    if builtin.is_file():
        return builtin
    raise UserInputError(f"Search space {str(ref)!r} is neither a YAML file nor a built-in name ({', '.join(builtin_spaces())}).")


def builtin_spaces() -> list[str]:
    """Names of the search spaces shipped in ``search_spaces/``."""
    return sorted(p.stem for p in BUILTIN_SPACES_DIR.glob("*.yaml"))


def load_search_space(ref: str | Path = "offline") -> SearchSpace:
    """Load and validate a search space from a YAML path or a built-in name (``offline``, ``online``)."""
    from autotransfer.space import TuneSpace  # lazy: keeps `autotransfer --help` light

    path = _find_space(ref)
    where = f"search space {path}"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UserInputError(f"{where}: not UTF-8 text (byte {exc.start}). Save the file as UTF-8.") from None
    except yaml.YAMLError as exc:
        raise UserInputError(f"{where}: {_yaml_problem(exc)}. Fix the syntax.") from None
    if not isinstance(raw, dict):
        raise UserInputError(f"{where}: must be a mapping with 'candidates' (and optional 'tuning').")
    unknown_keys(raw, ("name", "description", "modality", "candidates", "tuning"), where)
    modality = raw.get("modality", "image")
    if modality not in MODALITIES:
        raise UserInputError(f"{where}: 'modality' must be one of {', '.join(MODALITIES)}. Got {modality!r}.")
    cands = raw.get("candidates")
    if not isinstance(cands, list) or not cands:
        raise UserInputError(f"{where}: 'candidates' must be a non-empty list of backbones.")
    specs = [BackboneSpec.from_dict(c, f"{where}, candidates[{i}]", strict=True, sized=modality == "image")
             for i, c in enumerate(cands)]
    names = [c.name for s in specs for c in s.expand()]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UserInputError(f"{where}: candidate names must be unique; repeated: {', '.join(dupes)}.")
    tuning = TuneSpace.from_dict(raw.get("tuning") or {}, str(path))
    return SearchSpace(raw.get("name", path.stem), specs, tuning, raw.get("description", ""), str(path), modality)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """"line L, column C: not valid YAML (problem)" from a YAML parser error (its first line otherwise)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["parse error"])[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}not valid YAML ({problem})"


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(value: str | float | int | None) -> float | None:
    """'20m' / '1.5h' / '90s' / 90 -> seconds; None stays None.

    Raises:
        ParamError: not a positive duration (named ``time_budget``; the CLI says ``--time-budget``).
    """
    if value is None:
        return None
    m = None if isinstance(value, bool) else _DURATION.match(str(value))
    seconds = 0.0 if m is None else float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    check_param("time_budget", value, "autotransfer.run", "a positive duration such as '90s', '20m' or '1.5h' "
                "(seconds when no unit)", seconds > 0)
    return seconds


@dataclass
class RunConfig:
    """Everything a run needs besides the data; checked by :meth:`validate`. Defaults and
    constraints come from :data:`autotransfer.params.PARAMS`; ``search_space``, ``tuner`` and
    ``time_budget_s`` hold what ``autotransfer.run`` resolved (a modality's space, the tuner a
    storage implies, a duration in seconds)."""

    search_space: str = "offline"
    out: str | None = D.out
    name: str | None = D.name
    tuner: str = "keras-tuner"
    time_budget_s: float | None = None
    max_trials: int | None = D.max_trials  # None: as many as the time budget allows (DEFAULT_MAX_TRIALS without one)
    top_k: int = D.top_k
    scorer: str = D.scorer
    metric: str = D.metric
    class_weight: str = D.class_weight
    halving: bool = D.halving
    multi_source: int = D.multi_source
    seed: int = D.seed
    batch_size: int | None = D.batch_size
    feature_batch_size: int | None = D.feature_batch_size
    prefix_cache: bool = D.prefix_cache
    prefix_cache_mb: int = D.prefix_cache_mb
    prefix_dtype: str = D.prefix_dtype
    refit: bool = D.refit
    refit_with_test: bool = D.refit_with_test
    keep_tuned: bool = D.keep_tuned
    ensemble: int = D.ensemble
    tta: bool = D.tta
    cv: str = D.cv
    resume: bool = D.resume
    overwrite: bool = D.overwrite
    storage: str | None = D.storage
    study: str | None = D.study
    strict: bool = D.strict
    max_pixels: int = D.max_pixels
    path_column: str = D.path_column
    label_column: str = D.label_column
    split_column: str = D.split_column
    text_column: str | None = D.text_column
    val_fraction: float = 0.15  # of a split the run makes itself (no split column, cross-validation off)
    test_fraction: float = 0.15
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> "RunConfig":
        """Every parameter against its constraint in the table, then the rules between parameters."""
        owner = "autotransfer.run"
        for p in PARAMS:
            if p.check is not None:
                check_param(p.name, getattr(self, p.name), owner, p.expect, p.check(getattr(self, p.name)))
        if self.refit_with_test and not self.refit:
            raise UserInputError("refit_with_test (--refit-with-test) needs refit (drop --no-refit): the test data "
                                 "joins the train+val refit.")
        self._validate_state()
        for name in ("val_fraction", "test_fraction"):
            v = getattr(self, name)
            check_param(name, v, owner, "a float in (0, 0.5)", isinstance(v, (int, float)) and 0 < v < 0.5)
        from autotransfer.probe import ranking_scorers

        check_param("scorer", self.scorer, owner, f"one of {', '.join(ranking_scorers())}", self.scorer in ranking_scorers())
        return self

    def _validate_state(self) -> None:
        if self.resume and self.out is None and self.name is None:
            raise UserInputError("--resume needs the run to continue: pass its --out (or --name).")
        if self.resume and self.overwrite:
            raise UserInputError("--resume continues the run in --out and --overwrite replaces it: pass one of them.")
        if self.study is not None and self.storage is None:
            raise UserInputError("--study names a study on a shared storage: add --storage URL (e.g. "
                                 "postgresql://user:password@host/db), or drop --study.")
        if self.storage is not None:
            if self.tuner != "optuna":
                raise UserInputError("--storage: distributed tuning uses optuna. Add --tuner optuna (or drop --storage).")
            if "://" not in self.storage:
                raise UserInputError(f"--storage must be an SQLAlchemy URL such as postgresql://user:password@host/db "
                                     f"or sqlite:///path.db. Got {self.storage!r}.")

    def columns(self) -> dict[str, str]:
        """The table column names, as ``load_data`` keywords."""
        return {"path_column": self.path_column, "label_column": self.label_column, "split_column": self.split_column,
                "text_column": self.text_column}

    def to_dict(self) -> dict[str, Any]:
        """Plain values for config.json (a storage URL's password masked)."""
        d = asdict(self)
        if self.storage:
            d["storage"] = re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", self.storage)
        return d
