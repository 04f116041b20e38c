"""The run planner: measure what one item costs per candidate, then say up front what fits a budget.

``measure_costs`` times a few batches per candidate before anything else runs:

* ``featurize_s_per_item``: steady-state frozen forward (the probe's traced ``tf.function`` over its
  own input, ``probe.featurize.feature_dataset``, so decoding is included); the first batch is the
  warm-up and is timed separately (``first_batch_s``, tracing) together with the module load (``load_s``).
* ``train_s_per_item``: one fine-tuning step (``train_on_batch`` of the task model with the last
  ``unfreeze`` blocks trainable: forward + backward + Adam update) per item, after a first step that
  traces (``train_setup_s``). Tracing a training step costs seconds, so by default it is measured
  on the first candidate of each backbone (``base``) only; that candidate's
  ``backward_factor = train_s_per_item / featurize_s_per_item`` then scales the forward cost of the
  backbone's other sizes/layers (``train_measured`` says which numbers were measured).

``make_plan`` is pure arithmetic over those costs and the split sizes, modelled on the trainer
(see :func:`trial_seconds`): it returns a :class:`Plan` with the estimated probe and per-trial
seconds, how many trials fit, whether the whole run fits, recommended ``max_trials``/``top_k`` and
human-readable lines that carry the numbers they came from. ``Plan.to_dict()`` is ``plan.json``.
"""
from __future__ import annotations

import gc
import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Sequence

import numpy as np

# What the selector does after tuning (evaluate + export + report) and what ``api.run`` keeps back for it.
EXPORT_RESERVE_S = 30.0
# Scoring one candidate's cached features (linear CV + kNN + LogME on a few hundred items): ~0.1-1 s
# measured on small data; an assumption, not measured per run.
SCORE_S_PER_CANDIDATE = 1.0
#: Factor on the plan's estimates from first batches: they ran 15-20% low against measured runs
#: (benchmarks/selection.py --plan).
ESTIMATE_MARGIN = 1.25


