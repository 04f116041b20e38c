"""HubBackbone: a Keras 3 layer around a TF-Hub-format SavedModel, freezable by whole blocks.

``hub.KerasLayer`` does not work inside Keras 3 models, so this layer loads the module with
``tf.saved_model.load`` and wraps each of its ``tf.Variable``s in a ``keras.Variable`` (a wrapper that
shares storage, not a copy). Keras then sees the module's weights as its own and trains the ones
whose ``trainable`` flag is set; after changing flags the model must be recompiled.

A text backbone is a string-in module, or a TF-Hub BERT-style pair: a preprocessor (strings ->
``{input_word_ids, input_mask, input_type_ids}``, never trained) feeding an encoder (-> a dict with
``pooled_output`` and ``sequence_output``), run as one layer that takes strings.
"""
from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from autotransfer.backbones.sources import METADATA_FILE, backbone_fingerprint, load_saved_model, resolve_handle
from autotransfer.errors import BackboneError, MissingDependencyError

if TYPE_CHECKING:
    from autotransfer.backbones.spec import BackboneSpec


def _first_arg_spec(module: Any) -> tf.TensorSpec | None:
    """The spec of the first argument ``__call__`` was traced for, when it is one tensor."""
    for fn in getattr(getattr(module, "__call__", None), "concrete_functions", None) or []:
        args = fn.structured_input_signature[0]
        if args and isinstance(args[0], tf.TensorSpec):
            return args[0]
    return None


def _signature_modality(module: Any) -> str:
    """``text`` when the module's ``__call__`` was traced for strings, else ``image``."""
    spec = _first_arg_spec(module)
    return "text" if spec is not None and spec.dtype == tf.string else "image"


def _takes_training(fn: Any) -> bool:
    """Whether ``fn`` (a loaded module's ``__call__``) has a ``training`` argument. TF-Hub's reusable
    SavedModel API makes it optional: text modules converted from TF1 (e.g. nnlm, USE) may lack it,
    and calling them with it fails. Unknown (no signature): assume it has."""
    import inspect

    # A loaded module object: its restored __call__ function holds the traced signature.
    target = fn if hasattr(fn, "function_type") else getattr(fn, "__call__", fn)
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == "training" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _var_name(v: tf.Variable) -> str:
    return v.name.split(":")[0]


#: A stacked layer's path: ``[...]/layer_<i>`` (a TF-Hub BERT encoder's ``transformer/layer_0``).
_STACKED_LAYER = re.compile(r"^((?:[^/]+/)*?layer_)(\d+)(?=/|$)")


def infer_blocks(names: list[str]) -> list[str]:
    """Group variable names into ordered blocks when the module does not list them.

    Drops the path components every name shares (e.g. ``MobilenetV2/``) and takes the next component
    as the block, in first-appearance order: good enough to unfreeze "the last n blocks".
    A stack of numbered layers (one prefix ending in ``layer_<i>``, as TF-Hub BERT encoders'
    ``transformer/layer_0`` ..) is one block per layer, in numeric order, after the other blocks
    (embeddings); what runs after the stack (``pooler*`` blocks, anything in the stack's folder
    outside its layers) joins the last layer's block, named ``LAST+POOLER``: the last n blocks are
    then the last n layers and the pooler.
    """
    parts = [n.split("/") for n in names]
    common = 0
    while parts and all(len(p) > common + 1 and p[common] == parts[0][common] for p in parts):
        common += 1
    matches = [_STACKED_LAYER.match(n) for n in names]
    stacks = {m.group(1) for m in matches if m is not None}
    if len(stacks) != 1:
        return _first_blocks(parts, common)
    stack = stacks.pop()
    layers = [f"{stack}{i}" for i in sorted({int(m.group(2)) for m in matches if m is not None})]
    rest = _first_blocks([p for p, m in zip(parts, matches) if m is None], common)
    folder = stack.rpartition("/")[0]
    after = [b for b in rest
             if b.split("/")[-1].startswith("pooler") or (folder and (b + "/").startswith(folder + "/"))]
    before = [b for b in rest if b not in after]
    return before + layers[:-1] + ["+".join([layers[-1], *after])]


