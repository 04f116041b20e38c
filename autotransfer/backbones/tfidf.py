"""TF-IDF features as a fitted, string-in TF-Hub-format module (a classical text candidate).

:func:`fit_tfidf_module` learns a vocabulary and document frequencies from texts and writes a
SavedModel whose ``__call__(texts)`` returns scikit-learn's ``TfidfVectorizer(sublinear_tf=True,
smooth_idf=True, norm="l2")`` features ``[B, V]``: ``l2_normalize((1 + ln count) * idf)`` with
``idf = ln((1 + n) / (1 + df)) + 1``. The tokenisation runs in the graph (``tf.strings`` ops only,
so TF Serving needs nothing extra) and the fit runs that same function eagerly, so the vocabulary
can't disagree with what the module serves:

- ``word``: lower-cased, tokens as sklearn's default ``(?u)\\b\\w\\w+\\b`` (runs of at least two
  letters, digits or underscores), n-grams joined by one space;
- ``char``: lower-cased, runs of two or more whitespace characters made one space (sklearn's
  ``char`` analyzer), character n-grams over the whole text.

The module has no variables (the vocabulary is a lookup table, the idf a constant): there is
nothing to fine-tune, so its metadata lists no blocks.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from autotransfer.backbones.sources import METADATA_FILE
from autotransfer.errors import BackboneError

#: The most n-grams a fitted vocabulary keeps (the most frequent in the fitting texts).
MAX_FEATURES = 16384
#: ``kind`` in the metadata of a fitted TF-IDF module (its linear head is fitted on unscaled features).
KIND = "tfidf"
ANALYZERS = ("word", "char")
#: Texts tokenised per eager call while fitting.
_FIT_BATCH = 512
# A word character as Python's (?u)\w (letters, numbers, underscore); RE2's \w is ASCII only.
_NON_WORD = r"[^\p{L}\p{N}_]+"
# Python's (?u)\s in RE2 (whose \s is ASCII only): sklearn's char analyzer makes runs of 2+ one space.
_SPACE = r"[\s\p{Z}\x{0b}\x{1c}-\x{1f}\x{85}]"


def ngrams(texts: Any, analyzer: str, ngram_range: Sequence[int]) -> Any:
    """The n-grams of each text as a ragged string tensor ``[B, None]`` (the module's tokenisation)."""
    import tensorflow as tf

    lo, hi = (int(n) for n in ngram_range)
    x = tf.strings.lower(tf.convert_to_tensor(texts, tf.string), encoding="utf-8")
    if analyzer == "word":
        tokens = tf.strings.split(tf.strings.regex_replace(x, _NON_WORD, " "))
        # sklearn's \w\w+: a token of one character is dropped
        tokens = tf.ragged.boolean_mask(tokens, tf.strings.length(tokens, unit="UTF8_CHAR") >= 2)
        return tf.strings.ngrams(tokens, ngram_width=tuple(range(lo, hi + 1)), separator=" ")
    chars = tf.strings.unicode_split(tf.strings.regex_replace(x, _SPACE + "{2,}", " "), "UTF-8")
    return tf.strings.ngrams(chars, ngram_width=tuple(range(lo, hi + 1)), separator="")


def fit_vocabulary(texts: Sequence[str], analyzer: str, ngram_range: Sequence[int], *, min_df: int = 2,
                   max_features: int = MAX_FEATURES) -> tuple[list[str], np.ndarray]:
    """``(vocabulary in string order, idf)`` of ``texts``: n-grams in at least ``min_df`` texts, the
    ``max_features`` most frequent in the corpus (ties by string), as ``TfidfVectorizer`` keeps them."""
    df: Counter[bytes] = Counter()
    total: Counter[bytes] = Counter()
    for start in range(0, len(texts), _FIT_BATCH):
        for row in ngrams(list(texts[start:start + _FIT_BATCH]), analyzer, ngram_range).to_list():
            total.update(row)
            df.update(set(row))
    kept = sorted((g for g, d in df.items() if d >= min_df), key=lambda g: (-total[g], g))[:max_features]
    vocab = sorted(kept)  # sklearn's column order
    n = len(texts)
    idf = np.log((1.0 + n) / (1.0 + np.array([df[g] for g in vocab], np.float64))) + 1.0
    return [g.decode("utf-8") for g in vocab], idf.astype(np.float32)


def make_module(vocab: list[str], idf: np.ndarray, analyzer: str, ngram_range: Sequence[int]) -> Any:
    """An AutoTrackable text module: ``__call__(texts, training=False) -> [B, len(vocab)]`` TF-IDF
    features (see the module docstring); ``serving_default`` returns them as ``feature_vector``."""
    import tensorflow as tf

    size = len(vocab)
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(vocab or [""], tf.string),
                                            tf.range(max(size, 1), dtype=tf.int64)), default_value=-1)
    weights = tf.constant(np.asarray(idf, np.float32).reshape(size))

    def features(texts):
        grams = ngrams(texts, analyzer, ngram_range)
        ids = table.lookup(grams.flat_values)
        rows = grams.value_rowids()
        known = (ids >= 0) & (ids < size)  # out-of-vocabulary n-grams count for nothing
        at = tf.stack([tf.boolean_mask(rows, known), tf.boolean_mask(ids, known)], axis=1)
        counts = tf.scatter_nd(at, tf.ones(tf.shape(at)[:1], tf.float32),
                               tf.stack([grams.nrows(), tf.constant(size, tf.int64)]))
        tf_weight = tf.where(counts > 0, 1.0 + tf.math.log(tf.maximum(counts, 1.0)), 0.0)  # sublinear tf
        return tf.math.l2_normalize(tf_weight * weights, axis=-1)  # an empty text: all zeros

    obj = tf.__internal__.tracking.AutoTrackable()
    obj.table = table  # tracked: HubBackbone.resources() hands it to the export
    obj.variables = []
    obj.trainable_variables = []
    obj.regularization_losses = []
    text_spec = tf.TensorSpec([None], tf.string, name="texts")

    @tf.function
    def call(texts, training=False):
        del training  # nothing trains: the same graph either way
        return features(tf.convert_to_tensor(texts, tf.string))

    for training in (False, True):
        call.get_concrete_function(text_spec, training=training)
    call.get_concrete_function(text_spec)
    obj.__call__ = call
    obj.serving_default = tf.function(lambda texts: {"feature_vector": features(texts)}, input_signature=[text_spec])
    return obj


