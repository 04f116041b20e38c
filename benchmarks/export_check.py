"""Check a run's exported SavedModel as TF Serving would use it, and what an ensemble costs.

Usage: python benchmarks/export_check.py RUN_DIR [--latency-repeats N]
  (from the directory the run was started in)
Reloads the latest export with tf.saved_model.load, sends the run's test images PNG-encoded through
`serving_bytes` (as PredictRequests built with tensorflow-serving-api, and as a REST b64 body) and
the same decoded pixels through `serving_default`, and prints the max |diff| of the probabilities
(target < 1e-5) and the accuracy on the test split. Then the batch-1 latency of `serving_bytes`
(median of N requests of one PNG) for the export and, when it is an ensemble, for its heaviest
member exported alone (rebuilt from `final/member_<i>.weights.h5`): the price of averaging.
"""
from __future__ import annotations

import argparse
import base64
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from autotransfer.data import decode_image_bytes
from autotransfer.export import export_model, load_exported, make_predict_request, rest_to_request, run_predict_request


def batch1_latency_ms(loaded, blob: bytes, repeats: int) -> float:
    request = make_predict_request([blob], model_name="m", signature_name="serving_bytes")
    run_predict_request(loaded, request)  # warm-up (tracing)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run_predict_request(loaded, request)
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def main(run_dir: Path, repeats: int) -> None:
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
    sizes = meta.get("member_input_sizes", [size])
    print(f"export {version_dir} ({len(test)} PNG test images, input {size}px, member sizes {sizes})")
    print(f"max |p_bytes - p_default| = {np.abs(by_bytes['probabilities'] - by_pixels['probabilities']).max():.2e}"
          + ("  (members at other sizes see a resize of the largest in serving_default)" if len(sizes) > 1 else ""))
    print(f"max |p_rest - p_bytes|    = {np.abs(by_rest['probabilities'] - by_bytes['probabilities']).max():.2e}")
    print(f"labels agree (bytes vs default): {np.array_equal(by_bytes['label'], by_pixels['label'])}")
    print(f"test accuracy through serving_bytes: {np.mean(by_bytes['label'].astype(str) == labels):.4f}")
    export_ms = batch1_latency_ms(loaded, blobs[0], repeats)
    print(f"batch-1 serving_bytes latency, export: {export_ms:.1f} ms (median of {repeats})")
    final_file = run_dir / "final_model.json"
    members = json.loads(final_file.read_text())["members"] if final_file.is_file() else []
    if len(members) > 1 and all(m.get("weights_file") for m in members):
        from autotransfer.final.members import member_model

        heaviest = max(members, key=lambda m: m["weight"])
        model = member_model(run_dir, heaviest, len(meta["class_names"]))
        with tempfile.TemporaryDirectory() as tmp:
            single = export_model(model, class_names=meta["class_names"], input_size=heaviest["input_size"],
                                  export_dir=tmp, model_name="single")
            single_ms = batch1_latency_ms(load_exported(single), blobs[0], repeats)
        print(f"batch-1 serving_bytes latency, heaviest member alone ({heaviest['name']}, {heaviest['backbone']}): "
              f"{single_ms:.1f} ms -> the ensemble of {len(members)} costs {export_ms / single_ms:.2f}x")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--latency-repeats", type=int, default=30)
    a = p.parse_args()
    main(a.run_dir, a.latency_repeats)
