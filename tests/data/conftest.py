"""Tiny generated images for the data-stage tests (Pillow, in tmp_path)."""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def save_image(path: Path, mode: str = "RGB", size: tuple[int, int] = (12, 10), seed: int | None = None,
               fmt: str | None = None) -> Path:
    """Write a random ``mode`` image of ``size`` (width, height) to ``path``; without a ``seed``, one
    from the file's folder and name, so that two files never share content by accident (load_data
    would skip the copies as duplicates)."""
    if seed is None:
        seed = zlib.crc32("/".join(path.parts[-2:]).encode())
    rng = np.random.default_rng(seed)
    w, h = size
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if mode == "RGB":
        img = Image.fromarray(rgb)
    elif mode == "L":
        img = Image.fromarray(rgb[..., 0])
    elif mode == "RGBA":
        img = Image.fromarray(np.dstack([rgb, rng.integers(0, 256, (h, w), dtype=np.uint8)]))
    elif mode == "P":
        img = Image.fromarray(rgb).convert("P")
    else:
        raise ValueError(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt)
    return path


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """cats: RGB/grey/RGBA/palette PNGs; dogs: JPEG, nested upper-case .JPG, GIF, BMP, WebP; plus junk."""
    root = tmp_path / "imgs"
    save_image(root / "cats" / "rgb.png", "RGB", seed=1)
    save_image(root / "cats" / "grey.png", "L", seed=2)
    save_image(root / "cats" / "rgba.png", "RGBA", seed=3)
    save_image(root / "cats" / "palette.png", "P", seed=4)
    save_image(root / "dogs" / "a.jpg", "RGB", seed=5)
    save_image(root / "dogs" / "deep" / "er" / "b.JPG", "RGB", seed=6, fmt="JPEG")
    save_image(root / "dogs" / "c.gif", "P", seed=7)
    save_image(root / "dogs" / "d.bmp", "RGB", seed=8)
    save_image(root / "dogs" / "e.webp", "RGB", seed=9)
    # Ignored: hidden file, hidden folder, non-image file, hidden class folder, loose root file.
    save_image(root / "dogs" / ".hidden.png", "RGB")
    save_image(root / "dogs" / ".cache" / "x.png", "RGB")
    (root / "dogs" / "notes.txt").write_text("not an image")
    save_image(root / ".ipynb_checkpoints" / "y.png", "RGB")
    save_image(root / "loose.png", "RGB")
    return root


@pytest.fixture
def make_image():
    """The ``save_image`` helper, as a fixture (importing from conftest is fragile)."""
    return save_image
