"""Text hidden states at a cut: computed once per item, trained on in batches padded to their longest.

A string-in module with the text cut points (``prefix_to`` / ``from_block``, the text module
contract) gives, for a batch of texts, the hidden states entering a layer and the token mask,
padded to the batch's longest text. While the layers before the cut are frozen these states are a
fixed function of each text, so a trial that trains only the layers from the cut on computes them
once per item (kept unpadded, in memory) and runs only the open layers per step. A batch is then
padded to its own longest item, and items of similar length share a batch (:func:`length_batches`):
the padding a batch of random lengths carries is most of a short-text batch's tokens. Both the
contrastive trial (:mod:`autotransfer.train.contrastive`) and fine-tuning trials
(:mod:`autotransfer.train.trainer`) train this way.
"""
from __future__ import annotations

from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from autotransfer import modalities

#: Batches whose items are sorted by length together (then the batches shuffled): each batch is
#: padded to its longest item, so similar lengths share a batch, while items still mix across
#: most of the pool.
LENGTH_WINDOW = 16
#: Items per forward pass where states or predictions are computed without gradients.
EMBED_BATCH = 64


class HiddenStates:
    """The hidden states entering a cut of a fixed set of texts: ``states[i]`` is ``[L_i, H]``
    (text ``i``'s tokens, unpadded); :meth:`padded` pads a batch of them to its longest."""

    def __init__(self, states: list[np.ndarray]) -> None:
        self.states = states
        self.lengths = np.array([len(s) for s in states], np.int64)
        self.hidden_size = int(states[0].shape[-1]) if states else 0

    def __len__(self) -> int:
        return len(self.states)

    @property
    def nbytes(self) -> int:
        return int(sum(s.nbytes for s in self.states))

    def padded(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(hidden [b, L, H], mask [b, L])`` of ``rows``, L their longest (zeros past each end)."""
        longest = int(max(self.lengths[rows]))
        hidden = np.zeros((len(rows), longest, self.hidden_size), np.float32)
        mask = np.zeros((len(rows), longest), np.float32)
        for k, r in enumerate(rows):
            hidden[k, :self.lengths[r]], mask[k, :self.lengths[r]] = self.states[r], 1.0
        return hidden, mask

    def inputs(self, rows: np.ndarray) -> tuple[tf.Tensor, tf.Tensor]:
        """:meth:`padded` as tensors: what ``backbone.suffix(cut, ...)`` and a cut model take."""
        hidden, mask = self.padded(rows)
        return tf.constant(hidden), tf.constant(mask)


def hidden_states(backbone: Any, cut: str, texts: tf.Tensor, *, limit_bytes: float | None = None,
                  batch_size: int = EMBED_BATCH) -> HiddenStates | None:
    """``backbone.prefix(cut, ...)`` of ``texts`` (a string tensor), one item at a time unpadded, or
    None once they pass ``limit_bytes`` (the prefix cache's bound: the trial then takes the full path)."""
    states: list[np.ndarray] = []
    used = 0
    for i in range(0, int(texts.shape[0]), batch_size):
        hidden, mask = backbone.prefix(cut, texts[i:i + batch_size])
        lengths = np.asarray(tf.reduce_sum(mask, axis=1), np.int64)
        states += [h[:n] for h, n in zip(np.asarray(hidden, np.float32), lengths)]
        used += sum(s.nbytes for s in states[-len(lengths):])
        if limit_bytes is not None and used > limit_bytes:
            return None
    return HiddenStates(states)


def model_inputs(data: Any, indices: np.ndarray, size: int = 0) -> tf.Tensor:
    """The model inputs of ``indices`` (raw strings for text), in order, as one tensor."""
    batches = modalities.for_data(data).dataset(data, indices, size=size, batch_size=256)
    return tf.concat([x for x, _ in batches], axis=0)


def text_cut(backbone: Any, unfreeze_blocks: int) -> str | None:
    """The cut where a text module's last ``unfreeze_blocks`` layers start, when it has one."""
    if getattr(backbone, "modality", "image") != "text" or not hasattr(backbone, "prefix_cut"):
        return None
    return backbone.prefix_cut(int(unfreeze_blocks))


def length_batches(lengths: np.ndarray, batch_size: int, *, order: np.ndarray | None = None,
                   rng: np.random.Generator | None = None, window: int | None = LENGTH_WINDOW) -> list[np.ndarray]:
    """Positions ``order`` (default ``0..n-1``) in batches of ``batch_size``, sorted by ``lengths``
    within windows of ``window`` batches (None: one window, every batch of similar lengths); with
    ``rng`` the batches are then shuffled. Only the last batch is partial: ``ceil(n / batch_size)``."""
    order = np.arange(len(lengths)) if order is None else np.asarray(order)
    span = len(order) if window is None else window * batch_size
    batches = []
    for i in range(0, len(order), max(1, span)):
        w = order[i:i + span]
        w = w[np.argsort(lengths[w], kind="stable")]
        batches += [w[j:j + batch_size] for j in range(0, len(w), batch_size)]
    if rng is not None:
        rng.shuffle(batches)
    return batches


def epoch_batches(lengths: np.ndarray, batch_size: int, *, seed: int, epoch: int) -> list[np.ndarray]:
    """One training epoch's batches: the items shuffled (seeded by ``seed`` and ``epoch``), then
    grouped by length (:func:`length_batches`) and the batches shuffled."""
    rng = np.random.default_rng([int(seed), int(epoch)])
    return length_batches(lengths, batch_size, order=rng.permutation(len(lengths)), rng=rng)


def hidden_stream(states: HiddenStates, labels: np.ndarray, *, batch_size: int, num_classes: int,
                  seed: int) -> tf.data.Dataset:
    """Endless ``((hidden, mask), one-hot labels)`` batches, epoch after epoch of
    :func:`epoch_batches` (``ceil(n / batch_size)`` a pass: a fit's ``steps_per_epoch``)."""
    labels = np.asarray(labels, np.int64)
    eye = np.eye(num_classes, dtype=np.float32)

    def batches() -> Any:
        epoch = 0
        while True:
            for rows in epoch_batches(states.lengths, batch_size, seed=seed, epoch=epoch):
                yield states.padded(rows), eye[labels[rows]]
            epoch += 1

    spec = ((tf.TensorSpec([None, None, states.hidden_size], tf.float32), tf.TensorSpec([None, None], tf.float32)),
            tf.TensorSpec([None, num_classes], tf.float32))
    return tf.data.Dataset.from_generator(batches, output_signature=spec).prefetch(2)


def eval_batches(states: HiddenStates, labels: np.ndarray, batch_size: int = EMBED_BATCH) -> list[tuple[Any, np.ndarray]]:
    """``((hidden, mask), labels)`` batches of every item, grouped by length (scores only: the
    order is not the items')."""
    labels = np.asarray(labels)
    return [(states.inputs(rows), labels[rows]) for rows in length_batches(states.lengths, batch_size, window=None)]


def predict_in_order(fn: Callable[[Any], Any], states: HiddenStates, batch_size: int = EMBED_BATCH) -> np.ndarray:
    """``fn((hidden, mask))`` of every item in batches grouped by length, rows in item order."""
    out: np.ndarray | None = None
    for rows in length_batches(states.lengths, batch_size, window=None):
        y = np.asarray(fn(states.inputs(rows)), np.float64)
        out = np.zeros((len(states), y.shape[-1])) if out is None else out
        out[rows] = y
    return out if out is not None else np.zeros((0, 0))


def model_predict(model: keras.Model) -> Callable[[Any], Any]:
    """A cut model's inference-mode call, for :func:`predict_in_order`."""
    return lambda x: model(x, training=False)


__all__ = ["EMBED_BATCH", "HiddenStates", "LENGTH_WINDOW", "epoch_batches", "eval_batches", "hidden_states",
           "hidden_stream", "length_batches", "model_inputs", "model_predict", "predict_in_order", "text_cut"]