def _first_blocks(parts: list[list[str]], common: int) -> list[str]:
    """The distinct ``common + 1``-component prefixes of ``parts``, in first-appearance order."""
    blocks: list[str] = []
    for p in parts:
        block = "/".join(p[: common + 1])
        if block not in blocks:
            blocks.append(block)
    return blocks


def _block_of(name: str, blocks: list[str]) -> str | None:
    """The block holding variable ``name``: the one with the longest prefix of it (a block may
    join several prefixes with ``+``)."""
    best, best_len = None, -1
    for b in blocks:
        for prefix in b.split("+"):
            if (name == prefix or name.startswith(prefix + "/")) and len(prefix) > best_len:
                best, best_len = b, len(prefix)
    return best


def _load(handle: str, path: Any, role: str | None = None) -> Any:
    """``load_saved_model(path)``; any failure but a missing add-on becomes one BackboneError line."""
    try:
        return load_saved_model(path)
    except MissingDependencyError:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken module gets one clear message
        raise BackboneError(f"{role or 'Backbone'} {handle!r}: tf.saved_model.load({path}) failed: {exc}") from exc


#: ``output_key`` of a pair for the mean of ``sequence_output`` over the real tokens (``input_mask``).
MEAN_SEQUENCE_OUTPUT = "sequence_output:mean"


