"""Tiny TF-Hub-format image modules whose quality order is known by construction.

Each module average-pools the image to a ``grid x grid`` map before a small random MLP. On
:func:`pattern_images` data (a bright blob whose position is the class) a grid of 4 sees every
position, a grid of 2 only the quadrant (two classes share one) and a grid of 1 nothing but the
mean brightness, which is the same for every class. So quality: grid 4 > grid 2 > grid 1.

Like the zoo's modules they also have ``features_at`` ({"block_00", "block_01", "head"} ->
tf.function(images, training=False) -> [B, C], each computing only up to that block) and
``all_features(images)``, listed as ``feature_layers`` / ``feature_dims`` in the metadata, and
(feature-vector modules) ``prefix_to`` / ``from_block`` for the cuts before ``block_01`` and ``head``,
and ``from_block_to["block_01"]["block_01"]`` for the layer candidate ``block_01``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from autotransfer.backbones.sources import METADATA_FILE

BLOCKS = ["block_00", "block_01", "head"]


class _TinyModule(tf.Module):
    def __init__(self, grid: int, feature_dim: int, seed: int, num_source_classes: int | None) -> None:
        super().__init__()
        rng = np.random.default_rng(seed)
        self.grid = grid
        dims = [grid * grid * 3, 32, 32, feature_dim]

        def var(name: str, shape: tuple[int, ...], scale: float, trainable: bool = True) -> tf.Variable:
            value = rng.normal(0.0, scale, size=shape).astype("float32") if scale else np.zeros(shape, "float32")
            return tf.Variable(value, name=name, trainable=trainable)

        self.w = [var(f"{b}/kernel", (dims[i], dims[i + 1]), np.sqrt(2.0 / dims[i])) for i, b in enumerate(BLOCKS)]
        self.b = [var(f"{b}/bias", (dims[i + 1],), 0.0) for i, b in enumerate(BLOCKS)]
        # A BatchNorm-like statistic: must never be trained.
        self.moving_mean = var("head/moving_mean", (feature_dim,), 0.0, trainable=False)
        self.classifier = None
        if num_source_classes:
            self.classifier = (
                var("classifier/kernel", (feature_dim, num_source_classes), np.sqrt(1.0 / feature_dim)),
                var("classifier/bias", (num_source_classes,), 0.0),
            )
        self.regularization_losses: list = []

    def _pooled(self, images: tf.Tensor) -> tf.Tensor:
        x = tf.stop_gradient(tf.image.resize(images, [8, 8], method="area"))
        x = tf.nn.avg_pool2d(x, ksize=8 // self.grid, strides=8 // self.grid, padding="VALID")
        return tf.reshape(x, [-1, self.grid * self.grid * 3]) * 4.0

    def _block(self, x: tf.Tensor, i: int) -> tf.Tensor:
        x = tf.matmul(x, self.w[i]) + self.b[i]
        return tf.nn.relu(x) if i < len(self.w) - 1 else x - self.moving_mean

    def prefix(self, images: tf.Tensor, cut: int) -> tf.Tensor:
        """What enters block ``cut``."""
        x = self._pooled(images)
        for i in range(cut):
            x = self._block(x, i)
        return x

    def suffix(self, x: tf.Tensor, cut: int, stop: int | None = None) -> tf.Tensor:
        """From what enters block ``cut`` to the features (block ``stop``'s output when given)."""
        for i in range(cut, len(self.w) if stop is None else stop + 1):
            x = self._block(x, i)
        return x

    def _features(self, images: tf.Tensor, upto: int | None = None) -> tf.Tensor | list[tf.Tensor]:
        """The output of block ``upto`` (index into BLOCKS; default: the head), or with
        ``upto=-1`` the list of every block's output."""
        x = self._pooled(images)
        outs = []
        for i, (w, b) in enumerate(zip(self.w, self.b)):
            x = tf.matmul(x, w) + b
            if i < len(self.w) - 1:
                x = tf.nn.relu(x)
            else:
                x = x - self.moving_mean
            if i == upto:
                return x
            outs.append(x)
        return outs if upto == -1 else x

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32), tf.TensorSpec([], tf.bool)])
    def _call(self, images: tf.Tensor, training: tf.Tensor) -> tf.Tensor:
        x = self._features(images)
        if self.classifier is not None:
            x = tf.matmul(x, self.classifier[0]) + self.classifier[1]
        return x

    def __call__(self, images, training=False):  # type: ignore[override]
        return self._call(images, tf.constant(training))


