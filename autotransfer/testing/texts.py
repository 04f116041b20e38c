"""Tiny string-in text modules (the zoo's GloVe graph on a made-up vocabulary) and texts whose
class is known by construction (no network, no wheels)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from autotransfer.backbones.sources import METADATA_FILE

#: Class keywords of :func:`pattern_texts`; filler words carry no class.
KEYWORDS = ("apple", "river", "engine", "violin", "tiger", "cloud", "marble", "pepper")
FILLER = ("the", "a", "is", "was", "very", "quite", "it", "and", "of", "today", "here", "there")


def pattern_texts(per_class: int, *, num_classes: int = 3, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Short texts whose class is the keyword they contain, among random filler words (all distinct)."""
    if num_classes > len(KEYWORDS):
        raise ValueError(f"num_classes must be <= {len(KEYWORDS)}")
    rng = np.random.default_rng(seed)
    texts: list[str] = []
    labels: list[int] = []
    for c in range(num_classes):
        while labels.count(c) < per_class:
            words = list(rng.choice(FILLER, size=int(rng.integers(3, 7))))
            words.insert(int(rng.integers(0, len(words) + 1)), KEYWORDS[c])
            text = " ".join(words).capitalize() + rng.choice([".", "!", "?"])
            if text not in texts:
                texts.append(text)
                labels.append(c)
    return texts, np.asarray(labels, np.int64)


def write_tiny_text_module(path: str | Path, *, dim: int = 8, seed: int = 0, informative: bool = True) -> Path:
    """A GloVe-graph module over :data:`KEYWORDS` + :data:`FILLER` (plus punctuation) with random
    vectors; ``informative=False`` gives every keyword the same vector, so it cannot tell classes apart."""
    import tensorflow as tf

    from autotransfer.zoo import glove

    path = Path(path)
    rng = np.random.default_rng(seed)
    vocab = list(KEYWORDS) + list(FILLER) + [".", "!", "?", ","]
    emb = rng.normal(0.0, 1.0, size=(len(vocab), dim)).astype("float32")
    emb[: len(KEYWORDS)] *= 4.0  # the keyword dominates a mean over a handful of filler words
    if not informative:
        emb[: len(KEYWORDS)] = emb[0]
    path.mkdir(parents=True, exist_ok=True)
    vocab_file = path.parent / f"{path.name}.vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    obj = glove.make_module(vocab_file, emb)
    tf.saved_model.save(obj, str(path), signatures={"serving_default": obj.serving_default})
    vocab_file.unlink()
    meta = {**glove.module_json("test", int(emb.size)), "name": path.name, "num_outputs": dim,
            "license": "test fixture"}
    (path / METADATA_FILE).write_text(json.dumps(meta, indent=2))
    return path




# -- a tiny TF-Hub BERT-style encoder + preprocessor pair -----------------------------------------------
#: The preprocessor's special tokens (ids 0-3), as in BERT's vocabulary.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
#: The keys of the preprocessor's outputs, which the encoder takes (int32 [B, seq_len]).
ENCODER_INPUTS = ("input_word_ids", "input_mask", "input_type_ids")


def pair_vocabulary() -> list[str]:
    """The tiny preprocessor's vocabulary, in id order."""
    return list(SPECIAL_TOKENS) + list(KEYWORDS) + list(FILLER) + [".", "!", "?", ","]


