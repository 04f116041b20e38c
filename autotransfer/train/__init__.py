"""Train stage: build one task model (backbone + head) and train it with one trial's recipe.

``task``: the task model, its head and the ensemble of members; ``trainer``: one trial (head
warm-up, then fine-tuning of the last blocks) and its refit on more data; ``prefix``: training
from a frozen prefix's cached activations; ``optimizer``: the fine-tuning optimizer (layer-wise
decay); ``augment``: training-time augmentation. The search over recipes is ``autotransfer.tune``.

The public names load their module on first use: ``trainer`` imports TensorFlow and the probe.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_HOME = {
    **dict.fromkeys(("HEAD_CS", "TrialOutcome", "at_trial_size", "choose_head_c", "compile_fine_tune", "fit_head",
                     "load_trial_model",
                     "predict_probs", "probe_head_weights", "refit_trial", "train_trial"), "trainer"),
    **dict.fromkeys(("BACKBONE_LAYER", "HEAD_LAYER", "MultiSourceBackbone", "Part", "build_ensemble", "build_head",
                     "build_task_model", "source_specs"), "task"),
    **dict.fromkeys(("as_parts", "prefix_cut"), "prefix"),
    **dict.fromkeys(("augment_dataset",), "augment"),
    **dict.fromkeys(("LayerDecayAdam", "fine_tune_optimizer", "layer_multipliers"), "optimizer"),
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_HOME[name]}"), name)


__all__ = sorted(_HOME)
