"""Export stage: TF Serving layout, both signatures, the Predict-API contract, REST, warmup, versions."""
from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from autotransfer.backbones import HubBackbone
from autotransfer.data import decode_image_bytes
from autotransfer.errors import UserInputError
from autotransfer.export import (
    VersionExistsError,
    export_model,
    load_exported,
    make_predict_request,
    predict_response,
    read_labels,
    read_warmup_requests,
    rest_to_request,
    run_predict_request,
)
from autotransfer.testing import pattern_images

pytest.importorskip("tensorflow_serving.apis.predict_pb2")

CLASSES = ["circle", "square", "tri angle", "ünïcode"]
SIZE = 16


def _model(module_path: str) -> keras.Model:
    bb = HubBackbone(module_path)
    inp = keras.Input((SIZE, SIZE, 3))
    model = keras.Model(inp, keras.layers.Dense(len(CLASSES), activation="softmax")(bb(inp)))
    # Stand-in for fine-tuning: the export must carry current values, not the module's originals.
    rng = np.random.default_rng(1)
    for w in bb._wrapped:
        w.assign(w.numpy() + rng.normal(0, 0.05, w.shape).astype("float32"))
    return model


@pytest.fixture(scope="module")
def exported(tiny_modules, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    # A private copy of the module, deleted after export: the SavedModel must be self-contained.
    module_copy = root / "module"
    shutil.copytree(tiny_modules["good"], module_copy)
    model = _model(str(module_copy))
    x, _ = pattern_images(2, num_classes=4)
    path = export_model(model, class_names=CLASSES, input_size=SIZE, export_dir=root / "serving",
                        model_name="pets", warmup_examples=x[:3])
    shutil.rmtree(module_copy)
    return {"model": model, "path": path, "root": root / "serving", "loaded": tf.saved_model.load(str(path))}


def _png(img: np.ndarray) -> bytes:
    return tf.io.encode_png(img).numpy()


def _pil(img: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, **kw)
    return buf.getvalue()


def _images(n: int = 6, seed: int = 0) -> np.ndarray:
    x, _ = pattern_images(2, num_classes=4, seed=seed)
    return (x[:n].astype("float32") / 255.0)


def test_layout_labels_and_metadata(exported):
    path: Path = exported["path"]
    assert path.name == "1" and path.parent.name == "pets"
    for rel in ("saved_model.pb", "variables/variables.index", "assets/labels.txt",
                "assets.extra/tf_serving_warmup_requests", "autotransfer_export.json"):
        assert (path / rel).exists(), rel
    assert read_labels(path) == CLASSES
    meta = json.loads((path / "autotransfer_export.json").read_text())
    assert meta["class_names"] == CLASSES and meta["input_size"] == SIZE and meta["version"] == 1
    assert set(meta["signatures"]) == {"serving_default", "serving_bytes"} and meta["created"]
    # nothing TF Serving could mistake for a version, nothing left over
    assert [p.name for p in path.parent.iterdir()] == ["1"]


def test_variables_saved_once(exported):
    # Keras' ExportArchive.track() would store each variable twice (wrapper + captured value).
    reader = tf.train.load_checkpoint(str(exported["path"] / "variables" / "variables"))
    values = [k for k in reader.get_variable_to_shape_map() if k.endswith("VARIABLE_VALUE")]
    assert len(values) == len(exported["model"].weights) == 9


def test_signature_specs(exported):
    sigs = exported["loaded"].signatures
    assert set(sigs) == {"serving_default", "serving_bytes"}
    _, images = sigs["serving_default"].structured_input_signature
    _, image_bytes = sigs["serving_bytes"].structured_input_signature
    assert list(images) == ["images"] and images["images"].dtype == tf.float32
    assert images["images"].shape.as_list() == [None, SIZE, SIZE, 3]
    assert list(image_bytes) == ["image_bytes"] and image_bytes["image_bytes"].dtype == tf.string
    assert image_bytes["image_bytes"].shape.as_list() == [None]
    for sig in sigs.values():
        out = sig.structured_outputs
        assert set(out) == {"probabilities", "class_index", "label"}
        assert out["probabilities"].dtype == tf.float32 and out["probabilities"].shape.as_list() == [None, 4]
        assert out["class_index"].dtype == tf.int64 and out["class_index"].shape.as_list() == [None]
        assert out["label"].dtype == tf.string and out["label"].shape.as_list() == [None]


def test_serving_default_equals_keras_predict_and_labels_consistent(exported):
    x = np.concatenate([_images(), np.random.default_rng(3).random((3, SIZE, SIZE, 3), dtype=np.float32)])
    out = exported["loaded"].signatures["serving_default"](images=tf.constant(x))
    expected = exported["model"].predict(x, verbose=0)
    assert np.max(np.abs(out["probabilities"].numpy() - expected)) < 1e-5
    idx = out["class_index"].numpy()
    np.testing.assert_array_equal(idx, expected.argmax(-1))
    labels = read_labels(exported["path"])
    assert [s.decode() for s in out["label"].numpy()] == [labels[i] for i in idx]


def test_serving_bytes_matches_float_signature_on_decoded_pixels(exported):
    loaded = exported["loaded"]
    rng = np.random.default_rng(4)
    same = (_images(3) * 255).round().astype("uint8")
    big = (rng.random((24, 20, 3)) * 255).astype("uint8")  # exercises the in-graph resize
    blobs = [_png(same[0]), _png(same[1]), _png(big), _pil(same[2], "JPEG", quality=90),
             _pil(big, "BMP"), _pil(same[0], "GIF")]
    out = loaded.signatures["serving_bytes"](image_bytes=tf.constant(blobs))
    # PNG/JPEG/GIF quantise: the reference is the float signature on the same decoded pixels.
    pixels = tf.stack([decode_image_bytes(tf.constant(b), SIZE) for b in blobs])
    ref = loaded.signatures["serving_default"](images=pixels)
    for key in ("probabilities", "class_index", "label"):
        a, b = out[key].numpy(), ref[key].numpy()
        if key == "probabilities":
            assert np.max(np.abs(a - b)) < 1e-5
        else:
            np.testing.assert_array_equal(a, b)
    # lossless PNG at the native size: the decoded pixels are exactly uint8 / 255
    np.testing.assert_allclose(pixels.numpy()[0], same[0] / 255.0, atol=1e-6)


def test_predict_requests_match_direct_calls(exported):
    from tensorflow_serving.apis import predict_pb2

    loaded = exported["loaded"]
    x = _images(4)
    blobs = [_png((img * 255).round().astype("uint8")) for img in x]
    for sig_name, value in (("serving_default", x), ("serving_bytes", blobs)):
        sig = loaded.signatures[sig_name]
        (key, spec), = sig.structured_input_signature[1].items()
        # built by hand from the exported signature, as an external gRPC client would
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "pets"
        request.model_spec.signature_name = sig_name
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value, dtype=spec.dtype))
        direct = {k: v.numpy() for k, v in sig(**{key: tf.constant(value, dtype=spec.dtype)}).items()}
        for req in (request, make_predict_request(value, model_name="pets", signature_name=sig_name)):
            served = run_predict_request(loaded, req)
            assert set(served) == set(direct)
            for k in direct:
                np.testing.assert_array_equal(served[k], direct[k])
        response = predict_response(loaded, request)
        assert response.model_spec.signature_name == sig_name
        np.testing.assert_array_equal(tf.make_ndarray(response.outputs["label"]), direct["label"])
    # uint8 images go through the data stage's /255 convention
    u8 = (x * 255).round().astype("uint8")
    a = run_predict_request(loaded, make_predict_request(u8, model_name="pets"))["probabilities"]
    b = loaded.signatures["serving_default"](images=tf.constant(u8 / np.float32(255)))["probabilities"]
    assert np.max(np.abs(a - b.numpy())) < 1e-6


