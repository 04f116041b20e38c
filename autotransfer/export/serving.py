"""Client-side helpers that speak TF Serving's Predict API against an exported model, in-process.

``make_predict_request``/``rest_to_request`` build the same ``PredictRequest`` a gRPC/REST client
would send; ``run_predict_request`` answers it from a ``tf.saved_model.load``ed export the way the
server does (signature by name, inputs by key, dtype checked). Tests use them to check the serving
contract without a server; ``Result.predict`` can use them to serve an export locally.
"""
from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from autotransfer.errors import UserInputError
from autotransfer.export.saved_model import (
    BYTES_KEY,
    BYTES_SIGNATURE,
    IMAGES_KEY,
    IMAGES_SIGNATURE,
    SIGNATURE_INPUTS,
    existing_versions,
)
from autotransfer.modalities.text import TEXT_KEY


def _is_bytes_list(values: Any) -> bool:
    if isinstance(values, np.ndarray):
        return values.dtype.kind in "SO"
    return isinstance(values, (list, tuple)) and len(values) > 0 and all(
        isinstance(v, (bytes, bytearray)) for v in values
    )


def _is_text_list(values: Any) -> bool:
    return isinstance(values, (list, tuple)) and len(values) > 0 and all(isinstance(v, str) for v in values)


def _image_array(values: Any) -> np.ndarray:
    """Float32 pixels in [0, 1] under the data stage's convention (uint8 or max > 1.5: 0..255)."""
    x = np.asarray(values)
    if x.dtype.kind not in "uif":
        raise UserInputError(f"make_predict_request: images must be numeric. Got dtype {x.dtype}.")
    scale = 1.0 / 255.0 if x.dtype == np.uint8 or (x.size and float(np.max(x)) > 1.5) else 1.0
    return x.astype(np.float32) * np.float32(scale)


def _tensor_proto(values: Any, dtype: tf.DType | None) -> Any:
    if _is_bytes_list(values) or dtype == tf.string:
        return tf.make_tensor_proto([bytes(v) for v in values] if not isinstance(values, np.ndarray)
                                    else values, dtype=tf.string)
    return tf.make_tensor_proto(np.asarray(values), dtype=dtype)


def make_predict_request(
    inputs: np.ndarray | list[bytes] | Mapping[str, Any],
    *,
    model_name: str,
    signature_name: str = IMAGES_SIGNATURE,
    version: int | None = None,
    input_key: str | None = None,
) -> Any:
    """A ``predict_pb2.PredictRequest`` for an exported model.

    ``inputs``: an array of images (uint8, or float in [0, 1]; converted to float32 in [0, 1]
    the way the data stage does) for ``serving_default``; a list of encoded image bytes for
    ``serving_bytes``; a list of strings for a text export's ``serving_default`` (key ``texts``);
    or a mapping of input key -> values sent as given. ``input_key`` overrides the signature's
    known input key.
    """
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    if isinstance(inputs, Mapping):
        for key, values in inputs.items():
            request.inputs[key].CopyFrom(_tensor_proto(values, None))
        return request
    if _is_text_list(inputs):  # texts: UTF-8 bytes under the text signature's key
        inputs, input_key = [t.encode("utf-8") for t in inputs], input_key or TEXT_KEY
    known_key, known_dtype = SIGNATURE_INPUTS.get(signature_name, (None, None))
    if input_key is not None and input_key != known_key:  # another modality's signature of that name
        known_key, known_dtype = None, None
    is_bytes = _is_bytes_list(inputs)
    key = input_key or known_key or (BYTES_KEY if is_bytes else IMAGES_KEY)
    if known_dtype is not None and is_bytes != (known_dtype == tf.string):
        want = "a list of encoded image bytes" if known_dtype == tf.string else "an image array"
        raise UserInputError(f"make_predict_request: signature {signature_name!r} takes {want}.")
    if is_bytes:
        request.inputs[key].CopyFrom(_tensor_proto(inputs, tf.string))
    else:
        request.inputs[key].CopyFrom(tf.make_tensor_proto(_image_array(inputs), dtype=tf.float32))
    return request