def _module_root(module: _TinyModule, spec: tf.TensorSpec) -> tf.train.Checkpoint:
    """The SavedModel root of ``module``: ``__call__`` and the variables (the reusable-SavedModel
    contract) plus ``features_at`` and ``all_features``, traced for ``spec`` images."""
    call = tf.function(
        lambda images, training=False: module._call(images, tf.constant(training)),
    )
    for training in (False, True):
        call.get_concrete_function(spec, training)
    # The reusable-SavedModel contract: a root with __call__, variables, trainable_variables and
    # regularization_losses attributes (tf.Module's own are read-only properties, so use a plain root).
    root = tf.train.Checkpoint(net=module)
    root.__call__ = call
    root.variables = list(module.variables)
    root.trainable_variables = list(module.trainable_variables)
    root.regularization_losses = []

    def features_fn(i: int) -> tf.types.experimental.PolymorphicFunction:
        fn = tf.function(lambda images, training=False: module._features(images, upto=i))
        for training in (False, True):
            fn.get_concrete_function(spec, training)
        return fn

    root.features_at = {b: features_fn(i) for i, b in enumerate(BLOCKS)}
    root.all_features = tf.function(lambda images: dict(zip(BLOCKS, module._features(images, upto=-1))),
                                    input_signature=[spec])
    return root


def _add_prefix_cuts(root: tf.train.Checkpoint, module: _TinyModule, spec: tf.TensorSpec) -> tuple[dict, dict]:
    """Give ``root`` the zoo's cut points for the prefix cache (``prefix_to``, ``from_block``, and
    ``from_block_to`` for the layer candidate ``block_01``); returns the metadata's
    ``(prefix_cuts, layer_prefix_cuts)``."""
    cuts: dict = {}
    root.prefix_to, root.from_block = {}, {}
    for i, b in enumerate(BLOCKS[1:], start=1):
        cuts[b] = int(module.w[i].shape[0])
        root.prefix_to[b] = tf.function(lambda images, i=i: module.prefix(images, i), input_signature=[spec])
        root.from_block[b] = tf.function(lambda x, i=i: module.suffix(x, i),
                                         input_signature=[tf.TensorSpec([None, cuts[b]], tf.float32)])
    # The layer candidate block_01, cut where it starts (as the zoo's from_block_to).
    layer_cuts = {"block_01": {"block_01": cuts["block_01"]}}
    root.from_block_to = {"block_01": {"block_01": tf.function(
        lambda x: module.suffix(x, 1, stop=1), input_signature=[tf.TensorSpec([None, cuts["block_01"]], tf.float32)])}}
    return cuts, layer_cuts


def _module_metadata(path: Path, module: _TinyModule, *, grid: int, feature_dim: int, input_size: int,
                     num_source_classes: int | None, cuts: dict, layer_cuts: dict) -> dict:
    """The module's ``autotransfer_module.json`` contents."""
    blocks = BLOCKS + (["classifier"] if num_source_classes else [])
    return {
        "name": path.name,
        "output": "classification" if num_source_classes else "feature_vector",
        "input_size": input_size,
        "preprocessing": "float32 RGB in [0, 1]",
        "license": "test fixture",
        "parameters": int(sum(int(np.prod(v.shape)) for v in module.variables)),
        "blocks": blocks,
        "num_outputs": num_source_classes or feature_dim,
        "grid": grid,
        "feature_layers": list(BLOCKS),
        "feature_dims": {b: int(w.shape[1]) for b, w in zip(BLOCKS, module.w)},
        **({"prefix_cuts": cuts, "layer_prefix_cuts": layer_cuts} if cuts else {}),
    }


def write_tiny_module(
    path: str | Path,
    *,
    grid: int = 4,
    feature_dim: int = 16,
    seed: int = 0,
    input_size: int = 16,
    num_source_classes: int | None = None,
) -> Path:
    """Write a tiny TF-Hub-format module (plus its ``autotransfer_module.json``) to ``path``."""
    if grid not in (1, 2, 4, 8):
        raise ValueError(f"grid must be 1, 2, 4 or 8. Got {grid}.")
    path = Path(path)
    module = _TinyModule(grid, feature_dim, seed, num_source_classes)
    spec = tf.TensorSpec([None, None, None, 3], tf.float32)
    root = _module_root(module, spec)
    cuts: dict = {}
    layer_cuts: dict = {}
    if not num_source_classes:  # as the zoo's feature-vector modules: cut points for the prefix cache
        cuts, layer_cuts = _add_prefix_cuts(root, module, spec)
    tf.saved_model.save(root, str(path))
    meta = _module_metadata(path, module, grid=grid, feature_dim=feature_dim, input_size=input_size,
                            num_source_classes=num_source_classes, cuts=cuts, layer_cuts=layer_cuts)
    (path / METADATA_FILE).write_text(json.dumps(meta, indent=2))
    return path


