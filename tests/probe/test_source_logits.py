"""Source logits from the classifier head on cached features, checked against a forward pass."""
from __future__ import annotations

import numpy as np

from autotransfer.backbones import HubBackbone
from autotransfer.data import image_dataset, load_data
from autotransfer.probe.featurize import extract_features, extract_source_logits
from autotransfer.testing import pattern_images


def _setup(handle):
    x, y = pattern_images(6, seed=3)
    data = load_data(x, labels=y)
    ds = image_dataset(data, np.arange(len(y)), image_size=16, batch_size=8, with_labels=False)
    return ds, extract_features(HubBackbone(handle), ds, num_items=len(y)), len(y)


def test_head_shortcut_equals_forward_pass(tiny_modules, tiny_classifier_module):
    ds, feats, n = _setup(tiny_modules["good"])  # same seed and grid: the classifier's own trunk
    full = extract_source_logits(tiny_classifier_module, ds, input_size=16, num_items=n)
    fast = extract_source_logits(tiny_classifier_module, ds, input_size=16, num_items=n, features=feats)
    np.testing.assert_allclose(fast, full, rtol=1e-5, atol=1e-5)


def test_mismatched_features_fall_back_to_forward_pass(tiny_modules, tiny_classifier_module):
    ds, wrong, n = _setup(tiny_modules["medium"])  # another trunk: the check on the first batch must fail
    full = extract_source_logits(tiny_classifier_module, ds, input_size=16, num_items=n)
    got = extract_source_logits(tiny_classifier_module, ds, input_size=16, num_items=n, features=wrong)
    np.testing.assert_array_equal(got, full)
