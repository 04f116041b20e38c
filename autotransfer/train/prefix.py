"""Frozen-prefix cache: fine-tune the last blocks on activations computed once.

When a trial unfreezes only the last ``k`` blocks, keeps BatchNorm in inference mode and trains
on unaugmented images, everything before block ``n - k`` is a fixed function of the image. Its
output (what enters the first open block) is computed once per (module, cut block, items, input
size), stored in the feature cache (``prefix-<block>`` entries; float32, or float16 with the run
parameter ``prefix_dtype``; bounded by ``prefix_cache_mb``, default 2048 MB per entry: a larger
one is not computed and the trial takes the full path), and the trial trains a model that starts
at that block: the module's ``from_block`` function, then the task model's own dropout and head
layers. Both share the task model's variables, so the trained full network is the same object
either way (and is what is exported). Modules without ``prefix_to`` / ``from_block``, augmented
trials and trainable BatchNorm take the full path, and so does every trial with ``prefix_cache``
off. A text module's cut (hidden states of per-text length) is kept in memory by the trainer
instead (:mod:`autotransfer.train.hidden`), under the same settings. The three settings travel as one :class:`PrefixCacheSettings`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from autotransfer.probe.cache import FeatureCache
from autotransfer.train.task import BACKBONE_LAYER


@dataclass(frozen=True)
class PrefixCacheSettings:
    """How trials and refits use the frozen-prefix cache: the run parameters ``prefix_cache``,
    ``prefix_cache_mb`` and ``prefix_dtype`` (:mod:`autotransfer.params`).

    ``enabled``: take the prefix path where a trial allows it (off: always the full path, e.g. for
    before/after measurements). ``limit_mb``: the largest activation entry computed (MB). ``dtype``:
    the stored activations' dtype. float32 by default: with float16 (half the bytes) the trained
    network drifted from the full path's (lite0 at 224 px, last block, 320 digits: val
    probabilities 1.4e-3 apart after one epoch, 0.5 after three; float32: identical).
    """

    enabled: bool = True
    limit_mb: int = 2048
    dtype: str = "float32"

    @property
    def store_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    @property
    def limit_bytes(self) -> float:
        return float(self.limit_mb) * 2**20

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "PrefixCacheSettings":
        """The settings of :meth:`to_dict` (None or missing keys: the defaults)."""
        return cls(**(d or {}))


#: Today's behaviour: the cache on, 2048 MB an entry, float32.
DEFAULT_SETTINGS = PrefixCacheSettings()


def prefix_cut(backbone: Any, params: dict[str, Any], settings: PrefixCacheSettings = DEFAULT_SETTINGS) -> str | None:
    """The cut block for a trial's effective ``params``, or None when it must take the full path
    (also whenever ``settings.enabled`` is off)."""
    if not settings.enabled:
        return None
    if str(params.get("augment", "none")) != "none" or getattr(backbone, "bn_training", True):
        return None
    # A text cut's hidden states differ in length per text: the trainer keeps them in memory
    # (train/hidden.py) instead of in this cache of fixed-shape activations.
    cut = getattr(backbone, "prefix_cut", None)
    return cut(int(params["unfreeze_blocks"])) if cut is not None else None


def as_parts(indices: np.ndarray | tuple[np.ndarray, ...] | list[np.ndarray]) -> list[np.ndarray]:
    """``indices`` as a list of index arrays: one array, or a tuple/list of parts (a refit's
    train and val splits, each cached on its own as the trials cached them)."""
    if isinstance(indices, (tuple, list)):
        return [np.asarray(p, dtype=np.int64) for p in indices]
    return [np.asarray(indices, dtype=np.int64)]


def prefix_activations(backbone: Any, cut: str, data: Any, indices: np.ndarray | tuple[np.ndarray, ...],
                       *, size: int, cache: FeatureCache | None = None, batch_size: int = 32,
                       settings: PrefixCacheSettings = DEFAULT_SETTINGS) -> np.ndarray | None:
    """What enters block ``cut`` for the items at ``indices`` (in ``settings.dtype``, cached on
    disk), or None when the entry would exceed ``settings.limit_mb``.

    ``indices`` given as parts (:func:`as_parts`) are cached part by part and concatenated: a
    refit on train+val reuses the entries its trial left for each split (recomputing them would
    double the refit's time)."""
    from autotransfer import modalities

    modality = modalities.for_data(data)
    cache = cache or FeatureCache()
    parts = as_parts(indices)
    dtype = settings.store_dtype
    keys = [FeatureCache.key(backbone.fingerprint(), data.fingerprint(), part, size, f"prefix-{cut}-{dtype.name}",
                             num_items=len(data)) for part in parts]
    out = [None if hit is None else hit["x"] for hit in (cache.load(key, ["x"]) for key in keys)]
    known = next((x for x in out if x is not None), None)
    # An item's bytes: from an entry already there, else from one dummy input through the prefix.
    item_shape = known.shape[1:] if known is not None else backbone.prefix(cut, modality.dummy_input(size)).shape[1:]
    if float(np.prod(item_shape)) * sum(map(len, parts)) * dtype.itemsize > settings.limit_bytes:
        return None
    for i, (part, key) in enumerate(zip(parts, keys)):
        if out[i] is None:
            out[i] = np.concatenate([backbone.prefix(cut, batch).numpy().astype(dtype)
                                     for batch, _ in modality.dataset(data, part, size=size, batch_size=batch_size)])
            cache.save(key, {"x": out[i]}, {"cut": cut, "input_size": size, "handle": backbone.handle})
    return out[0] if len(out) == 1 else np.concatenate(out)


class _Suffix(keras.layers.Layer):
    """The backbone from block ``cut`` on, as a layer over its activations (its variables are the
    backbone's: the same ones the full task model trains)."""

    def __init__(self, backbone: Any, cut: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.backbone = backbone  # tracked: its (trainable) variables are this layer's
        self.cut = cut

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return self.backbone.suffix(self.cut, x)

    def compute_output_shape(self, input_shape: Any) -> tuple:
        first = input_shape[0]  # text: the shapes of (hidden, mask)
        return (first[0] if isinstance(first, (tuple, list)) else first, self.backbone.output_dim)


def suffix_model(model: keras.Model, backbone: Any, cut: str, activation_shape: tuple[int, ...]) -> keras.Model:
    """A model from the activations entering ``cut`` through the rest of ``model`` (its own layers)."""
    return _cut_model(model, backbone, cut, keras.Input(activation_shape, dtype="float32", name="activations"))


def text_suffix_model(model: keras.Model, backbone: Any, cut: str, hidden_size: int) -> keras.Model:
    """:func:`suffix_model` of a text cut: it takes ``(hidden [B, L, H], mask [B, L])``, any L."""
    inputs = (keras.Input((None, hidden_size), dtype="float32", name="hidden"),
              keras.Input((None,), dtype="float32", name="mask"))
    return _cut_model(model, backbone, cut, inputs)


def _cut_model(model: keras.Model, backbone: Any, cut: str, inputs: Any) -> keras.Model:
    """``inputs`` -> the backbone from ``cut`` on -> ``model``'s layers after its backbone."""
    x = _Suffix(backbone, cut, name="backbone_suffix")(inputs)
    after = model.layers[[layer.name for layer in model.layers].index(BACKBONE_LAYER) + 1:]
    for layer in after:
        x = layer(x)
    return keras.Model(inputs, x, name=f"{model.name}_from_{cut}")


def activation_stream(x: np.ndarray, labels: np.ndarray, *, batch_size: int, num_classes: int, seed: int,
                      shuffle: bool = True) -> tf.data.Dataset:
    """Batches of float32 activations and one-hot labels, endless when shuffled, in the order
    the modality's ``dataset(..., shuffle=True, seed=seed, cache=True)`` gives the same items."""
    ds = tf.data.Dataset.from_tensor_slices((x, np.asarray(labels, np.int64)))
    if shuffle:
        ds = ds.shuffle(max(1, len(x)), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(int(batch_size)).map(lambda a, y: (tf.cast(a, tf.float32), tf.one_hot(y, num_classes)))
    return ds.repeat() if shuffle else ds


__all__ = ["DEFAULT_SETTINGS", "PrefixCacheSettings", "activation_stream", "prefix_activations", "prefix_cut",
           "suffix_model", "text_suffix_model"]