def test_predict_request_errors_name_the_problem(exported):
    loaded = exported["loaded"]
    x = _images(2)
    with pytest.raises(UserInputError, match=r"missing input\(s\) \['images'\].*unexpected input\(s\) \['pixels'\]"):
        run_predict_request(loaded, make_predict_request({"pixels": x}, model_name="pets"))
    with pytest.raises(UserInputError, match="must be float32; got float64"):
        run_predict_request(loaded, make_predict_request({"images": x.astype("float64")}, model_name="pets"))
    with pytest.raises(UserInputError, match=r"shape \[None, 16, 16, 3\]"):
        run_predict_request(loaded, make_predict_request(np.zeros((1, 8, 8, 3)), model_name="pets"))
    with pytest.raises(UserInputError, match="no signature 'nope'"):
        run_predict_request(loaded, make_predict_request(x, model_name="pets", signature_name="nope"))
    req = make_predict_request(x, model_name="pets")
    req.output_filter.append("label")
    assert set(run_predict_request(loaded, req)) == {"label"}


def test_rest_bodies_decode_to_the_same_answer(exported):
    loaded = exported["loaded"]
    x = _images(3)
    blobs = [_png((img * 255).round().astype("uint8")) for img in x]
    b64 = [base64.b64encode(b).decode() for b in blobs]
    direct = loaded.signatures["serving_bytes"](image_bytes=tf.constant(blobs))
    bodies = [
        {"signature_name": "serving_bytes", "instances": [{"b64": s} for s in b64]},
        {"instances": [{"b64": s} for s in b64]},
        {"signature_name": "serving_bytes", "instances": [{"image_bytes": {"b64": s}} for s in b64]},
        {"signature_name": "serving_bytes", "inputs": {"image_bytes": [{"b64": s} for s in b64]}},
    ]
    for body in bodies:
        req = rest_to_request(json.loads(json.dumps(body)), model_name="pets")
        assert req.model_spec.signature_name == "serving_bytes"
        out = run_predict_request(loaded, req)
        np.testing.assert_array_equal(out["probabilities"], direct["probabilities"].numpy())
        np.testing.assert_array_equal(out["label"], direct["label"].numpy())
    # pixel rows: JSON numbers -> float32, the server's input dtype
    req = rest_to_request(json.loads(json.dumps({"instances": x.tolist()})), model_name="pets")
    out = run_predict_request(loaded, req)
    ref = loaded.signatures["serving_default"](images=tf.constant(x))["probabilities"].numpy()
    np.testing.assert_array_equal(out["probabilities"], ref)
    with pytest.raises(UserInputError, match="exactly one of"):
        rest_to_request({"instances": [], "inputs": []}, model_name="pets")


