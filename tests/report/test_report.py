"""The HTML report: rendered from run-directory files alone, self-contained, escaped, partial-run aware."""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from autotransfer.report import render_report

CLASSES = ["cat", "dog", "<script>alert(1)</script>"]


def _write_run(run_dir: Path, *, full: bool = True) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "data.json").write_text(json.dumps({
        "source": "image folder /data/pets", "num_items": 90, "num_classes": 3, "class_names": CLASSES,
        "class_counts": {c: 30 for c in CLASSES}, "modality": "image",
        "split_sizes": {"train": 63, "val": 13, "test": 14}}))
    pd.DataFrame([
        {"rank": 1, "name": "alpha_net", "handle": "zoo://a/feature_vector", "input_size": 224, "params": 3_400_000,
         "feature_dim": 1280, "score": 0.91, "std": 0.02, "scorer": "linear", "score_knn": 0.85, "score_logme": 1.2,
         "val_accuracy": 0.9, "test_accuracy": 0.86, "feature_seconds": 12.5, "cached": False, "status": "ok"},
        {"rank": 2, "name": "beta_net", "handle": "zoo://b/feature_vector", "input_size": 240, "params": 4_200_000,
         "feature_dim": 1280, "score": 0.88, "std": 0.03, "scorer": "linear", "score_knn": 0.8, "score_logme": 1.1,
         "val_accuracy": 0.85, "test_accuracy": 0.84, "feature_seconds": 14.0, "cached": False, "status": "ok"},
        {"rank": 3, "name": "gamma_net", "handle": "/bad", "input_size": 224, "params": None, "feature_dim": None,
         "score": None, "std": None, "scorer": "linear", "status": "failed: BackboneError: no saved_model.pb"},
    ]).to_csv(run_dir / "leaderboard.csv", index=False)
    if not full:
        return run_dir
    pd.DataFrame([
        {"trial_id": 0, "backbone": "alpha_net", "unfreeze_blocks": 2, "learning_rate": 3e-4, "patience": 3,
         "dropout": 0.1, "val_accuracy": 0.92, "epochs": 9, "seconds": 40.0, "status": "ok"},
        {"trial_id": 1, "backbone": "beta_net", "unfreeze_blocks": 0, "learning_rate": 1e-4, "patience": 2,
         "dropout": 0.3, "val_accuracy": 0.85, "epochs": 5, "seconds": 12.0, "status": "pruned"},
    ]).to_csv(run_dir / "trials.csv", index=False)
    (run_dir / "best.json").write_text(json.dumps({"backbone": "alpha_net", "trial_id": 0, "val_accuracy": 0.92,
                                                   "config": {"unfreeze_blocks": 2, "learning_rate": 3e-4}}))
    (run_dir / "test_metrics.json").write_text(json.dumps({
        "accuracy": 0.9286, "macro_f1": 0.925, "confusion_matrix": [[5, 0, 0], [1, 4, 0], [0, 0, 4]],
        "class_names": CLASSES, "num_test": 14, "probe_test_accuracy": 0.8571, "probe_backbone": "alpha_net",
        "finetune_beats_probe": True,
        "verdict": "Fine-tuning beat the best linear probe by 7.1 pp on the test split."}))
    (run_dir / "timings.json").write_text(json.dumps({"probe": 30.2, "tune": 95.0, "export": 4.1, "total": 131.0}))
    (run_dir / "config.json").write_text(json.dumps({"tuner": "keras-tuner", "top_k": 2, "seed": 0}))
    version = run_dir / "export" / "pets" / "1"
    (version / "assets").mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"")
    (version / "assets" / "labels.txt").write_text("\n".join(CLASSES))
    (version / "autotransfer_export.json").write_text(json.dumps({"signatures": {
        "serving_default": {"inputs": {"images": {"dtype": "float32", "shape": [None, 224, 224, 3]}},
                            "outputs": {"probabilities": {"dtype": "float32", "shape": [None, 3]}}},
        "serving_bytes": {"inputs": {"image_bytes": {"dtype": "string", "shape": [None]}},
                          "outputs": {"label": {"dtype": "string", "shape": [None]}}}}}))
    return run_dir


class _Checker(HTMLParser):
    VOID = {"br", "img", "meta", "link", "hr", "input", "col", "source", "wbr", "area", "base", "embed", "param", "track"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if tag in self.stack:
            while self.stack and self.stack.pop() != tag:
                pass
        else:
            self.errors.append(f"stray </{tag}>")


@pytest.fixture()
def full_run(tmp_path):
    return _write_run(tmp_path / "run")


def test_full_report_shows_why_the_winner_won(full_run):
    html = render_report(full_run).read_text()
    assert (full_run / "report.html").is_file()
    for text in ("alpha_net", "beta_net", "gamma_net", "92.9%", "85.7%", "Fine-tuning beat the best linear probe",
                 "serving_bytes", "serving_default", "docker run", "cat", "dog", "BackboneError"):
        assert text in html, text


def test_report_is_self_contained_and_escaped(full_run):
    html = render_report(full_run).read_text()
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url\(\s*['"]?([^'")]+)""", html)
    external = [r for pair in refs for r in pair if r and re.match(r"^(https?:)?//", r)]
    assert external == []
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    checker = _Checker()
    checker.feed(html)
    assert checker.errors == []


def test_partial_run_renders_and_names_missing_stages(tmp_path):
    run = _write_run(tmp_path / "partial", full=False)
    html = render_report(run).read_text()
    assert "alpha_net" in html
    for stage in ("tune", "evaluate", "export"):
        assert re.search(rf"{stage}[^<]*</", html), stage
    assert re.search(r"not run|did not run|missing", html, re.I)


def test_missing_run_dir_is_a_clear_user_error(tmp_path):
    from autotransfer.errors import UserInputError

    with pytest.raises(UserInputError, match="nope"):
        render_report(tmp_path / "nope")
