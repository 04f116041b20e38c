"""A chief and two ``autotransfer worker`` processes on one Optuna study in a real PostgreSQL.

Needs ``AUTOTRANSFER_TEST_POSTGRES`` (a URL; ``.ci/run`` starts a server and sets it). Without it
the tests skip, unless ``AUTOTRANSFER_REQUIRE_POSTGRES=1`` (CI), where they fail.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pandas as pd
import pytest

from autotransfer.testing import write_tiny_space

pytestmark = pytest.mark.slow  # a PostgreSQL server and worker processes

MAX_TRIALS = 6
# Statuses of a trial the study counts as done (a "repeat" reports the reverted trial it repeats).
FINISHED = ["ok", "pruned", "timeout", "repeat"]
CLI = [sys.executable, "-m", "autotransfer.cli"]


@pytest.fixture(scope="module")
def postgres() -> str:
    url = os.environ.get("AUTOTRANSFER_TEST_POSTGRES")
    if not url:
        if os.environ.get("AUTOTRANSFER_REQUIRE_POSTGRES") == "1":
            pytest.fail("AUTOTRANSFER_REQUIRE_POSTGRES=1 but AUTOTRANSFER_TEST_POSTGRES is not set (see .ci/run)")
        pytest.skip("no PostgreSQL: set AUTOTRANSFER_TEST_POSTGRES (bash .ci/postgres.sh prints a URL)")
    return url


@pytest.fixture(scope="module")
def space(tiny_modules, tmp_path_factory):
    return write_tiny_space(tmp_path_factory.mktemp("space") / "tiny.yaml",
                            {n: tiny_modules[n] for n in ("medium", "good")},
                            {"unfreeze_blocks": [0, 2], "learning_rate": [1.0e-3, 1.0e-2], "head_epochs": 3,
                             "max_epochs": 4, "patience": [1, 3], "batch_size": 8})


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """More and larger images than the shared pattern folder: trials long enough (a few seconds)
    that the chief cannot finish the whole cap before both workers have joined."""
    from autotransfer.testing import write_image_folder
    from autotransfer.testing import pattern_images

    x, y = pattern_images(48, num_classes=4, size=24, seed=3)
    return write_image_folder(x, y, ["a", "b", "c", "d"], tmp_path_factory.mktemp("data") / "patterns")


def test_chief_and_two_workers_share_one_study(postgres, space, folder, tmp_path):
    import optuna

    study_name = f"test-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "chief"
    env = {**os.environ, "AUTOTRANSFER_CACHE_DIR": str(tmp_path / "features")}
    workers = [subprocess.Popen([*CLI, "worker", "--storage", postgres, "--study", study_name, "--wait", "240"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    chief = subprocess.run([*CLI, "run", str(folder), "--search-space", str(space), "--out", str(out), "--storage",
                            postgres, "--study", study_name, "--max-trials", str(MAX_TRIALS), "--ensemble", "1",
                            "--seed", "0", "--cv", "off"], capture_output=True, text=True, timeout=600, env=env)
    outputs = [w.communicate(timeout=300) for w in workers]
    assert chief.returncode == 0, chief.stderr[-3000:]
    for w, (_, err) in zip(workers, outputs):
        assert w.returncode == 0, err[-3000:]

    study = optuna.load_study(study_name=study_name, storage=postgres)
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == MAX_TRIALS  # the cap, exactly, with three processes asking
    assert all(t.user_attrs.get("surplus") for t in study.trials if t.state.name == "FAIL")
    assert len({t.number for t in finished}) == MAX_TRIALS  # every trial number completed once
    ran_by = {t.user_attrs["worker"] for t in finished}
    assert len(ran_by) >= 2, ([(t.number, t.user_attrs["worker"], t.datetime_start) for t in finished],
                              [err[-800:] for _, err in outputs])
    trials = pd.read_csv(out / "trials.csv")
    done = trials[trials["status"].isin(FINISHED)]
    assert sorted(done["trial_id"]) == sorted(t.number for t in finished)
    assert set(done["worker"]) == ran_by
    # Held-out selection (--cv off): the export is the study's best trial.
    best = json.loads((out / "best.json").read_text())
    assert best["val_accuracy"] == pytest.approx(study.best_value)
    final = json.loads((out / "final_model.json").read_text())
    assert [m["trial_id"] for m in final["members"]] == [best["trial_id"]]
    assert (out / "export").is_dir()


def test_keras_tuner_with_storage_and_a_worker_without_chief(postgres, space, folder, tmp_path):
    proc = subprocess.run([*CLI, "run", str(folder), "--search-space", str(space), "--out", str(tmp_path / "kt"),
                           "--storage", postgres, "--tuner", "keras-tuner"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "distributed tuning uses optuna" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([*CLI, "worker", "--storage", postgres, "--study", f"none-{uuid.uuid4().hex[:8]}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no chief has started it" in proc.stderr and "Traceback" not in proc.stderr
