"""The fine-tuning search space, defined once and rendered to any tuner backend.

:class:`TuneSpace` is the validated ``tuning:`` section of a search-space YAML. Its
:meth:`TuneSpace.params` turns it into a list of backend-neutral :class:`ParamSpec` descriptors;
:func:`render_keras_tuner` and :func:`render_optuna` turn those into ``hp.*`` / ``trial.suggest_*``
calls. New hyperparameters (label smoothing, augmentation, ...) are added in ``params`` only.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any, Callable, Literal

import numpy as np

from autotransfer.errors import UserInputError, unknown_keys

ALL = "all"
#: Training-time augmentations, weakest first (implemented in :mod:`autotransfer.train.augment`).
AUGMENTATIONS = ("none", "crop", "flip", "flip+crop", "mixup")
#: ``input_size`` value meaning the candidate's own (probed) input size.
NATIVE = "native"
#: ``input_size`` value resolved from the data before tuning (:func:`auto_input_size`).
AUTO = "auto"
#: ``auto``: fine-tune at most at this many times the data's typical image side, and at least at AUTO_MIN px.
AUTO_UPSAMPLE = 4
AUTO_MIN = 128
ParamKind = Literal["int", "float", "choice"]


@dataclass(frozen=True)
class ParamSpec:
    """One hyperparameter: ``int``/``float`` in ``[low, high]`` (``log`` scale optional) or a ``choice``."""

    name: str
    kind: ParamKind
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if self.kind == "choice":
            if not self.choices:
                raise ValueError(f"ParamSpec {self.name!r}: a choice needs at least one value.")
        elif self.kind in ("int", "float"):
            if self.low is None or self.high is None or self.low > self.high:
                raise ValueError(f"ParamSpec {self.name!r}: needs low <= high. Got [{self.low}, {self.high}].")
            if self.log and self.low <= 0:
                raise ValueError(f"ParamSpec {self.name!r}: log scale needs low > 0. Got {self.low}.")
        else:
            raise ValueError(f"ParamSpec {self.name!r}: unknown kind {self.kind!r}.")

    @property
    def fixed(self) -> bool:
        """True when only one value is possible (rendered as a constant)."""
        return len(self.choices) == 1 if self.kind == "choice" else self.low == self.high


def render_keras_tuner(params: list[ParamSpec], hp: Any) -> dict[str, Any]:
    """Declare/sample ``params`` on a ``keras_tuner.HyperParameters`` and return the values."""
    values: dict[str, Any] = {}
    for p in params:
        if p.fixed:
            values[p.name] = hp.Fixed(p.name, p.choices[0] if p.kind == "choice" else p.low)
        elif p.kind == "choice":
            values[p.name] = hp.Choice(p.name, list(p.choices))
        elif p.kind == "int":
            values[p.name] = hp.Int(p.name, int(p.low), int(p.high), sampling="log" if p.log else "linear")
        else:
            values[p.name] = hp.Float(p.name, float(p.low), float(p.high), sampling="log" if p.log else "linear")
    return values


def render_optuna(params: list[ParamSpec], trial: Any) -> dict[str, Any]:
    """Sample ``params`` with an ``optuna.Trial``'s ``suggest_*`` methods and return the values."""
    values: dict[str, Any] = {}
    for p in params:
        if p.kind == "choice":
            values[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        elif p.kind == "int":
            values[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log)
        else:
            values[p.name] = trial.suggest_float(p.name, float(p.low), float(p.high), log=p.log)
    return values


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def trial_input_size(value: Any, native: int) -> int:
    """A trial's ``input_size`` parameter (``native``, or a cap in pixels, or their string form) in
    pixels: a cap never exceeds the candidate's own size."""
    return int(native) if value in (None, NATIVE, AUTO) else min(int(native), int(value))


def auto_input_size(image_side: float) -> int:
    """The ``auto`` cap for data whose images are ``image_side`` px: upsampling small images to a
    backbone's 224-260 px adds pixels, not information, while a fine-tuning epoch costs about the
    square of the size; ``AUTO_UPSAMPLE`` x the side (at least ``AUTO_MIN``) keeps most of what
    the upsampling gives frozen features at a third of the cost (benchmarks/README.md)."""
    return max(AUTO_MIN, int(AUTO_UPSAMPLE * image_side))


def _as_float(v: Any) -> float | None:
    # PyYAML reads "1e-5" (no dot) as a string, so accept numeric strings.
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            return None
        return f if math.isfinite(f) else None
    return None


class _Invalid(Exception):
    """A ``tuning:`` field's value breaks its constraint (the message: what the value must be)."""


def _pair(v: Any) -> tuple[Any, Any] | None:
    """``(low, high)`` of a two-item list or tuple, else None."""
    return (v[0], v[1]) if isinstance(v, (list, tuple)) and len(v) == 2 else None


def _as_values(v: Any) -> tuple[Any, ...]:
    """One value or a list of them, as a tuple."""
    return tuple(v) if isinstance(v, (list, tuple)) else (v,)


def _unfreeze_range(v: Any) -> tuple[int, int | str]:
    """``unfreeze_blocks``: ``[low, high]``, integers 0 <= low <= high, high may be ``"all"``."""
    constraint = '[low, high] with integers 0 <= low <= high (high may be "all")'
    p = _pair(v)
    if p is None or not _is_int(p[0]) or p[0] < 0:
        raise _Invalid(constraint)
    lo, hi = p
    if hi != ALL and not (_is_int(hi) and hi >= lo):
        raise _Invalid(constraint)
    return lo, hi


def _float_range(v: Any, *, ok: Callable[[float, float], bool], constraint: str) -> tuple[float, ...]:
    """A ``[low, high]`` of numbers (numeric strings too) for which ``ok(low, high)`` holds."""
    p = _pair(v)
    f = tuple(_as_float(x) for x in p) if p else (None, None)
    if None in f or not ok(*f):
        raise _Invalid(constraint)
    return f


def _number_or_range(v: Any, *, ok: Callable[[float], bool], constraint: str) -> tuple[float, ...]:
    """One number (stored as the range of that one value) or a ``[low, high]``, each end ``ok``."""
    p = _pair(v)
    f = tuple(_as_float(x) for x in p) if p else (_as_float(v),) * 2
    if None in f or f[0] > f[1] or not (ok(f[0]) and ok(f[1])):
        raise _Invalid(f"a number or [low, high] with {constraint}")
    return f


def _patience_range(v: Any) -> tuple[int, int]:
    """``patience``: ``[low, high]``, integers 1 <= low <= high."""
    p = _pair(v)
    if p is None or not (_is_int(p[0]) and _is_int(p[1]) and 1 <= p[0] <= p[1]):
        raise _Invalid("[low, high] with integers 1 <= low <= high")
    return p


def _batch_sizes(v: Any) -> tuple[int, ...]:
    """``batch_size``: an integer >= 1 or a list of distinct ones."""
    values = _as_values(v)
    if not values or not all(_is_int(x) and x >= 1 for x in values) or len(set(values)) != len(values):
        raise _Invalid("an integer >= 1 or a list of them")
    return values


def _int_range(v: Any) -> tuple[int, int]:
    """An integer >= 1 (stored as the range of that one value) or ``[low, high]``, 1 <= low <= high."""
    p = _pair(v) or (v, v)
    if not (_is_int(p[0]) and _is_int(p[1]) and 1 <= p[0] <= p[1]):
        raise _Invalid("an integer >= 1 or [low, high] with integers 1 <= low <= high")
    return p


def _even_counts(v: Any) -> tuple[int, ...]:
    """``pairs_per_example``: an even integer >= 2 (one positive and one negative pair per
    iteration) or a list of distinct ones."""
    values = _as_values(v)
    if not values or not all(_is_int(x) and x >= 2 and x % 2 == 0 for x in values) or len(set(values)) != len(values):
        raise _Invalid("an even integer >= 2 or a list of them")
    return values


def _positive_int(v: Any) -> int:
    """An integer >= 1."""
    if not _is_int(v) or v < 1:
        raise _Invalid("an integer >= 1")
    return v


def _one_of(v: Any, *, allowed: tuple[str, ...]) -> str:
    """One of ``allowed``."""
    if v not in allowed:
        raise _Invalid(" or ".join(repr(w) for w in allowed))
    return v


def _choices(v: Any, *, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """One of ``allowed`` or a list of distinct ones."""
    values = _as_values(v)
    if not values or any(x not in allowed for x in values) or len(set(values)) != len(values):
        raise _Invalid(f"one of {', '.join(allowed)} or a list of them")
    return values


def _input_sizes(v: Any) -> tuple[str, ...]:
    """``input_size``: ``native``, ``auto``, an integer >= 8, or a list of distinct ones; stored as
    strings (one type: KerasTuner choices need it)."""
    values = _as_values(v)
    if not values or any(not (x in (NATIVE, AUTO) or (_is_int(x) and x >= 8)) for x in values) \
            or len(set(values)) != len(values):
        raise _Invalid(f"{NATIVE!r}, {AUTO!r}, an integer >= 8, or a list of them")
    return tuple(str(x) for x in values)


@dataclass(frozen=True)
class TuneSpace:
    """Fine-tuning hyperparameter ranges (the ``tuning:`` section of a search space).

    ``unfreeze_blocks`` is an inclusive range of trailing backbone blocks to unfreeze (0 = train
    the head only; ``"all"`` as max = every block of the chosen backbone). ``learning_rate`` is the
    fine-tuning LR range (log scale), typically 10-100x below ``head_learning_rate``, which trains
    the new head on the frozen backbone for ``head_epochs`` first (``head_warmup: adam``, the
    default). ``head_warmup: probe`` starts the head as a logistic regression on the same train
    features, C chosen by cross-validation (LP-FT, Kumar et al., ICLR 2022). ``max_epochs`` caps
    fine-tuning epochs (early stopping with ``patience`` usually ends sooner).
    ``augment`` (choices of :data:`AUGMENTATIONS`) and ``lr_schedule`` (``constant``/``cosine``) are
    one value or a list to choose from; ``layer_decay`` (LR factor per block from the top, 1 = off)
    and ``label_smoothing`` are one number or a ``[low, high]`` range. ``input_size``: the image
    size trials fine-tune at, ``native`` (the candidate's own), a cap in pixels, or ``auto`` (a cap
    from the data's image size, :func:`auto_input_size`, resolved before tuning); one or a list: a
    smaller size makes every epoch cheaper, which pays when the data's own images are small.
    ``head_learning_rate`` and ``min_delta`` (early stopping's least val-accuracy gain) are one
    number or a ``[low, high]`` range; ``batch_size`` (the training batch) one integer or a list to
    choose from. ``trial_type`` (one or a list of :attr:`TRIAL_TYPES`; default ``finetune``) adds
    the SetFit-style contrastive trial: ``contrastive_steps`` (an integer or a range: optimizer steps
    on sentence pairs at ``learning_rate`` with the last ``unfreeze_blocks`` blocks open, ``batch_size``
    pairs each) over ``pairs_per_example`` pairs sampled per training item (an even integer or a
    list: one positive and one negative per iteration). Every field is the same YAML for both tuner
    backends (:meth:`params`).
    """

    unfreeze_blocks: tuple[int, int | str] = (0, 3)
    learning_rate: tuple[float, float] = (1e-5, 1e-3)
    head_learning_rate: tuple[float, float] = (1e-2, 1e-2)
    patience: tuple[int, int] = (2, 4)
    dropout: tuple[float, float] = (0.0, 0.5)
    head_epochs: int = 5
    max_epochs: int = 12
    batch_size: tuple[int, ...] = (16,)
    head_warmup: str = "adam"
    augment: tuple[str, ...] = ("none",)
    lr_schedule: tuple[str, ...] = ("constant",)
    layer_decay: tuple[float, float] = (1.0, 1.0)
    label_smoothing: tuple[float, float] = (0.0, 0.0)
    input_size: tuple[str, ...] = (NATIVE,)
    min_delta: tuple[float, float] = (0.0, 0.0)
    trial_type: tuple[str, ...] = ("finetune",)
    contrastive_steps: tuple[int, int] = (40, 40)
    pairs_per_example: tuple[int, ...] = (4,)

    FIELDS = (
        "unfreeze_blocks", "learning_rate", "head_learning_rate", "patience", "min_delta", "dropout",
        "head_epochs", "max_epochs", "batch_size", "head_warmup", "augment", "lr_schedule", "layer_decay",
        "label_smoothing", "input_size", "trial_type", "contrastive_steps", "pairs_per_example",
    )
    #: ``finetune``: head warm-up, then cross-entropy fine-tuning (:func:`~autotransfer.train.trainer.train_trial`);
    #: ``contrastive``: SetFit-style pair training of the encoder, then a new head (:mod:`autotransfer.train.contrastive`).
    TRIAL_TYPES = ("finetune", "contrastive")
    HEAD_WARMUPS = ("probe", "adam")
    LR_SCHEDULES = ("constant", "cosine")
    #: Float fields given as one number or a [low, high] range: (field, check per value, constraint text).
    _RANGES = (("layer_decay", lambda v: 0 < v <= 1, "0 < low <= high <= 1"),
               ("label_smoothing", lambda v: 0 <= v < 1, "0 <= low <= high < 1"),
               ("head_learning_rate", lambda v: v > 0, "0 < low <= high"),
               ("min_delta", lambda v: 0 <= v < 1, "0 <= low <= high < 1"))

    def __post_init__(self) -> None:
        # One number is a fixed value: stored as the range (or choice) of that one value.
        for name in ("head_learning_rate", "min_delta"):
            v = getattr(self, name)
            if not isinstance(v, (tuple, list)):
                object.__setattr__(self, name, (float(v), float(v)))
        if not isinstance(self.batch_size, (tuple, list)):
            object.__setattr__(self, "batch_size", (int(self.batch_size),))
        for name in ("trial_type", "pairs_per_example"):
            object.__setattr__(self, name, _as_values(getattr(self, name)))
        if not isinstance(self.contrastive_steps, (tuple, list)):
            object.__setattr__(self, "contrastive_steps", (int(self.contrastive_steps),) * 2)

    @classmethod
    def _parsers(cls) -> list[tuple[str, Callable[[Any], Any]]]:
        """``(field, parser)`` in the order :meth:`from_dict` checks them; a parser returns the value
        to store or raises :class:`_Invalid`."""
        return [
            ("unfreeze_blocks", _unfreeze_range),
            ("learning_rate", partial(_float_range, ok=lambda lo, hi: 0 < lo < hi,
                                      constraint="[low, high] with 0 < low < high")),
            ("patience", _patience_range),
            ("dropout", partial(_float_range, ok=lambda lo, hi: 0 <= lo <= hi < 1,
                                constraint="[low, high] with 0 <= low <= high < 1")),
            ("batch_size", _batch_sizes),
            ("head_epochs", _positive_int),
            ("max_epochs", _positive_int),
            ("head_warmup", partial(_one_of, allowed=cls.HEAD_WARMUPS)),
            ("augment", partial(_choices, allowed=AUGMENTATIONS)),
            ("lr_schedule", partial(_choices, allowed=cls.LR_SCHEDULES)),
            ("input_size", _input_sizes),
            ("trial_type", partial(_choices, allowed=cls.TRIAL_TYPES)),
            ("contrastive_steps", _int_range),
            ("pairs_per_example", _even_counts),
            *((field, partial(_number_or_range, ok=ok, constraint=c)) for field, ok, c in cls._RANGES),
        ]

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "TuneSpace":
        """Validate a ``tuning:`` mapping (``None`` = defaults); ``where`` names the search space.

        Raises:
            UserInputError: "search space WHERE: tuning.FIELD must be ... Got ... instead."
        """
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise UserInputError(f"search space {where}: tuning must be a mapping of the fields {', '.join(cls.FIELDS)}. Got {d!r} instead.")
        unknown_keys(d, cls.FIELDS, f"search space {where}", what="tuning field")
        kw: dict[str, Any] = {}
        for field, parse in cls._parsers():
            if field in d:
                try:
                    kw[field] = parse(d[field])
                except _Invalid as e:
                    raise UserInputError(f"search space {where}: tuning.{field} must be {e}. "
                                         f"Got {d[field]!r} instead.") from None
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        """YAML/JSON-able form (inverse of :meth:`from_dict`)."""
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        d["input_size"] = [v if v in (NATIVE, AUTO) else int(v) for v in self.input_size]
        return d

    def max_unfreeze(self, num_blocks: int) -> int:
        """Upper bound of ``unfreeze_blocks`` for a backbone with ``num_blocks`` blocks."""
        hi = self.unfreeze_blocks[1]
        return num_blocks if hi == ALL else min(int(hi), num_blocks)

    def params(self, backbones: list[str], max_blocks: int) -> list[ParamSpec]:
        """The hyperparameters to search, for candidate ``backbones`` (names, best first).

        ``max_blocks`` is the largest block count among the candidates; the trainer clips
        ``unfreeze_blocks`` again to the chosen backbone's own count.
        """
        hi = self.max_unfreeze(max_blocks)
        lo = min(self.unfreeze_blocks[0], hi)
        return [
            ParamSpec("backbone", "choice", choices=tuple(backbones)),
            ParamSpec("unfreeze_blocks", "int", lo, hi),
            ParamSpec("learning_rate", "float", *self.learning_rate, log=True),
            ParamSpec("head_learning_rate", "float", *self.head_learning_rate, log=True),
            ParamSpec("patience", "int", *self.patience),
            ParamSpec("min_delta", "float", *self.min_delta),
            ParamSpec("batch_size", "choice", choices=self.batch_size),
            ParamSpec("dropout", "float", *self.dropout),
            ParamSpec("augment", "choice", choices=self.augment),
            ParamSpec("lr_schedule", "choice", choices=self.lr_schedule),
            ParamSpec("layer_decay", "float", *self.layer_decay),
            ParamSpec("label_smoothing", "float", *self.label_smoothing),
            ParamSpec("input_size", "choice", choices=self.input_size),
            *self._contrastive_params(),
        ]

    @property
    def contrastive(self) -> bool:
        """Whether trials may be contrastive: only then are its fields searched and recorded (a
        fine-tuning-only space renders, samples and records exactly what it did before they existed)."""
        return "contrastive" in self.trial_type

    def _contrastive_params(self) -> list[ParamSpec]:
        """``trial_type`` and the contrastive trial's own fields, for a space that has that trial type."""
        if not self.contrastive:
            return []
        return [ParamSpec("trial_type", "choice", choices=self.trial_type),
                ParamSpec("contrastive_steps", "int", *self.contrastive_steps),
                ParamSpec("pairs_per_example", "choice", choices=self.pairs_per_example)]

    def with_data(self, image_side: float | None) -> "TuneSpace":
        """This space with ``auto`` input sizes resolved for images of ``image_side`` px (None:
        unknown, ``auto`` becomes ``native``)."""
        if AUTO not in self.input_size:
            return self
        auto = NATIVE if image_side is None else str(auto_input_size(image_side))
        resolved = tuple(dict.fromkeys(auto if v == AUTO else v for v in self.input_size))
        return replace(self, input_size=resolved)

    def fixed_defaults(self) -> dict[str, Any]:
        """Values for the optional training parameters a caller may leave out of a trial's params:
        the space's value where it fixes one, else the neutral one (no augmentation, constant LR,
        no layer decay, no label smoothing)."""
        return {
            "augment": self.augment[0] if len(self.augment) == 1 else "none",
            "lr_schedule": self.lr_schedule[0] if len(self.lr_schedule) == 1 else "constant",
            "layer_decay": self.layer_decay[0] if self.layer_decay[0] == self.layer_decay[1] else 1.0,
            "label_smoothing": self.label_smoothing[0] if self.label_smoothing[0] == self.label_smoothing[1] else 0.0,
            "input_size": self.input_size[0] if len(self.input_size) == 1 else NATIVE,
            "batch_size": self.batch_size[0],
            "head_learning_rate": float(np.sqrt(self.head_learning_rate[0] * self.head_learning_rate[1])),
            "min_delta": self.min_delta[0],
            **({"trial_type": self.trial_type[0] if len(self.trial_type) == 1 else "finetune",
                "contrastive_steps": self.contrastive_steps[0],
                "pairs_per_example": self.pairs_per_example[0]} if self.contrastive else {}),
        }
