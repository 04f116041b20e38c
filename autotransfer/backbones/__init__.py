"""Backbones: candidate specs, handle sources by scheme, and the Keras 3 hub layer."""
from autotransfer.backbones.hub_backbone import MEAN_SEQUENCE_OUTPUT, HubBackbone, infer_blocks
from autotransfer.backbones.sources import (METADATA_FILE, backbone_fingerprint, known_schemes, module_fingerprint,
                                            register_source, resolve_handle)
from autotransfer.backbones.spec import BackboneSpec

__all__ = [
    "BackboneSpec",
    "HubBackbone",
    "MEAN_SEQUENCE_OUTPUT",
    "METADATA_FILE",
    "backbone_fingerprint",
    "infer_blocks",
    "known_schemes",
    "module_fingerprint",
    "register_source",
    "resolve_handle",
]
