"""The final model: the best trial or an ensemble of trained models, then refit on train+val.

After tuning, every kept trial and every probed candidate's linear head (a frozen backbone with a
logistic regression on its cached features: cheap, and a different backbone, layer or size from
the tuned ones) is a candidate member. :func:`choose_members` picks members and weights by greedy
ensemble selection on validation (:mod:`autotransfer.final.ensemble`, bagged), each candidate first
temperature-scaled on val so that an over-confident fine-tuned network and a calibrated linear
head average on equal terms; a single model wins unless averaging beats it on val.
:func:`refit_members` then retrains each member on train+val with its own recipe (a trial: its
parameters and the fine-tuning epochs its early stopping kept; a linear head: the logistic
regression on train+val features), so the exported model sees every labelled item but the
untouched test split. A member whose refit does not fit the time left keeps its tuned
weights (said in its ``refit_note``).

With ``keep_tuned`` (the default), a refit fine-tuned member is exported as the average of its
refit and its tuned weights: two fits of one recipe on overlapping data, a two-model ensemble at the
cost of one more forward pass. Its tuned half is the model validation chose; the refit half saw
the val items too and cannot be validated, so the average also hedges a refit that drifted.
"""
from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

import keras
import numpy as np

from autotransfer.backbones import BackboneSpec
from autotransfer.final.ensemble import EnsembleChoice, log_loss, scaled_selection, temperature_scale
from autotransfer.budget import Deadline
from autotransfer.train.prefix import DEFAULT_SETTINGS, PrefixCacheSettings, as_parts
from autotransfer.space import TuneSpace
from autotransfer.train.task import HEAD_LAYER, Part, build_ensemble, build_task_model
from autotransfer.train.trainer import at_trial_size, predict_probs, probe_head_weights, refit_trial

PROBE_PREFIX = "probe:"
#: A linear head's "trial" parameters: the frozen backbone, no dropout at inference.
_HEAD_PARAMS = {"unfreeze_blocks": 0, "dropout": 0.0}


@dataclass
class Member:
    """One model of the final ensemble (or the single final model)."""

    name: str                      # "trial 3" or "probe:<candidate>"
    spec: BackboneSpec
    weight: float
    model: keras.Model             # trained on train only (what validation chose)
    params: dict[str, Any]
    finetune_epochs: int = 0
    refit_seconds: float = 0.0     # a fine-tuned member's refit estimate on train items (TrialSummary.refit_seconds)
    trial_id: int | None = None
    head: list[np.ndarray] | None = None  # linear-head members: the Dense weights
    flip: bool = False             # test-time flip averaging
    temperature: float = 1.0       # its probabilities are served as softmax(log p / temperature)
    refit_model: keras.Model | None = None
    refit_note: str = "not refit"

    @property
    def kind(self) -> str:
        return "probe" if self.name.startswith(PROBE_PREFIX) else "trial"

    weights_file: str | None = None  # the exported weights, relative to the run directory

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "backbone": self.spec.name, "input_size": self.spec.input_size,
                "spec": self.spec.to_dict(), "weight": self.weight, "kind": self.kind, "trial_id": self.trial_id,
                "params": self.params, "finetune_epochs": self.finetune_epochs, "flip_tta": self.flip,
                "temperature": self.temperature, "refit": self.refit_model is not None, "refit_note": self.refit_note,
                "weights_file": self.weights_file}


