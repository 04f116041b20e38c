"""Run configuration and search-space YAML, validated in one place."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from autotransfer.backbones.spec import BackboneSpec
from autotransfer.defaults import CV_CHOICES, DEFAULT_SCORER, MAX_PIXELS
from autotransfer.errors import UserInputError, check_param, unknown_keys

BUILTIN_SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"
TUNERS = ("keras-tuner", "optuna")
#: Search-space modalities (``modality:`` at the top of the YAML; image when absent).
MODALITIES = ("image", "text")
#: Largest seed: scikit-learn's and NumPy's random_state take [0, 2**32 - 1].
MAX_SEED = 2**32 - 1
#: Tuning trials when neither max_trials nor a time budget is given.
DEFAULT_MAX_TRIALS = 6


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


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
    from autotransfer.tune.space import TuneSpace  # lazy: keeps `autotransfer --help` light

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
    """Everything a run needs besides the data; checked by :meth:`validate`."""

    search_space: str = "offline"
    out: str | None = None
    name: str | None = None
    tuner: str = "keras-tuner"
    time_budget_s: float | None = None
    max_trials: int | None = None  # None: as many as the time budget allows (DEFAULT_MAX_TRIALS without one)
    top_k: int = 2
    scorer: str = DEFAULT_SCORER
    halving: bool = False
    multi_source: int = 0
    seed: int = 0
    batch_size: int | None = None  # training batch; None = the search space's tuning.batch_size
    feature_batch_size: int | None = None  # probe featurization; None = by input size (auto_batch_size)
    refit: bool = True              # retrain the final model on train+val before export
    refit_with_test: bool = False   # ... and on test too, after the test score is recorded
    keep_tuned: bool = True         # a refit fine-tuned member serves the mean of its refit and tuned weights
    ensemble: int = 4               # most distinct models averaged in the export (1 = single model)
    tta: bool = True                # test-time flip averaging where it lowers the val log-loss
    cv: str = "auto"                # cross-validation (small data): auto (by size), on, off
    resume: bool = False            # continue the run in `out` (finished stages and trials kept)
    overwrite: bool = False         # replace an earlier run in `out` (its files removed first)
    storage: str | None = None      # SQLAlchemy URL of a shared Optuna study (chief and workers)
    study: str | None = None        # its name (default: the run directory's name)
    strict: bool = False            # a data item that would be skipped (truncated, duplicate, ...) is an error
    max_pixels: int = MAX_PIXELS    # images whose header says more pixels (height x width) are skipped
    path_column: str = "path"       # column names of a CSV or DataFrame
    label_column: str = "label"
    split_column: str = "split"
    text_column: str | None = None  # None: detected in a table without a path column
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> "RunConfig":
        owner = "autotransfer.run"
        check_param("tuner", self.tuner, owner, f"one of {', '.join(TUNERS)}", self.tuner in TUNERS)
        check_param("cv", self.cv, owner, f"one of {', '.join(CV_CHOICES)}", self.cv in CV_CHOICES)
        for name in ("top_k", "ensemble"):
            v = getattr(self, name)
            check_param(name, v, owner, "an integer >= 1", _is_int(v) and v >= 1)
        check_param("max_pixels", self.max_pixels, owner, "a positive integer", _is_int(self.max_pixels) and self.max_pixels >= 1)
        for name, v in self.columns().items():
            check_param(name, v, owner, "a non-empty column name", (v is None and name == "text_column")
                        or isinstance(v, str) and v.strip() != "")
        for name in ("max_trials", "batch_size", "feature_batch_size"):
            v = getattr(self, name)
            check_param(name, v, owner, "an integer >= 1, or None for automatic", v is None or (_is_int(v) and v >= 1))
        for name in ("refit", "refit_with_test", "keep_tuned", "tta", "halving", "resume", "overwrite", "strict"):
            check_param(name, getattr(self, name), owner, "True or False", isinstance(getattr(self, name), bool))
        if self.refit_with_test and not self.refit:
            raise UserInputError("refit_with_test (--refit-with-test) needs refit (drop --no-refit): the test data "
                                 "joins the train+val refit.")
        check_param("seed", self.seed, owner, f"an integer in [0, {MAX_SEED}]", _is_int(self.seed) and 0 <= self.seed <= MAX_SEED)
        self._validate_state()
        for name in ("val_fraction", "test_fraction"):
            v = getattr(self, name)
            check_param(name, v, owner, "a float in (0, 0.5)", isinstance(v, (int, float)) and 0 < v < 0.5)
        from autotransfer.probe import ranking_scorers

        check_param("scorer", self.scorer, owner, f"one of {', '.join(ranking_scorers())}", self.scorer in ranking_scorers())
        check_param("multi_source", self.multi_source, owner, "0 or an integer >= 2",
                    isinstance(self.multi_source, int) and not isinstance(self.multi_source, bool) and self.multi_source != 1 and self.multi_source >= 0)
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