def module_json(name: str, analyzer: str, ngram_range: Sequence[int], vocab_size: int, fitted_on: int,
                min_df: int) -> dict[str, Any]:
    """The module's ``autotransfer_module.json``."""
    return {"name": name, "modality": "text", "output": "feature_vector", "blocks": [], "num_outputs": vocab_size,
            "input_size": 0, "kind": KIND, "analyzer": analyzer, "ngram_range": [int(n) for n in ngram_range],
            "vocabulary_size": vocab_size, "min_df": min_df, "fitted_on": fitted_on, "parameters": 0,
            "preprocessing": "a batch of raw UTF-8 strings [batch]; lower-casing, tokenisation and TF-IDF "
                             "(sublinear tf, smooth idf, l2 norm) run inside the module"}


def fit_tfidf_module(texts: Iterable[str], out_dir: str | Path, *, analyzer: str = "word",
                     ngram_range: Sequence[int] = (1, 2), max_features: int = MAX_FEATURES, min_df: int = 2,
                     name: str | None = None) -> Path:
    """Fit a TF-IDF vocabulary on ``texts`` and write it as a module to ``out_dir`` (replaced
    atomically: written beside it under a temporary name, then renamed). Returns ``out_dir``.

    No labels are read: the vocabulary and idf come from the texts alone.
    """
    import tensorflow as tf

    if analyzer not in ANALYZERS:
        raise ValueError(f"analyzer must be one of {', '.join(ANALYZERS)}. Got {analyzer!r}.")
    texts = [str(t) for t in texts]
    out_dir = Path(out_dir)
    vocab, idf = fit_vocabulary(texts, analyzer, ngram_range, min_df=min_df, max_features=max_features)
    if not vocab:
        raise BackboneError(f"TF-IDF ({analyzer} {tuple(ngram_range)}-grams): no n-gram occurs in {min_df} of the "
                            f"{len(texts)} texts, so there is no vocabulary. Give more texts, or drop the candidate.")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        obj = make_module(vocab, idf, analyzer, ngram_range)
        tf.saved_model.save(obj, str(tmp), signatures={"serving_default": obj.serving_default})
        meta = module_json(name or out_dir.name, analyzer, ngram_range, len(vocab), len(texts), min_df)
        (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def is_fitted_module(path: str | Path) -> bool:
    """Whether ``path`` holds a complete fitted module (a SavedModel and its metadata, written last)."""
    path = Path(path)
    return (path / "saved_model.pb").is_file() and (path / METADATA_FILE).is_file()


def fit_candidates(specs: Sequence[Any], texts: Sequence[str], out_dir: str | Path, *, reuse: bool = False,
                   say: Any = None) -> list[Any]:
    """``specs`` with every fitted candidate (``spec.fit``) fitted on ``texts`` and written to
    ``out_dir/<name>/``, its handle that path; other candidates as they are. ``reuse`` (a resumed
    run): a complete module already there is kept, not fitted again (same texts: same module)."""
    out = []
    for spec in specs:
        if spec.fit is None:
            out.append(spec)
            continue
        path = Path(out_dir) / spec.name
        if not (reuse and is_fitted_module(path)):
            if say is not None:
                say(f"fitting {spec.name}: TF-IDF {spec.fit['analyzer']} {tuple(spec.fit['ngram_range'])}-grams on "
                    f"{len(texts)} labelled texts")
            fit_tfidf_module(texts, path, analyzer=spec.fit["analyzer"], ngram_range=spec.fit["ngram_range"],
                             name=spec.name)
        out.append(spec.with_handle(str(path.resolve())))
    return out


__all__ = ["fit_candidates", "ANALYZERS", "KIND", "MAX_FEATURES", "fit_tfidf_module", "fit_vocabulary", "is_fitted_module",
           "make_module", "module_json", "ngrams"]
