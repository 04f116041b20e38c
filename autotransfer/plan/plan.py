"""Sizing: what the whole run will cost and what fits the time budget (:class:`Plan`, ``plan.json``)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple, Sequence

import numpy as np

from autotransfer.budget import EXPORT_RESERVE_S
from autotransfer.plan.costs import CandidateCost
from autotransfer.plan.estimate import SCORE_S_PER_CANDIDATE, probe_seconds, trial_seconds

#: Factor on the plan's estimates: they come from a few first batches, which run low against whole
#: runs; benchmarks/selection.py --plan compares the two.
ESTIMATE_MARGIN = 1.25


@dataclass
class Plan:
    """What the run will cost and what fits ``budget_s``; every estimate comes with its inputs."""

    budget_s: float | None
    n_candidates: int
    n_items: int
    n_train: int
    n_val: int
    n_test: int
    probe_s: float
    trial_s_mean: float
    trial_s_max: float
    tune_s: float                  # max_trials x trial_s_max (conservative)
    finish_s: float                # evaluate + export + report reserve
    total_s: float
    max_trials: int
    top_k: int
    max_epochs: int
    trials_fit: int | None         # conservative: trials of the slowest candidate after probe + finish
    fits: bool
    recommended_max_trials: int
    recommended_top_k: int
    recommended_candidates: list[str] | None
    min_budget_s: float = 0.0      # the cheapest candidate's probe + one trial + finishing
    lines: list[str] = field(default_factory=list)
    costs: dict[str, dict[str, Any]] = field(default_factory=dict)
    assumptions: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The plan as plain JSON types: ``plan.json``."""
        return asdict(self)

    def __str__(self) -> str:
        """The human-readable lines, one a line."""
        return "\n".join(self.lines)


def make_plan(
    costs: dict[str, CandidateCost],
    *,
    n_items: int,
    n_train: int,
    n_val: int,
    n_test: int = 0,
    budget_s: float | None,
    top_k: int,
    max_trials: int | None,
    max_epochs: int,
    features_cached: bool = True,
    spent_s: float = 0.0,
    reserve_s: float = EXPORT_RESERVE_S,
    min_reserve_s: float | None = None,
    score_s: float = SCORE_S_PER_CANDIDATE,
    margin: float = 1.0,
    trial_sizes: dict[str, Sequence[int]] | None = None,
) -> Plan:
    """Estimate the run from ``costs`` and say what fits ``budget_s`` (None = no budget).

    ``spent_s`` is time already used (e.g. measuring) and counts against the budget. Trials are
    costed at ``max_epochs`` (early stopping only makes them shorter) and, because the probe has not
    yet picked the top-k, at the slowest candidate for the conservative count (the mean is printed
    as the typical trial). Recommendations when it does not fit: fewer trials first; if not even one
    trial fits after the probe, the cheapest candidates whose probe leaves room for one trial.
    ``max_trials=None`` (a budget is then required): tuning runs until the deadline; the plan says
    how many trials it expects at the typical trial's cost (``trials_fit``). ``trial_sizes``:
    ``{candidate: the input sizes its trials may use}`` when tuning resizes (``tuning.input_size``);
    a trial is costed at the mean of their pixel counts (:func:`trial_seconds`' ``pixel_scale``).
    ``reserve_s``: seconds kept for the stages after tuning; ``min_reserve_s`` (default the same):
    what they need at the least (one model instead of an ensemble), for ``min_budget_s``.
    """
    _check_plan_args(costs, budget_s=budget_s, max_trials=max_trials, margin=margin)
    cs = list(costs.values())
    e = _estimate(cs, n_items=n_items, n_train=n_train, n_val=n_val, n_test=n_test, budget_s=budget_s,
                  max_trials=max_trials, max_epochs=max_epochs, features_cached=features_cached, spent_s=spent_s,
                  reserve_s=reserve_s, min_reserve_s=min_reserve_s, score_s=score_s, margin=margin,
                  trial_sizes=trial_sizes)
    lines = _estimate_lines(costs, e, n_items=n_items, n_train=n_train, n_val=n_val, max_epochs=max_epochs,
                            budget_s=budget_s, spent_s=spent_s, score_s=score_s, margin=margin, trial_sizes=trial_sizes)
    verdict = _budget_verdict(cs, e, budget_s=budget_s, spent_s=spent_s, top_k=top_k, lines=lines)
    return Plan(
        budget_s=budget_s, n_candidates=len(cs), n_items=n_items, n_train=n_train, n_val=n_val, n_test=n_test,
        probe_s=e.probe_s, trial_s_mean=e.t_mean, trial_s_max=e.t_max, tune_s=e.tune_s, finish_s=e.finish,
        total_s=e.total, max_trials=e.max_trials, top_k=top_k, max_epochs=max_epochs, trials_fit=verdict.trials_fit,
        fits=verdict.fits, recommended_max_trials=verdict.max_trials, recommended_top_k=verdict.top_k,
        recommended_candidates=verdict.candidates, min_budget_s=e.min_budget, lines=lines,
        costs={k: v.to_dict() for k, v in costs.items()},
        assumptions={"trial_epochs": "max_epochs (no early stop)", "trial_cost": "slowest candidate (top-k unknown before the probe)",
                     "features_cached": features_cached, "score_s_per_candidate": score_s, "margin": margin, "reserve_s": reserve_s,
                     "spent_s": spent_s, "probe_s_per_candidate": e.probe_each, "trial_s_per_candidate": e.trial_each,
                     "trial_pixel_scale": e.scale},
    )


