"""Small data through ``autotransfer.run``: every label trains the export, a given test split none."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from autotransfer.testing import write_tiny_space

pytestmark = pytest.mark.slow  # end-to-end runs

SPACE = {"unfreeze_blocks": [1, 2], "learning_rate": [1.0e-3, 1.0e-2], "head_epochs": 3, "max_epochs": 2,
         "patience": [1, 1], "batch_size": 16}


@pytest.fixture(scope="module")
def csv_with_test(pattern_folder, tmp_path_factory):
    paths = sorted(p for p in pattern_folder.rglob("*.png"))
    rows = pd.DataFrame({"path": [str(p) for p in paths], "label": [p.parent.name for p in paths]})
    rows["split"] = ["test" if i % 4 == 0 else "train" for i in range(len(rows))]
    csv = tmp_path_factory.mktemp("csv") / "data.csv"
    rows.to_csv(csv, index=False)
    return csv, rows


@pytest.fixture(scope="module")
def cv_run(tiny_modules, csv_with_test, tmp_path_factory):
    import autotransfer

    space = write_tiny_space(tmp_path_factory.mktemp("space") / "tiny.yaml",
                             {n: tiny_modules[n] for n in ("medium", "good")}, SPACE)
    csv, _ = csv_with_test
    return autotransfer.run(csv, search_space=space, out=tmp_path_factory.mktemp("run") / "cv", max_trials=3,
                            top_k=2, tuner="optuna", seed=0, time_budget="10m", progress=False)


def test_every_labelled_row_trains_the_export_and_the_test_split_none(cv_run, csv_with_test):
    _, rows = csv_with_test
    run_dir = cv_run.run_dir
    splits = json.loads((run_dir / "splits.json").read_text())
    test = np.flatnonzero(rows["split"] == "test")
    labelled = np.flatnonzero(rows["split"] != "test")
    folds = [np.asarray(f) for f in splits["folds"]]
    assert np.array_equal(np.sort(np.concatenate(folds)), labelled)
    assert np.array_equal(np.asarray(splits["test"]), test)
    assert not set(test) & set(np.concatenate(folds).tolist())
    final = json.loads((run_dir / "final_model.json").read_text())
    assert final["refit"]
    for m in final["members"]:
        assert m["refit_note"].startswith(f"refit on {len(labelled)} items"), m
    metrics = cv_run.test_metrics
    assert metrics["split"] == "test" and metrics["num_test"] == len(test)
    assert metrics["cv_estimate"]["num_labelled"] == len(labelled)
    lo, hi = metrics["cv_estimate"]["accuracy_ci95"]
    assert lo <= metrics["cv_estimate"]["accuracy"] <= hi


def test_member_weights_are_the_selection_on_the_saved_out_of_fold_predictions(cv_run):
    from autotransfer.final.ensemble import scaled_selection

    run_dir = cv_run.run_dir
    oof = np.load(run_dir / "final" / "oof.npz")
    splits = json.loads((run_dir / "splits.json").read_text())
    labelled = np.sort(np.concatenate([np.asarray(f) for f in splits["folds"]]))
    assert np.array_equal(np.sort(oof["rows"]), labelled)
    pool = {k.replace("_", " ") if k.startswith("trial_") else k: oof[k] for k in oof.files
            if k not in ("labels", "rows", "folds")}
    assert all(len(p) == len(labelled) for p in pool.values())
    choice, _ = scaled_selection(pool, oof["labels"], max_members=4, seed=0)
    final = json.loads((run_dir / "final_model.json").read_text())
    assert {m["name"]: pytest.approx(m["weight"]) for m in final["members"]} == choice.weights


def test_without_a_test_split_the_score_is_the_cross_validated_estimate(tiny_modules, pattern_folder, tmp_path):
    import autotransfer

    space = write_tiny_space(tmp_path / "tiny.yaml", {"good": tiny_modules["good"]}, SPACE)
    r = autotransfer.run(pattern_folder, search_space=space, out=tmp_path / "run", max_trials=1, tuner="optuna",
                         seed=0, progress=False)
    m = r.test_metrics
    assert m["split"] == "cv" and m["num_test"] == 64 and m["cv_estimate"]["folds"] == 5
    assert "Cross-validated estimate" in m["note"]
    splits = json.loads((r.run_dir / "splits.json").read_text())
    assert splits["test"] == [] and sum(len(f) for f in splits["folds"]) == 64
    off = autotransfer.run(pattern_folder, search_space=space, out=tmp_path / "off", max_trials=1, tuner="optuna",
                           seed=0, progress=False, cv="off")
    assert off.test_metrics["split"] == "test" and "folds" not in json.loads((off.run_dir / "splits.json").read_text())
