"""Measuring: time the first batches of every candidate (forward, one training step, the head warm-up)."""
from __future__ import annotations

import gc
import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Sequence

import numpy as np


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
