"""KerasTuner backend: Hyperband (default) over our two-phase trainer.

Hyperband has no ``max_trials`` and stops only when its brackets are done, so the oracle here
runs endless Hyperband iterations and uses the base ``Oracle``'s own trial cap (``create_trial``
returns STOPPED once ``max_trials`` trials exist; Hyperband's constructor just doesn't expose it;
None = no cap) and returns STOPPED from ``populate_space`` past the deadline (after the first
trial), which ends ``tuner.search``.
"""
from __future__ import annotations

from pathlib import Path
from collections.abc import Sequence
from typing import Any

from autotransfer.tune.base import Objective, Reporter, TrialRecord, TunerBackend, register_backend, run_objective
from autotransfer.budget import Deadline, as_deadline
from autotransfer.space import ParamSpec, render_keras_tuner

HYPERBAND_KEYS = ("tuner/epochs", "tuner/initial_epoch", "tuner/bracket", "tuner/round", "tuner/trial_id")


def _oracle_class() -> type:
    import keras_tuner as kt

    class CappedHyperbandOracle(kt.oracles.HyperbandOracle):
        """Hyperband that stops after ``max_trials`` trials or at ``deadline``."""

        def __init__(self, *, max_trials: int | None, deadline: Deadline | float | None,
                     first: Sequence[dict[str, Any]] = (), expected_trials: int = 10, min_epochs: float = 1,
                     **kwargs: Any) -> None:
            super().__init__(hyperband_iterations=None, **kwargs)  # None = iterate until capped
            # Brackets whose first round trains fewer epochs are skipped (Hyperband's own minimum is 1).
            self.min_epochs = max(1.0, float(min_epochs))
            self.max_trials = max_trials
            self.deadline = as_deadline(deadline)
            self.first = [dict(f) for f in first]
            # Hyperband starts with its most aggressive bracket (many configs, fewest epochs). Under a
            # small trial cap that bracket never reaches its promotions, so every trial would get the
            # minimum budget; start instead with the most aggressive bracket that fits whole.
            # Without a cap, the trials the budget is expected to allow choose it.
            self._current_bracket = self.first_bracket(max_trials or expected_trials)
            self._brackets = []  # the parent already opened its default bracket: reopen ours
            self._start_new_bracket()

        def bracket_trials(self, bracket: int) -> int:
            """Trials one whole bracket runs (its configs, plus every promotion)."""
            return sum(self._get_size(bracket, r) for r in range(self._get_num_rounds(bracket)))

        def first_bracket(self, max_trials: int) -> int:
            fitting = [b for b in range(self._get_num_brackets()) if self.bracket_trials(b) <= max_trials]
            return max(fitting) if fitting else 0

        def _random_values(self) -> dict | None:
            # New configurations (not promotions) take the queued fixed values first.
            values = super()._random_values()
            if values is not None and self.first:
                values.update(self.first.pop(0))
            return values

        # The queue of fixed first values is search state too: a resumed search must not replay it.
        def get_state(self) -> dict:
            return {**super().get_state(), "autotransfer_first": self.first}

        def set_state(self, state: dict) -> None:
            super().set_state(state)
            self.first = list(state.get("autotransfer_first", []))

        def populate_space(self, trial_id: str) -> dict:
            if not self.deadline.can_start() and self.trials:
                return {"status": "STOPPED"}
            return super().populate_space(trial_id)

    return CappedHyperbandOracle


def _tuner_class() -> type:
    import keras_tuner as kt

    class ObjectiveTuner(kt.engine.base_tuner.BaseTuner):
        """Runs each KerasTuner trial through our backend-neutral objective."""

        def __init__(self, oracle: Any, objective: Objective, **kwargs: Any) -> None:
            super().__init__(oracle=oracle, hypermodel=None, **kwargs)
            self._objective = objective
            self.records: list[TrialRecord] = []

        def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
            values = dict(trial.hyperparameters.values)
            params = {k: v for k, v in values.items() if k not in HYPERBAND_KEYS}
            if "tuner/epochs" in values:
                # Hyperband's epoch budget caps fine-tuning. A promoted config ("tuner/trial_id")
                # is retrained from scratch: every trial needs a fresh backbone anyway.
                params["max_epochs"] = int(values["tuner/epochs"])
            record = run_objective(self._objective, params, Reporter(int(trial.trial_id)))
            self.records.append(record)
            if record.status.startswith("failed"):
                raise kt.errors.FailedTrialError(record.status)  # KerasTuner marks it FAILED, no retry
            return {"val_accuracy": record.val_accuracy}

        def save_model(self, trial_id: str, model: Any, step: int = 0) -> None:
            """The objective checkpoints the best trials' weights in the run's trial store."""

        def load_model(self, trial: Any) -> Any:
            """The trial's checkpointed model, when the objective can load one (``objective.load_model``)."""
            load = getattr(self._objective, "load_model", None)
            if load is None:
                raise NotImplementedError("this objective keeps no models")
            return load(int(trial.trial_id))

    return ObjectiveTuner


class KerasTunerBackend(TunerBackend):
    """KerasTuner Hyperband (``factor`` 3); ``max_epochs`` is the largest fine-tuning budget.

    ``min_epochs`` (default ``max_epochs / factor``): the fewest epochs a bracket's first round may
    train. Hyperband's own minimum, 1, spends most of a budget on 1-2 epoch trials, which with a
    warmed-up head and a cosine schedule rarely beat the head: most of them keep it.
    """

    name = "keras-tuner"

    def __init__(self, *, max_epochs: int = 12, factor: int = 3, expected_trials: int = 10,
                 min_epochs: float | None = None) -> None:
        self.max_epochs = max_epochs
        self.factor = factor
        self.expected_trials = expected_trials
        self.min_epochs = max_epochs / factor if min_epochs is None else min_epochs

    def search(
        self,
        objective: Objective,
        params: list[ParamSpec],
        *,
        max_trials: int | None,
        deadline: Deadline | float | None,
        seed: int,
        work_dir: Path,
        first: Sequence[dict[str, Any]] = (),
        resume: bool = False,
    ) -> list[TrialRecord]:
        import keras_tuner as kt

        hp = kt.HyperParameters()
        render_keras_tuner(params, hp)
        oracle = _oracle_class()(
            objective=kt.Objective("val_accuracy", direction="max"),
            max_epochs=self.max_epochs,
            factor=self.factor,
            # KerasTuner takes seed 0 (falsy) for "pick one at random": shift it so --seed 0 reproduces.
            seed=seed % (2**31 - 2) + 1,
            hyperparameters=hp,
            max_trials=max_trials,
            deadline=deadline,
            first=first,
            expected_trials=self.expected_trials,
            min_epochs=self.min_epochs,
            # A failing trial must not end the search (the default stops after 3 in a row).
            max_consecutive_failed_trials=(max_trials or 10**6) + 1,
        )
        work_dir = Path(work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        # A resumed search reloads the project (finished trials stay done; the one that was running
        # when the process died is run again under its own id); otherwise it starts afresh.
        tuner = _tuner_class()(oracle, objective, directory=str(work_dir), project_name="keras_tuner",
                               overwrite=not resume)
        tuner.search(verbose=0)
        return tuner.records


register_backend(KerasTunerBackend.name, KerasTunerBackend)