def _signature(loaded: Any, name: str) -> Any:
    signatures = getattr(loaded, "signatures", None)
    if signatures is None:
        raise UserInputError("run_predict_request: the object has no SavedModel signatures.")
    if name not in signatures:
        raise UserInputError(
            f"run_predict_request: no signature {name!r}; the model has {sorted(signatures)}."
        )
    return signatures[name]


def run_predict_request(loaded: Any, request: Any) -> dict[str, np.ndarray]:
    """Answer a ``PredictRequest`` from a ``tf.saved_model.load``ed export; outputs as numpy.

    Like TF Serving: the signature is ``request.model_spec.signature_name`` (default
    ``serving_default``), input keys must match the signature exactly, dtypes are not converted,
    and ``output_filter`` (when set) selects outputs.
    """
    name = request.model_spec.signature_name or IMAGES_SIGNATURE
    fn = _signature(loaded, name)
    _, specs = fn.structured_input_signature
    missing = sorted(set(specs) - set(request.inputs))
    extra = sorted(set(request.inputs) - set(specs))
    if missing or extra:
        parts = ([f"missing input(s) {missing}"] if missing else []) + (
            [f"unexpected input(s) {extra}"] if extra else []
        )
        raise UserInputError(
            f"Signature {name!r} takes inputs {sorted(specs)}: " + "; ".join(parts) + "."
        )
    feeds = {}
    for key, spec in specs.items():
        proto = request.inputs[key]
        dtype = tf.dtypes.as_dtype(proto.dtype)
        if dtype != spec.dtype:
            raise UserInputError(
                f"Signature {name!r} input {key!r} must be {spec.dtype.name}; got {dtype.name}."
            )
        array = tf.make_ndarray(proto)
        if not spec.shape.is_compatible_with(array.shape):
            raise UserInputError(
                f"Signature {name!r} input {key!r} must have shape {spec.shape.as_list()} "
                f"(None = any); got {list(array.shape)}."
            )
        feeds[key] = tf.constant(array, dtype=spec.dtype)
    outputs = {k: v.numpy() for k, v in fn(**feeds).items()}
    if request.output_filter:
        unknown = sorted(set(request.output_filter) - set(outputs))
        if unknown:
            raise UserInputError(f"Signature {name!r} has no output(s) {unknown}; it has {sorted(outputs)}.")
        outputs = {k: outputs[k] for k in request.output_filter}
    return outputs


def predict_response(loaded: Any, request: Any) -> Any:
    """``run_predict_request`` wrapped in a ``predict_pb2.PredictResponse`` (as a server answers)."""
    from tensorflow_serving.apis import predict_pb2

    response = predict_pb2.PredictResponse()
    response.model_spec.CopyFrom(request.model_spec)
    if not response.model_spec.signature_name:
        response.model_spec.signature_name = IMAGES_SIGNATURE
    for key, value in run_predict_request(loaded, request).items():
        response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
    return response


