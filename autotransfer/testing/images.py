"""Write arrays as a class-per-folder PNG image dataset (for tests, examples and benchmarks)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from autotransfer.data.images import _as_size
from autotransfer.errors import UserInputError


def write_image_folder(
    x: np.ndarray,
    y: np.ndarray,
    class_names: list[str],
    dest: str | os.PathLike,
    *,
    image_size: int | tuple[int, int] | None = None,
) -> Path:
    """Write arrays as PNGs in ``dest/<class_name>/<index>.png``; returns ``Path(dest)``.

    ``x``: ``[N,H,W]``/``[N,H,W,1]`` (written greyscale), ``[N,H,W,3]`` (RGB) or ``[N,H,W,4]``
    (RGBA); uint8, or float in [0, 1] (0..255 if max > 1.5, as in :func:`image_dataset`).
    ``y``: class ids indexing ``class_names``. ``image_size`` optionally resizes (bilinear,
    e.g. to upscale 8x8 digits) to ``size`` or ``(height, width)``.
    """
    from PIL import Image

    x = np.asarray(x)
    y = np.asarray(y, dtype=np.int64)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (3, 4)) or len(x) != len(y):
        raise UserInputError(
            f"write_image_folder: x has shape {x.shape} and y has {len(y)} labels; x must be "
            "[N,H,W] or [N,H,W,C] (C in 1, 3, 4) with one label per image."
        )
    for name in class_names:
        if not name or name.startswith(".") or "/" in name or os.sep in name:
            raise UserInputError(
                f"write_image_folder: class name {name!r} cannot be a folder name (empty, hidden "
                "or containing a path separator). Rename the class."
            )
    if x.dtype != np.uint8:
        scale = 1.0 if x.size and float(np.max(x)) > 1.5 else 255.0
        x = np.clip(np.round(x.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    size = None if image_size is None else _as_size(image_size)
    dest = Path(dest)
    for name in class_names:
        (dest / name).mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(len(x))))
    for i, (img, label) in enumerate(zip(x, y.tolist())):
        pil = Image.fromarray(img)
        if size is not None:
            pil = pil.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        pil.save(dest / class_names[label] / f"{i:0{width}d}.png")
    return dest


__all__ = ["write_image_folder"]
