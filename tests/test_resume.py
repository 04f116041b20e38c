"""Interrupted runs: kill -9 or Ctrl-C during tuning, then ``--resume`` (CLI, tiny generated modules)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from autotransfer.probe.cache import ENV_VAR
from autotransfer.testing import write_tiny_space

pytestmark = pytest.mark.slow  # end-to-end runs

MAX_TRIALS = 4
# Statuses of a trial the study counts as done (a "repeat" reports the reverted trial it repeats).
FINISHED = ["ok", "pruned", "timeout", "repeat"]


@pytest.fixture(scope="module")
def space(tiny_modules, tmp_path_factory):
    return write_tiny_space(tmp_path_factory.mktemp("space") / "tiny.yaml",
                            {n: tiny_modules[n] for n in ("medium", "good")},
                            {"unfreeze_blocks": [0, 2], "learning_rate": [1.0e-3, 1.0e-2], "head_epochs": 3,
                             "max_epochs": 3, "patience": [1, 2], "batch_size": 16})


@pytest.fixture(scope="module")
def folder(pattern_folder):
    return pattern_folder


def _command(folder: Path, space: Path, out: Path, tuner: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "autotransfer.cli", "run", str(folder), "--search-space", str(space), "--out", str(out),
            "--tuner", tuner, "--max-trials", str(MAX_TRIALS), "--seed", "0", "--ensemble", "1", *extra]


def _records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "trials").glob("*/record.json"))]


def _env(out: Path) -> dict[str, str]:
    # A feature cache of the run's own: the cold probe really computes its features.
    return {**os.environ, "PYTHONUNBUFFERED": "1", ENV_VAR: str(out.parent / "features")}


def _start_and_signal(cmd: list[str], out: Path, sig: int, *, after: int, delay: float = 0.0) -> subprocess.CompletedProcess:
    """Start ``cmd`` and send ``sig`` ``delay`` s after ``after`` trials are finished (the next is running)."""
    env = _env(out)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if sum(r["status"] == "ok" for r in _records(out)) >= after:
            time.sleep(delay)
            proc.send_signal(sig)
            break
        time.sleep(0.02)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def _resume(cmd: list[str], out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=600, env=_env(out))


@pytest.mark.parametrize("tuner", ["keras-tuner", "optuna"])
def test_kill_9_in_the_third_trial_then_resume(tuner, space, folder, tmp_path):
    out = tmp_path / "run"
    cmd = _command(folder, space, out, tuner)
    killed = _start_and_signal(cmd, out, signal.SIGKILL, after=2)
    assert killed.returncode == -signal.SIGKILL
    assert sum(r["status"] == "ok" for r in _records(out)) == 2  # the third had not finished
    assert len(_records(out)) == 2
    assert not (out / "export").exists()
    cold_probe = json.loads((out / "timings.json").read_text())["probe"]

    resumed = _resume(cmd, out)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    trials = pd.read_csv(out / "trials.csv")
    done = trials[trials["status"].isin(FINISHED)]
    assert len(done) == MAX_TRIALS  # as many as an uninterrupted run: none lost, none extra
    assert done["trial_id"].is_unique  # no trial completed twice
    if tuner == "optuna":  # the study agrees with the trial store
        import optuna

        study = optuna.load_study(study_name="autotransfer", storage=f"sqlite:///{out / 'tuner' / 'optuna.db'}")
        finished = [t.number for t in study.trials if t.state.is_finished() and t.state.name != "FAIL"]
        assert sorted(finished) == sorted(done["trial_id"])
    timings = json.loads((out / "timings.json").read_text())
    assert timings["probe"] == cold_probe and timings["probe_resumed"] <= 0.05 * cold_probe  # no feature recomputed
    assert (out / "export").is_dir() and (out / "report.html").is_file()
    best = json.loads((out / "best.json").read_text())
    assert Path(best["weights"]).is_file()


def test_ctrl_c_saves_says_resume_and_exports_nothing(space, folder, tmp_path):
    out = tmp_path / "run"
    cmd = _command(folder, space, out, "optuna")
    # 0.8 s: past the finished trial's bookkeeping, inside the next trial (they take >= 1.3 s here)
    stopped = _start_and_signal(cmd, out, signal.SIGINT, after=1, delay=0.8)
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    lines = [line for line in stopped.stderr.splitlines() if "--resume" in line]
    assert len(lines) == 1 and lines[0].startswith("interrupted:") and "Traceback" not in stopped.stderr
    assert not (out / "export").exists()
    assert [r["status"] for r in _records(out)].count("interrupted") == 1

    resumed = _resume(cmd, out)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    trials = pd.read_csv(out / "trials.csv")
    assert trials["status"].isin(FINISHED).sum() == MAX_TRIALS and (out / "export").is_dir()
    rerun = trials[trials["status"] == "interrupted"]
    assert len(rerun) == 1  # it ran again under a new trial number, with the same parameters
    same = trials[(trials["learning_rate"] == rerun["learning_rate"].iloc[0]) & (trials["status"] != "interrupted")]
    assert len(same) == 1


def test_resume_refuses_changed_inputs_and_missing_runs(space, folder, tmp_path, tiny_modules):
    from autotransfer.errors import UserInputError
    from autotransfer.resume import check_resumable

    with pytest.raises(UserInputError, match="holds no earlier run"):
        check_resumable(tmp_path / "nothing", tuner="optuna", data_fingerprint="x", splits={}, space={})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"tuner": "optuna", "search_space_resolved": {"a": 1}}))
    (run_dir / "data.json").write_text(json.dumps({"fingerprint": "f1"}))
    (run_dir / "splits.json").write_text(json.dumps({"train": [0]}))
    assert check_resumable(run_dir, tuner="optuna", data_fingerprint="f1", splits={"train": [0]}, space={"a": 1}) == {}
    with pytest.raises(UserInputError, match=r"the data \(its files or labels\), the search space"):
        check_resumable(run_dir, tuner="optuna", data_fingerprint="f2", splits={"train": [0]}, space={"a": 2})
    with pytest.raises(UserInputError, match="--tuner"):
        check_resumable(run_dir, tuner="keras-tuner", data_fingerprint="f1", splits={"train": [0]}, space={"a": 1})
    # Through the CLI: one line, exit 2.
    proc = subprocess.run([*_command(folder, space, tmp_path / "empty", "optuna"), "--resume"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "holds no earlier run" in proc.stderr
