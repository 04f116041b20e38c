"""Cross-candidate score combination: one ranking from several scorers on different scales.

Scorers disagree in scale (accuracies in [0, 1], LogME/LEEP log-likelihoods, ...), so they are
normalised ACROSS the candidates of one leaderboard (z-scores or ranks per scorer) and averaged.
That needs every candidate's scores first: the probe applies :class:`CombinedScore` to the
leaderboard after scoring, never per candidate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: What ``combined`` (the default scorer, :data:`autotransfer.defaults.DEFAULT_SCORER`) averages:
#: two scorers that fail on different datasets and held together on all three selection runs.
DEFAULT_COMPONENTS = ("logme", "nleep")


@dataclass
class CombinedScore:
    """Mean of per-scorer z-scores (``method="zscore"``) or normalised ranks (``"rank"``).

    ``components`` are scorer names whose ``score_<name>`` columns are combined. A component is
    used only when every candidate being combined has a finite value for it and the values are not
    all equal (e.g. LEEP is dropped when one candidate has no ``classifier_handle``); with no usable
    component the combined score is 0 for everyone. ``std`` of a row is the spread of its
    per-component normalised scores (how much the scorers disagree about it).
    """

    components: tuple[str, ...] = DEFAULT_COMPONENTS
    method: str = "zscore"
    name: str = "combined"

    def __post_init__(self) -> None:
        if self.method not in ("zscore", "rank"):
            raise ValueError(f"CombinedScore.method must be 'zscore' or 'rank'. Got {self.method!r}.")
        self.components = tuple(self.components)

    def used(self, board: pd.DataFrame) -> list[str]:
        """The ``score_<name>`` columns that take part for these rows."""
        cols = []
        for c in self.components:
            col = f"score_{c}"
            if col in board.columns:
                v = pd.to_numeric(board[col], errors="coerce").to_numpy(dtype=float)
                if len(v) and np.all(np.isfinite(v)) and np.ptp(v) > 0:
                    cols.append(col)
        return cols

    def normalised(self, board: pd.DataFrame) -> pd.DataFrame:
        """One column per used component: z-score (or rank scaled to [0, 1], best = 1) per row."""
        out = {}
        for col in self.used(board):
            v = board[col].to_numpy(dtype=float)
            if self.method == "zscore":
                out[col] = (v - v.mean()) / v.std()
            else:
                out[col] = (pd.Series(v).rank(method="average").to_numpy() - 1) / max(1, len(v) - 1)
        return pd.DataFrame(out, index=board.index)

    def __call__(self, board: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
        """``(score, std)`` per row of ``board`` (rows to combine, e.g. the ok candidates)."""
        norm = self.normalised(board)
        if norm.shape[1] == 0:
            zeros = pd.Series(0.0, index=board.index)
            return zeros, zeros.copy()
        return norm.mean(axis=1), norm.std(axis=1, ddof=0)


def apply_combined(board: pd.DataFrame, combined: CombinedScore, mask: pd.Series | None = None) -> pd.Series:
    """``score_<combined.name>`` for the rows in ``mask`` (default: all), NaN elsewhere."""
    mask = pd.Series(True, index=board.index) if mask is None else mask
    out = pd.Series(math.nan, index=board.index, dtype=float)
    if mask.any():
        score, _ = combined(board[mask])
        out[mask] = score
    return out