def _decode_b64(value: Any) -> Any:
    """Replace every ``{"b64": "..."}`` object by its bytes (TF Serving's REST convention)."""
    if isinstance(value, Mapping) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, Mapping):
        return {k: _decode_b64(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_decode_b64(v) for v in value]
    return value


def _column_proto(key: str, values: Sequence[Any], signature_name: str) -> Any:
    known_key, known_dtype = SIGNATURE_INPUTS.get(signature_name, (None, None))
    if _is_text_list(values):
        return tf.make_tensor_proto([v.encode("utf-8") for v in values], dtype=tf.string)
    if values and all(isinstance(v, bytes) for v in values):
        return tf.make_tensor_proto(list(values), dtype=tf.string)
    if any(isinstance(v, bytes) for v in values):
        raise UserInputError(f"REST body: input {key!r} mixes b64 objects with other values.")
    dtype = known_dtype if key == known_key and known_dtype != tf.string else None
    try:
        array = np.asarray(values, dtype=dtype.as_numpy_dtype if dtype is not None else None)
    except ValueError as exc:
        raise UserInputError(f"REST body: input {key!r} is not a rectangular array: {exc}") from exc
    if dtype is None and array.dtype == np.float64:
        array = array.astype(np.float32)  # JSON numbers: TF Serving reads them as the input's float type
    return tf.make_tensor_proto(array)


def _row_values(instances: Any) -> tuple[dict[str, list[Any]] | None, Any]:
    """``(columns, None)`` for row-format ``instances`` that name their inputs, else ``(None, values)``
    (the values of a single input); ``{"b64": ...}`` objects decoded."""
    if not isinstance(instances, list) or not instances:
        raise UserInputError('REST body: "instances" must be a non-empty list.')
    instances = _decode_b64(instances)
    named = [isinstance(i, Mapping) for i in instances]
    if any(named) and not all(named):
        raise UserInputError('REST body: "instances" mixes named (object) and unnamed values.')
    if not all(named):
        return None, instances
    keys = set(instances[0])
    if any(set(i) != keys for i in instances):
        raise UserInputError('REST body: every instance must have the same input names.')
    return {k: [i[k] for i in instances] for k in instances[0]}, None


def _columnar_values(inputs: Any) -> tuple[dict[str, list[Any]] | None, Any]:
    """As :func:`_row_values`, for columnar ``inputs`` (a mapping of named inputs, or one input's values)."""
    inputs = _decode_b64(inputs)
    if isinstance(inputs, Mapping):
        return {k: (v if isinstance(v, list) else [v]) for k, v in inputs.items()}, None
    return None, inputs if isinstance(inputs, list) else [inputs]


def _default_signature(columns: dict[str, list[Any]] | None, single: Any) -> str:
    """The signature for a body without ``signature_name``: ``serving_bytes`` for bytes inputs,
    else ``serving_default``."""
    values = single if columns is None else [v for col in columns.values() for v in col]
    bytes_like = (columns is not None and BYTES_KEY in columns) or all(isinstance(v, bytes) for v in values)
    return BYTES_SIGNATURE if bytes_like else IMAGES_SIGNATURE


def _named_columns(columns: dict[str, list[Any]] | None, single: Any, signature_name: str) -> dict[str, list[Any]]:
    """``columns``, or the single input's values under its name: a text export's ``texts`` for
    strings, else the input of ``signature_name``."""
    if columns is not None:
        return columns
    if _is_text_list(single):  # a text export: its one input
        return {TEXT_KEY: single}
    key = SIGNATURE_INPUTS.get(signature_name, (None, None))[0]
    if key is None:
        raise UserInputError(
            f"REST body: signature {signature_name!r} is not one autotransfer exports; name the "
            'inputs ({"instances": [{"<input>": ...}]}).'
        )
    return {key: single}


def rest_to_request(body: Mapping[str, Any], *, model_name: str, version: int | None = None) -> Any:
    """Translate a TF Serving REST predict body into a ``PredictRequest``.

    Row format ``{"signature_name": ..., "instances": [...]}``: each instance is one example, either
    the value of the single input (``[[...pixels...]]`` or ``{"b64": "..."}``) or an object of
    named inputs (``{"image_bytes": {"b64": "..."}}``). Columnar ``{"inputs": ...}`` is accepted
    too. ``{"b64": ...}`` objects become bytes; plain strings are texts (a text export's ``texts``
    input, ``{"instances": ["some text", ...]}``). When ``signature_name`` is absent this picks
    ``serving_bytes`` for bytes inputs (the real server would use ``serving_default`` and reject
    them, so send ``"signature_name": "serving_bytes"`` to TF Serving).
    """
    if not isinstance(body, Mapping):
        raise UserInputError("REST body must be a JSON object.")
    if ("instances" in body) == ("inputs" in body):
        raise UserInputError('REST body must have exactly one of "instances" (row) or "inputs" (columnar).')
    signature_name = body.get("signature_name")
    columns, single = _row_values(body["instances"]) if "instances" in body else _columnar_values(body["inputs"])
    if signature_name is None:
        signature_name = _default_signature(columns, single)
    columns = _named_columns(columns, single, signature_name)

    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    for key, values in columns.items():
        request.inputs[key].CopyFrom(_column_proto(key, values, signature_name))
    return request


def load_exported(path: str | Path) -> Any:
    """``tf.saved_model.load`` an export: a version dir, or a model dir (latest version, as TF Serving)."""
    path = Path(path)
    if not (path / "saved_model.pb").exists():
        versions = existing_versions(path)
        if not versions:
            raise UserInputError(f"{path} holds no SavedModel and no numeric version directories.")
        path = path / str(versions[-1])
    from autotransfer.backbones.sources import load_saved_model

    return load_saved_model(path)
