"""Export a trained Keras classifier as a TF Serving model version.

Layout written (TF Serving's file-system source only loads numeric children of the model dir)::

    <export_dir>/<model_name>/<version>/
        saved_model.pb, variables/            signatures serving_default (+ serving_bytes for images)
        assets/labels.txt                     one class name per line, index order
        assets.extra/tf_serving_warmup_requests   TFRecord of PredictionLog (every signature)
        autotransfer_export.json              modality, class_names, input_size, signatures, created, versions

The signatures come from the data's modality (:meth:`autotransfer.modalities.base.Modality.serving_endpoints`):
images get ``serving_default`` (float32 pixels) and ``serving_bytes`` (encoded images), text gets
``serving_default`` on a batch of raw strings (input key ``texts``).

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

def _image_signatures() -> dict[str, tuple[str, tf.DType]]:
    from autotransfer import modalities

    return {name: (key, dtype) for name, (key, dtype, _) in modalities.get("image").signature_inputs([1]).items()}


#: An image export's signatures: name -> (input key, input dtype), as the image modality declares
#: them (what a client sends without asking the export's metadata).
SIGNATURE_INPUTS: dict[str, tuple[str, tf.DType]] = _image_signatures()
IMAGES_SIGNATURE, BYTES_SIGNATURE = SIGNATURE_INPUTS  # serving_default is every modality's main signature
IMAGES_KEY, BYTES_KEY = (SIGNATURE_INPUTS[n][0] for n in (IMAGES_SIGNATURE, BYTES_SIGNATURE))
OUTPUT_KEYS = ("probabilities", "class_index", "label")
LABELS_FILE = "labels.txt"
WARMUP_FILE = "tf_serving_warmup_requests"
METADATA_FILE = "autotransfer_export.json"
#: A version being written: ``.tmp-<version>-<random>`` (hidden, non-numeric), with a ``.lock`` beside it.
TMP_PREFIX = ".tmp-"
LOCK_SUFFIX = ".lock"


class VersionExistsError(AutotransferError, FileExistsError):
    """The requested model version directory already exists (versions are never overwritten)."""


def existing_versions(model_dir: str | Path) -> list[int]:
    """Numeric version directories under ``model_dir`` (what TF Serving would load), ascending."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def _sizes(input_size: int | list[int] | tuple[int, ...]) -> list[int]:
    """Input sizes ascending; the largest is what ``serving_default`` takes (0: none, text)."""
    return sorted({int(input_size)}) if isinstance(input_size, (int, np.integer)) else sorted({int(s) for s in input_size})


def _resources(layer: Any) -> list[Any]:
    """Non-variable resources of every backbone inside ``layer`` (a model, ensemble or branch)."""
    own = layer.resources() if callable(getattr(layer, "resources", None)) else []
    inner = (list(getattr(layer, "layers", None) or []) + list(getattr(layer, "backbones", None) or [])
             + [m for m in [getattr(layer, "member", None)] if m is not None])  # an ensemble's members
    return own + [r for child in inner if child is not layer for r in _resources(child)]


def _build_archive(model: keras.Model, class_names: list[str], sizes: list[int], modality: Any,
                   max_pixels: int | None = None) -> Any:
    """An ExportArchive with the modality's serving signatures (:meth:`Modality.serving_endpoints`:
    for images ``serving_default`` and ``serving_bytes``, for text ``serving_default`` on strings).

    ExportArchive (not a hand-made tf.Module) because it collects every variable the endpoint
    graphs capture -- including the HubBackbone's module variables behind their keras.Variable
    wrappers. The model is deliberately not ``track()``ed: in Keras 3.15 that also saves the
    keras.Variable wrappers as separate checkpoint entries, doubling the variables file, and
    serving needs no ``loaded.variables``. The signatures check their input in the graph (TF
    Serving does not).
    """
    labels = tf.constant(list(class_names), dtype=tf.string)

    def outputs(probs: tf.Tensor) -> dict[str, tf.Tensor]:
        # Cast: a mixed-precision model may emit float16; the contract is float32.
        probs = tf.cast(probs, tf.float32)
        index = tf.argmax(probs, axis=-1, output_type=tf.int64)
        return {"probabilities": probs, "class_index": index, "label": tf.gather(labels, index)}

    archive = keras.export.ExportArchive()
    for resource in _resources(model):
        archive.track(resource)
    for name, (fn, spec) in modality.serving_endpoints(model, sizes, outputs, max_pixels).items():
        archive.add_endpoint(name, fn, input_signature=[spec])
    return archive


