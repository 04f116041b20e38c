"""Encoder + preprocessor pairs (TF-Hub's BERT API) as one string-in backbone: tiny generated pair."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from autotransfer.backbones import (MEAN_SEQUENCE_OUTPUT, BackboneSpec, HubBackbone, backbone_fingerprint,
                                    infer_blocks, module_fingerprint)
from autotransfer.backbones.sources import load_saved_model
from autotransfer.errors import BackboneError, UserInputError
from autotransfer.testing import pattern_texts, write_tiny_bert_pair, write_tiny_text_module

pytestmark = pytest.mark.slow  # a BERT-style module built and run

TEXTS = ["The apple was very good!", "A river, here.", "Engine", ""]
LAYER_1 = "transformer/layer_1"


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    enc, pre = write_tiny_bert_pair(tmp_path_factory.mktemp("pair") / "uncased", seed=0)
    _, cased = write_tiny_bert_pair(tmp_path_factory.mktemp("pair") / "cased", seed=0, lowercase=False)
    return {"encoder": str(enc), "preprocess": str(pre), "cased_preprocess": str(cased)}


def test_spec_keeps_preprocess_handle_through_yaml_and_round_trip():
    d = {"name": "bert", "handle": "https://tfhub.dev/x/enc/2", "preprocess_handle": "https://tfhub.dev/x/pre/3"}
    spec = BackboneSpec.from_dict(d, "space.yaml", strict=True, sized=False)
    assert spec.preprocess_handle == d["preprocess_handle"] and spec.is_pair and spec.input_size == 0
    assert spec.to_dict()["preprocess_handle"] == d["preprocess_handle"]
    assert BackboneSpec.from_dict(spec.to_dict(), "probe.json") == spec  # as probe.json and workers read it back
    assert [c.preprocess_handle for c in spec.expand()] == [d["preprocess_handle"]]
    assert not BackboneSpec.from_dict({"name": "a", "handle": "/x"}, "s", sized=False).is_pair


@pytest.mark.parametrize("value, message", [
    (3, "'preprocess_handle' of candidate 'bert' must be a non-empty string"),
    ("  ", "must be a non-empty string"),
    ("ftp://host/pre", "unknown scheme 'ftp'"),
    ("https://tfhub.dev/x/enc/2", "is its 'handle' too"),
    ({"classifier_handle": "/cls"}, "remove classifier_handle"),
])
def test_bad_preprocess_handle_is_one_line_naming_the_field(value, message):
    extra = value if isinstance(value, dict) else {"preprocess_handle": value}
    d = {"name": "bert", "handle": "https://tfhub.dev/x/enc/2", "preprocess_handle": "/pre", **extra}
    with pytest.raises(UserInputError, match=message) as info:
        BackboneSpec.from_dict(d, "space.yaml, candidates[0]", strict=True, sized=False)
    assert str(info.value).startswith("space.yaml, candidates[0]: ") and "\n" not in str(info.value)


def test_preprocess_handle_in_an_image_space_says_to_use_a_text_space():
    d = {"name": "bert", "handle": "/enc", "preprocess_handle": "/pre", "input_size": 224}
    with pytest.raises(UserInputError, match="modality: text"):
        BackboneSpec.from_dict(d, "space.yaml", strict=True)


def test_infer_blocks_orders_stacked_layers_numerically_and_joins_the_pooler():
    names = ["pooler_transform/kernel", "transformer/layer_10/ffn/kernel", "word_embeddings/embeddings",
             "transformer/layer_2/query/kernel", "embeddings/layer_norm/gamma", "transformer/layer_0/query/kernel",
             "pooler_transform/bias"]
    assert infer_blocks(names) == ["word_embeddings", "embeddings", "transformer/layer_0", "transformer/layer_2",
                                   "transformer/layer_10+pooler_transform"]
    # a shared root is dropped as before; a layer_norm is no numbered layer
    assert infer_blocks([f"bert/{n}" for n in names])[-1] == "bert/transformer/layer_10+bert/pooler_transform"
    assert infer_blocks(["embeddings/layer_norm/gamma", "embeddings/word/e", "head/k"]) == ["embeddings", "head"]


def test_pair_features_are_the_preprocessor_then_the_encoder(pair):
    bb = HubBackbone(pair["encoder"], preprocess_handle=pair["preprocess"])
    assert bb.modality == "text" and bb.input_size == 0 and bb.output_dim == 16
    pre, enc = load_saved_model(pair["preprocess"]), load_saved_model(pair["encoder"])
    inputs = pre(tf.constant(TEXTS))
    assert {k: (v.dtype, v.shape[1]) for k, v in inputs.items()} == {
        k: (tf.int32, 16) for k in ("input_word_ids", "input_mask", "input_type_ids")}
    out = enc(inputs, training=False)
    np.testing.assert_allclose(bb(tf.constant(TEXTS)).numpy(), out["pooled_output"].numpy(), atol=1e-6)
    # The sentences differ, so this is no constant.
    assert np.abs(out["pooled_output"].numpy()[0] - out["pooled_output"].numpy()[1]).max() > 1e-3
    mask = inputs["input_mask"].numpy()[:, :, None].astype("float32")
    want = (out["sequence_output"].numpy() * mask).sum(1) / mask.sum(1)
    mean = HubBackbone(pair["encoder"], preprocess_handle=pair["preprocess"], output_key=MEAN_SEQUENCE_OUTPUT)
    np.testing.assert_allclose(mean(tf.constant(TEXTS)).numpy(), want, atol=1e-5)
    assert not np.allclose(want, out["pooled_output"].numpy(), atol=1e-3)


def test_pair_from_spec_and_a_bad_output_key_lists_the_outputs(pair):
    spec = BackboneSpec("bert", pair["encoder"], 0, preprocess_handle=pair["preprocess"], output_key="default")
    bb = HubBackbone.from_spec(spec)
    assert bb.preprocess_handle == pair["preprocess"] and bb.get_config()["preprocess_handle"] == pair["preprocess"]
    with pytest.raises(BackboneError, match=r"'default', 'encoder_outputs', 'pooled_output', 'sequence_output'\]; "
                                            r"set output_key to one of them or sequence_output:mean"):
        HubBackbone(pair["encoder"], preprocess_handle=pair["preprocess"], output_key="pooled")


def test_unfreezing_one_block_trains_exactly_the_last_layer_and_the_pooler(pair):
    import keras

    bb = HubBackbone(pair["encoder"], preprocess_handle=pair["preprocess"])
    # Blocks from the encoder's names, whatever order its SavedModel lists the variables in.
    assert bb.blocks[-2:] == ["transformer/layer_0", "transformer/layer_1+pooler_transform"]
    assert set(bb.blocks[:-2]) == {"word_embeddings", "position_embedding", "type_embeddings", "embeddings"}
    last = {n for n in bb.variable_names if n.startswith((LAYER_1 + "/", "pooler_transform/"))}
    assert len(last) == 12 and len(bb.variable_names) == 27  # the preprocessor adds no variables
    bb.set_unfrozen_blocks(1)
    assert {n for n, w in zip(bb.variable_names, bb._wrapped) if w.trainable} == last
    # One epoch: exactly those change, the rest (embeddings, layer 0) stay bit-identical.
    texts, labels = pattern_texts(8, num_classes=3, seed=1)
    inp = keras.Input((), dtype="string")
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(bb(inp)))
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
    before = {n: w.numpy().copy() for n, w in zip(bb.variable_names, bb._wrapped)}
    model.fit(tf.constant(texts), labels, epochs=1, batch_size=8, verbose=0)
    assert {n for n, w in zip(bb.variable_names, bb._wrapped) if not np.array_equal(before[n], w.numpy())} == last
    bb.set_unfrozen_blocks(2)
    assert {n for n, w in zip(bb.variable_names, bb._wrapped) if w.trainable} == {
        n for n in bb.variable_names if n.startswith("transformer/")} | last


def test_fingerprint_and_resources_include_the_preprocessor(pair):
    uncased = HubBackbone(pair["encoder"], preprocess_handle=pair["preprocess"])
    cased = HubBackbone(pair["encoder"], preprocess_handle=pair["cased_preprocess"])
    alone = module_fingerprint(pair["encoder"])
    assert len({uncased.fingerprint(), cased.fingerprint(), alone}) == 3
    assert uncased.fingerprint() == backbone_fingerprint(pair["encoder"], pair["preprocess"])
    assert backbone_fingerprint(pair["encoder"]) == alone
    # The vocabulary table is the preprocessor's (the encoder has none): an export tracks it through resources().
    [table] = uncased.resources()
    assert table is uncased._preprocess.table
    # cased: "Apple" at the start of a text is unknown, so the features differ
    texts = tf.constant(["Apple here.", "apple here."])
    got_cased, got_uncased = cased(texts).numpy(), uncased(texts).numpy()
    np.testing.assert_allclose(got_cased[1], got_uncased[1], atol=1e-6)
    assert not np.allclose(got_cased[0], got_uncased[0], atol=1e-3)


def test_broken_pairs_fail_at_load_with_one_line(pair, tiny_modules, tmp_path):
    with pytest.raises(BackboneError, match="does not take strings.*Fix preprocess_handle"):
        HubBackbone(pair["encoder"], preprocess_handle=tiny_modules["good"])
    # A string-in module returns features, not the encoder's inputs.
    glove_like = write_tiny_text_module(tmp_path / "glove_like", dim=8)
    with pytest.raises(BackboneError, match="must map strings to input_word_ids.*fix the pair") as info:
        HubBackbone(pair["encoder"], preprocess_handle=str(glove_like))
    assert "\n" not in str(info.value)
    with pytest.raises(BackboneError, match="does not exist"):
        HubBackbone(pair["encoder"], preprocess_handle=str(tmp_path / "nope"))
