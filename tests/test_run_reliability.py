"""End to end: broken candidates become failed rows, and a CSV without test rows is scored on val."""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from autotransfer.testing import write_broken_module, write_tiny_space

pytestmark = pytest.mark.slow  # end-to-end runs

TUNING = {"unfreeze_blocks": [0, 1], "learning_rate": [1.0e-3, 1.0e-2], "head_epochs": 2, "max_epochs": 2,
          "patience": [1, 1], "batch_size": 16}


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("broken")
    return {k: str(write_broken_module(root / k, k)) for k in ("nonfinite", "map", "flat_input")}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autotransfer.cli", "run", *args], capture_output=True, text=True,
                          timeout=600)


def test_run_goes_on_past_broken_candidates(broken, tiny_modules, pattern_folder, tmp_path):
    space = write_tiny_space(tmp_path / "space.yaml", {"map": broken["map"], "nonfinite": broken["nonfinite"],
                                                       "flat_input": broken["flat_input"],
                                                       "good": tiny_modules["good"]}, TUNING)
    run_dir = tmp_path / "run"
    proc = _cli(str(pattern_folder), "-s", str(space), "--out", str(run_dir), "--max-trials", "1", "--top-k", "2",
                "--ensemble", "1", "--no-tta")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert json.loads((run_dir / "best.json").read_text())["backbone"] == "good"
    assert any(p.name == "saved_model.pb" for p in (run_dir / "export").glob("*/*/saved_model.pb"))
    board = pd.read_csv(run_dir / "leaderboard.csv").set_index("name")
    assert board.loc["good", "status"] == "ok" and board.loc["good", "rank"] == 1
    assert "returns shape [1, 4, 4, 3]" in board.loc["map", "status"]
    assert "not finite" in board.loc["nonfinite", "status"]
    assert "it takes float32 [None, 10]" in board.loc["flat_input", "status"]
    html = (run_dir / "report.html").read_text()
    assert "returns shape [1, 4, 4, 3]" in html and "not finite (inf or NaN)" in html
    trials = pd.read_csv(run_dir / "trials.csv")
    assert set(trials["backbone"]) == {"good"} and (trials["status"] == "ok").all()


def test_only_broken_candidates_is_one_line_exit_2(broken, pattern_folder, tmp_path):
    space = write_tiny_space(tmp_path / "space.yaml", broken, TUNING)
    proc = subprocess.run([sys.executable, "-m", "autotransfer.cli", "run", str(pattern_folder), "-s", str(space),
                           "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: probe: every candidate failed (") and "Traceback" not in proc.stderr
    assert all(k in last for k in broken)


def test_csv_without_test_rows_is_scored_on_val_and_says_so(tiny_modules, pattern_folder, tmp_path):
    files = sorted(pattern_folder.glob("*/*.png"))
    rows = pd.DataFrame({"path": [str(p) for p in files], "label": [p.parent.name for p in files],
                         "split": ["val" if i % 4 == 0 else "train" for i in range(len(files))]})
    csv = tmp_path / "data.csv"
    rows.to_csv(csv, index=False)
    space = write_tiny_space(tmp_path / "space.yaml", {"good": tiny_modules["good"]}, TUNING)
    run_dir = tmp_path / "run"
    proc = _cli(str(csv), "-s", str(space), "--out", str(run_dir), "--max-trials", "1", "--top-k", "1",
                "--ensemble", "1", "--cv", "off")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "note: The data has no test split" in proc.stdout and "val accuracy:" in proc.stdout, proc.stdout
    metrics = json.loads((run_dir / "test_metrics.json").read_text())
    assert metrics["split"] == "val" and metrics["num_test"] == len(files) // 4
    assert "no test split" in metrics["note"] and metrics["model"] == "tuned" and metrics["refit"] is None
    assert metrics["probe_test_accuracy"] == pd.read_csv(run_dir / "leaderboard.csv")["val_accuracy"].max()
    assert "validation split" in metrics["verdict"] or "did not beat" in metrics["verdict"]
    assert list((run_dir / "export").glob("*/1/saved_model.pb"))
    assert "The data has no test split" in (run_dir / "report.html").read_text()
