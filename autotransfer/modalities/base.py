"""What a modality's preprocessor provides (one small base class, as Optuna's strategies are)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable

import numpy as np


class Modality(ABC):
    """The data side of one modality: items -> batches, and the model input they make.

    ``size`` is the backbone's input size (an image side; a modality without one ignores it).
    """

    #: Name used in ``LabelledData.modality`` and the registry.
    name: str = ""
    #: Whether a mirrored item is still an item of its class, so that averaging a model's
    #: predictions of an item and its mirror image (test-time flip averaging) may pay.
    test_time_flip: bool = False
    #: Whether a backbone takes an input ``size`` (an image side); else ``size`` is 0 and ignored.
    has_size: bool = False

    def typical_size(self, data: Any) -> float | None:
        """The typical item size of ``data`` in the units of ``size`` (an image side in pixels), or
        None where the modality has no size (what ``tuning.input_size: auto`` resolves against)."""
        return None

    @abstractmethod
    def dataset(self, data: Any, indices: np.ndarray, *, size: int, batch_size: int = 32, shuffle: bool = False,
                seed: int = 0, with_labels: bool = True, cache: bool = False, raw: bool = False) -> Any:
        """Batched ``tf.data.Dataset`` of the items at ``indices`` (with int64 labels when
        ``with_labels``), reshuffled each epoch for ``seed`` when ``shuffle``, kept in memory after
        the first pass when ``cache``. ``raw``: the items as stored where that is exact and cheaper;
        the consumer then applies :meth:`to_model_input` (check the batches' dtype)."""

    @abstractmethod
    def input_spec(self, size: int, dtype: Any = None) -> Any:
        """The ``tf.TensorSpec`` of a batch of model inputs (batch dimension None)."""

    @abstractmethod
    def dummy_input(self, size: int, batch: int = 1) -> Any:
        """A batch of ``batch`` valid inputs (to trace or check a model)."""

    @abstractmethod
    def keras_input(self, size: int) -> Any:
        """The ``keras.Input`` of a task model on a backbone of input size ``size``."""

    def augmenter(self, kind: str, seed: int = 0) -> Callable[[Any, Any, Any], tuple[Any, Any]] | None:
        """``fn(batch, one_hot_labels, step_seed) -> (batch, labels)`` for the training-time
        augmentation ``kind`` (:data:`autotransfer.space.AUGMENTATIONS`), or None for ``none``;
        ``step_seed`` is a ``[2]`` int tensor that differs per batch."""
        if kind == "none":
            return None
        from autotransfer.errors import UserInputError

        raise UserInputError(f"tuning.augment {kind!r} does not apply to {self.name} data: use 'none' in the "
                             "search space's tuning section.")

    def mirror(self, batch: Any) -> Any:
        """A batch of model inputs, each item mirrored (test-time flip averaging, where
        :attr:`test_time_flip`)."""
        raise NotImplementedError(f"modality {self.name!r} has no mirror image (test_time_flip is False)")

    def named_input(self, size: int, name: str) -> Any:
        """A ``keras.Input`` like :meth:`keras_input`, called ``name`` (an ensemble takes one per size)."""
        import keras

        spec = self.input_spec(size)
        return keras.Input(tuple(spec.shape[1:]), dtype=spec.dtype, name=name)

    @abstractmethod
    def to_model_input(self, batch: Any) -> Any:
        """A batch from ``dataset(raw=True)`` as the model takes it (identity when already so)."""

    # -- serving (the export's signatures; see :mod:`autotransfer.export.saved_model`) -------------
    @abstractmethod
    def model_call(self, model: Any, sizes: list[int]) -> Callable[[Any], Any]:
        """``fn(batch for serving_default) -> probabilities`` of a trained task model whose members
        take ``sizes`` (one size, or one per ensemble member; ignored where sizes do not apply)."""

    @abstractmethod
    def serving_endpoints(self, model: Any, sizes: list[int], outputs: Callable[[Any], dict],
                          max_pixels: int | None = None) -> dict[str, tuple[Callable, Any]]:
        """The export's signatures: name -> (function of one input batch returning
        ``outputs(probabilities)``, its input ``tf.TensorSpec``); ``serving_default`` first."""

    @abstractmethod
    def signature_inputs(self, sizes: list[int]) -> dict[str, tuple[str, Any, dict]]:
        """name -> (input key, dtype, description for the export's metadata) of every signature."""

    @abstractmethod
    def warmup_batches(self, examples: Any, sizes: list[int]) -> dict[str, Any]:
        """name -> one batch of real inputs (at most 8) per signature for TF Serving's warm-up and the
        export's check; ``examples`` (the data's items, as the data stage loads them) or None."""

    @abstractmethod
    def rest_example(self, sizes: list[int]) -> dict:
        """A TF Serving REST ``:predict`` body for one item (the report's "How to serve")."""

    # -- the report ---------------------------------------------------------------------------------
    @abstractmethod
    def show(self, data: Any, indices: np.ndarray) -> list[dict[str, str]]:
        """How the items at ``indices`` appear in the report, one small JSON-able dict each:
        ``{"kind": "image", "src": <data: URI of a thumbnail>}`` or ``{"kind": "text", "text": <snippet>}``."""


__all__ = ["Modality"]
