"""The train package's public names, and the ones ``autotransfer.tune`` still re-exports from it."""
from __future__ import annotations

import importlib

import pytest

import autotransfer.train as train


@pytest.mark.parametrize("name", train.__all__)
def test_each_public_name_comes_from_its_module(name):
    assert getattr(train, name) is getattr(importlib.import_module(f"autotransfer.train.{train._HOME[name]}"), name)


def test_tune_keeps_the_training_names_it_exported():
    import autotransfer.tune as tune

    for name in ("HEAD_LAYER", "build_task_model", "TrialOutcome", "train_trial"):
        assert getattr(tune, name) is getattr(train, name)
