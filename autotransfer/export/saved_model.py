"""Export a trained Keras classifier as a TF Serving model version.

Layout written (TF Serving's file-system source only loads numeric children of the model dir)::

    <export_dir>/<model_name>/<version>/
        saved_model.pb, variables/            signatures serving_default, serving_bytes
        assets/labels.txt                     one class name per line, index order
        assets.extra/tf_serving_warmup_requests   TFRecord of PredictionLog (both signatures)
        autotransfer_export.json              class_names, input_size, signatures, created, versions

The version is written under a hidden temporary name in the model dir and renamed into place
only when complete (and, by default, reloaded and warmed up), so a server polling the model dir
never sees a half-written version and a failed export leaves no numeric directory behind. An
export killed before it could clean up leaves its temporary directory, which the next export
removes (:func:`remove_stale_exports`).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from autotransfer.errors import AutotransferError, UserInputError
from autotransfer.locks import try_lock, unlock

IMAGES_SIGNATURE = "serving_default"
BYTES_SIGNATURE = "serving_bytes"
IMAGES_KEY = "images"
BYTES_KEY = "image_bytes"
#: signature name -> (input key, input dtype)
SIGNATURE_INPUTS: dict[str, tuple[str, tf.DType]] = {
    IMAGES_SIGNATURE: (IMAGES_KEY, tf.float32),
    BYTES_SIGNATURE: (BYTES_KEY, tf.string),
}
OUTPUT_KEYS = ("probabilities", "class_index", "label")
LABELS_FILE = "labels.txt"
WARMUP_FILE = "tf_serving_warmup_requests"
METADATA_FILE = "autotransfer_export.json"
#: A version being written: ``.tmp-<version>-<random>`` (hidden, non-numeric), with a ``.lock`` beside it.
TMP_PREFIX = ".tmp-"
LOCK_SUFFIX = ".lock"
_MAX_WARMUP_IMAGES = 8


class VersionExistsError(AutotransferError, FileExistsError):
    """The requested model version directory already exists (versions are never overwritten)."""


def existing_versions(model_dir: str | Path) -> list[int]:
    """Numeric version directories under ``model_dir`` (what TF Serving would load), ascending."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def _sizes(input_size: int | list[int] | tuple[int, ...]) -> list[int]:
    """Input sizes ascending; the largest is what ``serving_default`` takes."""
    return sorted({int(input_size)}) if isinstance(input_size, (int, np.integer)) else sorted({int(s) for s in input_size})


def _signature_specs(input_size: int) -> dict[str, tf.TensorSpec]:
    return {
        IMAGES_SIGNATURE: tf.TensorSpec([None, input_size, input_size, 3], tf.float32, name=IMAGES_KEY),
        BYTES_SIGNATURE: tf.TensorSpec([None], tf.string, name=BYTES_KEY),
    }


def model_call(model: keras.Model, sizes: list[int]) -> Any:
    """``fn(images at max(sizes)) -> probabilities``: a model with one input per size (an ensemble
    whose members take different sizes) gets the other sizes resized from the largest."""
    from autotransfer.data import resize_images

    def call(images: tf.Tensor) -> tf.Tensor:
        if len(sizes) == 1:
            return model(images, training=False)
        return model([resize_images(images, s) for s in sizes], training=False)

    return call


