"""Text through the stages: tiny string-in modules (the GloVe graph on a made-up vocabulary)."""
from __future__ import annotations

import pytest

from autotransfer.backbones import BackboneSpec
from autotransfer.data import load_data, make_splits
from autotransfer.probe import probe
from autotransfer.testing import pattern_texts, write_tiny_text_module

pytestmark = pytest.mark.slow  # end-to-end runs


@pytest.fixture(scope="module")
def text_modules(tmp_path_factory):
    root = tmp_path_factory.mktemp("text_modules")
    return {"keywords": write_tiny_text_module(root / "keywords", dim=8, seed=1),
            "blind": write_tiny_text_module(root / "blind", dim=8, seed=2, informative=False)}


@pytest.fixture(scope="module")
def text_data():
    texts, labels = pattern_texts(20, num_classes=3, seed=0)
    data = load_data(texts, labels=labels)
    return data, make_splits(data, seed=0)


def test_probe_ranks_text_modules_on_strings(text_modules, text_data, tmp_path):
    data, splits = text_data
    assert data.modality == "text"
    specs = [BackboneSpec(n, str(p), 0) for n, p in text_modules.items()]
    result = probe(specs[::-1], data, splits, cache_dir=tmp_path / "cache", top_k=1)
    board = result.leaderboard
    assert list(board["name"]) == ["keywords", "blind"] and board["feature_dim"].tolist() == [8, 8]
    # The keyword module's linear probe separates the classes; the blind one sees only filler.
    assert board["val_accuracy"].iloc[0] >= 0.9 > board["val_accuracy"].iloc[1]
    # Warm cache: the same features, nothing featurized again.
    again = probe(specs[::-1], data, splits, cache_dir=tmp_path / "cache", top_k=1)
    assert again.leaderboard["cached"].all()
    assert list(again.leaderboard["score"]) == pytest.approx(list(board["score"]))


def _text_space(path, modules, **tuning):
    import yaml

    space = {"name": "tiny-text", "modality": "text",
             "candidates": [{"name": n, "handle": str(p)} for n, p in modules.items()],
             "tuning": {"unfreeze_blocks": [0, 1], "max_epochs": 3, "batch_size": 8, "augment": "none",
                        "head_warmup": "probe", **tuning}}
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def test_run_on_texts_exports_a_model_that_serves_raw_strings(text_modules, tmp_path):
    import json

    import numpy as np

    import autotransfer
    from autotransfer.export import load_exported, make_predict_request, rest_to_request, run_predict_request

    texts, labels = pattern_texts(20, num_classes=3, seed=0)
    names = np.array(["fruit", "water", "motor"])[labels]
    space = _text_space(tmp_path / "space.yaml", text_modules)
    # With a time budget: the plan measures text candidates too (no pixels to scale by).
    res = autotransfer.run(texts, labels=list(names), search_space=space, out=tmp_path / "run", max_trials=2,
                           top_k=2, ensemble=1, time_budget="5m", cv="off")  # scored on a test split
    assert set(json.loads((tmp_path / "run" / "plan.json").read_text())["costs"]) == {"keywords", "blind"}
    meta = json.loads(next((tmp_path / "run" / "export").glob("*/1/autotransfer_export.json")).read_text())
    assert meta["modality"] == "text" and list(meta["signatures"]) == ["serving_default"]
    assert meta["signatures"]["serving_default"]["inputs"] == {"texts": {"dtype": "string", "shape": [None],
                                                                         "format": "raw UTF-8 text"}}
    loaded = load_exported(res.export_path)
    queries = ["The apple was very good!", "A river here.", "It is an engine today?"]
    grpc = run_predict_request(loaded, make_predict_request(queries, model_name="m"))
    assert grpc["probabilities"].shape == (3, 3)
    np.testing.assert_allclose(grpc["probabilities"].sum(axis=1), 1.0, atol=1e-5)
    assert [b.decode() for b in grpc["label"]] == ["fruit", "water", "motor"]
    rest = run_predict_request(loaded, rest_to_request({"instances": queries}, model_name="m"))
    np.testing.assert_allclose(rest["probabilities"], grpc["probabilities"], atol=1e-6)
    # the warm-up requests TF Serving replays are real validation texts
    from autotransfer.export import read_warmup_requests

    logs = read_warmup_requests(res.export_path / "assets.extra" / "tf_serving_warmup_requests")
    sent = [v.decode() for v in logs[0].predict_log.request.inputs["texts"].string_val]
    assert len(logs) == 2 and set(sent) <= set(texts) and sent
    assert list(res.predict(queries)) == ["fruit", "water", "motor"]  # Result goes through serving_default
    # The baseline a practitioner tries first sits beside the probes, in test_metrics.json and the report.
    [base] = res.test_metrics["baselines"]
    assert base["name"] == "tfidf_logreg" and 0.0 <= base["test_accuracy"] <= 1.0 and base["test_macro_f1"] is not None
    import html as html_lib

    html = html_lib.unescape(res.report_path.read_text())
    assert "tfidf_logreg" in html and '"instances": ["the text to classify"' in html and "Classify a text" in html
    # Probes carry their test macro-F1; the report shows misclassified texts as snippets.
    board = res.leaderboard[res.leaderboard["status"] == "ok"]
    assert board["test_macro_f1"].between(0, 1).all()
    examples = json.loads((tmp_path / "run" / "test_examples.json").read_text())
    wrong = int(round((1 - res.test_metrics["accuracy"]) * res.test_metrics["num_test"]))
    assert len(examples["examples"]) == min(wrong, 12)
    for e in examples["examples"]:
        assert e["item"]["kind"] == "text" and e["item"]["text"] in html and e["true"] != e["predicted"]


