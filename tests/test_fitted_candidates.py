"""Candidates fitted on the run's texts (TF-IDF): search-space validation, resolution into modules
under the run directory, never tuned, and (slow) a run whose export serves a TF-IDF member."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from autotransfer.backbones import BackboneSpec
from autotransfer.config import load_search_space
from autotransfer.errors import UserInputError
from autotransfer.testing import pattern_texts, write_tiny_text_module


def _space(path, candidates, modality="text"):
    path.write_text(yaml.safe_dump({"name": "s", "modality": modality, "candidates": candidates}))
    return path


@pytest.mark.parametrize("candidate, message", [
    ({"name": "t", "fit": "bow"}, "'fit' must be one of tfidf. Got 'bow'"),
    ({"name": "t", "fit": "tfidf", "handle": "/x"}, "takes no 'handle'. Remove 'handle'"),
    ({"name": "t", "fit": "tfidf", "analyzer": "chars"}, "'analyzer' must be one of word, char. Got 'chars'"),
    ({"name": "t", "fit": "tfidf", "ngram_range": [3, 1]}, "'ngram_range' must be [low, high]"),
    ({"name": "t", "fit": "tfidf", "ngram_range": 2}, "'ngram_range' must be [low, high]"),
    ({"name": "t", "handle": "/x", "analyzer": "word"}, "which only a fitted candidate takes. Add 'fit: tfidf'"),
])
def test_fitted_candidate_errors_name_the_field_and_the_fix(tmp_path, candidate, message):
    with pytest.raises(UserInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_search_space(_space(tmp_path / "s.yaml", [candidate]))


def test_a_fitted_candidate_needs_a_text_space(tmp_path):
    with pytest.raises(UserInputError, match="learns from texts: put it in a search space with 'modality: text'"):
        load_search_space(_space(tmp_path / "s.yaml", [{"name": "t", "fit": "tfidf"}], modality="image"))


def test_fitted_candidates_round_trip_in_their_yaml_form():
    space = load_search_space("text-offline")
    word, char = (c for c in space.candidates if c.is_fitted)
    assert word.fit == {"kind": "tfidf", "analyzer": "word", "ngram_range": [1, 2]}
    assert char.to_dict() == {"name": "tfidf_char", "input_size": 0, "fit": "tfidf", "analyzer": "char",
                              "ngram_range": [2, 5]}
    for spec in (word, word.with_handle("/run/fitted/tfidf_word")):
        assert BackboneSpec.from_dict(spec.to_dict(), "round trip", sized=False) == spec
    # a round trip without the modality (final_model.json's member specs) reads it too
    assert BackboneSpec.from_dict(char.with_handle("/h").to_dict(), "member").handle == "/h"


def test_fitted_candidates_are_fitted_on_labelled_texts_and_reused_on_resume(tmp_path):
    from autotransfer.pipeline.setup import fit_candidates

    texts, labels = pattern_texts(6, num_classes=2, seed=0)
    texts[-1] = "secret testonly words"  # the test row: its n-grams must stay out of the vocabulary
    data = SimpleNamespace(items=texts)
    splits = SimpleNamespace(labelled=np.arange(len(texts) - 1))
    module = BackboneSpec("m", "/some/module", 0)
    fitted = BackboneSpec.from_dict({"name": "tfidf_word", "fit": "tfidf"}, "s", strict=True, sized=False)
    out = fit_candidates([module, fitted], data, splits, tmp_path, resume=False)
    assert out[0] is module and out[1].handle == str((tmp_path / "fitted" / "tfidf_word").resolve())
    meta = json.loads((tmp_path / "fitted" / "tfidf_word" / "autotransfer_module.json").read_text())
    assert meta["fitted_on"] == len(texts) - 1 and meta["kind"] == "tfidf"
    from autotransfer.backbones.tfidf import fit_vocabulary

    vocab, _ = fit_vocabulary(texts[:-1], "word", (1, 2))
    assert meta["vocabulary_size"] == len(vocab) and "testonly" not in vocab
    pb = tmp_path / "fitted" / "tfidf_word" / "saved_model.pb"
    before = pb.stat().st_mtime_ns
    fit_candidates([fitted], data, splits, tmp_path, resume=True)
    assert pb.stat().st_mtime_ns == before  # reused, not fitted again
    fit_candidates([fitted], data, splits, tmp_path, resume=False)
    assert pb.stat().st_mtime_ns != before


def test_fitted_candidates_are_never_tuned():
    from autotransfer.pipeline.tune import top_candidates

    specs = {"tfidf_word": BackboneSpec("tfidf_word", "/f", 0, fit={"kind": "tfidf", "analyzer": "word",
                                                                     "ngram_range": [1, 2]}),
             "glove": BackboneSpec("glove", "/g", 0), "minilm": BackboneSpec("minilm", "/m", 0)}
    probed = SimpleNamespace(leaderboard=list(specs), top=lambda k: ["tfidf_word", "glove", "minilm"][:k])
    ctx = SimpleNamespace(specs=specs, probed=probed, config=SimpleNamespace(top_k=2), timings={},
                          space=SimpleNamespace(name="s"))
    assert [s.name for s in top_candidates(ctx)] == ["glove", "minilm"]
    only = SimpleNamespace(**{**vars(ctx), "specs": {"tfidf_word": specs["tfidf_word"]},
                              "probed": SimpleNamespace(leaderboard=[1], top=lambda k: ["tfidf_word"])})
    with pytest.raises(UserInputError, match="no probed candidate can be fine-tuned"):
        top_candidates(only)


@pytest.mark.slow
def test_a_run_exports_its_tfidf_member_without_train_serve_skew(tmp_path):
    import autotransfer
    from autotransfer.export import load_exported, make_predict_request, rest_to_request, run_predict_request
    from autotransfer.final.ensemble import temperature_scale
    from autotransfer.final.members import member_model, softmax
    from autotransfer.probe import ProbeResult
    from autotransfer.train.task import HEAD_LAYER

    texts, labels = pattern_texts(20, num_classes=3, seed=0)
    names = np.array(["fruit", "water", "motor"])[labels]
    blind = write_tiny_text_module(tmp_path / "blind", dim=8, seed=2, informative=False)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({
        "name": "tiny-tfidf", "modality": "text",
        "candidates": [{"name": "blind", "handle": str(blind)}, {"name": "tfidf_word", "fit": "tfidf"}],
        "tuning": {"unfreeze_blocks": [0, 1], "max_epochs": 2, "batch_size": 8, "head_warmup": "probe"}}))
    run_dir = tmp_path / "run"
    # The blind module can't tell the classes apart: the keyword n-grams' head is the member to pick.
    # with a time budget: the plan times the fitted candidate too (no blocks, no variables)
    kw = dict(labels=list(names), search_space=space, out=run_dir, max_trials=1, top_k=1, ensemble=3, cv="off",
              refit=False, progress=False, time_budget="10m")
    res = autotransfer.run(texts, **kw)
    trials = json.loads((run_dir / "best.json").read_text())
    assert trials["backbone"] == "blind"  # the fitted candidate was never tuned
    assert set(json.loads((run_dir / "plan.json").read_text())["costs"]) == {"blind", "tfidf_word"}
    final = json.loads((run_dir / "final_model.json").read_text())
    assert "probe:tfidf_word" in [m["name"] for m in final["members"]]
    # what the selection scored: each member's probabilities (a head on the probe's cached
    # features), temperature-scaled and weighted as the export serves them
    test = json.loads((run_dir / "splits.json").read_text())["test"]
    features = ProbeResult.load(run_dir).features
    want = 0.0
    for m in final["members"]:
        model = member_model(run_dir, m, 3)
        if m["kind"] == "probe":
            kernel, bias = model.get_layer(HEAD_LAYER).get_weights()
            probs = softmax(features[m["backbone"]]["test"].astype(np.float64) @ kernel + bias)
        else:
            probs = model.predict(np.array([texts[i] for i in test], dtype=object), verbose=0)
        want = want + m["weight"] * temperature_scale(probs, m["temperature"])
    loaded = load_exported(res.export_path)
    queries = [texts[i] for i in test]
    grpc = run_predict_request(loaded, make_predict_request(queries, model_name="m"))
    np.testing.assert_allclose(grpc["probabilities"], want, atol=1e-5)
    rest = run_predict_request(loaded, rest_to_request({"instances": queries}, model_name="m"))
    np.testing.assert_allclose(rest["probabilities"], grpc["probabilities"], atol=1e-6)
    # --resume: the same space compares equal, and the fitted module is reused
    pb = run_dir / "fitted" / "tfidf_word" / "saved_model.pb"
    before = pb.stat().st_mtime_ns
    autotransfer.run(texts, **kw, resume=True)
    assert pb.stat().st_mtime_ns == before


def test_tfidf_heads_fit_unscaled_features():
    from sklearn.linear_model import LogisticRegression

    from autotransfer.final.members import probe_heads, softmax
    from autotransfer.train.trainer import probe_head_weights

    rng = np.random.default_rng(0)
    x = rng.random((40, 6)).astype(np.float32) * (rng.random((40, 6)) < 0.3)
    y = np.arange(40) % 3
    kernel, bias = probe_head_weights(x, y, 3, C=1.0, standardize=False)
    want = LogisticRegression(C=1.0, max_iter=1000).fit(x.astype(np.float64), y).predict_proba(x)
    np.testing.assert_allclose(softmax(x.astype(np.float64) @ kernel + bias), want, atol=1e-6)
    fit = {"kind": "tfidf", "analyzer": "word", "ngram_range": [1, 2]}
    specs = {"tfidf": BackboneSpec("tfidf", "/t", 0, fit=fit), "dense": BackboneSpec("dense", "/d", 0)}
    features = {n: {"train": x, "val": x[:5]} for n in specs}
    heads = probe_heads(features, specs, y, 3)
    np.testing.assert_allclose(heads["probe:tfidf"][0][0], probe_head_weights(x, y, 3, standardize=False)[0])
    np.testing.assert_allclose(heads["probe:dense"][0][0], probe_head_weights(x, y, 3)[0])