class _Estimate(NamedTuple):
    """The run's estimated seconds before the budget is consulted (:func:`_estimate`); the per-candidate
    probe and trial seconds carry the margin."""

    probe_each: dict[str, float]  # one candidate's probe
    trial_each: dict[str, float]  # one trial of the candidate, at ``max_epochs``
    scale: dict[str, float]       # a candidate's trial pixels over its measured pixels
    probe_s: float
    t_mean: float
    t_max: float
    slowest: str                  # the candidate of ``t_max``
    finish: float                 # evaluate + export + report reserve, test split scoring included
    min_budget: float             # the cheapest candidate's probe + one trial + finishing one model
    until_deadline: bool          # max_trials=None: tune until the deadline
    max_trials: int               # as given, or the trials expected until the deadline
    tune_s: float
    total: float


class _Verdict(NamedTuple):
    """Whether the run fits the budget and what :func:`make_plan` recommends (:func:`_budget_verdict`)."""

    max_trials: int
    top_k: int
    candidates: list[str] | None  # the candidates to probe, when not even one trial fits after the full probe
    trials_fit: int | None
    fits: bool


def _check_plan_args(costs: dict[str, CandidateCost], *, budget_s: float | None, max_trials: int | None,
                     margin: float) -> None:
    """Raise ValueError for arguments :func:`make_plan` cannot plan with."""
    if not costs:
        raise ValueError("make_plan: no candidate costs (every candidate failed to load?).")
    if max_trials is None and budget_s is None:
        raise ValueError("make_plan: max_trials=None (until the deadline) needs a budget.")
    if not margin > 0:
        raise ValueError(f"make_plan: margin must be > 0. Got {margin!r}.")


def _pixel_scales(cs: list[CandidateCost], trial_sizes: dict[str, Sequence[int]] | None) -> dict[str, float]:
    """Each candidate's mean trial pixel count over its measured one (1 without ``trial_sizes``)."""
    # Per-item cost ~ pixels: trials at another input size scale by (size / measured size)^2 (1 for text).
    return {c.name: float(np.mean([(px / c.input_size) ** 2 if c.input_size else 1.0
                                   for px in (trial_sizes or {}).get(c.name, [c.input_size])])) for c in cs}


