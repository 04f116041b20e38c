"""What a modality's preprocessor provides (one small base class, as Optuna's strategies are)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np


class Modality(ABC):
    """The data side of one modality: items -> batches, and the model input they make.

    ``size`` is the backbone's input size (an image side; a modality without one ignores it).
    """

    #: Name used in ``LabelledData.modality`` and the registry.
    name: str = ""

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

    @abstractmethod
    def to_model_input(self, batch: Any) -> Any:
        """A batch from ``dataset(raw=True)`` as the model takes it (identity when already so)."""


__all__ = ["Modality"]
