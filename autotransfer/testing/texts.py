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


__all__ = ["FILLER", "KEYWORDS", "pattern_texts", "write_tiny_text_module"]
