"""Small inline-SVG charts for the report (no plotting dependency, nothing external).

Every function returns ``markupsafe.Markup`` ready to drop into the template. All text that comes
from the run directory (names, class labels) goes through ``escape`` because it bypasses the
template's autoescaping.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from markupsafe import Markup, escape

# Colour-blind-friendly (Okabe-Ito-like) categorical palette for backbones.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
ACCENT = "#0072B2"
MUTED = "#b8c2cc"
FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif"


def _f(x: float) -> str:
    return f"{x:.1f}"


def _text(x: float, y: float, s: Any, *, anchor: str = "start", size: int = 12, fill: str = "#333",
          weight: str = "normal", extra: str = "") -> str:
    return (f'<text x="{_f(x)}" y="{_f(y)}" text-anchor="{anchor}" font-size="{size}" fill="{fill}" '
            f'font-weight="{weight}" {extra}>{escape(str(s))}</text>')


def _svg(width: float, height: float, body: list[str], label: str) -> Markup:
    return Markup(
        f'<svg viewBox="0 0 {_f(width)} {_f(height)}" '
        f'width="100%" style="max-width:{_f(width)}px;{FONT}" role="img" aria-label="{escape(label)}">'
        + "".join(body) + "</svg>"
    )


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering ``[lo, hi]``."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    # Round outward so the last tick is >= hi: bars must never run past the axis.
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(i * step, 10) for i in range(first, last + 1)]


def _fmt_tick(v: float, percent: bool) -> str:
    if percent:
        return f"{v * 100:.0f}%"
    return f"{v:.3g}"


def _truncate(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def score_bars(rows: Sequence[dict[str, Any]], selected: Sequence[str], *, percent: bool = False) -> Markup:
    """Horizontal bars of probe ``score`` with ``std`` error bars; ``selected`` names are highlighted."""
    rows = [r for r in rows if r.get("score") is not None]
    if not rows:
        return Markup("")
    label_w, right, top, bar_h, gap = 170, 70, 26, 20, 8
    width = 760
    plot_w = width - label_w - right
    height = top + len(rows) * (bar_h + gap) + 28
    lows = [r["score"] - (r.get("std") or 0) for r in rows]
    highs = [r["score"] + (r.get("std") or 0) for r in rows]
    lo, hi = min(0.0, min(lows)), max(0.0, max(highs))
    if percent:
        lo, hi = min(lo, 0.0), max(hi, 1.0) if hi > 0.9 else hi
    ticks = _nice_ticks(lo, hi)
    lo, hi = ticks[0], ticks[-1]

    def sx(v: float) -> float:
        return label_w + (v - lo) / (hi - lo) * plot_w

    body: list[str] = []
    for t in ticks:
        x = sx(t)
        body.append(f'<line x1="{_f(x)}" y1="{top - 6}" x2="{_f(x)}" y2="{_f(height - 24)}" stroke="#e5e8eb"/>')
        body.append(_text(x, height - 8, _fmt_tick(t, percent), anchor="middle", size=11, fill="#666"))
    zero = sx(0.0)
    for i, r in enumerate(rows):
        y = top + i * (bar_h + gap)
        s, sd = r["score"], r.get("std") or 0.0
        on = str(r.get("name")) in selected
        colour = ACCENT if on else MUTED
        x0, x1 = sorted((zero, sx(s)))
        title = f"{r.get('name')}: {s:.4g} ± {sd:.2g}"
        body.append(f'<g><title>{escape(title)}</title>'
                    f'<rect x="{_f(x0)}" y="{y}" width="{_f(max(x1 - x0, 1))}" height="{bar_h}" rx="3" '
                    f'fill="{colour}"/></g>')
        if sd:
            ya = y + bar_h / 2
            a, b = sx(s - sd), sx(s + sd)
            body.append(f'<path d="M{_f(a)} {_f(ya)}H{_f(b)}M{_f(a)} {_f(ya - 5)}V{_f(ya + 5)}'
                        f'M{_f(b)} {_f(ya - 5)}V{_f(ya + 5)}" stroke="#333" stroke-width="1.4" fill="none"/>')
        name = _truncate(str(r.get("name")), 24)
        body.append(_text(label_w - 8, y + bar_h / 2 + 4, name, anchor="end", size=12,
                          weight="600" if on else "normal", fill="#222" if on else "#555"))
        body.append(_text(max(sx(s + sd), x1) + 6, y + bar_h / 2 + 4, _fmt_value(s, percent), size=11, fill="#444"))
    body.append(f'<line x1="{_f(zero)}" y1="{top - 6}" x2="{_f(zero)}" y2="{_f(height - 24)}" stroke="#888"/>')
    return _svg(width, height, body, "probe scores per candidate with standard deviation")


def _fmt_value(v: float, percent: bool) -> str:
    return f"{v * 100:.1f}%" if percent else f"{v:.3g}"


def trial_scatter(trials: Sequence[dict[str, Any]], best_trial: Any = None) -> tuple[Markup, list[tuple[str, str]]]:
    """Validation accuracy per trial (x = trial order), coloured by backbone, with the running best.

    Returns the SVG and the legend as ``[(backbone, colour)]`` (rendered as HTML for wrapping).
    """
    pts = [(i, t) for i, t in enumerate(trials) if t.get("val_accuracy") is not None]
    if not pts:
        return Markup(""), []
    backbones: list[str] = []
    for t in trials:
        b = str(t.get("backbone"))
        if b not in backbones:
            backbones.append(b)
    colours = {b: PALETTE[i % len(PALETTE)] for i, b in enumerate(backbones)}
    width, height, left, right, top, bottom = 760, 300, 56, 20, 16, 40
    pw, ph = width - left - right, height - top - bottom
    accs = [t["val_accuracy"] for _, t in pts]
    ticks = _nice_ticks(max(0.0, min(accs) - 0.05), min(1.0, max(accs) + 0.02) if max(accs) < 1 else 1.0, 5)
    lo, hi = ticks[0], ticks[-1]
    n = max(len(trials) - 1, 1)

    def sx(i: float) -> float:
        return left + (i / n if len(trials) > 1 else 0.5) * pw

    def sy(v: float) -> float:
        return top + (1 - (v - lo) / (hi - lo)) * ph

    body: list[str] = []
    for t in ticks:
        y = sy(t)
        body.append(f'<line x1="{left}" y1="{_f(y)}" x2="{width - right}" y2="{_f(y)}" stroke="#e5e8eb"/>')
        body.append(_text(left - 8, y + 4, _fmt_tick(t, True), anchor="end", size=11, fill="#666"))
    step = max(1, math.ceil(len(trials) / 12))
    for i in range(0, len(trials), step):
        body.append(_text(sx(i), height - bottom + 18, str(trials[i].get("trial_id", i)), anchor="middle",
                          size=11, fill="#666"))
    body.append(_text(left + pw / 2, height - 4, "trial", anchor="middle", size=11, fill="#666"))
    # Running best shows whether the search was still improving when the budget ran out.
    best_so_far, path = -1.0, []
    for i, t in pts:
        best_so_far = max(best_so_far, t["val_accuracy"])
        path.append(f"{'M' if not path else 'L'}{_f(sx(i))} {_f(sy(best_so_far))}")
    body.append(f'<path d="{" ".join(path)}" stroke="#999" stroke-dasharray="4 3" fill="none"/>')
    for i, t in pts:
        x, y = sx(i), sy(t["val_accuracy"])
        is_best = best_trial is not None and str(t.get("trial_id")) == str(best_trial)
        ok = (t.get("status") or "ok") not in ("failed", "FAILED", "pruned", "PRUNED")
        tip = (f"trial {t.get('trial_id')} · {t.get('backbone')} · val {t['val_accuracy'] * 100:.1f}%"
               f" · unfreeze {t.get('unfreeze_blocks')} · lr {t.get('learning_rate')}")
        fill = colours[str(t.get("backbone"))] if ok else "#fff"
        body.append(f'<g><title>{escape(tip)}</title><circle cx="{_f(x)}" cy="{_f(y)}" r="6" fill="{fill}" '
                    f'stroke="{colours[str(t.get("backbone"))]}" stroke-width="1.5" fill-opacity="0.85"/></g>')
        if is_best:
            body.append(f'<circle cx="{_f(x)}" cy="{_f(y)}" r="10.5" fill="none" stroke="#222" stroke-width="1.5"/>')
    return _svg(width, height, body, "validation accuracy per tuning trial"), list(colours.items())


def confusion_heatmap(matrix: Sequence[Sequence[float]], class_names: Sequence[str]) -> Markup:
    """Confusion matrix (rows = true, columns = predicted), shaded by row-normalised rate, with counts."""
    k = len(matrix)
    if not k:
        return Markup("")
    names = [str(c) for c in class_names] + [str(i) for i in range(len(class_names), k)]
    cell = max(22, min(56, 520 // k))
    label_w = min(160, 12 + 7 * max(len(_truncate(n, 20)) for n in names))
    top = label_w  # rotated column labels need the same room
    width = label_w + k * cell + 20 + 30
    height = top + k * cell + 30
    body: list[str] = []
    show_counts = cell >= 28
    for i, row in enumerate(matrix):
        total = sum(row) or 1
        for j, v in enumerate(row):
            rate = v / total
            x, y = label_w + j * cell, top + i * cell
            if i == j:
                rgb = (int(255 - rate * (255 - 0)), int(255 - rate * (255 - 114)), int(255 - rate * (255 - 178)))
            else:
                rgb = (int(255 - rate * (255 - 213)), int(255 - rate * (255 - 94)), int(255 - rate * 255))
            fill = f"rgb({rgb[0]},{rgb[1]},{rgb[2]})"
            tip = f"true {names[i]} → predicted {names[j]}: {v:g} ({rate:.0%} of row)"
            body.append(f'<g><title>{escape(tip)}</title><rect x="{x}" y="{y}" width="{cell}" height="{cell}" '
                        f'fill="{fill}" stroke="#fff"/></g>')
            if show_counts and v:
                body.append(_text(x + cell / 2, y + cell / 2 + 4, f"{v:g}", anchor="middle", size=11,
                                  fill="#fff" if rate > 0.55 else "#222"))
    for i, n in enumerate(names[:k]):
        short = _truncate(n, 20)
        body.append(_text(label_w - 6, top + i * cell + cell / 2 + 4, short, anchor="end", size=11))
        cx, cy = label_w + i * cell + cell / 2 + 4, top - 6
        body.append(_text(cx, cy, short, anchor="start", size=11, extra=f'transform="rotate(-60 {_f(cx)} {_f(cy)})"'))
    body.append(_text(label_w + k * cell / 2, height - 8, "predicted", anchor="middle", size=11, fill="#666"))
    ty = top + k * cell / 2
    body.append(_text(12, ty, "true", anchor="middle", size=11, fill="#666",
                      extra=f'transform="rotate(-90 12 {_f(ty)})"'))
    return _svg(width, height, body, "confusion matrix")


def stage_bars(timings: dict[str, Any]) -> Markup:
    """Horizontal bars of seconds per stage (``total`` excluded: it is the sum)."""
    items = [(k, float(v)) for k, v in timings.items()
             if k != "total" and isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not items:
        return Markup("")
    label_w, right, top, bar_h, gap, width = 110, 90, 8, 18, 8, 760
    plot_w = width - label_w - right
    height = top + len(items) * (bar_h + gap)
    vmax = max(v for _, v in items) or 1.0
    total = sum(v for _, v in items) or 1.0
    body: list[str] = []
    for i, (k, v) in enumerate(items):
        y = top + i * (bar_h + gap)
        w = max(v / vmax * plot_w, 1)
        body.append(_text(label_w - 8, y + bar_h / 2 + 4, k, anchor="end", size=12))
        body.append(f'<rect x="{label_w}" y="{y}" width="{_f(w)}" height="{bar_h}" rx="3" fill="{ACCENT}" '
                    f'fill-opacity="0.8"/>')
        body.append(_text(label_w + w + 6, y + bar_h / 2 + 4, f"{v:.1f} s ({v / total:.0%})", size=11, fill="#444"))
    return _svg(width, height, body, "seconds per stage")