def write_warmup_requests(path: str | Path, *, model_name: str, batches: dict[str, Any],
                          input_keys: dict[str, str] | None = None) -> int:
    """Write a TFRecord of ``PredictionLog`` warmup records, two per signature in ``batches``
    (name -> a batch of inputs): the whole batch and its first item, since TF Serving may
    specialise kernels per batch size. ``input_keys``: name -> input key where it is not the
    signature's known one. Returns the count."""
    from tensorflow_serving.apis import prediction_log_pb2

    from autotransfer.export.serving import make_predict_request

    keys = input_keys or {}
    requests = [make_predict_request(part, model_name=model_name, signature_name=name, input_key=keys.get(name))
                for name, batch in batches.items() for part in (batch, batch[:1])]
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


def _metadata(class_names: list[str], sizes: list[int], model_name: str, version: int, modality: Any) -> dict[str, Any]:
    num_classes = len(class_names)
    outputs = {
        "probabilities": {"dtype": "float32", "shape": [None, num_classes]},
        "class_index": {"dtype": "int64", "shape": [None]},
        "label": {"dtype": "string", "shape": [None]},
    }
    return {
        "model_name": model_name,
        "version": version,
        "modality": modality.name,
        "class_names": list(class_names),
        "num_classes": num_classes,
        "input_size": sizes[-1],
        "member_input_sizes": list(sizes),
        "signatures": {name: {"inputs": {key: about}, "outputs": outputs}
                       for name, (key, _dtype, about) in modality.signature_inputs(sizes).items()},
        "rest_example": modality.rest_example(sizes),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "autotransfer_version": _package_version(),
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
    }


def _check_args(model: Any, class_names: list[str], input_size: Any, model_name: str,
                version: int | None, sized: bool = True) -> None:
    if not isinstance(model, keras.Model):
        raise UserInputError(f"export_model: model must be a keras.Model. Got {type(model).__name__}.")
    if not class_names or not all(isinstance(c, str) and c for c in class_names):
        raise UserInputError("export_model: class_names must be a non-empty list of non-empty strings.")
    if any("\n" in c or "\r" in c for c in class_names):
        raise UserInputError("export_model: class names cannot contain line breaks (labels.txt is one per line).")
    sizes = [input_size] if isinstance(input_size, (int, np.integer, bool)) else list(input_size)
    least = 1 if sized else 0  # 0: no input size (text)
    if not sizes or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < least for s in sizes):
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


def _verify(version_dir: Path, model: keras.Model, batches: dict[str, Any], num_classes: int, sizes: list[int],
            modality: Any) -> None:
    """Reload the written SavedModel, run every warmup request, compare ``serving_default`` with
    the Keras model on the warm-up batch."""
    from autotransfer.export.serving import make_predict_request, run_predict_request

    from autotransfer.backbones.sources import load_saved_model

    loaded = load_saved_model(version_dir)
    for log in read_warmup_requests(version_dir / "assets.extra" / WARMUP_FILE):
        out = run_predict_request(loaded, log.predict_log.request)
        if out["probabilities"].shape[1:] != (num_classes,):
            raise AutotransferError(f"export verification: probabilities have shape {out['probabilities'].shape}.")
    batch = batches[IMAGES_SIGNATURE]
    key = modality.signature_inputs(sizes)[IMAGES_SIGNATURE][0]
    served = run_predict_request(loaded, make_predict_request(batch, model_name="verify", input_key=key))["probabilities"]
    inputs = tf.constant(batch) if not isinstance(batch, list) else tf.constant(batch, tf.string)
    expected = np.asarray(keras.ops.convert_to_numpy(modality.model_call(model, sizes)(inputs)), np.float32)
    diff = float(np.max(np.abs(served - expected)))
    if not diff <= 1e-4:
        raise AutotransferError(
            f"export verification: the reloaded SavedModel differs from the Keras model by {diff:g}."
        )


