"""Signatures of an exported version, read from the exporter's ``autotransfer_export.json``.

The report must stay cheap to (re)render without importing TensorFlow, and the exporter already
records every signature's inputs and outputs beside the SavedModel.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EXPORT_METADATA = "autotransfer_export.json"  # == autotransfer.export.METADATA_FILE (no TF import here)


def read_signatures(version_dir: str | Path) -> list[dict[str, Any]] | None:
    """``[{name, inputs{name: {dtype, shape}}, outputs{...}}]`` sorted by name, or ``None`` if unknown."""
    path = Path(version_dir) / EXPORT_METADATA
    if not path.is_file():
        return None
    try:
        sigs = json.loads(path.read_text(encoding="utf-8")).get("signatures") or {}
    except (ValueError, AttributeError):
        return None
    return [{"name": name, "method": "tensorflow/serving/predict", **spec} for name, spec in sorted(sigs.items())]


def format_shape(shape: list[int | None] | None) -> str:
    """``[None, 384]`` -> ``(?, 384)`` (None: any size); unknown rank -> ``?``."""
    if shape is None:
        return "?"
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"
