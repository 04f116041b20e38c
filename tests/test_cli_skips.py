"""End to end through the CLI: a run goes on past per-item data problems and records them; --strict
stops it; --max-pixels is checked like every flag (the per-kind checks are in tests/data/test_data_skips.py)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow  # end-to-end runs through the CLI

_TUNING = {"unfreeze_blocks": [0, 1], "learning_rate": [1.0e-3, 1.0e-2], "head_epochs": 2, "max_epochs": 2,
           "patience": [1, 1], "batch_size": 16}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autotransfer.cli", "run", *args], capture_output=True, text=True,
                          timeout=600)


def test_cli_run_skips_bad_items_and_records_them(tiny_modules, pattern_folder, tmp_path: Path) -> None:
    from autotransfer.testing import write_tiny_space

    data = Path(shutil.copytree(pattern_folder, tmp_path / "data"))
    first = sorted((data / "a").glob("*.png"))
    (data / "b" / "cut0.png").write_bytes(first[0].read_bytes()[:60])
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "x.jpg")
    jpeg = (tmp_path / "x.jpg").read_bytes()
    (data / "b" / "cut1.jpg").write_bytes(jpeg[: len(jpeg) * 2 // 3])  # cut inside its entropy-coded data
    shutil.copy(first[2], data / "a" / "copy.png")
    (data / "a" / "nested").mkdir()
    os.symlink(data / "a", data / "a" / "nested" / "loop")  # a link back up: walked once, not forever
    space = write_tiny_space(tmp_path / "space.yaml", {"good": tiny_modules["good"]}, _TUNING)
    args = [str(data), "-s", str(space), "--max-trials", "1", "--top-k", "1", "--ensemble", "1", "--no-tta"]
    proc = _cli(*args, "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "data: skipped 4 items (2 truncated, 1 duplicate, 1 link loop)" in proc.stderr
    info = json.loads((tmp_path / "run" / "data.json").read_text())
    assert info["skipped_counts"] == {"truncated": 2, "duplicate": 1, "link_loop": 1} and info["num_items"] == 64
    assert {os.path.basename(s["item"]) for s in info["skipped"]} == {"cut0.png", "cut1.jpg", "copy.png", "loop"}
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Skipped items" in html and "cut1.jpg" in html and "2 truncated, 1 duplicate, 1 link loop" in html

    strict = _cli(*args, "--out", str(tmp_path / "strict"), "--strict")
    assert strict.returncode == 2 and "Traceback" not in strict.stderr
    line = strict.stderr.strip()
    assert "\n" not in line and "4 item(s) cannot be used (2 truncated, 1 duplicate, 1 link loop)" in line
    assert "cut0.png" in line and "drop --strict" in line and not (tmp_path / "strict" / "data.json").exists()


def test_cli_strict_csv_names_conflicts_leakage_and_paths_outside(pattern_folder, tmp_path: Path) -> None:
    files = sorted(pattern_folder.glob("*/*.png"))
    data = Path(shutil.copytree(pattern_folder, tmp_path / "data"))
    rows = [f"{p.parent.name}/{p.name},{p.parent.name},{'test' if i % 5 == 0 else 'train'}" for i, p in enumerate(files)]
    twice, train = files[1], files[2]  # rows 2 and 3: both in train
    rows += [f"{twice.parent.name}/{twice.name},other,train",         # one file under two labels
             f"{train.parent.name}/leak.png,{train.parent.name},test",  # a train image's copy in test
             "../outside.png,a,train"]                                # leaves the CSV's folder
    shutil.copy(train, data / train.parent.name / "leak.png")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "outside.png")
    (data / "data.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    proc = _cli(str(data / "data.csv"), "--out", str(tmp_path / "run"), "--strict")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = proc.stderr.strip()
    assert "\n" not in line and "cannot be used (2 conflict, 1 leakage, 1 outside root)" in line, line
    assert not (tmp_path / "run").exists()  # refused before the run directory was written


def test_cli_max_pixels_flag_is_checked(pattern_folder, tmp_path: Path) -> None:
    proc = _cli(str(pattern_folder), "--out", str(tmp_path / "run"), "--max-pixels", "0")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --max-pixels must be a positive integer. Got 0 instead."
