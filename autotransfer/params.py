"""The run parameters, declared once: name, default, constraint, help and command-line flag.

``autotransfer.run``'s keywords, :class:`~autotransfer.config.RunConfig`'s fields and the
``autotransfer run`` options take their defaults and help from this table, and
:meth:`RunConfig.validate` checks every value against its constraint with one message shape
(scikit-learn's ``_parameter_constraints``). ``tests/test_params.py`` holds the three to it.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable

from autotransfer.defaults import CV_CHOICES, CV_MAX_ITEMS, DEFAULT_SCORER, MAX_PIXELS
from autotransfer.objective import CLASS_WEIGHTS, IMBALANCE_RATIO, METRICS

#: Tuner backends (``--tuner``).
TUNERS = ("keras-tuner", "optuna")
#: Stored frozen-prefix activations (``--prefix-dtype``).
PREFIX_DTYPES = ("float32", "float16")
#: Largest seed: scikit-learn's and NumPy's random_state take [0, 2**32 - 1].
MAX_SEED = 2**32 - 1


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _positive(v: Any) -> bool:
    return _int(v) and v >= 1


def _positive_or_none(v: Any) -> bool:
    return v is None or _positive(v)


def _column(v: Any) -> bool:
    return isinstance(v, str) and v.strip() != ""


@dataclass(frozen=True)
class Param:
    """One run parameter. ``flag``: its option (``--top-k``; ``--refit/--no-refit`` for a switch
    with both forms; None: not on the command line); ``expect``/``check``: its constraint in words
    and as a test (None: checked elsewhere, e.g. a duration parsed first)."""

    name: str
    default: Any
    help: str
    flag: str | None = None
    short: str | None = None
    expect: str = ""
    check: Callable[[Any], bool] | None = None
    panel: str = "Run"


#: A switch's constraint.
_SWITCH = {"expect": "True or False", "check": lambda v: isinstance(v, bool)}
_AUTO = "an integer >= 1, or None for automatic"

PARAMS: tuple[Param, ...] = (
    Param("search_space", None, "YAML file or built-in name (offline, online, text-offline). Default: offline for "
          "images, text-offline for texts.", "--search-space", "-s", panel="Search"),
    Param("out", None, "Run directory (default reports/<name>).", "--out", "-o", panel="Output"),
    Param("name", None, "Run name (default: data name + time).", "--name", panel="Output"),
    Param("tuner", None, "keras-tuner (Hyperband; the default) or optuna (TPE + pruner; the default with --storage).",
          "--tuner", expect=f"one of {', '.join(TUNERS)}", check=lambda v: v is None or v in TUNERS, panel="Search"),
    Param("time_budget", None, "Whole-run budget, e.g. 20m, 1h, 900s.", "--time-budget", panel="Search"),
    Param("max_trials", None, "Most tuning trials (default: until --time-budget is spent; 6 without a budget).",
          "--max-trials", expect=_AUTO, check=_positive_or_none, panel="Search"),
    Param("top_k", 2, "Candidates that go from probing to tuning.", "--top-k", expect="an integer >= 1",
          check=_positive, panel="Search"),
    Param("scorer", DEFAULT_SCORER, "Probe scorer that ranks candidates: combined (mean z-score of logme and nleep "
          "across candidates), linear_ll (linear probe, CV log-likelihood), linear (its CV accuracy), knn, logme, "
          "leep, nleep.", "--scorer", panel="Search"),  # checked against the registered scorers (validate)
    Param("metric", "auto", "What tuning and the ensemble selection maximise: accuracy, macro_f1 or log_loss; auto: "
          f"macro_f1 when the largest class has {IMBALANCE_RATIO:g}x the items of the smallest or more, else accuracy.",
          "--metric", expect=f"one of {', '.join(METRICS)}", check=lambda v: v in METRICS, panel="Search"),
    Param("class_weight", "auto", "Weigh classes equally (balanced: n / (classes x count)) in every head, trial, "
          "temperature and selection, or not (none); auto: balanced exactly when the metric is macro_f1.",
          "--class-weight", expect=f"one of {', '.join(CLASS_WEIGHTS)}", check=lambda v: v in CLASS_WEIGHTS,
          panel="Search"),
    Param("halving", False, "Successive halving on growing subsamples before the full probe.", "--halving",
          **_SWITCH, panel="Search"),
    Param("multi_source", 0, "Also probe the concatenated features of the top N backbones (N >= 2).",
          "--multi-source", expect="0 or an integer >= 2", check=lambda v: _int(v) and (v == 0 or v >= 2),
          panel="Search"),
    Param("seed", 0, "Seed of the splits, the tuner and training.", "--seed", expect=f"an integer in [0, {MAX_SEED}]",
          check=lambda v: _int(v) and 0 <= v <= MAX_SEED),
    Param("batch_size", None, "Training batch size (default: the search space's tuning.batch_size).",
          "--batch-size", expect=_AUTO, check=_positive_or_none, panel="Resources"),
    Param("feature_batch_size", None, "Probe featurization batch size (default: by input size).",
          "--feature-batch-size", expect=_AUTO, check=_positive_or_none, panel="Resources"),
    Param("prefix_cache", True, "Fine-tune trials that train only the last blocks on unaugmented images on "
          "activations cached once at the first trained block (the same model, faster); --no-prefix-cache always "
          "takes the full path.", "--prefix-cache/--no-prefix-cache", **_SWITCH, panel="Resources"),
    Param("prefix_cache_mb", 2048, "Largest frozen-prefix activation entry to compute (MB); a trial whose entry "
          "would be larger takes the full path.", "--prefix-cache-mb", expect="an integer >= 1", check=_positive,
          panel="Resources"),
    Param("prefix_dtype", "float32", "Stored frozen-prefix activations: float32, or float16 (half the bytes; the "
          "trained model drifts from the full path's).", "--prefix-dtype",
          expect=f"one of {', '.join(PREFIX_DTYPES)}", check=lambda v: v in PREFIX_DTYPES, panel="Resources"),
    Param("refit", True, "Retrain the final model on train+val before export (test stays untouched).",
          "--refit/--no-refit", **_SWITCH, panel="Final model"),
    Param("refit_with_test", False, "After the test score is recorded, retrain once more on every labelled item "
          "(the export then has no untouched test score).", "--refit-with-test", **_SWITCH, panel="Final model"),
    Param("keep_tuned", True, "With the refit, serve each fine-tuned member as the mean of its refit and its tuned "
          "(train-only) weights: a two-model ensemble of one recipe; --no-keep-tuned serves the refit alone (one "
          "forward pass a member).", "--keep-tuned/--no-keep-tuned", **_SWITCH, panel="Final model"),
    Param("ensemble", 4, "Most models the export may average (greedy selection on val); 1 = the best trial alone.",
          "--ensemble", expect="an integer >= 1", check=_positive, panel="Final model"),
    Param("tta", True, "Average each model with its left-right flipped input where that helps on val.",
          "--tta/--no-tta", **_SWITCH, panel="Final model"),
    Param("cv", "auto", f"Cross-validation for small data: auto (on up to {CV_MAX_ITEMS:,} labelled items), on, off. "
          "On: no test split is held back unless the data marks one; members are chosen on out-of-fold predictions "
          "over every labelled item, refit on all of them, and the score is the cross-validated estimate with a 95% "
          "interval.", "--cv", expect=f"one of {', '.join(CV_CHOICES)}", check=lambda v: v in CV_CHOICES,
          panel="Final model"),
    Param("resume", False, "Continue the run in --out: finished stages and trials are kept, an interrupted trial "
          "runs again.", "--resume", **_SWITCH, panel="Output"),
    Param("overwrite", False, "Replace the earlier run in --out: its files are removed first (without this or "
          "--resume, an --out holding a run is refused).", "--overwrite", **_SWITCH, panel="Output"),
    Param("storage", None, "SQLAlchemy URL of a shared Optuna study (e.g. postgresql://user:pw@host/db): this run is "
          "the chief; `autotransfer worker` processes join it.", "--storage", panel="Distributed"),
    Param("study", None, "Study name on --storage (default: the run directory's name).", "--study",
          panel="Distributed"),
    Param("strict", False, "Stop with an error on any data item that would be skipped (truncated, unreadable, "
          "duplicate, conflicting labels, split leakage, outside the CSV's folder, link loop, too large).",
          "--strict", **_SWITCH, panel="Data"),
    Param("max_pixels", MAX_PIXELS, "Skip images whose header says more pixels (height x width), never decoded; the "
          "export's serving_bytes refuses them too.", "--max-pixels", expect="a positive integer",
          check=_positive, panel="Data"),
    Param("path_column", "path", "CSV column of the image paths.", "--path-column", expect="a non-empty column name",
          check=_column, panel="Data"),
    Param("label_column", "label", "CSV column of the labels.", "--label-column", expect="a non-empty column name",
          check=_column, panel="Data"),
    Param("split_column", "split", "CSV column of train/val/test (optional: without it the data is split 70/15/15).",
          "--split-column", expect="a non-empty column name", check=_column, panel="Data"),
    Param("text_column", None, "CSV column of texts (detected in a CSV without a path column); text runs default to "
          "--search-space text-offline.", "--text-column", expect="a non-empty column name",
          check=lambda v: v is None or _column(v), panel="Data"),
)

BY_NAME: dict[str, Param] = {p.name: p for p in PARAMS}
#: ``DEFAULTS.top_k`` etc.: the defaults, for signatures.
DEFAULTS = SimpleNamespace(**{p.name: p.default for p in PARAMS})


def markdown() -> str:
    """The command-line options as a Markdown table, grouped by panel (the README's, between its
    ``options`` markers; ``python -m autotransfer.params`` prints it)."""
    rows = ["| option | group | default | what it does |", "|---|---|---|---|"]
    for panel in dict.fromkeys(p.panel for p in PARAMS):
        for p in (p for p in PARAMS if p.panel == panel and p.flag):
            flag = " / ".join(f"`{f}`" for f in p.flag.split("/")) + (f", `{p.short}`" if p.short else "")
            default = "" if p.default is None else f"`{p.default}`"
            rows.append(f"| {flag} | {panel} | {default} | {p.help.replace('|', '/')} |")
    return "\n".join(rows) + "\n"


def params_doc(indent: str = "    ") -> str:
    """The run parameters as a docstring section (``autotransfer.run``'s)."""
    lines = ["", f"{indent}Parameters (defaults in brackets):"]
    for p in PARAMS:
        lines += textwrap.wrap(f"``{p.name}`` [{p.default!r}]: {p.help}", width=96,
                               initial_indent=indent + "    ", subsequent_indent=indent + "        ")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