@dataclass
class CandidateCost:
    """Measured (or derived) costs of one candidate, in seconds."""

    name: str
    input_size: int
    load_s: float                  # load the module + build the layer (every trial does it again)
    first_batch_s: float           # first forward batch (trace + warm-up), beyond the steady per-item cost
    featurize_s_per_item: float    # steady frozen forward per item at the probe's batch, decoding included
    train_s_per_item: float        # one fine-tuning step per item (fwd + bwd + update) at ``unfreeze``
    train_setup_s: float           # compile + trace of the first training step
    unfreeze: int                  # blocks trainable while ``train_s_per_item`` was measured
    backward_factor: float         # train_s_per_item (training batch) / featurize_s_per_item (probe batch)
    train_measured: bool           # False: train costs derived from another candidate of the same backbone
    trial_overhead_s: float = 0.0  # per-trial fixed cost: head warm-up fit on features + Keras/tuner bookkeeping
    batch_size: int = 16           # training batch
    batches_timed: int = 0
    feature_batch_size: int = 16   # the probe's featurization batch for this input size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _timed(fn) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def measure_costs(
    candidates: Sequence[Any],
    data: Any,
    splits: Any,
    *,
    batch_size: int = 16,
    feature_batch_size: int | None = None,
    probe_batches: int = 2,
    train_batches: int = 2,
    unfreeze: int = 3,
    measure_train: str = "per_backbone",
    head_epochs: int = 5,
    head_warmup: str = "adam",
) -> dict[str, CandidateCost]:
    """Time the first batches of every candidate; returns ``{name: CandidateCost}``.

    Args:
        candidates: ``BackboneSpec`` list (``space.expanded()``).
        data, splits: the dataset and its splits; the timed items are the first train items.
        batch_size: the trainer's batch size (training costs are per item at this batch size).
        feature_batch_size: the probe's featurization batch (None: by input size, as the probe picks it).
        probe_batches: steady forward batches timed after one warm-up batch.
        train_batches: steady ``train_on_batch`` steps timed after one tracing step.
        unfreeze: trailing blocks trainable while timing training (use the search's upper bound:
            a backward pass through more blocks costs more, so this is the conservative end).
        measure_train: ``"per_backbone"`` (first candidate of each ``base``), ``"first"`` (the first
            candidate only: one training trace, its factor for all), ``"all"`` or ``"none"`` (then ``train_s_per_item`` = forward x 3, the usual backward-costs-2x-forward rule).
        head_epochs, head_warmup: the trainer's head warm-up (``TuneSpace``), timed once on random
            features of the first candidate's size (``trial_overhead_s``, shared by all candidates).

    Candidates that fail to load get no entry (the probe will report them).
    """
    import keras

    from autotransfer import modalities
    from autotransfer.backbones import HubBackbone
    from autotransfer.probe.featurize import feature_batch, feature_dataset, forward_fn, images_dtype
    from autotransfer.tune.task import build_task_model

    if measure_train not in ("per_backbone", "first", "all", "none"):
        raise ValueError(f"measure_train must be 'per_backbone', 'first', 'all' or 'none'. Got {measure_train!r}.")
    train_idx = np.asarray(splits.train, dtype=np.int64)
    labels = np.asarray(data.labels, dtype=np.int64)
    factors: dict[str, tuple[float, float, int]] = {}  # base -> (factor, setup_s, unfreeze)
    costs: dict[str, CandidateCost] = {}
    overhead: float | None = None
    for spec in candidates:
        base = getattr(spec, "base", None) or spec.handle
        twin = next((costs[c.name] for c in candidates if c.name in costs and c.handle == spec.handle
                     and c.input_size == spec.input_size
                     and getattr(c, "preprocess_handle", None) == getattr(spec, "preprocess_handle", None)), None)
        if twin is not None:
            # A layer variant of a module measured at this size: the probe runs both in one pass
            # (all_features), so it costs no more; reuse the measurement instead of a second load.
            costs[spec.name] = replace(twin, name=spec.name)
            continue
        try:
            backbone, load_s = _timed(lambda: HubBackbone.from_spec(spec))
        except Exception:  # noqa: BLE001 - the probe reports broken candidates with their error
            continue
        fbs = feature_batch(feature_batch_size, spec.input_size)
        n_fwd = fbs * (probe_batches + 1)
        # Repeat items of tiny train splits so every timed batch is full.
        idx = np.resize(train_idx, n_fwd) if len(train_idx) < n_fwd else train_idx[:n_fwd]
        # The probe's own input and forward (uint8 where exact), so the estimate times what it will run.
        ds = feature_dataset(data, idx, spec.input_size, fbs)
        fn = forward_fn(backbone, images_dtype(ds))
        times, it = [], iter(ds)
        for _ in range(probe_batches + 1):
            # Time the pipeline's next() too: the probe pays for decoding/resizing.
            t = time.perf_counter()
            images = next(it)
            fn(images).numpy()
            times.append(time.perf_counter() - t)
        fwd = float(np.mean(times[1:]) / fbs)
        first = max(0.0, times[0] - fwd * fbs)
        costs_dim = backbone.output_dim
        del backbone, fn
        gc.collect()

        measure = (measure_train == "all" or (measure_train == "per_backbone" and base not in factors)
                   or (measure_train == "first" and not factors))
        if measure:
            model, bb = build_task_model(spec, data.num_classes, dropout=0.0)
            u = min(int(unfreeze), bb.num_blocks)
            bb.set_unfrozen_blocks(u)
            model.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
            tidx = np.resize(train_idx, batch_size)
            x = next(iter(modalities.for_data(data).dataset(data, tidx, size=spec.input_size, batch_size=batch_size,
                                                            with_labels=False)))
            y = labels[tidx]
            _, first_step = _timed(lambda: model.train_on_batch(x, y))
            steps = [_timed(lambda: model.train_on_batch(x, y))[1] for _ in range(max(1, train_batches))]
            train = float(np.mean(steps) / batch_size)
            setup = max(0.0, first_step - train * batch_size)
            factor = train / fwd if fwd > 0 else math.nan
            factors.setdefault(base, (factor, setup, u))
            del model, bb
            keras.backend.clear_session(free_memory=False)
            gc.collect()
        elif measure_train in ("per_backbone", "first"):
            factor, setup, u = factors[base] if base in factors else next(iter(factors.values()))
            train = fwd * factor
        else:
            factor, setup, u = 3.0, 3.0 * first, int(unfreeze)  # assumed, not measured
            train = fwd * factor
        if overhead is None:
            overhead = _head_fit_seconds(data.num_classes, costs_dim, len(splits.train), len(splits.val),
                                         head_epochs=head_epochs, batch_size=batch_size, head_warmup=head_warmup)
        costs[spec.name] = CandidateCost(
            name=spec.name, input_size=int(spec.input_size), load_s=load_s, first_batch_s=first,
            featurize_s_per_item=fwd, train_s_per_item=train, train_setup_s=setup, unfreeze=u,
            backward_factor=factor, train_measured=measure, trial_overhead_s=overhead, batch_size=batch_size,
            batches_timed=probe_batches, feature_batch_size=fbs,
        )
    return costs