class HubBackbone(keras.layers.Layer):
    """Keras 3 layer running a TF-Hub-format image module (float32 images in [0, 1]), or a text one
    (a batch of raw strings): a string-in module, or an encoder + preprocessor pair.

    Args:
        handle: local directory, ``file://``, ``zoo://`` or tfhub.dev/Kaggle URL.
        input_size: native input size (from the module's metadata when omitted).
        output_key: key to pick when the module returns a dict (a pair: ``pooled_output`` when
            omitted; :data:`MEAN_SEQUENCE_OUTPUT` averages ``sequence_output`` over the input mask).
        bn_training: pass ``training=True`` to the module while training. Off by default so that
            BatchNorm keeps its moving statistics during fine-tuning of small datasets.
        layer: an earlier block to take pooled features from, through the module's ``features_at``
            functions (the zoo's modules have them); blocks after it are dropped.
        preprocess_handle: a TF-Hub BERT-style preprocessor (strings -> ``{input_word_ids,
            input_mask, input_type_ids}``) feeding ``handle``, the encoder. It is never trained:
            only the encoder's variables are wrapped, and its blocks come from the encoder.
    """

    #: What the module takes (:mod:`autotransfer.modalities`): its preprocessor builds the inputs.
    #: Set per module at load: the metadata's ``modality``, else ``text`` when ``__call__`` takes
    #: strings (a TF-Hub text module) or for a pair, else ``image``.
    modality = "image"

    @classmethod
    def from_spec(cls, spec: "BackboneSpec", **kwargs: Any) -> "HubBackbone":
        """The layer for a search-space candidate (handle, input size, output key, layer, preprocessor)."""
        kwargs.setdefault("layer", spec.layer)
        kwargs.setdefault("preprocess_handle", spec.preprocess_handle)
        return cls(spec.handle, input_size=spec.input_size, output_key=spec.output_key, **kwargs)

    def __init__(
        self,
        handle: str,
        *,
        input_size: int | None = None,
        output_key: str | None = None,
        bn_training: bool = False,
        layer: str | None = None,
        preprocess_handle: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.handle = handle
        self.module_path = resolve_handle(handle)
        self.output_key = output_key
        self.bn_training = bn_training
        self.preprocess_handle = preprocess_handle
        self.preprocess_path = None  # a pair's: set by _load_preprocessor
        module = _load(handle, self.module_path)
        if not callable(module) or not hasattr(module, "variables"):
            raise BackboneError(
                f"Backbone {handle!r} is not a TF-Hub reusable SavedModel (needs __call__ and .variables)."
            )
        self._module = module
        self._preprocess = None if preprocess_handle is None else self._load_preprocessor(preprocess_handle)
        self.layer = layer
        self._fn = module if layer is None else self._feature_layer(layer)
        self._fn_takes_training = _takes_training(self._fn)
        meta_file = self.module_path / METADATA_FILE
        self.metadata: dict[str, Any] = json.loads(meta_file.read_text()) if meta_file.exists() else {}
        if layer is not None and bn_training and self.metadata.get("features_at_training") is False:
            raise BackboneError(
                f"Backbone {handle!r}: features_at[{layer!r}] is traced for inference only, so BatchNorm "
                "can't train through it. Use bn_training=False, or the module's final features (no layer)."
            )
        # A pair takes what its preprocessor takes: strings.
        self.modality = "text" if self._preprocess is not None else str(
            self.metadata.get("modality") or _signature_modality(module))
        # A text module has no input size (0); an image module's defaults to the metadata's, else 224.
        self.input_size = 0 if self.modality == "text" else int(input_size or self.metadata.get("input_size") or 224)
        self._wrap_variables(module, layer)
        self.output_dim = self._check_contract()
        self.unfrozen_blocks = 0
        self.set_unfrozen_blocks(0)

    def _load_preprocessor(self, handle: str) -> Any:
        """The pair's preprocessor: loaded (its tensorflow-text ops registered), taking strings."""
        self.preprocess_path = resolve_handle(handle)
        pre = _load(handle, self.preprocess_path, role=f"Preprocessor of backbone {self.handle!r}")
        spec = _first_arg_spec(pre)
        if not callable(pre) or (spec is not None and spec.dtype != tf.string):
            raise BackboneError(
                f"preprocess_handle {handle!r} of backbone {self.handle!r} does not take strings: it must be a TF-Hub "
                "text preprocessor (strings -> input_word_ids, input_mask, input_type_ids). Fix preprocess_handle.")
        return pre

    def _feature_layer(self, layer: str) -> Any:
        fns = getattr(self._module, "features_at", None)
        available = sorted(fns.keys()) if fns is not None else []
        if layer not in available:
            raise BackboneError(
                f"Backbone {self.handle!r} has no feature layer {layer!r} (available: {', '.join(available) or 'none'}). "
                "Fix 'layers' in the search space."
            )
        return fns[layer]

    def _wrap_variables(self, module: Any, layer: str | None) -> None:
        """Wrap the module's variables (a pair: the encoder's only) as Keras variables, by block."""
        tf_vars = list(module.variables)
        trainable_ids = {id(v) for v in getattr(module, "trainable_variables", tf_vars)}
        self._source_trainable = [id(v) in trainable_ids for v in tf_vars]
        self.variable_names = [_var_name(v) for v in tf_vars]
        self.blocks: list[str] = list(self.metadata.get("blocks") or infer_blocks(self.variable_names))
        if layer is not None and layer in self.blocks:
            self.blocks = self.blocks[: self.blocks.index(layer) + 1]
        self._var_block = [_block_of(n, self.blocks) for n in self.variable_names]
        # Wrap, don't copy: training through Keras updates the module's own variables.
        self._wrapped = [
            keras.Variable(v, trainable=t, name=n.replace("/", "__"))
            for v, t, n in zip(tf_vars, self._source_trainable, self.variable_names)
        ]
        self.num_params = int(sum(np.prod(v.shape) for v in tf_vars))

    def _check_contract(self) -> int:
        """Run the module once on its modality's dummy input (an all-zero ``[1, S, S, 3]`` image
        batch, or one string); returns the feature width.

        Raises BackboneError (one line) when the module cannot take that input, does not return
        ``[B, D]`` features or returns non-finite values, so a broken candidate fails at load.
        """
        from autotransfer import modalities

        size = self.input_size
        dummy = modalities.get(self.modality).dummy_input(size)
        try:
            out = self._forward(dummy)
        except BackboneError:
            raise
        except Exception as exc:  # noqa: BLE001 - TF's signature mismatch is a 40-line dump: one line of it
            text = str(exc)
            expected = re.search(r"Expected these arguments.*?TensorSpec\(shape=\(([^)]*)\), dtype=tf\.(\w+)", text, re.S)
            why = (f"it takes {expected.group(2)} [{expected.group(1).rstrip(',')}]" if expected else
                   f"{type(exc).__name__}: {(text.strip().splitlines() or [''])[0][:200]}")
            what = ("a batch of one string" if self.modality == "text" else
                    f"a float32 [1, {size}, {size}, 3] image batch")
            fix = ("A TF-Hub text module takes strings [B]; fix the handle." if self.modality == "text" else
                   "A TF-Hub image module takes images [B, H, W, 3]; fix the handle or its input_size.")
            if self._preprocess is not None:
                fix = (f"preprocess_handle {self.preprocess_handle!r} must map strings to input_word_ids, input_mask "
                       "and input_type_ids, and handle (the encoder) take that dict; fix the pair.")
            raise BackboneError(f"Backbone {self.handle!r} cannot be called on {what} ({why}). {fix}") from None
        shape = [int(d) if d is not None else None for d in out.shape]
        if len(shape) != 2 or shape[0] != 1:
            raise BackboneError(
                f"Backbone {self.handle!r} returns shape {shape} for one image; a feature-vector module must "
                "return [B, D] features (a pooled output). Use the module's feature_vector variant or set output_key."
            )
        if not bool(tf.reduce_all(tf.math.is_finite(tf.cast(out, tf.float32)))):
            raise BackboneError(
                f"Backbone {self.handle!r} returns non-finite features (inf or NaN) on "
                f"{'a short text' if self.modality == 'text' else 'an all-zero image'}; "
                "the module is broken. Remove it from the search space."
            )
        return shape[1]

    # -- freezing ---------------------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def set_unfrozen_blocks(self, n: int) -> None:
        """Make only the module variables of the last ``n`` blocks trainable (0 = frozen).

        Variables the module itself marks non-trainable (BatchNorm statistics) stay frozen.
        Recompile the model after calling this.
        """
        if not 0 <= n <= self.num_blocks:
            raise ValueError(f"n must be in [0, {self.num_blocks}] for {self.handle!r}. Got {n}.")
        open_blocks = set(self.blocks[len(self.blocks) - n :]) if n else set()
        for w, src_trainable, block in zip(self._wrapped, self._source_trainable, self._var_block):
            w.trainable = bool(src_trainable and block in open_blocks)
        self.unfrozen_blocks = n

    def block_variables(self, block: str) -> list[keras.Variable]:
        """The wrapped variables of one block (by name)."""
        return [w for w, b in zip(self._wrapped, self._var_block) if b == block]

    def variables_by_block(self) -> list[tuple[keras.Variable, str | None]]:
        """``(variable, block)`` for every wrapped module variable, in the module's order; ``block``
        is the name of the block it belongs to (one of :attr:`blocks`), or None for a variable after
        the last block (a layer candidate's later blocks: never trained)."""
        return list(zip(self._wrapped, self._var_block))

    def named_variables(self) -> list[tuple[str, keras.Variable]]:
        """``(name, variable)`` for every wrapped module variable, in the module's order (the names
        of :attr:`variable_names`; training the layer updates the module's own variables)."""
        return list(zip(self.variable_names, self._wrapped))

    @property
    def all_features(self) -> Any | None:
        """The module's ``all_features(images)`` function (every feature layer's pooled features in
        one pass, as ``{layer: [B, D]}``) when its contract has one, else None."""
        return getattr(self._module, "all_features", None)

    # -- frozen prefix --------------------------------------------------------------------------
    def prefix_cut(self, n: int) -> str | None:
        """The block where the last ``n`` blocks start, when the module can be cut there
        (``prefix_to`` with ``from_block``, or ``from_block_to[layer]`` for a layer candidate, of the
        module contract), else None."""
        if self.layer is None:
            cuts, suffixes = self.metadata.get("prefix_cuts") or {}, getattr(self._module, "from_block", None)
        else:
            cuts = (self.metadata.get("layer_prefix_cuts") or {}).get(self.layer) or {}
            suffixes = getattr(self._module, "from_block_to", None)
        if not 0 < n <= self.num_blocks or suffixes is None or not hasattr(self._module, "prefix_to"):
            return None
        cut = self.blocks[self.num_blocks - n]
        return cut if cut in cuts else None

    def prefix(self, cut: str, inputs: tf.Tensor) -> Any:
        """What enters block ``cut`` (inference mode; fixed while blocks before it are frozen): for
        images the activation map ``[B, h, w, C]``; for text ``(hidden [B, L, H], mask [B, L])``,
        the batch padded to its longest text."""
        if self.modality == "text":
            return self._module.prefix_to[cut](tf.convert_to_tensor(inputs, tf.string))
        return self._module.prefix_to[cut](tf.convert_to_tensor(inputs, tf.float32))

    def suffix(self, cut: str, activations: Any) -> tf.Tensor:
        """The features (of ``layer`` when set) from what :meth:`prefix` returned (text: the
        ``(hidden, mask)`` pair): trains the blocks from ``cut`` on."""
        if self.modality == "text":
            hidden, mask = activations
            return self._module.from_block[cut](hidden, mask)
        if self.layer is None:
            return self._module.from_block[cut](activations)
        return self._module.from_block_to[self.layer][cut](activations)

    def resources(self) -> list[Any]:
        """The module's lookup tables and other non-variable resources (a text module's vocabulary):
        an export must track them, since an ExportArchive collects only variables by itself."""
        # A pair's vocabulary lives in its preprocessor: without it the export could not take strings.
        found, seen, todo = [], set(), [m for m in (self._module, self._preprocess) if m is not None]
        while todo:
            obj = todo.pop()
            if id(obj) in seen or isinstance(obj, tf.Variable):
                continue
            seen.add(id(obj))
            if isinstance(obj, tf.saved_model.experimental.TrackableResource):
                found.append(obj)
            todo.extend(tf.train.TrackableView.children(obj).values())
        return found

    def fingerprint(self) -> str:
        """Content fingerprint of the module, and of its preprocessor for a pair (cache key component)."""
        return backbone_fingerprint(str(self.module_path),
                                    None if self.preprocess_path is None else str(self.preprocess_path))

    # -- forward ----------------------------------------------------------------------------------
    def _forward(self, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
        kwargs = {"training": training} if self._fn_takes_training else {}
        if self._preprocess is None:
            return self._pick(self._fn(inputs, **kwargs))
        # The preprocessor is a fixed function of the strings: nothing in it trains.
        encoder_inputs = self._preprocess(inputs)
        return self._pick(self._fn(encoder_inputs, **kwargs), encoder_inputs)

    def _pick(self, out: Any, encoder_inputs: dict | None = None) -> tf.Tensor:
        """The features from the module's output: a tensor as is, else the dict's ``output_key``
        (default: a pair's ``pooled_output``; the first of default, feature_vector, pooled_output, logits)."""
        if not isinstance(out, dict):
            return out
        if encoder_inputs is not None and self.output_key == MEAN_SEQUENCE_OUTPUT and "sequence_output" in out:
            mask = tf.cast(encoder_inputs["input_mask"], out["sequence_output"].dtype)[:, :, None]
            return tf.reduce_sum(out["sequence_output"] * mask, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)
        pair = encoder_inputs is not None
        defaults = ("pooled_output",) if pair else ("default", "feature_vector", "pooled_output", "logits")
        key = self.output_key or next((k for k in defaults if k in out), None)
        if key is None or key not in out:
            extra = f" or {MEAN_SEQUENCE_OUTPUT}" if pair else ""
            raise BackboneError(f"Backbone {self.handle!r} returns a dict {sorted(out)}; set output_key to one of "
                                f"them{extra} (got {self.output_key!r}).")
        return out[key]

    def call(self, images: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        return self._forward(images, training=bool(training) and self.bn_training)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.output_dim)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(handle=self.handle, input_size=self.input_size, output_key=self.output_key,
                      bn_training=self.bn_training, layer=self.layer, preprocess_handle=self.preprocess_handle)
        return config