def test_warmup_records_parse_and_run(exported):
    logs = read_warmup_requests(exported["path"] / "assets.extra" / "tf_serving_warmup_requests")
    assert 1 <= len(logs) <= 1000
    sigs = [log.predict_log.request.model_spec.signature_name for log in logs]
    assert set(sigs) == {"serving_default", "serving_bytes"}
    for log in logs:
        assert log.WhichOneof("log_type") == "predict_log"
        out = run_predict_request(exported["loaded"], log.predict_log.request)
        assert out["probabilities"].shape[1] == 4 and len(out["label"]) >= 1


def test_versions_increment_and_are_never_overwritten(exported, tmp_path):
    model = exported["model"]
    root = tmp_path / "serving"
    kw = dict(class_names=CLASSES, input_size=SIZE, export_dir=root, model_name="m", verify=False)
    p1 = export_model(model, **kw)
    (root / "m" / "not-a-version").mkdir()  # ignored, as TF Serving ignores it
    p2 = export_model(model, **kw)
    assert (p1.name, p2.name) == ("1", "2")
    before = {p: p.stat().st_mtime_ns for p in p1.rglob("*")}
    with pytest.raises(VersionExistsError, match="never overwritten"):
        export_model(model, version=1, **kw)
    assert {p: p.stat().st_mtime_ns for p in p1.rglob("*")} == before
    assert export_model(model, version=7, **kw).name == "7"
    assert sorted(p.name for p in (root / "m").iterdir()) == ["1", "2", "7", "not-a-version"]
    # a model dir loads its latest version, as TF Serving serves it
    loaded = load_exported(root / "m")
    out = loaded.signatures["serving_default"](images=tf.constant(_images(2)))
    assert out["probabilities"].shape == (2, 4)


def test_failed_export_leaves_no_version_dir(exported, tmp_path, monkeypatch):
    import autotransfer.export.saved_model as sm

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(sm, "write_warmup_requests", boom)
    root = tmp_path / "serving"
    with pytest.raises(RuntimeError, match="disk full"):
        export_model(exported["model"], class_names=CLASSES, input_size=SIZE, export_dir=root, model_name="m")
    assert list((root / "m").iterdir()) == []
    with pytest.raises(UserInputError, match="outputs 4 classes but class_names has 3"):
        export_model(exported["model"], class_names=CLASSES[:3], input_size=SIZE, export_dir=root, model_name="m")
    assert list((root / "m").iterdir()) == []