def _head_fit_seconds(num_classes: int, dim: int, n_train: int, n_val: int, *, head_epochs: int, batch_size: int,
                      head_warmup: str = "adam") -> float:
    """Time of the trainer's head warm-up on ``[n_train, dim]`` features (compile + fit + eval), with
    the per-trial session clean-up: the part of a trial that does not scale with the backbone."""
    import keras

    from autotransfer.tune.task import HEAD_LAYER, build_head

    t = time.perf_counter()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(max(1, n_train), dim)).astype("float32")
    y = rng.integers(0, num_classes, size=len(x))
    xv = rng.normal(size=(max(1, n_val), dim)).astype("float32")
    inp = keras.Input((dim,), dtype="float32")
    model = keras.Model(inp, build_head(inp, num_classes, dropout=0.1))
    if head_warmup == "probe":
        from autotransfer.tune.trainer import probe_head_weights

        model.get_layer(HEAD_LAYER).set_weights(probe_head_weights(x, y, num_classes))
    else:
        model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", metrics=["accuracy"],
                      steps_per_execution=max(1, -(-len(x) // batch_size)))
        model.fit(x, y, epochs=max(1, head_epochs), batch_size=batch_size, verbose=0)
    np.asarray(model(xv, training=False))
    del model
    keras.backend.clear_session(free_memory=False)
    gc.collect()
    return time.perf_counter() - t


# ------------------------------------------------------------------------------------ arithmetic


def probe_seconds(c: CandidateCost, n_items: int, *, score_s: float = SCORE_S_PER_CANDIDATE) -> float:
    """One candidate in the probe: load + warm-up + a forward pass over every item + scoring."""
    return c.load_s + c.first_batch_s + n_items * c.featurize_s_per_item + score_s


def trial_seconds(c: CandidateCost, *, n_train: int, n_val: int, epochs: int, features_cached: bool = True,
                  pixel_scale: float = 1.0) -> float:
    """One tuning trial of ``train_trial`` with ``epochs`` fine-tuning epochs (the worst case: no early stop).

    Fixed overhead (head warm-up fit, clean-up); load a fresh backbone; phase 1: features of
    train+val unless the probe's are reused, the head's val accuracy through the backbone; phase 2
    (epochs > 0): compile/trace, then per epoch a training pass (``train_s_per_item``) over train
    and a validation forward over val, and a final val pass. ``pixel_scale``: the trial's pixels over
    the measured (native) size's, for trials at another ``input_size``: per-item costs of a conv net
    scale with its pixel count; loading and set-up do not.
    """
    fwd = c.featurize_s_per_item
    s = c.trial_overhead_s + c.load_s + c.first_batch_s + n_val * fwd * pixel_scale
    if not features_cached:
        s += (n_train + n_val) * fwd * pixel_scale
    if epochs > 0:
        s += c.train_setup_s + pixel_scale * (epochs * (n_train * c.train_s_per_item + n_val * fwd) + n_val * fwd)
    return s


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
        return asdict(self)

    def __str__(self) -> str:
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
    if not costs:
        raise ValueError("make_plan: no candidate costs (every candidate failed to load?).")
    if max_trials is None and budget_s is None:
        raise ValueError("make_plan: max_trials=None (until the deadline) needs a budget.")
    cs = list(costs.values())
    if not margin > 0:
        raise ValueError(f"make_plan: margin must be > 0. Got {margin!r}.")
    probe_each = {c.name: margin * probe_seconds(c, n_items, score_s=score_s) for c in cs}
    # Per-item cost ~ pixels: trials at another input size scale by (size / measured size)^2 (1 for text).
    scale = {c.name: float(np.mean([(px / c.input_size) ** 2 if c.input_size else 1.0
                                    for px in (trial_sizes or {}).get(c.name, [c.input_size])])) for c in cs}
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
    lines = [
        f"estimate from the first batches ({cs[0].batches_timed} timed batches of {cs[0].feature_batch_size} per candidate"
        f"{f', {spent_s:.0f} s spent measuring' if spent_s else ''}"
        f"{f', x{margin:g} safety margin' if margin != 1 else ''}):",
        f"  probe: {len(cs)} candidates x {n_items} items = {probe_s:.0f} s "
        f"(forward {min(c.featurize_s_per_item for c in cs) * 1e3:.1f}-{max(c.featurize_s_per_item for c in cs) * 1e3:.1f} ms/item, "
        f"load+warm-up {sum(c.load_s + c.first_batch_s for c in cs):.0f} s in all, scoring ~{score_s:g} s each)",
        f"  one trial (<= {max_epochs} fine-tune epochs over {n_train} train + {n_val} val items): "
        f"~{t_mean:.0f} s on average, up to {t_max:.0f} s ({slowest}: train step "
        f"{costs[slowest].train_s_per_item * 1e3:.1f} ms/item = {costs[slowest].backward_factor:.1f} x its forward, "
        f"{'measured' if costs[slowest].train_measured else 'from its backbone'}; "
        f"fixed per-trial overhead {costs[slowest].trial_overhead_s:.1f} s"
        f"{f'; x{scale[slowest]:.2f} for trials at {list((trial_sizes or {})[slowest])} px' if scale[slowest] != 1 else ''})",
        (f"  tune: until the deadline, {tune_s:.0f} s: about {max_trials} trial(s) expected at ~{t_mean:.0f} s "
         f"(early stopping makes trials shorter); evaluate+export+report ~{finish:.0f} s" if until_deadline else
         f"  tune: {max_trials} trials x {t_max:.0f} s = {tune_s:.0f} s; evaluate+export+report ~{finish:.0f} s"),
        f"  total ~{total:.0f} s" + ("" if budget_s is None else f" of a {budget_s:.0f} s budget"),
    ]
    rec_trials, rec_k, rec_cands, trials_fit, fits = max_trials, top_k, None, None, True
    if until_deadline and tune_s >= t_mean:
        trials_fit = max_trials
        lines.append(f"fits: the probe and about {trials_fit} trial(s) before the deadline.")
    elif budget_s is not None:
        left = budget_s - spent_s - probe_s - finish
        trials_fit = max(0, int(left // t_max)) if left > 0 else 0
        fits = total <= budget_s
        if fits:
            lines.append(f"fits: {budget_s - total:.0f} s to spare ({trials_fit} trials would fit).")
        elif trials_fit >= 1:
            rec_trials = trials_fit
            lines.append(f"does NOT fit: after the probe ({probe_s:.0f} s) and finishing ({finish:.0f} s), "
                         f"{left:.0f} s leave room for {trials_fit} of {max_trials} trials at {t_max:.0f} s; "
                         f"recommend max_trials={trials_fit}.")
        else:
            rec_trials = 1
            # The longest prefix of the cheapest probes that still leaves one trial of its slowest member.
            order = sorted(cs, key=lambda c: probe_each[c.name])
            kept: list[str] = []
            for c in order:
                names = [*kept, c.name]
                if spent_s + finish + sum(probe_each[k] for k in names) + max(trial_each[k] for k in names) > budget_s:
                    break
                kept = names
            used_trial = max([trial_each[k] for k in kept], default=0.0)
            rec_cands = kept
            if kept:
                lines.append(f"does NOT fit: the probe alone needs {probe_s:.0f} s and the budget leaves "
                             f"{max(0.0, budget_s - spent_s - finish):.0f} s after finishing; recommend probing only "
                             f"{len(kept)} candidate(s) ({', '.join(kept)}: {sum(probe_each[k] for k in kept):.0f} s) "
                             f"and max_trials=1 (~{used_trial:.0f} s).")
            else:
                lines.append(f"does NOT fit: even the cheapest candidate's probe plus one trial "
                             f"({probe_each[order[0].name] + trial_each[order[0].name]:.0f} s) exceeds the budget "
                             f"after finishing ({finish:.0f} s); raise the budget or use smaller images/data.")
        rec_k = max(1, min(top_k, rec_trials))
        if rec_k < top_k:
            lines.append(f"recommend top_k={rec_k}: fewer trials than candidates leaves some candidates untried.")
    return Plan(
        budget_s=budget_s, n_candidates=len(cs), n_items=n_items, n_train=n_train, n_val=n_val, n_test=n_test,
        probe_s=probe_s, trial_s_mean=t_mean, trial_s_max=t_max, tune_s=tune_s, finish_s=finish, total_s=total,
        max_trials=max_trials, top_k=top_k, max_epochs=max_epochs, trials_fit=trials_fit, fits=fits,
        recommended_max_trials=rec_trials, recommended_top_k=rec_k, recommended_candidates=rec_cands,
        min_budget_s=min_budget, lines=lines,
        costs={k: v.to_dict() for k, v in costs.items()},
        assumptions={"trial_epochs": "max_epochs (no early stop)", "trial_cost": "slowest candidate (top-k unknown before the probe)",
                     "features_cached": features_cached, "score_s_per_candidate": score_s, "margin": margin, "reserve_s": reserve_s,
                     "spent_s": spent_s, "probe_s_per_candidate": probe_each, "trial_s_per_candidate": trial_each,
                     "trial_pixel_scale": scale},
    )


__all__ = ["CandidateCost", "EXPORT_RESERVE_S", "Plan", "make_plan", "measure_costs", "probe_seconds", "trial_seconds"]
