"""A realistic fake run directory (every file the report reads), written without TensorFlow."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

CLASS_NAMES = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
LEADERBOARD = [
    # rank, name, input_size, params, feature_dim, score, std, val, test, feature_s, cached, score_logme
    (1, "efficientnet_lite2", 260, 4_652_008, 1280, 0.912, 0.021, 0.905, 0.897, 41.23, False, -0.412),
    (2, "efficientnet_lite1", 240, 3_371_304, 1280, 0.894, 0.018, 0.881, 0.874, 33.71, True, -0.498),
    (3, "efficientnet_lite0", 224, 2_829_704, 1280, 0.871, 0.025, 0.862, 0.861, 20.05, True, -0.553),
    (4, "mobilenet_v3_small", 224, 1_529_968, 1024, 0.803, 0.031, 0.79, 0.783, 9.47, False, -0.802),
]
TRIALS = [
    # trial_id, backbone, unfreeze, lr, patience, dropout, val, epochs, seconds, status
    (0, "efficientnet_lite2", 1, 3.2e-4, 3, 0.2, 0.921, 9, 120.44, "ok"),
    (1, "efficientnet_lite1", 0, 1.1e-4, 2, 0.1, 0.903, 7, 80.1, "ok"),
    (2, "efficientnet_lite2", 3, 5.5e-5, 4, 0.35, 0.938, 12, 171.9, "ok"),
    (3, "efficientnet_lite1", 2, 8.0e-4, 3, 0.0, 0.874, 5, 66.2, "ok"),
    (4, "efficientnet_lite2", 2, 2.0e-5, 2, 0.45, None, 1, 12.0, "failed"),
]


def write_fake_run(
    run_dir: Path,
    *,
    class_names: list[str] | None = None,
    finetune_beats_probe: bool = True,
    files: set[str] | None = None,
) -> Path:
    """Write a complete run directory; ``files`` limits which ones (e.g. ``{"leaderboard.csv", "data.json"}``)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    names = class_names or CLASS_NAMES
    k = len(names)
    counts = {n: 60 + 7 * i for i, n in enumerate(names)}
    total = sum(counts.values())
    want: Callable[[str], bool] = (lambda f: True) if files is None else (lambda f: f in files)

    def dump(name: str, obj: Any) -> None:
        if want(name):
            (run_dir / name).write_text(json.dumps(obj, indent=2), encoding="utf-8")

    dump("config.json", {
        "data": {"source": "/data/flowers", "val_fraction": 0.15, "test_fraction": 0.15},
        "search_space": {"name": "offline-efficientnet-lite", "candidates": [r[1] for r in LEADERBOARD]},
        "probe": {"scorer": "linear_probe", "extra_scorers": ["logme"], "top_k": 2},
        "tuning": {"backend": "optuna", "max_trials": 5, "learning_rate": [1e-5, 1e-3], "unfreeze_blocks": [0, 3]},
        "export": {"model_name": "flowers"},
        "seed": 42,
    })
    n_test = int(total * 0.15)
    n_val = int(total * 0.15)
    dump("data.json", {
        "source": "/data/flowers", "num_items": total, "num_classes": k, "class_names": names,
        "class_counts": counts, "modality": "image",
        "split_sizes": {"train": total - n_val - n_test, "val": n_val, "test": n_test},
    })
    if want("leaderboard.csv"):
        header = ("rank,name,handle,input_size,params,feature_dim,score,std,scorer,feature_seconds,"
                  "score_seconds,cached,val_accuracy,test_accuracy,score_logme\n")
        rows = "".join(
            f"{r},{n},zoo://{n}/feature_vector,{s},{p},{d},{sc},{sd},linear_probe,{fs},1.5,{c},{v},{t},{lm}\n"
            for r, n, s, p, d, sc, sd, v, t, fs, c, lm in LEADERBOARD
        )
        (run_dir / "leaderboard.csv").write_text(header + rows, encoding="utf-8")
    if want("trials.csv"):
        header = "trial_id,backbone,unfreeze_blocks,learning_rate,patience,dropout,val_accuracy,epochs,seconds,status\n"
        rows = "".join(",".join("" if x is None else str(x) for x in t) + "\n" for t in TRIALS)
        (run_dir / "trials.csv").write_text(header + rows, encoding="utf-8")
    dump("best.json", {
        "backbone": "efficientnet_lite2", "trial_id": 2, "val_accuracy": 0.938,
        "config": {"unfreeze_blocks": 3, "learning_rate": 5.5e-5, "patience": 4, "dropout": 0.35},
    })
    # A mostly diagonal confusion matrix whose rows sum to the test split size.
    cm = [[0] * k for _ in range(k)]
    per = n_test // k
    for i in range(k):
        cm[i][i] = per - (i % 3)
        cm[i][(i + 1) % k] = i % 3
    acc, probe = (0.9342, 0.8971) if finetune_beats_probe else (0.8712, 0.8971)
    dump("test_metrics.json", {
        "accuracy": acc, "macro_f1": acc - 0.006, "confusion_matrix": cm, "class_names": names,
        "probe_test_accuracy": probe, "probe_backbone": "efficientnet_lite2",
        "finetune_beats_probe": finetune_beats_probe,
        "verdict": None if not finetune_beats_probe else
        f"fine-tuning beat the best linear probe by {(acc - probe) * 100:.1f} pp",
    })
    dump("timings.json", {"data": 2.31, "probe": 104.46, "tune": 450.62, "evaluate": 6.04, "export": 18.7})
    if want("export/"):
        version = run_dir / "export" / "flowers" / "3"
        (version / "assets").mkdir(parents=True, exist_ok=True)
        (version / "assets.extra").mkdir(parents=True, exist_ok=True)
        (run_dir / "export" / "flowers" / "1").mkdir(exist_ok=True)  # an older version, not the one to serve
        (version / "assets" / "labels.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
        (version / "assets.extra" / "tf_serving_warmup_requests").write_bytes(b"\x00")
        (version / "saved_model.pb").write_bytes(b"")
        # The exporter records its signatures here; the report reads them instead of the protobuf.
        (version / "autotransfer_export.json").write_text(json.dumps({"signatures": {
            "serving_default": {"inputs": {"images": {"dtype": "float32", "shape": [None, 260, 260, 3]}},
                                "outputs": {"probabilities": {"dtype": "float32", "shape": [None, k]},
                                            "class_ids": {"dtype": "int64", "shape": [None]}}},
            "serving_bytes": {"inputs": {"image_bytes": {"dtype": "string", "shape": [None]}},
                              "outputs": {"probabilities": {"dtype": "float32", "shape": [None, k]},
                                          "classes": {"dtype": "string", "shape": [None]}}},
        }}), encoding="utf-8")
    return run_dir


@pytest.fixture
def fake_run(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``fake_run(**kwargs)`` writes a fake run directory under ``tmp_path`` and returns it."""
    counter = iter(range(1000))

    def make(**kwargs: Any) -> Path:
        return write_fake_run(tmp_path / f"run{next(counter)}", **kwargs)

    return make