def write_tiny_space(path: str | Path, handles: dict[str, str], tuning: dict, *, input_size: int = 16) -> Path:
    """A search-space YAML over tiny modules ``{name: handle}`` (in that order) with ``tuning``."""
    import yaml

    path = Path(path)
    space = {"name": path.stem, "tuning": dict(tuning),
             "candidates": [{"name": n, "handle": str(h), "input_size": input_size} for n, h in handles.items()]}
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def pattern_images(
    per_class: int, *, num_classes: int = 4, size: int = 16, noise: float = 0.05, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Images [N, size, size, 3] uint8 where the class is the position of a bright blob.

    Classes 2k and 2k+1 put their blob in the same quadrant (so a 2x2 view cannot tell them apart)
    and every image has the same mean brightness (so a 1x1 view sees nothing).
    """
    if num_classes > 8:
        raise ValueError("num_classes must be <= 8")
    rng = np.random.default_rng(seed)
    cell = size // 4
    # positions on a 4x4 grid of cells: pairs share a quadrant
    positions = [(0, 0), (1, 1), (2, 2), (3, 3), (0, 3), (1, 2), (3, 0), (2, 1)][:num_classes]
    xs, ys = [], []
    for c in range(num_classes):
        r, q = positions[c]
        for _ in range(per_class):
            img = np.full((size, size, 3), 0.3, dtype="float32")
            img[r * cell : (r + 1) * cell, q * cell : (q + 1) * cell, :] = 0.9
            img += rng.normal(0.0, noise, size=img.shape)
            # same mean brightness for all classes: blob area is equal, so only noise varies
            xs.append(np.clip(img, 0, 1))
            ys.append(c)
    x = (np.stack(xs) * 255).round().astype("uint8")
    return x, np.asarray(ys, dtype="int64")


def changed_after_one_epoch(backbone, images: np.ndarray, labels: np.ndarray, *, lr: float = 0.1) -> set[str]:
    """Names of the backbone's variables that one SGD epoch of a Dense head on top changed.

    Used to check block freezing: callers set ``backbone.set_unfrozen_blocks(n)`` first.
    """
    import keras

    inp = keras.Input(images.shape[1:])
    model = keras.Model(inp, keras.layers.Dense(int(labels.max()) + 1, activation="softmax")(backbone(inp)))
    model.compile(optimizer=keras.optimizers.SGD(lr), loss="sparse_categorical_crossentropy")
    before = {n: w.numpy().copy() for n, w in backbone.named_variables()}
    model.fit(images, labels, epochs=1, batch_size=8, verbose=0)
    return {n for n, w in backbone.named_variables() if not np.array_equal(before[n], w.numpy())}


#: Kinds of :func:`write_broken_module`, each breaking one part of the module contract.
BROKEN_KINDS = ("nonfinite", "map", "flat_input", "load_error")


def write_broken_module(path: str | Path, kind: str, *, input_size: int = 16) -> Path:
    """Write a module that breaks the contract in one way, for the probe's failure handling.

    ``nonfinite``: finite features on an all-zero image (the load-time check passes) but +inf on any
    real image; ``map``: returns a ``[B, 4, 4, 3]`` map instead of ``[B, D]``; ``flat_input``: takes
    ``[B, 10]`` vectors instead of images; ``load_error``: a ``saved_model.pb`` that is not one.
    """
    if kind not in BROKEN_KINDS:
        raise ValueError(f"kind must be one of {', '.join(BROKEN_KINDS)}. Got {kind!r}.")
    path = Path(path)
    if kind == "load_error":
        path.mkdir(parents=True, exist_ok=True)
        (path / "saved_model.pb").write_bytes(b"not a SavedModel")
        return path
    w = tf.Variable(np.ones((3, 8), "float32"), name="head/kernel")
    image_spec = tf.TensorSpec([None, None, None, 3], tf.float32)

    def features(images: tf.Tensor) -> tf.Tensor:
        pooled = tf.reduce_mean(images, axis=[1, 2])
        if kind == "map":
            return tf.image.resize(images, [4, 4]) * w[0, 0]
        x = tf.matmul(pooled, w)
        return x / tf.cast(tf.reduce_max(pooled) <= 0.0, tf.float32)  # x / 0 = inf unless all zero

    if kind == "flat_input":
        call = tf.function(lambda x, training=False: tf.matmul(x, tf.ones([10, 3])) @ w)
        call.get_concrete_function(tf.TensorSpec([None, 10], tf.float32), False)
    else:
        call = tf.function(lambda images, training=False: features(images))
        for training in (False, True):
            call.get_concrete_function(image_spec, training)
    root = tf.train.Checkpoint(w=w)
    root.__call__ = call
    root.variables = [w]
    root.trainable_variables = [w]
    root.regularization_losses = []
    tf.saved_model.save(root, str(path))
    meta = {"name": path.name, "output": "feature_vector", "input_size": input_size, "license": "test fixture",
            "blocks": ["head"], "broken": kind}
    (path / METADATA_FILE).write_text(json.dumps(meta, indent=2))
    return path
