"""Measuring: time the first batches of every candidate (forward, one training step, the head warm-up)."""
from __future__ import annotations

import gc
import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, NamedTuple, Sequence

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
        """The costs as plain JSON types (``plan.json``'s ``costs``)."""
        return asdict(self)


class _Forward(NamedTuple):
    """One candidate's timed probe forward (:func:`_time_forward`)."""

    load_s: float         # load the module + build the layer
    batch: int            # the probe's featurization batch for this input size
    per_item: float       # steady frozen forward per item, decoding included
    first_batch_s: float  # the warm-up batch beyond the steady per-item cost
    output_dim: int       # feature width, for timing the head warm-up


class _Train(NamedTuple):
    """One candidate's training-step cost (:func:`_train_cost`)."""

    per_item: float   # one fine-tuning step per item
    factor: float     # per_item / the forward's per-item cost
    setup_s: float    # compile + trace of the first step
    unfreeze: int     # blocks trainable while it was timed
    measured: bool    # False: derived from another candidate's factor or assumed


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn()`` and the seconds it took."""
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def measure_costs(candidates: Sequence[Any], data: Any, splits: Any, *, batch_size: int = 16,
                  feature_batch_size: int | None = None, probe_batches: int = 2, train_batches: int = 2,
                  unfreeze: int = 3, measure_train: str = "per_backbone", head_epochs: int = 5,
                  head_warmup: str = "adam") -> dict[str, CandidateCost]:
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
            candidate only: one training trace, its factor for all), ``"all"`` or ``"none"`` (then
            ``train_s_per_item`` = forward x 3, the usual backward-costs-2x-forward rule).
        head_epochs, head_warmup: the trainer's head warm-up (``TuneSpace``), timed once on random
            features of the first candidate's size (``trial_overhead_s``, shared by all candidates).

    Candidates that fail to load get no entry (the probe will report them).
    """
    _import_measuring_code()
    if measure_train not in ("per_backbone", "first", "all", "none"):
        raise ValueError(f"measure_train must be 'per_backbone', 'first', 'all' or 'none'. Got {measure_train!r}.")
    train_idx = np.asarray(splits.train, dtype=np.int64)
    labels = np.asarray(data.labels, dtype=np.int64)
    factors: dict[str, tuple[float, float, int]] = {}  # base -> (factor, setup_s, unfreeze)
    costs: dict[str, CandidateCost] = {}
    overhead: float | None = None
    for spec in candidates:
        twin = _measured_twin(spec, candidates, costs)
        if twin is not None:
            # A layer variant of a module measured at this size: the probe runs both in one pass
            # (all_features), so it costs no more; reuse the measurement instead of a second load.
            costs[spec.name] = replace(twin, name=spec.name)
            continue
        fwd = _time_forward(spec, data, train_idx, feature_batch_size=feature_batch_size, probe_batches=probe_batches)
        if fwd is None:
            continue
        train = _train_cost(spec, data, train_idx, labels, fwd, factors, measure_train=measure_train,
                            batch_size=batch_size, train_batches=train_batches, unfreeze=unfreeze)
        if overhead is None:
            overhead = _head_fit_seconds(data.num_classes, fwd.output_dim, len(splits.train), len(splits.val),
                                         head_epochs=head_epochs, batch_size=batch_size, head_warmup=head_warmup)
        costs[spec.name] = CandidateCost(
            name=spec.name, input_size=int(spec.input_size), load_s=fwd.load_s, first_batch_s=fwd.first_batch_s,
            featurize_s_per_item=fwd.per_item, train_s_per_item=train.per_item, train_setup_s=train.setup_s,
            unfreeze=train.unfreeze, backward_factor=train.factor, train_measured=train.measured,
            trial_overhead_s=overhead, batch_size=batch_size, batches_timed=probe_batches, feature_batch_size=fwd.batch,
        )
    return costs


def _import_measuring_code() -> None:
    """Import everything measuring runs before anything is timed, so that no timed step (the first
    candidate's load above all) pays for a first import."""
    import keras  # noqa: F401

    from autotransfer import modalities  # noqa: F401
    from autotransfer.backbones import HubBackbone  # noqa: F401
    from autotransfer.probe.featurize import feature_batch, feature_dataset, forward_fn, images_dtype  # noqa: F401
    from autotransfer.train.task import build_task_model  # noqa: F401
    from autotransfer.train.trainer import compile_fine_tune  # noqa: F401


def _measured_twin(spec: Any, candidates: Sequence[Any], costs: dict[str, CandidateCost]) -> CandidateCost | None:
    """The cost already measured for the same module at the same size (and preprocessor), if any."""
    return next((costs[c.name] for c in candidates if c.name in costs and c.handle == spec.handle
                 and c.input_size == spec.input_size
                 and getattr(c, "preprocess_handle", None) == getattr(spec, "preprocess_handle", None)), None)


