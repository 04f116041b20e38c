"""Test helpers shipped with the package: tiny generated modules and data (no network), and the
conformance checks a scorer or tuner-backend plug-in runs (:mod:`autotransfer.testing.conformance`)."""
from autotransfer.testing.modules import (
    BROKEN_KINDS,
    changed_after_one_epoch,
    pattern_images,
    write_broken_module,
    write_tiny_module,
    write_tiny_space,
)
from autotransfer.testing.conformance import check_scorer, check_tuner_backend
from autotransfer.testing.images import write_image_folder
from autotransfer.testing.texts import pattern_texts, write_tiny_bert_pair, write_tiny_text_module

__all__ = ["BROKEN_KINDS", "changed_after_one_epoch", "check_scorer", "check_tuner_backend", "pattern_images", "write_broken_module", "write_tiny_module", "write_tiny_space",
           "write_image_folder", "pattern_texts", "write_tiny_bert_pair", "write_tiny_text_module"]
