"""Backbones: candidate specs, handle sources by scheme, and the Keras 3 hub layer."""
from autotransfer.backbones.hub_backbone import HubBackbone, infer_blocks
from autotransfer.backbones.sources import METADATA_FILE, module_fingerprint, register_source, resolve_handle
from autotransfer.backbones.spec import BackboneSpec

__all__ = [
    "BackboneSpec",
    "HubBackbone",
    "METADATA_FILE",
    "infer_blocks",
    "module_fingerprint",
    "register_source",
    "resolve_handle",
]
