"""Test helpers shipped with the package: tiny generated modules and data (no network)."""
from autotransfer.testing.modules import pattern_images, write_tiny_module

__all__ = ["pattern_images", "write_tiny_module"]
