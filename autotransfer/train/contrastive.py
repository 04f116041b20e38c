"""A SetFit-style trial: contrastive fine-tuning of the encoder on pairs, then a logistic head.

SetFit (Tunstall et al., 2022) trains a sentence encoder on pairs of training items: per
iteration each item gets one partner of its own class (target cosine 1) and one of another class
(target 0), and the loss is the squared error between the target and the cosine of the two
pooled, L2-normalised embeddings. A logistic regression is then fitted on the new embeddings.
With few labels per class the encoder learns from many pairs where cross-entropy on the items
alone overfits its head.

Here the encoder is the trial's backbone with its last ``unfreeze_blocks`` blocks open, trained
for at most ``contrastive_steps`` optimizer steps of ``batch_size`` pairs at ``learning_rate``
(the trial's schedule and layer decay), over ``pairs_per_example`` pairs sampled per item. Where
the module can be cut before the first open block (``prefix_cut``: the text module contract's
``prefix_to`` / ``from_block``), what enters that block is computed once per item and only the open
blocks run per step, each batch padded to its longest item (pairs are grouped by length); other
modules run the whole encoder per step (slower, the same result). The head is the LP-FT head
(:func:`~autotransfer.train.trainer.probe_head_weights`, C by cross-validation) on the new
embeddings of the training rows, set into the trial's own task model, so export, ensembles and
refits see the usual model. It keeps the frozen encoder's head when the contrastive model beats it
on val in neither accuracy nor log-loss (``finetune_epochs`` 0); kept, ``finetune_epochs`` is 1.
"""
from __future__ import annotations

import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from autotransfer import modalities
from autotransfer.backbones import BackboneSpec
from autotransfer.space import TuneSpace
from autotransfer.train import hidden as hd
from autotransfer.train import trainer as tr
from autotransfer.train.optimizer import fine_tune_optimizer
from autotransfer.train.task import HEAD_LAYER

#: Val log-loss a contrastive model must gain over the frozen head to be kept without a val accuracy gain
#: (less is an encoder that did not move).
KEEP_LOSS_GAIN = 1e-3