def _estimate(cs: list[CandidateCost], *, n_items: int, n_train: int, n_val: int, n_test: int,
              budget_s: float | None, max_trials: int | None, max_epochs: int, features_cached: bool,
              spent_s: float, reserve_s: float, min_reserve_s: float | None, score_s: float, margin: float,
              trial_sizes: dict[str, Sequence[int]] | None) -> _Estimate:
    """The probe, trial, tuning and finishing seconds of the run (see :func:`make_plan`'s arguments)."""
    probe_each = {c.name: margin * probe_seconds(c, n_items, score_s=score_s) for c in cs}
    scale = _pixel_scales(cs, trial_sizes)
    trial_each = {c.name: margin * trial_seconds(c, n_train=n_train, n_val=n_val, epochs=max_epochs,
                                                 features_cached=features_cached, pixel_scale=scale[c.name]) for c in cs}
    probe_s = sum(probe_each.values())
    t_mean = float(np.mean(list(trial_each.values())))
    t_max = max(trial_each.values())
    slowest = max(trial_each, key=trial_each.get)
    test_s = n_test * max(c.featurize_s_per_item for c in cs)
    finish = reserve_s + test_s
    # The least a run can do: the cheapest candidate's probe and one trial, then one model finished.
    min_finish = (reserve_s if min_reserve_s is None else min_reserve_s) + test_s
    min_budget = spent_s + min_finish + min(probe_each[c.name] + trial_each[c.name] for c in cs)
    until_deadline = max_trials is None
    if until_deadline:
        tune_s = max(0.0, budget_s - spent_s - probe_s - finish)
        max_trials = max(1, int(tune_s // t_mean)) if tune_s > 0 else 1
    else:
        tune_s = max_trials * t_max
    total = spent_s + probe_s + tune_s + finish
    return _Estimate(probe_each=probe_each, trial_each=trial_each, scale=scale, probe_s=probe_s, t_mean=t_mean,
                     t_max=t_max, slowest=slowest, finish=finish, min_budget=min_budget,
                     until_deadline=until_deadline, max_trials=max_trials, tune_s=tune_s, total=total)


def _estimate_lines(costs: dict[str, CandidateCost], e: _Estimate, *, n_items: int, n_train: int, n_val: int,
                    max_epochs: int, budget_s: float | None, spent_s: float, score_s: float, margin: float,
                    trial_sizes: dict[str, Sequence[int]] | None) -> list[str]:
    """The plan's first lines: the estimate with the numbers it came from, up to the total."""
    cs = list(costs.values())
    slowest, scale = e.slowest, e.scale
    return [
        f"estimate from the first batches ({cs[0].batches_timed} timed batches of {cs[0].feature_batch_size} per candidate"
        f"{f', {spent_s:.0f} s spent measuring' if spent_s else ''}"
        f"{f', x{margin:g} safety margin' if margin != 1 else ''}):",
        f"  probe: {len(cs)} candidates x {n_items} items = {e.probe_s:.0f} s "
        f"(forward {min(c.featurize_s_per_item for c in cs) * 1e3:.1f}-{max(c.featurize_s_per_item for c in cs) * 1e3:.1f} ms/item, "
        f"load+warm-up {sum(c.load_s + c.first_batch_s for c in cs):.0f} s in all, scoring ~{score_s:g} s each)",
        f"  one trial (<= {max_epochs} fine-tune epochs over {n_train} train + {n_val} val items): "
        f"~{e.t_mean:.0f} s on average, up to {e.t_max:.0f} s ({slowest}: train step "
        f"{costs[slowest].train_s_per_item * 1e3:.1f} ms/item = {costs[slowest].backward_factor:.1f} x its forward, "
        f"{'measured' if costs[slowest].train_measured else 'from its backbone'}; "
        f"fixed per-trial overhead {costs[slowest].trial_overhead_s:.1f} s"
        f"{f'; x{scale[slowest]:.2f} for trials at {list((trial_sizes or {})[slowest])} px' if scale[slowest] != 1 else ''})",
        (f"  tune: until the deadline, {e.tune_s:.0f} s: about {e.max_trials} trial(s) expected at ~{e.t_mean:.0f} s "
         f"(early stopping makes trials shorter); evaluate+export+report ~{e.finish:.0f} s" if e.until_deadline else
         f"  tune: {e.max_trials} trials x {e.t_max:.0f} s = {e.tune_s:.0f} s; evaluate+export+report ~{e.finish:.0f} s"),
        f"  total ~{e.total:.0f} s" + ("" if budget_s is None else f" of a {budget_s:.0f} s budget"),
    ]


def _budget_verdict(cs: list[CandidateCost], e: _Estimate, *, budget_s: float | None, spent_s: float, top_k: int,
                    lines: list[str]) -> _Verdict:
    """Whether the run fits ``budget_s`` and, when not, fewer trials or (not even one trial fits after
    the probe) fewer candidates; appends the verdict and its numbers to ``lines``."""
    rec_trials, rec_k, rec_cands, trials_fit, fits = e.max_trials, top_k, None, None, True
    if e.until_deadline and e.tune_s >= e.t_mean:
        trials_fit = e.max_trials
        lines.append(f"fits: the probe and about {trials_fit} trial(s) before the deadline.")
    elif budget_s is not None:
        left = budget_s - spent_s - e.probe_s - e.finish
        trials_fit = max(0, int(left // e.t_max)) if left > 0 else 0
        fits = e.total <= budget_s
        if fits:
            lines.append(f"fits: {budget_s - e.total:.0f} s to spare ({trials_fit} trials would fit).")
        elif trials_fit >= 1:
            rec_trials = trials_fit
            lines.append(f"does NOT fit: after the probe ({e.probe_s:.0f} s) and finishing ({e.finish:.0f} s), "
                         f"{left:.0f} s leave room for {trials_fit} of {e.max_trials} trials at {e.t_max:.0f} s; "
                         f"recommend max_trials={trials_fit}.")
        else:
            rec_trials = 1
            rec_cands = _cheapest_probes(cs, e, budget_s=budget_s, spent_s=spent_s, lines=lines)
        rec_k = max(1, min(top_k, rec_trials))
        if rec_k < top_k:
            lines.append(f"recommend top_k={rec_k}: fewer trials than candidates leaves some candidates untried.")
    return _Verdict(max_trials=rec_trials, top_k=rec_k, candidates=rec_cands, trials_fit=trials_fit, fits=fits)


def _cheapest_probes(cs: list[CandidateCost], e: _Estimate, *, budget_s: float, spent_s: float,
                     lines: list[str]) -> list[str]:
    """The candidates to probe when the full probe leaves no room for a trial; appends the advice to ``lines``."""
    probe_each, trial_each, finish = e.probe_each, e.trial_each, e.finish
    # The longest prefix of the cheapest probes that still leaves one trial of its slowest member.
    order = sorted(cs, key=lambda c: probe_each[c.name])
    kept: list[str] = []
    for c in order:
        names = [*kept, c.name]
        if spent_s + finish + sum(probe_each[k] for k in names) + max(trial_each[k] for k in names) > budget_s:
            break
        kept = names
    used_trial = max([trial_each[k] for k in kept], default=0.0)
    if kept:
        lines.append(f"does NOT fit: the probe alone needs {e.probe_s:.0f} s and the budget leaves "
                     f"{max(0.0, budget_s - spent_s - finish):.0f} s after finishing; recommend probing only "
                     f"{len(kept)} candidate(s) ({', '.join(kept)}: {sum(probe_each[k] for k in kept):.0f} s) "
                     f"and max_trials=1 (~{used_trial:.0f} s).")
    else:
        lines.append(f"does NOT fit: even the cheapest candidate's probe plus one trial "
                     f"({probe_each[order[0].name] + trial_each[order[0].name]:.0f} s) exceeds the budget "
                     f"after finishing ({finish:.0f} s); raise the budget or use smaller images/data.")
    return kept
