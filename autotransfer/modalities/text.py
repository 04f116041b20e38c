"""Texts: batches of raw UTF-8 strings ``[B]``; a text backbone tokenises them in its own graph."""
from __future__ import annotations

from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from autotransfer.modalities.base import Modality


#: Characters of a text the report shows (the rest is elided).
SNIPPET = 240


class TextModality(Modality):
    """Raw strings, as TF Serving will send them; ``size`` (an image side) does not apply."""

    name = "text"

    def dataset(self, data: Any, indices: np.ndarray, *, size: int = 0, batch_size: int = 32, shuffle: bool = False,
                seed: int = 0, with_labels: bool = True, cache: bool = False, raw: bool = False) -> tf.data.Dataset:
        """The texts at ``indices`` (already raw: ``raw`` changes nothing)."""
        indices = np.asarray(indices, dtype=np.int64)
        texts = tf.constant([data.items[i] for i in indices.tolist()], dtype=tf.string, shape=[len(indices)])
        labels = tf.constant(np.asarray(data.labels, dtype=np.int64)[indices], dtype=tf.int64)
        ds = tf.data.Dataset.from_tensor_slices((texts, labels) if with_labels else texts)
        if cache:
            ds = ds.cache()
        if shuffle:
            ds = ds.shuffle(max(1, len(indices)), seed=seed, reshuffle_each_iteration=True)
        return ds.batch(int(batch_size)).prefetch(1)

    def input_spec(self, size: int = 0, dtype: Any = None) -> tf.TensorSpec:
        return tf.TensorSpec([None], dtype or tf.string)

    def dummy_input(self, size: int = 0, batch: int = 1) -> tf.Tensor:
        return tf.constant(["a short example text"] * batch)

    def keras_input(self, size: int = 0) -> Any:
        return keras.Input((), dtype="string", name="text")

    def to_model_input(self, batch: tf.Tensor) -> tf.Tensor:
        return batch

    # -- serving ------------------------------------------------------------------------------------
    def model_call(self, model: Any, sizes: list[int]) -> Callable[[tf.Tensor], tf.Tensor]:
        return lambda texts: model(texts, training=False)

    def serving_endpoints(self, model: Any, sizes: list[int], outputs: Callable[[tf.Tensor], dict],
                          max_pixels: int | None = None) -> dict[str, tuple[Callable, tf.TensorSpec]]:
        """``serving_default``: a batch of raw UTF-8 strings (the backbone tokenises in its graph)."""
        call = self.model_call(model, sizes)
        return {"serving_default": (lambda texts: outputs(call(texts)), tf.TensorSpec([None], tf.string, name=TEXT_KEY))}

    def signature_inputs(self, sizes: list[int]) -> dict[str, tuple[str, Any, dict]]:
        return {"serving_default": (TEXT_KEY, tf.string, {"dtype": "string", "shape": [None],
                                                          "format": "raw UTF-8 text"})}

    def warmup_batches(self, examples: Any, sizes: list[int]) -> dict[str, Any]:
        """Up to 8 of ``examples`` (strings), else two stock sentences, as UTF-8 bytes."""
        given = list(examples)[:8] if examples is not None and len(examples) else []
        texts = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in given]
        texts = texts or ["A short example text.", "Another one, a little longer than the first."]
        return {"serving_default": [t.encode("utf-8") for t in texts]}

    def rest_example(self, sizes: list[int]) -> dict:
        return {"signature_name": "serving_default", "instances": ["the text to classify"]}

    # -- the report ---------------------------------------------------------------------------------
    def show(self, data: Any, indices: np.ndarray) -> list[dict[str, str]]:
        """The first ``SNIPPET`` characters of each text, whitespace collapsed."""
        out = []
        for i in np.asarray(indices, dtype=np.int64).tolist():
            text = " ".join(str(data.items[i]).split())
            out.append({"kind": "text", "text": text if len(text) <= SNIPPET else text[:SNIPPET - 1] + "\u2026"})
        return out


#: The input key of a text export's ``serving_default``.
TEXT_KEY = "texts"


__all__ = ["TEXT_KEY", "TextModality"]