def sample_pairs(labels: np.ndarray, *, pairs_per_example: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(first, second, target)``: SetFit's pairs over positions into ``labels``, shuffled.

    Per iteration (``pairs_per_example // 2`` of them) every item is paired once with another item of
    its class (target 1.0; itself only when its class has one item) and once with an item of another
    class (target 0.0; none when there is one class). Seeded: the same ``seed`` gives the same pairs.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    first, second, target = [], [], []
    for _ in range(max(1, int(pairs_per_example) // 2)):
        for c in np.unique(labels):
            members, others = np.flatnonzero(labels == c), np.flatnonzero(labels != c)
            if len(members) > 1:  # a partner other than itself: skip its own position
                j = rng.integers(0, len(members) - 1, size=len(members))
                partners = members[j + (j >= np.arange(len(members)))]
            else:
                partners = members
            first.append(members), second.append(partners), target.append(np.ones(len(members)))
            if len(others):
                first.append(members), second.append(others[rng.integers(0, len(others), size=len(members))])
                target.append(np.zeros(len(members)))
    order = rng.permutation(sum(map(len, first)))
    return (np.concatenate(first)[order], np.concatenate(second)[order],
            np.concatenate(target).astype(np.float32)[order])


def cosine_pair_loss(a: tf.Tensor, b: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """Mean squared error between ``target`` and the cosine of each row pair of ``a`` and ``b``
    (sentence-transformers' CosineSimilarityLoss, SetFit's default)."""
    cos = tf.reduce_sum(tf.math.l2_normalize(a, -1) * tf.math.l2_normalize(b, -1), axis=-1)
    return tf.reduce_mean(tf.square(cos - target))


class PairEncoder:
    """Embeddings of a fixed set of items, differentiable in the backbone's open blocks.

    ``cut`` set: the items are stored as what enters block ``cut`` (text: each item's hidden
    states, unpadded, :class:`~autotransfer.train.hidden.HiddenStates`) and :meth:`inputs` pads a
    batch of them to its longest item, for ``backbone.suffix``; else the items are the raw model
    inputs, for the whole backbone.
    """

    def __init__(self, backbone: Any, items: tf.Tensor, cut: str | None = None) -> None:
        self.backbone, self.cut = backbone, cut
        self.items = items
        self.hidden = hd.hidden_states(backbone, cut, items) if cut is not None else None
        self.lengths = self.hidden.lengths if self.hidden is not None else None

    def __len__(self) -> int:
        return int(self.items.shape[0])

    def inputs(self, rows: np.ndarray) -> Any:
        """The model inputs of ``rows`` (cached: ``(hidden [b, L, H], mask [b, L])``, L their longest)."""
        return tf.gather(self.items, rows) if self.hidden is None else self.hidden.inputs(rows)

    def embed(self, inputs: Any) -> tf.Tensor:
        """Embeddings ``[b, D]`` of what :meth:`inputs` returned (records gradients on a tape)."""
        if self.cut is None:
            return self.backbone(inputs, training=False)
        return self.backbone.suffix(self.cut, inputs)

    def embed_all(self) -> np.ndarray:
        """Every item's embedding ``[n, D]`` (batches of similar length), in item order."""
        if self.hidden is not None:
            return hd.predict_in_order(self.embed, self.hidden).astype(np.float32)
        out = np.zeros((len(self), self.backbone.output_dim), np.float32)
        for i in range(0, len(self), hd.EMBED_BATCH):
            rows = np.arange(i, min(len(self), i + hd.EMBED_BATCH))
            out[rows] = np.asarray(self.embed(self.inputs(rows)), np.float32)
        return out


def pair_batches(first: np.ndarray, second: np.ndarray, *, batch_size: int, lengths: np.ndarray | None,
                 seed: int) -> list[np.ndarray]:
    """Positions into the pairs, ``batch_size`` a batch: with ``lengths``, sorted by the longer
    item of each pair within windows of :data:`~autotransfer.train.hidden.LENGTH_WINDOW` batches,
    the batches then shuffled (:func:`~autotransfer.train.hidden.length_batches`)."""
    if lengths is None:
        order = np.arange(len(first))
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    longer = np.maximum(lengths[first], lengths[second])
    return hd.length_batches(longer, batch_size, rng=np.random.default_rng(seed))


def _step_batches(labels: np.ndarray, encoder: PairEncoder, params: dict[str, Any],
                  seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """``(first, second, target, batches)`` for ``contrastive_steps`` steps: one pool of
    ``pairs_per_example`` pairs per item, sampled again (next seed) while it has too few batches."""
    steps, size = int(params["contrastive_steps"]), int(params["batch_size"])
    first, second, target, batches = [], [], [], []
    offset, draw = 0, 0
    while len(batches) < steps:
        a, b, t = sample_pairs(labels, pairs_per_example=int(params["pairs_per_example"]), seed=seed + draw)
        batches += [offset + x for x in pair_batches(a, b, batch_size=size, lengths=encoder.lengths, seed=seed + draw)]
        first.append(a), second.append(b), target.append(t)
        offset, draw = offset + len(a), draw + 1
    return np.concatenate(first), np.concatenate(second), np.concatenate(target), batches[:steps]


def contrastive_fit(encoder: PairEncoder, labels: np.ndarray, params: dict[str, Any], *, seed: int,
                    deadline: Any = None) -> dict[str, Any]:
    """Train the backbone's open blocks on pairs of ``encoder``'s items for ``contrastive_steps``
    steps (:func:`cosine_pair_loss`, the trial's learning rate, schedule and layer decay).

    Returns ``{"step_loss": [...], "seconds_per_step": s, "timed_out": bool}``; the deadline (as
    for :func:`~autotransfer.train.trainer.train_trial`) is checked after every step.
    """
    first, second, target, batches = _step_batches(np.asarray(labels), encoder, params, seed)
    backbone = encoder.backbone
    variables = [w for w, _ in backbone.variables_by_block() if w.trainable]
    optimizer = fine_tune_optimizer(float(params["learning_rate"]), schedule=str(params.get("lr_schedule", "constant")),
                                    decay_steps=len(batches), backbone=backbone,
                                    layer_decay=float(params.get("layer_decay", 1.0)))
    optimizer.build(variables)

    # One trace per padded length at most: shapes are relaxed after the first retrace.
    @tf.function(reduce_retracing=True)
    def step(inputs: Any, ia: tf.Tensor, ib: tf.Tensor, t: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            e = encoder.embed(inputs)
            loss = cosine_pair_loss(tf.gather(e, ia), tf.gather(e, ib), t)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    losses, timed_out, t0 = [], False, time.perf_counter()
    for b in batches:
        # Each item of the batch is embedded once, however many of its pairs the batch holds.
        rows, inv = np.unique(np.concatenate([first[b], second[b]]), return_inverse=True)
        losses.append(float(step(encoder.inputs(rows), tf.constant(inv[:len(b)]), tf.constant(inv[len(b):]),
                                 tf.constant(target[b]))))
        if tr._deadline_passed(deadline):
            timed_out = True
            break
    return {"step_loss": losses, "seconds_per_step": (time.perf_counter() - t0) / max(1, len(losses)),
            "timed_out": timed_out}


def pair_encoder(backbone: Any, data: Any, indices: np.ndarray, *, size: int, unfreeze_blocks: int,
                 prefix_cache: Any = tr.DEFAULT_SETTINGS) -> PairEncoder:
    """The items of ``indices`` for contrastive training: on the hidden states entering the first
    open block where a text module can be cut there (and ``prefix_cache.enabled``), else raw."""
    # An image cut's activations are the fine-tuning trial's cache (train/prefix.py), not pairs'.
    cut = hd.text_cut(backbone, unfreeze_blocks) if prefix_cache.enabled else None
    return PairEncoder(backbone, hd.model_inputs(data, indices, size), cut)


def contrastive_phase(model: keras.Model, backbone: Any, effective: dict[str, Any], data: Any, indices: np.ndarray, *,
                      size: int, num_classes: int, seed: int, deadline: Any = None,
                      prefix_cache: Any = tr.DEFAULT_SETTINGS) -> dict[str, Any]:
    """Open the last ``unfreeze_blocks`` blocks, train them on pairs of the items at ``indices``,
    close them, and set ``model``'s head to the LP-FT head on the new embeddings of those items.
    Returns the fit's history (:func:`contrastive_fit`) with ``loss`` (its mean step loss, one entry)
    and ``prefix_cut`` (``""``: the full path); sets ``effective["prefix_cut"]``."""
    labels = np.asarray(data.labels, dtype=np.int64)[indices]
    backbone.set_unfrozen_blocks(int(effective["unfreeze_blocks"]))
    encoder = pair_encoder(backbone, data, indices, size=size, unfreeze_blocks=int(effective["unfreeze_blocks"]),
                           prefix_cache=prefix_cache)
    fit = contrastive_fit(encoder, labels, effective, seed=seed, deadline=deadline)
    backbone.set_unfrozen_blocks(0)
    head = tr.probe_head_weights(encoder.embed_all(), labels, num_classes, seed=seed,
                                 balanced=tr.is_balanced(effective))
    model.get_layer(HEAD_LAYER).set_weights(head)
    effective["prefix_cut"] = encoder.cut or ""
    return {**fit, "loss": [float(np.mean(fit["step_loss"])) if fit["step_loss"] else float("nan")],
            "prefix_cut": encoder.cut or ""}


def contrastive_defaults(space: TuneSpace, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with the contrastive fields a caller left out taken from ``space`` (its first
    values: a fine-tuning-only space has them too, unsearched)."""
    return {"contrastive_steps": int(space.contrastive_steps[0]), "pairs_per_example": int(space.pairs_per_example[0]),
            **params, "trial_type": "contrastive"}


def train_contrastive_trial(spec: BackboneSpec, params: dict[str, Any], data: Any, splits: Any, *, space: TuneSpace,
                            num_classes: int, features: dict | None = None, deadline: Any = None,
                            report: tr.ReportFn | None = None, seed: int = 0, head: list[np.ndarray] | None = None,
                            prefix_cache: Any = tr.DEFAULT_SETTINGS) -> tr.TrialOutcome:
    """One contrastive trial (arguments as :func:`~autotransfer.train.trainer.train_trial`).

    The frozen encoder's head first (the trial's ``head_warmup``, reported as epoch 0), then the
    contrastive phase (:func:`contrastive_phase`, reported as epoch 1), kept when its val accuracy
    or its val log-loss (by :data:`KEEP_LOSS_GAIN`) beats the frozen head's; ``history["finetune"]``
    records it either way.
    """
    t0 = time.time()
    keras.utils.set_random_seed(seed)
    flags = tr._Flags()
    spec, features, model, backbone, effective = tr._trial_model(spec, contrastive_defaults(space, params), space,
                                                                 num_classes, features)
    y_val = np.asarray(data.labels, dtype="int64")[splits.val]
    val_batches = list(modalities.for_data(data).dataset(data, splits.val, size=spec.input_size, batch_size=64,
                                                         cache=True))
    head_hist = tr._head_phase(model, backbone, spec, params, effective, data, splits, space=space,
                               num_classes=num_classes, features=features, seed=seed, head=head, report=report,
                               deadline=deadline, flags=flags)
    val_probs = tr.predict_probs(model, val_batches)
    head_val, head_loss = tr._scores(val_probs, y_val)
    final, final_loss, kept, phase = head_val, head_loss, 0, {}
    if effective["unfreeze_blocks"] > 0 and effective["contrastive_steps"] > 0 and not (flags.pruned or flags.timed_out):
        frozen = model.get_weights()
        phase = contrastive_phase(model, backbone, effective, data, splits.train, size=spec.input_size,
                                  num_classes=num_classes, seed=seed, deadline=deadline, prefix_cache=prefix_cache)
        flags.timed_out = flags.timed_out or phase["timed_out"]
        probs = tr.predict_probs(model, val_batches)
        acc, loss = tr._scores(probs, y_val)
        phase.update(val_accuracy=[acc], val_loss=[loss])
        if report is not None and report(len(head_hist.get("loss", [])), acc):
            flags.pruned = True
        # Kept when better on either count: a kept trial is a different model the final selection
        # weighs on far more rows (out of fold, every labelled row) than this val split.
        if acc > head_val or loss < head_loss - KEEP_LOSS_GAIN:
            final, final_loss, kept, val_probs = acc, loss, 1, probs
        else:  # the contrastive encoder did not beat the frozen one on val: keep the frozen head
            model.set_weights(frozen)
    tr._compile_for_evaluation(model, space)
    return tr.TrialOutcome(
        val_accuracy=final, epochs=len(head_hist.get("loss", [])) + (1 if phase else 0), seconds=time.time() - t0,
        history={"head": head_hist, "finetune": phase}, model=model, params=effective, timed_out=flags.timed_out,
        pruned=flags.pruned, head_val_accuracy=head_val, val_loss=final_loss, val_probs=val_probs.astype("float32"),
        finetune_epochs=kept)


def refit_contrastive_trial(spec: BackboneSpec, params: dict[str, Any], data: Any, indices: Any, *, space: TuneSpace,
                            num_classes: int, deadline: Any = None, seed: int = 0,
                            prefix_cache: Any = tr.DEFAULT_SETTINGS) -> tuple[keras.Model, bool]:
    """A kept contrastive trial's recipe on ``indices`` (one array or its parts): the same steps on
    pairs of those rows, then the head on their new embeddings. Returns ``(model, timed_out)``."""
    from autotransfer.train import prefix as px

    keras.utils.set_random_seed(seed)
    spec, _, model, backbone, effective = tr._trial_model(spec, contrastive_defaults(space, params), space,
                                                          num_classes, None)
    phase = contrastive_phase(model, backbone, effective, data, np.concatenate(px.as_parts(indices)),
                              size=spec.input_size, num_classes=num_classes, seed=seed, deadline=deadline,
                              prefix_cache=prefix_cache)
    tr._compile_for_evaluation(model, space)
    return model, bool(phase["timed_out"])


__all__ = ["PairEncoder", "contrastive_fit", "contrastive_phase", "cosine_pair_loss", "pair_batches", "pair_encoder",
           "refit_contrastive_trial", "sample_pairs", "train_contrastive_trial"]
