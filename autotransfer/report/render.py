"""Render ``report.html`` for a run directory: context (files) -> charts -> jinja2 template."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jinja2

from autotransfer.errors import UserInputError
from autotransfer.report import plots
from autotransfer.report.context import humanize, load_context
from autotransfer.report.savedmodel import format_shape
from autotransfer.rundir import run_files

TEMPLATE = "report.html.j2"
_TEMPLATE_DIR = Path(__file__).with_name("templates")


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def fmt_pct(v: Any, digits: int = 1) -> str:
    """0.9123 -> ``91.2%``; missing -> en dash."""
    return f"{v * 100:.{digits}f}%" if _is_num(v) else "–"


def fmt_secs(v: Any) -> str:
    """Seconds with one decimal; minutes added past 90 s for readability."""
    if not _is_num(v):
        return "–"
    return f"{v:.1f} s" if v < 90 else f"{v:.1f} s ({v / 60:.1f} min)"


def fmt_duration(v: Any) -> str:
    """Short duration for headline cards: ``42.0 s``, ``9.7 min``, ``2.1 h``."""
    if not _is_num(v):
        return "–"
    return f"{v:.1f} s" if v < 90 else f"{v / 60:.1f} min" if v < 5400 else f"{v / 3600:.1f} h"


def fmt_params(v: Any) -> str:
    """4_652_008 -> ``4.65 M``."""
    if not _is_num(v):
        return "–"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.2f} {unit}"
    return f"{v:g}"


def fmt_num(v: Any, digits: int = 4) -> str:
    """Generic number: ints as is (thousands separated), floats to ``digits`` significant digits."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if _is_num(v):
        return f"{v:.{digits}g}"
    return "–" if v is None else str(v)


def fmt_json(v: Any) -> str:
    """Compact JSON for config values (lists, dicts); plain strings stay unquoted."""
    if isinstance(v, str):
        return v
    if isinstance(v, float):
        return fmt_num(v)
    return json.dumps(v, default=str)


def fmt_cell(v: Any, column: str) -> str:
    """Format a table cell by its column name."""
    if v is None:
        return "–"
    if column.endswith(("accuracy", "macro_f1")) or column == "dropout_rate":
        return fmt_pct(v)
    if column.endswith("seconds") or column == "seconds":
        return fmt_secs(v).split(" (")[0]
    if column == "params":
        return fmt_params(v)
    if column == "learning_rate":
        return f"{v:.2e}" if _is_num(v) else str(v)
    if column in ("cached",):
        return "yes" if v in (True, "True", "true", 1) else "no"
    if isinstance(v, float) and v.is_integer() and column in ("rank", "input_size", "feature_dim", "epochs",
                                                                "unfreeze_blocks", "patience", "trial_id"):
        return str(int(v))
    if column in ("rank", "trial_id") and isinstance(v, int):
        return str(v)  # ids read better without a thousands separator
    return fmt_num(v)


def is_numeric_column(rows: list[dict[str, Any]], column: str) -> bool:
    """Right-align a column when all its present values are numbers."""
    vals = [r.get(column) for r in rows if r.get(column) is not None]
    return bool(vals) and all(_is_num(v) for v in vals) and column != "cached"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_TEMPLATE_DIR)),
        autoescape=jinja2.select_autoescape(["html", "j2", "html.j2"], default=True),
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(pct=fmt_pct, secs=fmt_secs, dur=fmt_duration, params=fmt_params, num=fmt_num, js=fmt_json,
                       cell=fmt_cell, human=humanize, shape=format_shape)
    env.globals.update(is_numeric_column=is_numeric_column)
    return env


def _charts(ctx: dict[str, Any]) -> dict[str, Any]:
    charts: dict[str, Any] = {}
    lb = ctx.get("leaderboard")
    if lb:
        scorer = str(next((r.get("scorer") for r in lb if r.get("scorer")), ""))
        scores = [r["score"] for r in lb if _is_num(r.get("score"))]
        # Probe scores are accuracies for the default scorer; transferability scores (LogME...) are not.
        percent = any(w in scorer.lower() for w in ("acc", "linear", "probe")) and all(0 <= s <= 1 for s in scores)
        charts["scores"] = plots.score_bars(lb, ctx.get("selected") or [], percent=percent)
        charts["scores_percent"] = percent
    if ctx.get("trials"):
        charts["trials"], charts["trials_legend"] = plots.trial_scatter(
            ctx["trials"], (ctx.get("best") or {}).get("trial_id"))
    tm = ctx.get("test_metrics") or {}
    if tm.get("confusion_matrix"):
        charts["confusion"] = plots.confusion_heatmap(tm["confusion_matrix"], tm.get("class_names") or [])
    if isinstance(ctx.get("timings"), dict):
        charts["timings"] = plots.stage_bars(ctx["timings"])
    return charts


def render_html(ctx: dict[str, Any]) -> str:
    """Render a context from :func:`autotransfer.report.context.load_context` to an HTML string."""
    return _environment().get_template(TEMPLATE).render(**ctx, charts=_charts(ctx))


def render_report(run_dir: str | Path, *, out: str | Path | None = None) -> Path:
    """Write a self-contained ``report.html`` for ``run_dir`` (default ``<run_dir>/report.html``).

    Reads only the plain run-directory files; stages whose files are missing are listed as not run.

    Raises:
        UserInputError: ``run_dir`` does not exist or holds none of a run's files (nothing is written).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserInputError(f"Run directory {str(run_dir)!r} does not exist. Pass the folder a run wrote "
                             "(it holds leaderboard.csv, data.json, ...).")
    # e.g. the data folder (report.html alone proves nothing: older versions wrote it anywhere)
    if not set(run_files(run_dir)) - {"report.html"}:
        raise UserInputError(f"{str(run_dir)!r} is not a run directory: it holds none of the files a run writes "
                             "(config.json, data.json, leaderboard.csv, ...), and nothing was written there. Pass the "
                             "--out of an `autotransfer run`.")
    ctx = load_context(run_dir)
    out_path = Path(out) if out is not None else run_dir / "report.html"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text(render_html(ctx), encoding="utf-8")
    tmp.replace(out_path)  # a reader never sees a half-written report
    return out_path
