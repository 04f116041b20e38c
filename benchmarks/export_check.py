"""Check a run's exported SavedModel as TF Serving would use it.

Usage: python benchmarks/export_check.py RUN_DIR   (from the directory the run was started in)
Reloads the latest export with tf.saved_model.load, sends the run's test images PNG-encoded through
`serving_bytes` (as PredictRequests built with tensorflow-serving-api, and as a REST b64 body) and
the same decoded pixels through `serving_default`, and prints the max |diff| of the probabilities
(target < 1e-5) and the accuracy on the test split.
"""
from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

from autotransfer.data import decode_image_bytes
from autotransfer.export import load_exported, make_predict_request, rest_to_request, run_predict_request


def main(run_dir: Path) -> None:
    version_dir = max((p for p in (run_dir / "export").glob("*/*") if p.name.isdigit()), key=lambda p: int(p.name))
    meta = json.loads((version_dir / "autotransfer_export.json").read_text())
    size = meta["input_size"]
    splits = json.loads((run_dir / "splits.json").read_text())
    files = sorted(p for p in Path(json.loads((run_dir / "data.json").read_text())["source"].split(" ", 2)[-1]).rglob("*.png"))
    test = [files[i] for i in splits["test"]]
    # PNG bytes of the test images exactly as stored on disk.
    blobs = [p.read_bytes() for p in test]
    loaded = load_exported(version_dir)
    name = version_dir.parent.name
    by_bytes = run_predict_request(loaded, make_predict_request(blobs, model_name=name, signature_name="serving_bytes"))
    pixels = np.stack([decode_image_bytes(tf.constant(b), size).numpy() for b in blobs])
    by_pixels = run_predict_request(loaded, make_predict_request(pixels, model_name=name))
    rest = {"signature_name": "serving_bytes", "instances": [{"b64": base64.b64encode(b).decode()} for b in blobs]}
    by_rest = run_predict_request(loaded, rest_to_request(rest, model_name=name))
    labels = np.array([p.parent.name for p in test])
    print(f"export {version_dir} ({len(test)} PNG test images, input {size}px)")
    print(f"max |p_bytes - p_default| = {np.abs(by_bytes['probabilities'] - by_pixels['probabilities']).max():.2e}")
    print(f"max |p_rest - p_bytes|    = {np.abs(by_rest['probabilities'] - by_bytes['probabilities']).max():.2e}")
    print(f"labels agree (bytes vs default): {np.array_equal(by_bytes['label'], by_pixels['label'])}")
    print(f"test accuracy through serving_bytes: {np.mean(by_bytes['label'].astype(str) == labels):.4f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