def _build_archive(model: keras.Model, class_names: list[str], sizes: list[int], max_pixels: int | None = None) -> Any:
    """An ExportArchive with both serving signatures.

    ExportArchive (not a hand-made tf.Module) because it collects every variable the endpoint
    graphs capture -- including the HubBackbone's module variables behind their keras.Variable
    wrappers. The model is deliberately not ``track()``ed: in Keras 3.15 that also saves the
    keras.Variable wrappers as separate checkpoint entries, doubling the variables file, and
    serving needs no ``loaded.variables``. ``serving_bytes`` decodes every image once per input
    size with the training pipeline's own ops, so each member sees exactly its training input.
    Both check their input in the graph (TF Serving does not): ``serving_default`` the image shape,
    ``serving_bytes`` each image's pixel count from its header, before decoding (``max_pixels``).
    """
    from autotransfer.data import decode_image_sizes
    from autotransfer.export.serving import check_image_batch, check_pixel_limit

    labels = tf.constant(list(class_names), dtype=tf.string)
    largest = sizes[-1]
    call = model_call(model, sizes)

    def outputs(probs: tf.Tensor) -> dict[str, tf.Tensor]:
        # Cast: a mixed-precision model may emit float16; the contract is float32.
        probs = tf.cast(probs, tf.float32)
        index = tf.argmax(probs, axis=-1, output_type=tf.int64)
        return {"probabilities": probs, "class_index": index, "label": tf.gather(labels, index)}

    def serve_images(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return outputs(call(check_image_batch(images, largest)))

    def serve_bytes(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        # Per image: encoded sizes differ, so decoding cannot be batched.
        specs = tuple(tf.TensorSpec([s, s, 3], tf.float32) for s in sizes)
        limit = {} if max_pixels is None else {"max_pixels": max_pixels}
        decoded = tf.map_fn(lambda b: decode_image_sizes(check_pixel_limit(b, **limit), sizes), image_bytes,
                            fn_output_signature=specs)
        return outputs(model(decoded[0] if len(sizes) == 1 else list(decoded), training=False))

    specs = _signature_specs(largest)
    archive = keras.export.ExportArchive()
    archive.add_endpoint(IMAGES_SIGNATURE, serve_images, input_signature=[specs[IMAGES_SIGNATURE]])
    archive.add_endpoint(BYTES_SIGNATURE, serve_bytes, input_signature=[specs[BYTES_SIGNATURE]])
    return archive


def _warmup_arrays(warmup_images: np.ndarray | None, input_size: int) -> tuple[np.ndarray, list[bytes]]:
    """(float32 [n, S, S, 3] in [0, 1], PNG bytes of the same images) for the warmup requests."""
    if warmup_images is None:
        x = np.zeros((2, input_size, input_size, 3), np.float32)
    else:
        x = np.asarray(warmup_images)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[-1] != 3 or len(x) == 0:
            raise UserInputError(
                f"export_model: warmup_images must be [N, H, W, 3] with N >= 1. Got shape {x.shape}."
            )
        x = x[:_MAX_WARMUP_IMAGES]
        # Same convention as the data stage: uint8 or float > 1.5 means 0..255.
        scale = 1.0 / 255.0 if x.dtype == np.uint8 or float(np.max(x)) > 1.5 else 1.0
        x = np.clip(x.astype(np.float32) * scale, 0.0, 1.0)
        if x.shape[1:3] != (input_size, input_size):
            x = tf.image.resize(x, [input_size, input_size], method="bilinear", antialias=True).numpy()
            x = np.clip(x, 0.0, 1.0)
    pngs = [tf.io.encode_png(tf.cast(tf.round(img * 255.0), tf.uint8)).numpy() for img in x]
    return x.astype(np.float32), pngs


def write_warmup_requests(
    path: str | Path, *, model_name: str, images: np.ndarray, image_bytes: list[bytes]
) -> int:
    """Write a TFRecord of ``PredictionLog`` warmup records for both signatures; returns the count.

    One request with the whole batch and one with a single image per signature, since TF Serving
    may specialise kernels per batch size.
    """
    from tensorflow_serving.apis import prediction_log_pb2

    from autotransfer.export.serving import make_predict_request

    requests = [
        make_predict_request(images, model_name=model_name, signature_name=IMAGES_SIGNATURE),
        make_predict_request(images[:1], model_name=model_name, signature_name=IMAGES_SIGNATURE),
        make_predict_request(list(image_bytes), model_name=model_name, signature_name=BYTES_SIGNATURE),
        make_predict_request(list(image_bytes[:1]), model_name=model_name, signature_name=BYTES_SIGNATURE),
    ]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for request in requests:
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return len(requests)


def read_warmup_requests(path: str | Path) -> list[Any]:
    """Parse a warmup file back into ``PredictionLog`` messages."""
    from tensorflow_serving.apis import prediction_log_pb2

    logs = []
    for record in tf.data.TFRecordDataset(str(path)):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record.numpy())
        logs.append(log)
    return logs


def _package_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("autotransfer")
    except Exception:  # noqa: BLE001 - metadata is optional (e.g. running from a source tree)
        return None


def _metadata(class_names: list[str], sizes: list[int], model_name: str, version: int) -> dict[str, Any]:
    input_size = sizes[-1]
    num_classes = len(class_names)
    outputs = {
        "probabilities": {"dtype": "float32", "shape": [None, num_classes]},
        "class_index": {"dtype": "int64", "shape": [None]},
        "label": {"dtype": "string", "shape": [None]},
    }
    return {
        "model_name": model_name,
        "version": version,
        "class_names": list(class_names),
        "num_classes": num_classes,
        "input_size": input_size,
        "member_input_sizes": list(sizes),
        "signatures": {
            IMAGES_SIGNATURE: {
                "inputs": {IMAGES_KEY: {"dtype": "float32", "shape": [None, input_size, input_size, 3],
                                        "range": [0.0, 1.0]}},
                "outputs": outputs,
            },
            BYTES_SIGNATURE: {
                "inputs": {BYTES_KEY: {"dtype": "string", "shape": [None],
                                       "format": "encoded JPEG/PNG/GIF/BMP/WebP"}},
                "outputs": outputs,
            },
        },
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "autotransfer_version": _package_version(),
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
    }


def _check_args(model: Any, class_names: list[str], input_size: Any, model_name: str,
                version: int | None) -> None:
    if not isinstance(model, keras.Model):
        raise UserInputError(f"export_model: model must be a keras.Model. Got {type(model).__name__}.")
    if not class_names or not all(isinstance(c, str) and c for c in class_names):
        raise UserInputError("export_model: class_names must be a non-empty list of non-empty strings.")
    if any("\n" in c or "\r" in c for c in class_names):
        raise UserInputError("export_model: class names cannot contain line breaks (labels.txt is one per line).")
    sizes = [input_size] if isinstance(input_size, (int, np.integer, bool)) else list(input_size)
    if not sizes or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s <= 0 for s in sizes):
        raise UserInputError(f"export_model: input_size must be a positive int (or a list of them). Got {input_size!r}.")
    if not model_name or model_name.startswith(".") or "/" in model_name or os.sep in model_name:
        raise UserInputError(
            f"export_model: model_name {model_name!r} must be a plain folder name (not hidden, no '/')."
        )
    if version is not None and (isinstance(version, bool) or not isinstance(version, (int, np.integer))
                                or version <= 0):
        raise UserInputError(f"export_model: version must be a positive int or None. Got {version!r}.")
    out = model.outputs[0] if getattr(model, "outputs", None) else None
    if out is not None and out.shape[-1] is not None and out.shape[-1] != len(class_names):
        raise UserInputError(
            f"export_model: the model outputs {out.shape[-1]} classes but class_names has "
            f"{len(class_names)}. Pass the class names the model was trained with."
        )