@dataclass
class FinalModel:
    """The chosen members, the selection behind them, and the Keras model(s) they make."""

    members: list[Member]
    choice: EnsembleChoice
    notes: list[str] = field(default_factory=list)
    keep_tuned: bool = False       # a refit trial member serves the mean of its refit and tuned weights
    #: what selection scored: ``{candidate: probabilities}`` (val, or out-of-fold over every labelled row)
    pool: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    labels: np.ndarray | None = field(default=None, repr=False)  # the true classes of the pool's rows
    #: the cross-validated estimate of the chosen model (:func:`~autotransfer.evaluate.cv_estimate`)
    estimate: dict[str, Any] | None = None

    def selected_probs(self) -> np.ndarray:
        """The chosen members' temperature-scaled, weighted mean over the pool's rows."""
        return sum(m.weight * temperature_scale(self.pool[m.name], m.temperature) for m in self.members)

    def _twinned(self, m: Member) -> bool:
        """Whether member ``m``, once refit, serves its tuned twin beside its refit model."""
        return self.keep_tuned and m.kind == "trial"

    def blended(self, m: Member) -> bool:
        """Whether member ``m`` is exported as the mean of its refit and tuned models."""
        return self._twinned(m) and m.refit_model is not None

    def served_sizes(self) -> list[int]:
        """Input sizes of every model the export serves once each member is refit (tuned twins
        included): what the export reserve counts before the refit."""
        return [m.spec.input_size for m in self.members for _ in range(2 if self._twinned(m) else 1)]

    def parts(self, refit: bool = True) -> list[Part]:
        """Every model the export averages; ``refit`` uses the refit weights where a member has them
        (with its tuned twin at half weight each when :meth:`blended`). A refit model keeps its
        member's temperature: the same recipe, trained as long, on a few more items."""
        out = []
        for m in self.members:
            if refit and self.blended(m):
                out += [Part(m.refit_model, m.spec.input_size, m.weight / 2, m.flip, m.temperature),
                        Part(m.model, m.spec.input_size, m.weight / 2, m.flip, m.temperature)]
            else:
                model = m.refit_model if refit and m.refit_model is not None else m.model
                out.append(Part(model, m.spec.input_size, m.weight, m.flip, m.temperature))
        return out

    def model(self, refit: bool = True) -> tuple[keras.Model, list[int]]:
        """The averaged model of :meth:`parts` and its input sizes."""
        return build_ensemble(self.parts(refit))

    @property
    def refit(self) -> bool:
        """True when every member was refit."""
        return all(m.refit_model is not None for m in self.members)

    def save_members(self, run_dir: Path) -> None:
        """Each member's exported weights as ``final/member_<i>.weights.h5`` and, when it was
        refit, its tuned (train-only) weights as ``final/member_<i>.tuned.weights.h5``: what a
        member alone would serve, and what the refit changed (:func:`member_model` rebuilds either)."""
        (run_dir / "final").mkdir(parents=True, exist_ok=True)
        for i, m in enumerate(self.members):
            m.weights_file = f"final/member_{i}.weights.h5"
            (m.refit_model or m.model).save_weights(str(run_dir / m.weights_file))
            if m.refit_model is not None:
                m.model.save_weights(str(run_dir / f"final/member_{i}.tuned.weights.h5"))

    def to_dict(self) -> dict[str, Any]:
        members = [{**m.to_dict(), "blended": self.blended(m)} for m in self.members]
        return {"members": members, "selection": self.choice.to_dict(), "ensemble": len(self.members) > 1,
                "refit": self.refit, "keep_tuned": self.keep_tuned, "models_served": len(self.parts()),
                "notes": list(self.notes), "cv_estimate": self.estimate}


def member_model(run_dir: Path, member: dict[str, Any], num_classes: int, *, tuned: bool = False) -> keras.Model:
    """One member of ``final_model.json`` rebuilt from its spec and weights file (``tuned``: the
    train-only weights of a refit member)."""
    spec = BackboneSpec.from_dict(member["spec"], f"{run_dir / 'final_model.json'}: {member['name']}")
    model, _ = build_task_model(spec, num_classes, dropout=float(member["params"].get("dropout", 0.0)))
    path = run_dir / member["weights_file"]
    if tuned and member.get("refit"):
        path = path.with_name(path.name.replace(".weights.h5", ".tuned.weights.h5"))
    model.load_weights(str(path))
    return model


def standardize_head(spec: BackboneSpec) -> bool:
    """Whether a candidate's linear head standardises its features: yes, but for candidates fitted
    on the run's texts (TF-IDF), whose sparse rows a practitioner's regression takes as they are."""
    return not spec.is_fitted


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits."""
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def probe_heads(features: dict[str, dict[str, np.ndarray]], specs: dict[str, BackboneSpec], y_train: np.ndarray,
                num_classes: int, *, seed: int = 0,
                balanced: bool = False) -> dict[str, tuple[list[np.ndarray], np.ndarray]]:
    """``{probe:<name>: (head weights, val probabilities)}`` for every candidate with cached features
    (``balanced``: every class weighs the same in the fit)."""
    out = {}
    for name, f in features.items():
        if name not in specs or "train" not in f or "val" not in f:
            continue
        head = probe_head_weights(np.asarray(f["train"], np.float32), y_train, num_classes, seed=seed,
                                  balanced=balanced, standardize=standardize_head(specs[name]))
        out[PROBE_PREFIX + name] = (head, softmax(np.asarray(f["val"], np.float64) @ head[0] + head[1]))
    return out


def selection_pool(kept: Iterable[Any], heads: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The candidates of member selection, ``{name: val probabilities}``: the kept trials (``kept``:
    their :class:`~autotransfer.tune.tune.TrialSummary`, best first) as ``"trial <id>"``, then the
    linear heads (``heads``: ``{"probe:<candidate>": val probabilities}``)."""
    return {**{f"trial {s.trial_id}": s.val_probs for s in kept}, **heads}


