"""Data stage: load/validate a labelled dataset, split it, and feed it to TensorFlow.

The image pipeline names (which import TensorFlow, a multi-second import) load lazily so that
``from autotransfer.data import load_data`` stays fast for the CLI's input checks.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autotransfer.data.dataset import LabelledData
from autotransfer.data.loaders import IMAGE_EXTENSIONS, load_data
from autotransfer.data.split import Splits, cv_folds, make_cv_splits, make_splits, subsample

if TYPE_CHECKING:
    from autotransfer.data.images import (
        check_images,
        decode_image_bytes,
        decode_image_sizes,
        image_dataset,
        resize_images,
        typical_image_side,
        unit_pixels,
        validate_images,
    )

_LAZY = {"image_dataset", "unit_pixels", "decode_image_bytes", "decode_image_sizes", "resize_images", "typical_image_side", "validate_images",
         "check_images"}

__all__ = [
    "IMAGE_EXTENSIONS",
    "LabelledData",
    "Splits",
    "check_images",
    "decode_image_bytes",
    "decode_image_sizes",
    "image_dataset",
    "load_data",
    "cv_folds",
    "make_cv_splits",
    "make_splits",
    "resize_images",
    "subsample",
    "typical_image_side",
    "unit_pixels",
    "validate_images",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from autotransfer.data import images

        return getattr(images, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
