"""The fitted TF-IDF module against scikit-learn's TfidfVectorizer on the same n-grams."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from autotransfer.backbones.tfidf import fit_tfidf_module, fit_vocabulary, is_fitted_module

FIT = ["The cat sat on the mat.", "the CAT ate; the dog sat!", "Ünïcödé café, naïve café", "a b c dog-dog cat_cat",
       "Ünïcödé text\t\tand   spaces", "on the mat, the dog", "42 cats and 42 dogs"]
QUERIES = ["The cat sat on the mat, café café!", "", "zzz qqq xyzzy", "ÜNÏCÖDÉ   CAFÉ\n\n42 dogs", "the the the dog"]


def _python_ngrams(analyzer, lo, hi):
    """The module's n-grams in plain Python, as sklearn's analyzers make them."""
    def word(text):
        tokens = re.findall(r"(?u)\b\w\w+\b", text.lower())
        return [" ".join(tokens[i:i + n]) for n in range(lo, hi + 1) for i in range(len(tokens) - n + 1)]

    def char(text):
        text = re.sub(r"\s\s+", " ", text.lower())
        return [text[i:i + n] for n in range(lo, hi + 1) for i in range(len(text) - n + 1)]
    return word if analyzer == "word" else char


@pytest.mark.parametrize("analyzer, ngram_range", [("word", (1, 2)), ("char", (2, 5))])
def test_features_equal_sklearn_tfidf(tmp_path, analyzer, ngram_range):
    import tensorflow as tf
    from sklearn.feature_extraction.text import TfidfVectorizer

    path = fit_tfidf_module(FIT, tmp_path / "m", analyzer=analyzer, ngram_range=ngram_range, min_df=2)
    assert is_fitted_module(path)
    meta = json.loads((path / "autotransfer_module.json").read_text())
    assert meta["kind"] == "tfidf" and meta["blocks"] == [] and meta["fitted_on"] == len(FIT)
    vocab, idf = fit_vocabulary(FIT, analyzer, ngram_range, min_df=2)
    ref = TfidfVectorizer(analyzer=_python_ngrams(analyzer, *ngram_range), sublinear_tf=True, min_df=2).fit(FIT)
    # the same vocabulary (sklearn's min_df), in the same column order, and the same idf
    assert vocab == list(ref.get_feature_names_out()) and meta["vocabulary_size"] == len(vocab)
    np.testing.assert_allclose(idf, ref.idf_, rtol=1e-6)
    module = tf.saved_model.load(str(path))
    got = module(tf.constant(QUERIES)).numpy()
    np.testing.assert_allclose(got, ref.transform(QUERIES).toarray(), atol=1e-5)
    assert not got[1].any() and not got[2].any()  # the empty text, and only unknown n-grams: zeros
    assert module(tf.constant([], tf.string)).numpy().shape == (0, len(vocab))
    served = module.signatures["serving_default"](texts=tf.constant(QUERIES))["feature_vector"].numpy()
    np.testing.assert_allclose(served, got, atol=1e-6)


def test_max_features_keeps_the_most_frequent(tmp_path):
    from sklearn.feature_extraction.text import TfidfVectorizer

    # by count in the whole corpus, as sklearn (the top two are not tied; sklearn breaks ties arbitrarily)
    vocab, _ = fit_vocabulary(FIT, "word", (1, 1), min_df=1, max_features=2)
    ref = TfidfVectorizer(analyzer=_python_ngrams("word", 1, 1), max_features=2).fit(FIT)
    assert vocab == list(ref.get_feature_names_out()) == ["dog", "the"]
    # ties by string: deterministic
    assert fit_vocabulary(FIT, "word", (1, 1), min_df=1, max_features=3)[0] == ["42", "dog", "the"]