def choose_members(tuned: Any, heads: dict[str, tuple[list[np.ndarray], np.ndarray]], specs: dict[str, BackboneSpec],
                   y_val: np.ndarray, *, num_classes: int, max_members: int, keep_tuned: bool,
                   seed: int = 0, trial_probs: Mapping[int, np.ndarray] | None = None,
                   balanced: bool = False) -> FinalModel:
    """Bagged greedy ensemble selection over the kept trials (best first) and the linear heads,
    each temperature-scaled on val (:func:`~autotransfer.final.ensemble.scaled_selection`).

    ``trial_probs`` (cross-validation): ``{trial id: out-of-fold probabilities}``; only those trials
    are candidates, scored with those probabilities, and ``y_val`` and the heads' probabilities
    cover the same rows (every labelled row). The selection's pool is kept in ``FinalModel.pool``.
    ``balanced``: every class weighs the same in the temperatures and the selection's log-loss.
    """
    kept = sorted((tuned.summaries[t] for t in tuned.models), key=lambda s: s.key, reverse=True)
    if trial_probs is not None:
        kept = [replace(s, val_probs=trial_probs[s.trial_id]) for s in kept if s.trial_id in trial_probs]
    probs = selection_pool(kept, {name: p for name, (_, p) in heads.items()})
    if max_members <= 1 and trial_probs is None:
        # "1 = the best trial alone": the tuner's choice, not the lowest val log-loss of the pool.
        probs = {f"trial {tuned.best_trial_id}": tuned.summaries[tuned.best_trial_id].val_probs}
    choice, temps = scaled_selection(probs, y_val, max_members=max_members, seed=seed, balanced=balanced)
    members = []
    for name, weight in choice.weights.items():
        if name.startswith(PROBE_PREFIX):
            spec = specs[name[len(PROBE_PREFIX):]]
            model = _head_model(spec, heads[name][0], num_classes)
            members.append(Member(name, spec, weight, model, dict(_HEAD_PARAMS), head=heads[name][0],
                                  temperature=temps[name]))
        else:
            s = tuned.summaries[int(name.split()[1])]
            members.append(Member(name, at_trial_size(specs[s.backbone], s.params), weight, tuned.models[s.trial_id],
                                  dict(s.params), s.finetune_epochs, s.refit_seconds, s.trial_id,
                                  temperature=temps[name]))
    return FinalModel(members, choice, keep_tuned=keep_tuned, pool=probs,
                      labels=np.asarray(y_val))


def _head_model(spec: BackboneSpec, head: list[np.ndarray], num_classes: int) -> keras.Model:
    model, _ = build_task_model(spec, num_classes, dropout=0.0)
    model.get_layer(HEAD_LAYER).set_weights(head)
    return model


def choose_flip(final: FinalModel, val_images: dict[int, Any], y_val: np.ndarray) -> None:
    """Turn on test-time flip averaging for members whose validation log-loss it lowers.

    ``val_images``: ``{input size: batches of val images}`` (what the members were validated on).
    """
    for m in final.members:
        batches = val_images[m.spec.input_size]
        plain = temperature_scale(predict_probs(m.model, batches), m.temperature)
        mirrored = predict_probs(m.model, [np.asarray(b)[:, :, ::-1] for b in batches])
        flipped = temperature_scale(mirrored, m.temperature)
        m.flip = log_loss(0.5 * (plain + flipped), y_val) < log_loss(plain, y_val)


def refit_members(final: FinalModel, data: Any, indices: np.ndarray | tuple[np.ndarray, ...], *,
                  features: dict[tuple[str, int], np.ndarray], space: TuneSpace, deadline: Deadline, factor: float,
                  seed: int = 0, prefix_cache: PrefixCacheSettings = DEFAULT_SETTINGS, balanced: bool = False) -> None:
    """Retrain every member on ``indices`` (train+val): the linear heads first (a logistic
    regression on cached features, seconds each, always done), then the fine-tuned trials, heaviest
    weight first, each only when its estimate fits the time left after the heads.

    ``indices``: one array, or its parts (the splits: a refit on the frozen-prefix path reuses the
    activations its trial cached for each). ``features``: ``{(candidate name, input size): features
    of indices}`` (the probe's, in ``indices`` order); members at another size extract their own.
    ``factor``: refit items over trial train items, to estimate a refit from its trial's time.
    ``prefix_cache``: the trials' frozen-prefix cache settings (a refit takes the path its trial took).
    ``balanced``: the linear heads weigh every class the same (a trial's own parameters say it for it).
    """
    parts = indices
    indices = np.concatenate(as_parts(parts))
    y = np.asarray(data.labels, dtype=np.int64)[indices]
    for m in sorted(final.members, key=lambda m: (m.kind == "trial", -m.weight)):
        est = factor * m.refit_seconds
        if m.kind == "trial" and deadline.remaining() < est:
            m.refit_note = f"kept the tuned weights: refit needs ~{est:.0f} s, {max(0.0, deadline.remaining()):.0f} s left"
            continue
        t0 = time.monotonic()
        feats = features.get((m.spec.name, m.spec.input_size))
        if m.kind == "probe":
            head = probe_head_weights(feats, y, data.num_classes, seed=seed, balanced=balanced,
                                      standardize=standardize_head(m.spec))
            m.refit_model = _head_model(m.spec, head, data.num_classes)
        else:
            model, timed_out = refit_trial(m.spec, m.params, data, parts, space=space, num_classes=data.num_classes,
                                           finetune_epochs=m.finetune_epochs, features=feats, deadline=deadline,
                                           seed=seed + (m.trial_id or 0), prefix_cache=prefix_cache)
            if timed_out:
                m.refit_note = "kept the tuned weights: the refit ran out of time"
                del model
                gc.collect()
                continue
            m.refit_model = model
        m.refit_note = f"refit on {len(indices)} items in {time.monotonic() - t0:.0f} s"


__all__ = ["FinalModel", "Member", "choose_flip", "choose_members", "member_model", "probe_heads", "refit_members",
           "selection_pool", "standardize_head"]