def _verify(version_dir: Path, model: keras.Model, images: np.ndarray, num_classes: int, sizes: list[int]) -> None:
    """Reload the written SavedModel, run every warmup request, compare with the Keras model."""
    from autotransfer.export.serving import run_predict_request

    loaded = tf.saved_model.load(str(version_dir))
    for log in read_warmup_requests(version_dir / "assets.extra" / WARMUP_FILE):
        out = run_predict_request(loaded, log.predict_log.request)
        if out["probabilities"].shape[1:] != (num_classes,):
            raise AutotransferError(f"export verification: probabilities have shape {out['probabilities'].shape}.")
    served = run_predict_request(
        loaded, _make_request(images, IMAGES_SIGNATURE)
    )["probabilities"]
    expected = np.asarray(keras.ops.convert_to_numpy(model_call(model, sizes)(tf.constant(images))), np.float32)
    diff = float(np.max(np.abs(served - expected)))
    if not diff <= 1e-4:
        raise AutotransferError(
            f"export verification: the reloaded SavedModel differs from the Keras model by {diff:g}."
        )


def _make_request(images: np.ndarray, signature_name: str) -> Any:
    from autotransfer.export.serving import make_predict_request

    return make_predict_request(images, model_name="verify", signature_name=signature_name)


def export_model(
    model: keras.Model,
    *,
    class_names: list[str],
    input_size: int | list[int],
    export_dir: str | Path,
    model_name: str,
    version: int | None = None,
    warmup_images: np.ndarray | None = None,
    verify: bool = True,
) -> Path:
    """Export ``model`` (float32 ``[None, S, S, 3]`` in [0, 1] -> probabilities ``[None, K]``).

    ``input_size``: S, or a list of sizes for a model with one input per size (ascending, as
    :func:`autotransfer.tune.task.build_ensemble` makes them); ``serving_default`` then takes the
    largest and resizes for the others, ``serving_bytes`` decodes once per size.

    Writes ``<export_dir>/<model_name>/<version>/`` (see the module docstring) and returns it.
    ``version=None`` takes the next integer after the existing numeric versions; an explicit
    version that exists raises :class:`VersionExistsError`. ``warmup_images`` (uint8 or float
    ``[N, H, W, 3]``, resized to ``input_size`` if needed; first 8 used) feed the warmup requests;
    zeros when omitted. ``verify`` reloads the result and checks it against ``model`` before the
    version becomes visible.
    """
    _check_args(model, class_names, input_size, model_name, version)
    sizes = _sizes(input_size)
    input_size = sizes[-1]
    model_dir = Path(export_dir) / model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    if version is None:
        version = (existing_versions(model_dir) or [0])[-1] + 1
    version = int(version)
    final = model_dir / str(version)
    if final.exists():
        raise VersionExistsError(
            f"export_model: {final} already exists; versions are never overwritten. "
            "Pass version=None for the next free version."
        )
    remove_stale_exports(model_dir)
    # Hidden and non-numeric: TF Serving ignores it while it is being written. The lock beside it
    # tells a later export that it is still being written; one left unlocked was killed midway.
    tmp = model_dir / f"{TMP_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
    lock = tmp.with_name(tmp.name + LOCK_SUFFIX)
    fd = try_lock(lock)
    assert fd is not None  # a fresh random name: nobody else holds it
    try:
        _build_archive(model, class_names, sizes).write_out(str(tmp), verbose=False)
        (tmp / "assets").mkdir(exist_ok=True)
        (tmp / "assets" / LABELS_FILE).write_text("".join(f"{c}\n" for c in class_names), encoding="utf-8")
        images, pngs = _warmup_arrays(warmup_images, input_size)
        write_warmup_requests(tmp / "assets.extra" / WARMUP_FILE, model_name=model_name,
                              images=images, image_bytes=pngs)
        (tmp / METADATA_FILE).write_text(
            json.dumps(_metadata(class_names, sizes, model_name, version), indent=2), encoding="utf-8"
        )
        if verify:
            _verify(tmp, model, images, len(class_names), sizes)
        if final.exists():  # another export took this version meanwhile
            raise VersionExistsError(f"export_model: {final} appeared during the export; not overwriting it.")
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        unlock(fd, lock)
    return final


def remove_stale_exports(model_dir: str | Path) -> list[str]:
    """Remove what exports killed midway left in ``model_dir`` (``.tmp-*`` directories whose lock no
    process holds); returns their names. An export in progress holds its lock and is left alone."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    bases = sorted({p.name.removesuffix(LOCK_SUFFIX) for p in model_dir.iterdir() if p.name.startswith(TMP_PREFIX)})
    removed = []
    for name in bases:
        lock = model_dir / (name + LOCK_SUFFIX)
        fd = try_lock(lock, create=False)
        if fd is None and lock.exists():
            continue  # held: that export is still running
        shutil.rmtree(model_dir / name, ignore_errors=True)
        if fd is not None:
            unlock(fd, lock)
        removed.append(name)
    return removed


def read_labels(version_dir: str | Path) -> list[str]:
    """The class names of an exported version, from ``assets/labels.txt``."""
    text = (Path(version_dir) / "assets" / LABELS_FILE).read_text(encoding="utf-8")
    return text.splitlines()
