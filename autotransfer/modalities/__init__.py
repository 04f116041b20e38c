"""One preprocessor per modality: how a dataset's items become a model's inputs.

The seam of keras-hub's Preprocessor: ``plan/``, ``probe/``, ``train/``, ``final/``, ``evaluate/``
and ``export/`` ask the data's modality (``LabelledData.modality``) for its tf.data pipeline, input
spec, Keras input, serving signatures and how an item shows in the report, and hold no code of
their own about pixels or strings. A modality is
registered by name here; its module (which may import TensorFlow) loads on first use.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from autotransfer.errors import UserInputError

if TYPE_CHECKING:
    from autotransfer.modalities.base import Modality

#: name -> "module:class" of its preprocessor.
_REGISTRY: dict[str, str] = {"image": "autotransfer.modalities.image:ImageModality",
                             "text": "autotransfer.modalities.text:TextModality"}
_LOADED: dict[str, "Modality"] = {}


def get(name: str) -> "Modality":
    """The preprocessor of modality ``name`` (one shared instance; preprocessors hold no state)."""
    if name not in _LOADED:
        if name not in _REGISTRY:
            raise UserInputError(f"Unknown modality {name!r}; known: {', '.join(sorted(_REGISTRY))}.")
        module, cls = _REGISTRY[name].split(":")
        _LOADED[name] = getattr(importlib.import_module(module), cls)()
    return _LOADED[name]


def for_data(data: Any) -> "Modality":
    """The preprocessor of ``data``'s items (``data.modality``; image when it has none)."""
    return get(getattr(data, "modality", "image"))


def for_backbone(backbone: Any) -> "Modality":
    """The preprocessor of what ``backbone`` takes (``backbone.modality``; image when it has none)."""
    return get(getattr(backbone, "modality", "image"))


def for_model(model: Any) -> "Modality":
    """The preprocessor of what a Keras ``model`` takes: text for string inputs, else image."""
    dtype = str(getattr(model.inputs[0], "dtype", ""))
    return get("text" if "string" in dtype else "image")


__all__ = ["for_backbone", "for_data", "for_model", "get"]