def _time_forward(spec: Any, data: Any, train_idx: np.ndarray, *, feature_batch_size: int | None,
                  probe_batches: int) -> _Forward | None:
    """Load ``spec`` and time the probe's forward over the first train items: one warm-up batch,
    then ``probe_batches`` steady ones. None when the candidate fails to load."""
    from autotransfer.backbones import HubBackbone
    from autotransfer.probe.featurize import feature_batch, feature_dataset, forward_fn, images_dtype

    try:
        backbone, load_s = _timed(lambda: HubBackbone.from_spec(spec))
    except Exception:  # noqa: BLE001 - the probe reports broken candidates with their error
        return None
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
    dim = backbone.output_dim
    del backbone, fn
    gc.collect()
    return _Forward(load_s=load_s, batch=fbs, per_item=fwd, first_batch_s=first, output_dim=dim)


def _train_cost(spec: Any, data: Any, train_idx: np.ndarray, labels: np.ndarray, fwd: _Forward,
                factors: dict[str, tuple[float, float, int]], *, measure_train: str, batch_size: int,
                train_batches: int, unfreeze: int) -> _Train:
    """The training step's cost: timed (recording its backbone's factor in ``factors``), derived from
    a timed candidate's factor, or assumed (``measure_train="none"``), as ``measure_train`` says."""
    base = getattr(spec, "base", None) or spec.handle
    measure = (measure_train == "all" or (measure_train == "per_backbone" and base not in factors)
               or (measure_train == "first" and not factors))
    if measure:
        train, setup, u = _time_training(spec, data, train_idx, labels, batch_size=batch_size,
                                         train_batches=train_batches, unfreeze=unfreeze)
        factor = train / fwd.per_item if fwd.per_item > 0 else math.nan
        factors.setdefault(base, (factor, setup, u))
    elif measure_train in ("per_backbone", "first"):
        factor, setup, u = factors[base] if base in factors else next(iter(factors.values()))
        train = fwd.per_item * factor
    else:
        factor, setup, u = 3.0, 3.0 * fwd.first_batch_s, int(unfreeze)  # assumed, not measured
        train = fwd.per_item * factor
    return _Train(per_item=train, factor=factor, setup_s=setup, unfreeze=u, measured=measure)


def _time_training(spec: Any, data: Any, train_idx: np.ndarray, labels: np.ndarray, *, batch_size: int,
                   train_batches: int, unfreeze: int) -> tuple[float, float, int]:
    """Time the trainer's fine-tuning step (:func:`~autotransfer.train.trainer.compile_fine_tune`:
    its optimizer and loss) on the task model with the last ``unfreeze`` blocks trainable; returns
    (seconds per item of a steady step, the first step's extra seconds (tracing), blocks unfrozen)."""
    import keras

    from autotransfer import modalities
    from autotransfer.train.task import build_task_model
    from autotransfer.train.trainer import compile_fine_tune

    model, bb = build_task_model(spec, data.num_classes, dropout=0.0)
    u = min(int(unfreeze), bb.num_blocks)
    bb.set_unfrozen_blocks(u)
    compile_fine_tune(model, bb, {"learning_rate": 1e-4}, steps=1, max_epochs=1)
    tidx = np.resize(train_idx, batch_size)
    x = next(iter(modalities.for_data(data).dataset(data, tidx, size=spec.input_size, batch_size=batch_size,
                                                    with_labels=False)))
    y = keras.utils.to_categorical(labels[tidx], data.num_classes)
    _, first_step = _timed(lambda: model.train_on_batch(x, y))
    steps = [_timed(lambda: model.train_on_batch(x, y))[1] for _ in range(max(1, train_batches))]
    train = float(np.mean(steps) / batch_size)
    setup = max(0.0, first_step - train * batch_size)
    del model, bb
    keras.backend.clear_session(free_memory=False)
    gc.collect()
    return train, setup, u


def _head_fit_seconds(num_classes: int, dim: int, n_train: int, n_val: int, *, head_epochs: int, batch_size: int,
                      head_warmup: str = "adam") -> float:
    """Time of the trainer's head warm-up on ``[n_train, dim]`` features (compile + fit + eval), with
    the per-trial session clean-up: the part of a trial that does not scale with the backbone."""
    import keras

    from autotransfer.train.task import HEAD_LAYER, build_head

    t = time.perf_counter()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(max(1, n_train), dim)).astype("float32")
    y = rng.integers(0, num_classes, size=len(x))
    xv = rng.normal(size=(max(1, n_val), dim)).astype("float32")
    inp = keras.Input((dim,), dtype="float32")
    model = keras.Model(inp, build_head(inp, num_classes, dropout=0.1))
    if head_warmup == "probe":
        from autotransfer.train.trainer import probe_head_weights

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
