"""A tiny random all-MiniLM-L6-v2 ``model.zip`` in the wheel's layout (:mod:`autotransfer.zoo.minilm`)."""
from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path

import numpy as np

from autotransfer.testing.texts import FILLER, KEYWORDS, SPECIAL_TOKENS
from autotransfer.zoo.minilm import MAX_TOKENS


def make_archive(path: Path, *, vocab: list[str], hidden: int = 8, heads: int = 2, layers: int = 2,
                 seed: int = 0) -> Path:
    """A tiny random ``model.zip`` in the wheel's layout (tests and examples: no wheel needed)."""
    rng = np.random.default_rng(seed)
    config = {"hidden_size": hidden, "num_attention_heads": heads, "num_hidden_layers": layers,
              "intermediate_size": 4 * hidden, "layer_norm_eps": 1e-12, "max_position_embeddings": MAX_TOKENS,
              "type_vocab_size": 2, "vocab_size": len(vocab)}
    shapes = {"embeddings.word_embeddings.weight": (len(vocab), hidden),
              "embeddings.position_embeddings.weight": (MAX_TOKENS, hidden),
              "embeddings.token_type_embeddings.weight": (2, hidden),
              "embeddings.LayerNorm.weight": (hidden,), "embeddings.LayerNorm.bias": (hidden,)}
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            shapes[p + name + ".weight"], shapes[p + name + ".bias"] = (hidden, hidden), (hidden,)
        shapes[p + "intermediate.dense.weight"], shapes[p + "intermediate.dense.bias"] = (4 * hidden, hidden), (4 * hidden,)
        shapes[p + "output.dense.weight"], shapes[p + "output.dense.bias"] = (hidden, 4 * hidden), (hidden,)
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[p + name + ".weight"], shapes[p + name + ".bias"] = (hidden,), (hidden,)
    tensors = {k: (np.ones(s) if k.endswith("LayerNorm.weight") else rng.normal(0, 0.5, s)).astype(np.float32)
               for k, s in shapes.items()}
    header, offset, chunks = {}, 0, []
    for k, a in tensors.items():
        header[k] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        chunks.append(a.tobytes())
    head = json.dumps(header).encode()
    tokenizer = {"model": {"type": "WordPiece", "vocab": {t: i for i, t in enumerate(vocab)}}}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("config.json", json.dumps(config))
        z.writestr("model.safetensors", struct.pack("<Q", len(head)) + head + b"".join(chunks))
        z.writestr("tokenizer.json", json.dumps(tokenizer))
    Path(path).write_bytes(buf.getvalue())
    return Path(path)


def write_tiny_minilm(root: str | Path, *, hidden: int = 16, heads: int = 2, layers: int = 3, seed: int = 0) -> Path:
    """A tiny random MiniLM module built as the zoo builds the real one (``prefix_to`` /
    ``from_block`` included), whose vocabulary covers :func:`~autotransfer.testing.pattern_texts`:
    ``root/feature_vector``, a string-in text module with blocks ``embeddings``, ``layer_0`` ..."""
    from autotransfer.zoo import minilm

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    vocab = [*SPECIAL_TOKENS, *KEYWORDS, *FILLER, ".", "!", "?"]
    archive = make_archive(root / "model.zip", vocab=vocab, hidden=hidden, heads=heads, layers=layers, seed=seed)
    minilm.build(root / "feature_vector", lambda _msg: None, archive=(archive, "tiny"))
    return root / "feature_vector"


__all__ = ["make_archive", "write_tiny_minilm"]
