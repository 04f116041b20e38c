"""End to end through the CLI: a run goes on past per-item data problems and records them; --strict
stops it; --max-pixels is checked like every flag (the per-kind checks are in tests/data/test_data_skips.py)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

_TUNING = {"unfreeze_blocks": [0, 1], "learning_rate": [1.0e-3, 1.0e-2], "head_epochs": 2, "max_epochs": 2,
           "patience": [1, 1], "batch_size": 16}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autotransfer.cli", "run", *args], capture_output=True, text=True,
                          timeout=600)


def test_cli_run_skips_bad_items_and_records_them(tiny_modules, pattern_folder, tmp_path: Path) -> None:
    from autotransfer.testing import write_tiny_space

    data = Path(shutil.copytree(pattern_folder, tmp_path / "data"))
    first = sorted((data / "a").glob("*.png"))
    for i, p in enumerate(first[:2]):
        (data / "b" / f"cut{i}.png").write_bytes(p.read_bytes()[:60])
    shutil.copy(first[2], data / "a" / "copy.png")
    space = write_tiny_space(tmp_path / "space.yaml", {"good": tiny_modules["good"]}, _TUNING)
    args = [str(data), "-s", str(space), "--max-trials", "1", "--top-k", "1", "--ensemble", "1", "--no-tta"]
    proc = _cli(*args, "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "data: skipped 3 items (2 truncated, 1 duplicate)" in proc.stderr
    info = json.loads((tmp_path / "run" / "data.json").read_text())
    assert info["skipped_counts"] == {"truncated": 2, "duplicate": 1} and info["num_items"] == 64
    assert {os.path.basename(s["item"]) for s in info["skipped"]} == {"cut0.png", "cut1.png", "copy.png"}
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Skipped items" in html and "copy.png" in html and "2 truncated, 1 duplicate" in html

    strict = _cli(*args, "--out", str(tmp_path / "strict"), "--strict")
    assert strict.returncode == 2 and "Traceback" not in strict.stderr
    line = strict.stderr.strip()
    assert "\n" not in line and "3 item(s) cannot be used (2 truncated, 1 duplicate)" in line and "cut0.png" in line
    assert "drop --strict" in line and not (tmp_path / "strict" / "data.json").exists()


def test_cli_max_pixels_flag_is_checked(pattern_folder, tmp_path: Path) -> None:
    proc = _cli(str(pattern_folder), "--out", str(tmp_path / "run"), "--max-pixels", "0")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --max-pixels must be a positive integer. Got 0 instead."
