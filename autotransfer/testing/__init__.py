"""Test helpers shipped with the package: tiny generated modules and data (no network)."""
from autotransfer.testing.modules import changed_after_one_epoch, pattern_images, write_tiny_module, write_tiny_space

__all__ = ["changed_after_one_epoch", "pattern_images", "write_tiny_module", "write_tiny_space"]
