"""Every tuned parameter reaches what it controls, with both backends; same seed, same choice."""
from __future__ import annotations

import importlib

import keras
import numpy as np
import pandas as pd
import pytest

from autotransfer.backbones import BackboneSpec
from autotransfer.tune import TuneSpace, tune

pytestmark = pytest.mark.slow  # whole searches on both backends

# Wide ranges and a batch-size choice, so that trials differ in each parameter.
SPACE = TuneSpace(unfreeze_blocks=(0, "all"), learning_rate=(1e-4, 1e-2), head_learning_rate=(1e-3, 1e-1),
                  patience=(1, 2), dropout=(0.0, 0.3), head_epochs=2, max_epochs=2, batch_size=(4, 8, 16),
                  head_warmup="adam", min_delta=(0.0, 0.01))


@pytest.fixture(scope="module")
def specs(tiny_modules):
    return [BackboneSpec(name, tiny_modules[name], 16) for name in ("good", "medium")]


class _Spy:
    """What each trial's training really used: head and fine-tune learning rates, the trainable
    variables while fine-tuning, the training batch size, early stopping's min_delta."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        trainer = importlib.import_module("autotransfer.train.trainer")
        self.trials: list[dict] = []
        real_adam, real_compile, real_stream = keras.optimizers.Adam, trainer._compile_fine_tune, trainer._train_stream
        real_train, real_stop = trainer.train_trial, keras.callbacks.EarlyStopping
        spy = self

        class Adam(real_adam):
            def __init__(self, learning_rate=0.001, *a, **kw):
                spy.trials[-1].setdefault("adam_lrs", []).append(learning_rate)
                super().__init__(learning_rate, *a, **kw)

        class EarlyStopping(real_stop):
            def __init__(self, *a, **kw):
                spy.trials[-1]["min_delta"] = kw.get("min_delta", 0.0)
                super().__init__(*a, **kw)

        def compile_fine_tune(model, backbone, params, **kw):
            real_compile(model, backbone, params, **kw)
            names = {id(v): b for b in backbone.blocks for v in backbone.block_variables(b)}
            spy.trials[-1]["open_blocks"] = [b for b in backbone.blocks
                                             if any(names.get(id(v)) == b for v in model.trainable_variables)]
            spy.trials[-1]["blocks"] = list(backbone.blocks)
            lr = model.optimizer.learning_rate
            spy.trials[-1]["finetune_lr"] = float(np.asarray(lr))

        def train_stream(*a, **kw):
            ds, steps = real_stream(*a, **kw)
            spy.trials[-1]["batch"] = int(next(iter(ds))[0].shape[0])
            return ds, steps

        prefix = importlib.import_module("autotransfer.train.prefix")
        real_activations = prefix.activation_stream

        def activation_stream(*a, **kw):  # the frozen-prefix path's training stream
            ds = real_activations(*a, **kw)
            spy.trials[-1]["batch"] = int(next(iter(ds))[0].shape[0])
            spy.trials[-1]["prefix"] = True
            return ds

        monkeypatch.setattr(prefix, "activation_stream", activation_stream)

        def train_trial(spec, params, *a, **kw):
            spy.trials.append({"params": dict(params)})
            return real_train(spec, params, *a, **kw)

        monkeypatch.setattr(keras.optimizers, "Adam", Adam)
        monkeypatch.setattr(keras.callbacks, "EarlyStopping", EarlyStopping)
        monkeypatch.setattr(trainer, "_compile_fine_tune", compile_fine_tune)
        monkeypatch.setattr(trainer, "_train_stream", train_stream)
        monkeypatch.setattr(importlib.import_module("autotransfer.tune.tune"), "train_trial", train_trial)


@pytest.mark.parametrize("backend", ["keras-tuner", "optuna"])
def test_each_tuned_parameter_reaches_the_model(backend, specs, data_splits, tmp_path, monkeypatch):
    spy = _Spy(monkeypatch)
    data, splits = data_splits
    result = tune(specs, data, splits, space=SPACE, backend=backend, max_trials=4, out_dir=tmp_path, seed=1)
    rows = pd.read_csv(tmp_path / "trials.csv").set_index("trial_id")
    assert len(spy.trials) == len(rows) == 4
    finetuned = 0
    for (trial_id, row), seen in zip(rows.iterrows(), spy.trials):
        p = seen["params"]
        assert seen["adam_lrs"][0] == pytest.approx(p["head_learning_rate"])  # the head's warm-up optimizer
        assert row["head_learning_rate"] == pytest.approx(p["head_learning_rate"])
        if "open_blocks" not in seen:
            assert row["unfreeze_blocks"] == 0  # no fine-tuning phase: nothing unfrozen
            continue
        finetuned += 1
        k = int(row["unfreeze_blocks"])
        assert seen["open_blocks"] == seen["blocks"][len(seen["blocks"]) - k:]  # exactly the last k blocks
        assert seen["finetune_lr"] == pytest.approx(p["learning_rate"], rel=1e-6)
        assert seen["batch"] == p["batch_size"] == int(row["batch_size"])
        assert seen["min_delta"] == pytest.approx(p["min_delta"])
    assert finetuned >= 1
    assert any(t.get("prefix") for t in spy.trials)  # the cached path was among them (unaugmented trials)
    assert len({int(r) for r in rows["batch_size"]}) >= 2 or finetuned < 2  # the choice is searched
    assert result.best_params["batch_size"] in (4, 8, 16)


@pytest.mark.parametrize("backend", ["keras-tuner", "optuna"])
def test_same_seed_same_data_same_choice(backend, specs, data_splits, tmp_path):
    data, splits = data_splits
    runs = [tune(specs, data, splits, space=SPACE, backend=backend, max_trials=4, out_dir=tmp_path / str(i), seed=0)
            for i in range(2)]
    cols = ["backbone", "unfreeze_blocks", "learning_rate", "batch_size", "val_accuracy", "val_loss"]
    a, b = (r.trials[cols].reset_index(drop=True) for r in runs)
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-6)
    assert runs[0].best_params == runs[1].best_params
