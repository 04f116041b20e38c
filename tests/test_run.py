"""End to end on tiny generated modules whose quality order is known: good > medium > bad."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from autotransfer.testing import pattern_images, write_tiny_space

pytestmark = pytest.mark.slow  # end-to-end runs


@pytest.fixture(scope="module")
def tiny_space(tiny_modules, tmp_path_factory):
    # listed worst first: the order must come from the probe
    return write_tiny_space(tmp_path_factory.mktemp("space") / "tiny.yaml",
                            {n: tiny_modules[n] for n in ("bad", "medium", "good")},
                            {"unfreeze_blocks": [0, 2], "learning_rate": [1.0e-3, 1.0e-2], "head_epochs": 4,
                             "max_epochs": 3, "patience": [1, 2], "batch_size": 16})


@pytest.fixture(scope="module")
def result(tiny_space, pattern_folder, tmp_path_factory):
    import autotransfer

    out = tmp_path_factory.mktemp("run") / "tiny-run"
    # A fixed split (the small-data cross-validation has its own tests: test_crossval_run.py).
    return autotransfer.run(pattern_folder, search_space=tiny_space, out=out, max_trials=2, top_k=2,
                            tuner="optuna", seed=0, time_budget="10m", progress=False, cv="off")


def test_probe_ranks_by_construction_and_run_picks_best(result):
    assert list(result.leaderboard["name"]) == ["good", "medium", "bad"]
    assert result.best["backbone"] == "good"
    assert result.test_metrics["accuracy"] >= 0.75


def test_run_dir_holds_every_stage_file(result):
    for name in ("config.json", "plan.json", "data.json", "splits.json", "leaderboard.csv", "trials.csv", "best.json",
                 "test_metrics.json", "timings.json", "report.html"):
        assert (result.run_dir / name).is_file(), name
    metrics = json.loads((result.run_dir / "test_metrics.json").read_text())
    assert {"probe_test_accuracy", "verdict", "finetune_beats_probe", "probe_pick"} <= set(metrics)
    # The baseline is the best probe on test, whichever the ranking put first.
    board = result.leaderboard[result.leaderboard["status"] == "ok"]
    assert metrics["probe_test_accuracy"] == board["test_accuracy"].astype(float).max()
    assert metrics["probe_pick"] == board.iloc[0]["name"]
    html = result.report_path.read_text()
    assert "good" in html and metrics["verdict"].split(":")[0][:30] in html
    examples = json.loads((result.run_dir / "test_examples.json").read_text())
    wrong = int(round((1 - metrics["accuracy"]) * metrics["num_test"]))
    assert examples["split"] == "test" and len(examples["examples"]) == min(wrong, 12)
    for e in examples["examples"]:
        assert e["item"]["src"].startswith("data:image/png;base64,") and e["item"]["src"] in html
    confidences = [e["confidence"] for e in examples["examples"]]
    assert confidences == sorted(confidences, reverse=True)


def test_predict_matches_export_and_labels(result, pattern_folder):
    files = sorted(str(p) for p in pattern_folder.glob("*/*.png"))[:8]
    by_path = result.predict(files)
    assert set(by_path) <= {"a", "b", "c", "d"}
    loaded = tf.saved_model.load(str(result.export_path))
    assert {"serving_default", "serving_bytes"} <= set(loaded.signatures)
    x, _ = pattern_images(2, num_classes=4, size=16, seed=1)
    probs = result.predict_proba(x)
    assert probs.shape == (8, 4) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)


def test_cli_user_error_is_one_line_without_traceback(tmp_path):
    (tmp_path / "only").mkdir()
    proc = subprocess.run([sys.executable, "-m", "autotransfer.cli", "run", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error:") and str(tmp_path) in proc.stderr


def test_keras_tuner_run_with_halving_and_multi_source(tiny_space, pattern_folder, tmp_path):
    import autotransfer

    res = autotransfer.run(pattern_folder, search_space=tiny_space, out=tmp_path / "run2", max_trials=2, top_k=2,
                           halving=True, multi_source=2, scorer="combined", progress=False)
    names = list(res.leaderboard["name"])
    assert any(n.startswith("concat(") for n in names)
    assert "rung" in res.leaderboard and "score_combined" in res.leaderboard
    assert res.best["backbone"] in ("good", "concat(good+medium)")
    assert (res.export_path / "saved_model.pb").is_file()
    trials = __import__("pandas").read_csv(res.run_dir / "trials.csv")
    assert len(trials) == 2


@pytest.mark.parametrize("tuner", ["keras-tuner", "optuna"])
def test_one_trial_goes_to_the_probes_best(tiny_space, pattern_folder, tmp_path, tuner):
    # The space lists the worst candidate first: the only trial must still be the probe's top-1.
    import autotransfer

    res = autotransfer.run(pattern_folder, search_space=tiny_space, out=tmp_path / "one", max_trials=1, top_k=3,
                           tuner=tuner, seed=0, progress=False, ensemble=1)
    trials = __import__("pandas").read_csv(res.run_dir / "trials.csv")
    assert list(res.leaderboard["name"])[0] == "good"
    assert list(trials["backbone"]) == ["good"]


def test_final_model_is_refit_on_train_and_val_and_reported(result):
    final = json.loads((result.run_dir / "final_model.json").read_text())
    splits = json.loads((result.run_dir / "splits.json").read_text())
    n_fit = len(splits["train"]) + len(splits["val"])
    assert final["refit"] and all(m["refit_note"].startswith(f"refit on {n_fit} items") for m in final["members"])
    metrics = result.test_metrics
    assert metrics["model"] == "refit" and {"accuracy", "macro_f1"} <= set(metrics["tuned"])
    assert metrics["refit"]["accuracy"] == metrics["accuracy"]
    html = result.report_path.read_text()
    assert "Final model" in html and "after the refit on train+val" in html


def test_refit_with_test_retrains_every_member_on_all_labelled_items(tiny_space, pattern_folder, tmp_path):
    import autotransfer

    res = autotransfer.run(pattern_folder, search_space=tiny_space, out=tmp_path / "all", max_trials=1, top_k=1,
                           tuner="optuna", seed=0, progress=False, cv="off", ensemble=2, refit_with_test=True)
    final = json.loads((res.run_dir / "final_model.json").read_text())
    splits = json.loads((res.run_dir / "splits.json").read_text())
    n_all = sum(len(splits[k]) for k in ("train", "val", "test"))
    assert len(final["refit_with_test"]) == len(final["members"])
    assert all(note.endswith("(train+val+test)") and f"refit on {n_all} items" in note
               for note in final["refit_with_test"])


def test_member_weights_rebuild_what_the_export_serves(result):
    from autotransfer.final.ensemble import temperature_scale
    from autotransfer.final.members import member_model

    final = json.loads((result.run_dir / "final_model.json").read_text())
    x, _ = pattern_images(2, num_classes=4, size=16, seed=3)
    images = x.astype("float32") / 255.0
    expected = 0
    for m in final["members"]:
        halves = (False, True) if m["blended"] else (False,)  # a blended member: its refit and tuned weights
        for tuned in halves:
            model = member_model(result.run_dir, m, 4, tuned=tuned)
            p = temperature_scale(model(images, training=False).numpy(), m["temperature"])
            if m["flip_tta"]:
                p = 0.5 * (p + temperature_scale(model(images[:, :, ::-1], training=False).numpy(), m["temperature"]))
            expected = expected + m["weight"] / len(halves) * p
    assert final["models_served"] == sum(2 if m["blended"] else 1 for m in final["members"])
    loaded = tf.saved_model.load(str(result.export_path))
    served = loaded.signatures["serving_default"](images=tf.constant(images))["probabilities"].numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)


def test_a_budget_too_short_for_one_trial_is_refused_after_the_plan(tiny_space, pattern_folder, tmp_path):
    out = tmp_path / "short"
    proc = subprocess.run([sys.executable, "-m", "autotransfer.cli", "run", str(pattern_folder), "--search-space",
                           str(tiny_space), "--out", str(out), "--time-budget", "1s"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "--time-budget 1s is too short" in proc.stderr and "Traceback" not in proc.stderr
    need = json.loads((out / "plan.json").read_text())["min_budget_s"]
    assert need > 1 and f"Give --time-budget {int(np.ceil(need))}s or more" in proc.stderr
    assert not (out / "probe").exists() and not (out / "export").exists()  # refused before the heavy work