def export_model(
    model: keras.Model,
    *,
    class_names: list[str],
    input_size: int | list[int],
    export_dir: str | Path,
    model_name: str,
    version: int | None = None,
    verify: bool = True,
    modality: Any = "image",
    warmup_examples: Any = None,
    max_pixels: int | None = None,
) -> Path:
    """Export ``model`` (the model input of ``modality`` -> probabilities ``[None, K]``).

    ``modality``: a :class:`~autotransfer.modalities.Modality` or its registered name; it supplies
    the serving signatures, their warm-up batches and the metadata's input description.
    ``input_size``: the backbone's input size (0 where the modality has none), or a list of sizes
    for a model with one input per size (ascending, as :func:`autotransfer.train.task.build_ensemble`
    makes them); ``serving_default`` then takes the largest and resizes for the others.

    Writes ``<export_dir>/<model_name>/<version>/`` (see the module docstring) and returns it.
    ``version=None`` takes the next integer after the existing numeric versions; an explicit
    version that exists raises :class:`VersionExistsError`. ``warmup_examples``: up to 8 of the
    data's items (as the data stage loads them) for the warm-up requests; the modality's own
    placeholder items when omitted. ``verify`` reloads the result and checks it against ``model``
    before the version becomes visible. ``max_pixels``: the most pixels (height x width) an image
    export's ``serving_bytes`` decodes (None: the built-in limit); a run passes its ``--max-pixels``.
    """
    from autotransfer import modalities

    preprocessor = modalities.get(modality) if isinstance(modality, str) else modality
    _check_args(model, class_names, input_size, model_name, version, sized=preprocessor.has_size)
    sizes = _sizes(input_size)
    model_dir = Path(export_dir) / model_name
    final = _new_version_dir(model_dir, version)
    version = int(final.name)
    # Hidden and non-numeric: TF Serving ignores it while it is being written. The lock beside it
    # tells a later export that it is still being written; one left unlocked was killed midway.
    tmp = model_dir / f"{TMP_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
    lock = tmp.with_name(tmp.name + LOCK_SUFFIX)
    fd = try_lock(lock)
    assert fd is not None  # a fresh random name: nobody else holds it
    try:
        _write_version(tmp, model, class_names, sizes, model_name, version, preprocessor, warmup_examples,
                       max_pixels=max_pixels, verify=verify)
        if final.exists():  # another export took this version meanwhile
            raise VersionExistsError(f"export_model: {final} appeared during the export; not overwriting it.")
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        unlock(fd, lock)
    return final


def _new_version_dir(model_dir: Path, version: int | None) -> Path:
    """``model_dir/<version>`` (None: the next after the existing ones), refused when it exists;
    the stale leftovers of killed exports are removed first."""
    model_dir.mkdir(parents=True, exist_ok=True)
    if version is None:
        version = (existing_versions(model_dir) or [0])[-1] + 1
    final = model_dir / str(int(version))
    if final.exists():
        raise VersionExistsError(
            f"export_model: {final} already exists; versions are never overwritten. "
            "Pass version=None for the next free version."
        )
    remove_stale_exports(model_dir)
    return final


def _write_version(tmp: Path, model: keras.Model, class_names: list[str], sizes: list[int], model_name: str,
                   version: int, modality: Any, examples: Any, *, max_pixels: int | None, verify: bool) -> None:
    """Write the SavedModel, its labels, warm-up requests and metadata into ``tmp``, then check
    the reloaded model against ``model`` (``verify``)."""
    _build_archive(model, class_names, sizes, modality, max_pixels).write_out(str(tmp), verbose=False)
    (tmp / "assets").mkdir(exist_ok=True)
    (tmp / "assets" / LABELS_FILE).write_text("".join(f"{c}\n" for c in class_names), encoding="utf-8")
    batches = modality.warmup_batches(examples, sizes)
    keys = {name: key for name, (key, _, _) in modality.signature_inputs(sizes).items()}
    write_warmup_requests(tmp / "assets.extra" / WARMUP_FILE, model_name=model_name, batches=batches, input_keys=keys)
    (tmp / METADATA_FILE).write_text(
        json.dumps(_metadata(class_names, sizes, model_name, version, modality), indent=2), encoding="utf-8"
    )
    if verify:
        _verify(tmp, model, batches, len(class_names), sizes, modality)


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