def write_tiny_bert_pair(root: str | Path, *, hidden: int = 16, layers: int = 2, seq_len: int = 16,
                         seed: int = 0, lowercase: bool = True) -> tuple[Path, Path]:
    """``(encoder, preprocessor)`` SavedModels under ``root`` following TF-Hub's BERT API.

    The preprocessor lower-cases (unless ``lowercase=False``: a "cased" one, whose capitalised
    words are unknown), splits off punctuation, splits on whitespace, looks tokens up
    in :func:`pair_vocabulary` (an asset file) and packs ``[CLS] tokens [SEP]`` padded or
    truncated to ``seq_len``: ``{input_word_ids, input_mask, input_type_ids}`` (int32). The encoder
    takes that dict and returns ``pooled_output`` [B, hidden] (= ``default``), ``sequence_output``
    [B, seq_len, hidden] and ``encoder_outputs``; its variables are named as in TF-Hub's BERT
    encoders (``word_embeddings/..``, ``embeddings/layer_norm/..``, ``transformer/layer_<i>/..``,
    ``pooler_transform/..``) and it has no autotransfer metadata, so blocks come from the names.
    Its first layer attends to the class keyword, so the [CLS] token's pooled output separates
    :func:`pattern_texts` classes.
    """
    import tensorflow as tf

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    vocab = pair_vocabulary()
    vocab_file = root / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    pre = _tiny_preprocessor(vocab_file, seq_len, lowercase)
    tf.saved_model.save(pre, str(root / "preprocess"))
    vocab_file.unlink()  # the SavedModel carries its own copy (assets/): the pair must not need this one
    encoder = _tiny_encoder(len(vocab), hidden, layers, seq_len, seed)
    tf.saved_model.save(encoder, str(root / "encoder"))
    return root / "encoder", root / "preprocess"


def _tiny_preprocessor(vocab_file: Path, seq_len: int, lowercase: bool) -> object:
    import tensorflow as tf

    from autotransfer.zoo import glove

    table = tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(str(vocab_file), tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
                                      tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER),
        default_value=SPECIAL_TOKENS.index("[UNK]"))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def call(texts):
        tokens = glove.tokenize(texts) if lowercase else tf.strings.split(
            tf.strings.regex_replace(texts, r"([^\pL\pN'\s])", r" \1 "))
        ids = tf.cast(table.lookup(tokens), tf.int32)[:, : seq_len - 2]
        rows = ids.nrows()
        cls = tf.RaggedTensor.from_tensor(tf.fill([rows, 1], SPECIAL_TOKENS.index("[CLS]")))
        sep = tf.RaggedTensor.from_tensor(tf.fill([rows, 1], SPECIAL_TOKENS.index("[SEP]")))
        packed = tf.concat([cls, ids, sep], axis=1)
        word_ids = packed.to_tensor(default_value=0, shape=[None, seq_len])
        mask = tf.ones_like(packed).to_tensor(default_value=0, shape=[None, seq_len])
        return {"input_word_ids": word_ids, "input_mask": mask, "input_type_ids": tf.zeros_like(word_ids)}

    obj = tf.__internal__.tracking.AutoTrackable()
    obj.table = table
    obj.__call__ = call
    return obj


def _tiny_encoder(vocab_size: int, hidden: int, layers: int, seq_len: int, seed: int) -> object:
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    w: dict[str, np.ndarray] = {}
    s = 1.0 / np.sqrt(hidden)
    w["word_embeddings/embeddings"] = rng.normal(0.0, 1.0, (vocab_size, hidden))
    w["position_embedding/embeddings"] = rng.normal(0.0, 0.1, (seq_len, hidden))
    w["type_embeddings/embeddings"] = rng.normal(0.0, 0.1, (2, hidden))
    w["embeddings/layer_norm/gamma"], w["embeddings/layer_norm/beta"] = np.ones(hidden), np.zeros(hidden)
    for i in range(layers):
        p = f"transformer/layer_{i}"
        for part in ("query", "key"):
            w[f"{p}/self_attention/{part}/kernel"] = rng.normal(0.0, 0.1 * s, (hidden, hidden))
        w[f"{p}/self_attention/value/kernel"] = rng.normal(0.0, s, (hidden, hidden))
        w[f"{p}/self_attention/attention_output/kernel"] = rng.normal(0.0, s, (hidden, hidden))
        w[f"{p}/intermediate/kernel"] = rng.normal(0.0, s, (hidden, 2 * hidden))
        w[f"{p}/output/kernel"] = rng.normal(0.0, 1.0 / np.sqrt(2 * hidden), (2 * hidden, hidden))
        for norm in ("self_attention_layer_norm", "output_layer_norm"):
            w[f"{p}/{norm}/gamma"], w[f"{p}/{norm}/beta"] = np.ones(hidden), np.zeros(hidden)
    w["pooler_transform/kernel"] = rng.normal(0.0, s, (hidden, hidden))
    w["pooler_transform/bias"] = np.zeros(hidden)
    # Make the first layer attend to the keyword, so [CLS] carries the class (random weights would
    # drown it among the filler words): keywords stand out on dimension 0, the embeddings' layer
    # norm makes dimension 1 a constant 1 for every token, and query(dim 1) . key(dim 0) scores
    # the keyword ~e^7 times above any other token.
    first = len(SPECIAL_TOKENS)
    w["word_embeddings/embeddings"][first:first + len(KEYWORDS), 0] += 8.0
    w["embeddings/layer_norm/gamma"][1], w["embeddings/layer_norm/beta"][1] = 0.0, 1.0
    w["transformer/layer_0/self_attention/query/kernel"][1, 0] = 4.0
    w["transformer/layer_0/self_attention/key/kernel"][0, 0] = 2.0
    vs = {n: tf.Variable(v.astype("float32"), name=n) for n, v in w.items()}
    return _encoder_module(vs, layers)