def test_text_data_with_an_image_space_names_the_text_default(tmp_path):
    import autotransfer
    from autotransfer.errors import UserInputError

    texts, labels = pattern_texts(5, num_classes=2)
    with pytest.raises(UserInputError, match="is for image: pass --search-space text-offline"):
        autotransfer.run(texts, labels=labels, search_space="offline", out=tmp_path / "run")


def test_an_ensemble_of_text_members_averages_them_on_one_string_input(text_modules, tmp_path):
    import numpy as np
    import tensorflow as tf

    from autotransfer.train.task import build_ensemble, build_task_model

    models = [build_task_model(BackboneSpec(n, str(p), 0), 3, dropout=0.0)[0] for n, p in text_modules.items()]
    ensemble, sizes = build_ensemble([(models[0], 0, 0.25, False), (models[1], 0, 0.75, False)])
    texts = tf.constant(["The apple is here.", "A cloud and a river!"])
    assert sizes == [0] and ensemble.inputs[0].dtype == "string"
    want = 0.25 * models[0](texts).numpy() + 0.75 * models[1](texts).numpy()
    np.testing.assert_allclose(ensemble(texts).numpy(), want, atol=1e-6)
    # Exported, the members' vocabulary tables travel with it (an ExportArchive tracks only variables).
    from autotransfer.export import export_model, load_exported, make_predict_request, run_predict_request

    path = export_model(ensemble, class_names=["a", "b", "c"], input_size=sizes, export_dir=tmp_path, model_name="m",
                        modality="text", warmup_examples=["The apple is here."])
    served = run_predict_request(load_exported(path), make_predict_request(["The apple is here.", "A cloud and a river!"],
                                                                           model_name="m"))
    np.testing.assert_allclose(served["probabilities"], want, atol=1e-5)


# -- TF-Hub BERT-style encoder + preprocessor pairs --------------------------------------------------
def test_run_with_a_bert_pair_exports_a_model_that_serves_raw_strings(text_modules, tmp_path):
    import json
    import shutil

    import numpy as np
    import pandas as pd
    import yaml

    import autotransfer
    from autotransfer.export import load_exported, make_predict_request, run_predict_request
    from autotransfer.testing import write_tiny_bert_pair

    enc, pre = write_tiny_bert_pair(tmp_path / "pair", seed=0)
    texts, labels = pattern_texts(20, num_classes=3, seed=0)
    names = np.array(["fruit", "water", "motor"])[labels]
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({
        "name": "tiny-bert", "modality": "text",
        "candidates": [{"name": "tiny_bert", "handle": str(enc), "preprocess_handle": str(pre)},
                       {"name": "blind", "handle": str(text_modules["blind"])}],
        # every trial fine-tunes the last block: transformer layer 1 and the pooler
        "tuning": {"unfreeze_blocks": [1, 1], "max_epochs": 3, "batch_size": 8, "augment": "none",
                   "head_warmup": "probe"}}, sort_keys=False))
    res = autotransfer.run(texts, labels=list(names), search_space=space, out=tmp_path / "run", max_trials=2,
                           top_k=1, ensemble=1)
    board = pd.read_csv(tmp_path / "run" / "leaderboard.csv")
    assert board["name"].iloc[0] == "tiny_bert" and board["feature_dim"].iloc[0] == 16
    assert board["val_accuracy"].iloc[0] >= 0.9
    trials = pd.read_csv(tmp_path / "run" / "trials.csv")
    assert set(trials["backbone"]) == {"tiny_bert"} and set(trials["unfreeze_blocks"]) == {1}
    # the first trial's fine-tuning may revert to its head; the same configuration then is not run again
    assert "ok" in set(trials["status"]) and set(trials["status"]) <= {"ok", "repeat"}
    # 60 texts: cross-validated, and the TF-IDF baseline is scored out of fold beside the estimate
    [base] = res.test_metrics["baselines"]
    assert res.test_metrics["split"] == "cv" and 0.0 <= base["cv_accuracy"] <= 1.0 and base["cv_macro_f1"] is not None
    meta = json.loads(next((tmp_path / "run" / "export").glob("*/1/autotransfer_export.json")).read_text())
    assert meta["modality"] == "text" and list(meta["signatures"]["serving_default"]["inputs"]) == ["texts"]
    # The export carries the preprocessor's vocabulary and the encoder: it serves with the modules gone.
    shutil.rmtree(tmp_path / "pair")
    queries = ["The apple was very good!", "A river here.", "It is an engine today?"]
    served = run_predict_request(load_exported(res.export_path), make_predict_request(queries, model_name="m"))
    assert [b.decode() for b in served["label"]] == ["fruit", "water", "motor"]
    np.testing.assert_allclose(served["probabilities"].sum(axis=1), 1.0, atol=1e-5)


def test_probe_cache_keeps_features_of_different_preprocessors_apart(text_data, tmp_path):
    import numpy as np

    from autotransfer.testing import write_tiny_bert_pair

    data, splits = text_data
    enc, pre = write_tiny_bert_pair(tmp_path / "uncased", seed=0)
    _, cased = write_tiny_bert_pair(tmp_path / "cased", seed=0, lowercase=False)
    specs = [BackboneSpec("uncased", str(enc), 0, preprocess_handle=str(pre)),
             BackboneSpec("cased", str(enc), 0, preprocess_handle=str(cased))]
    result = probe(specs, data, splits, cache_dir=tmp_path / "cache", top_k=2)
    # The cased preprocessor does not know the capitalised first words: other features, never a cache hit.
    assert not result.leaderboard.set_index("name").loc["cased", "cached"]
    assert not np.allclose(result.features["uncased"]["train"], result.features["cased"]["train"], atol=1e-3)