def _encoder_module(vs: dict, layers: int) -> object:
    """The encoder's graph over variables ``vs`` (by name), with TF-Hub BERT's call and outputs."""
    import tensorflow as tf

    def norm(x, prefix):
        mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
        return (x - mean) * tf.math.rsqrt(variance + 1e-12) * vs[f"{prefix}/gamma"] + vs[f"{prefix}/beta"]

    def layer(x, bias, p):
        q, k, v = (x @ vs[f"{p}/self_attention/{n}/kernel"] for n in ("query", "key", "value"))
        scores = tf.matmul(q, k, transpose_b=True) / tf.sqrt(tf.cast(tf.shape(x)[-1], tf.float32)) + bias
        ctx = tf.nn.softmax(scores, axis=-1) @ v @ vs[f"{p}/self_attention/attention_output/kernel"]
        x = norm(x + ctx, f"{p}/self_attention_layer_norm")
        inner = tf.nn.gelu(x @ vs[f"{p}/intermediate/kernel"])
        return norm(x + inner @ vs[f"{p}/output/kernel"], f"{p}/output_layer_norm")

    def encode(inputs):
        ids, mask, types = (tf.convert_to_tensor(inputs[k], tf.int32) for k in ENCODER_INPUTS)
        x = (tf.gather(vs["word_embeddings/embeddings"], ids) + tf.gather(vs["type_embeddings/embeddings"], types)
             + vs["position_embedding/embeddings"][: tf.shape(ids)[1]])
        x = norm(x, "embeddings/layer_norm")
        bias = (1.0 - tf.cast(mask, tf.float32))[:, None, :] * -1e9  # padding is never attended to
        outs = []
        for i in range(layers):
            x = layer(x, bias, f"transformer/layer_{i}")
            outs.append(x)
        pooled = tf.tanh(x[:, 0] @ vs["pooler_transform/kernel"] + vs["pooler_transform/bias"])
        return {"pooled_output": pooled, "default": pooled, "sequence_output": x, "encoder_outputs": outs}

    obj = tf.__internal__.tracking.AutoTrackable()
    # Listed out of network order (reverse by name: layer_1 before layer_0, the pooler before the
    # embeddings' layer norm), as a SavedModel may list them: blocks must come from the names.
    obj.variables = [vs[n] for n in sorted(vs, reverse=True)]
    obj.trainable_variables = list(obj.variables)
    obj.regularization_losses = []
    spec = {k: tf.TensorSpec([None, None], tf.int32, name=k) for k in ENCODER_INPUTS}

    @tf.function
    def call(inputs, training=False):
        del training  # no dropout: the same graph either way
        return encode(inputs)

    for training in (False, True):
        call.get_concrete_function(spec, training=training)
    call.get_concrete_function(spec)
    obj.__call__ = call
    return obj


__all__ = ["ENCODER_INPUTS", "FILLER", "KEYWORDS", "SPECIAL_TOKENS", "pair_vocabulary", "pattern_texts",
           "write_tiny_bert_pair", "write_tiny_text_module"]
