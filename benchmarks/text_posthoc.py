"""Ablation lines of a finished text run, post hoc: the final selection redone without one lever.

The run's selection pool (``final/oof.npz``: every candidate's out-of-fold probabilities over the
labelled texts) is re-selected with the run's own rule (``scaled_selection``) on a subset of the
candidates, and the chosen weights and temperatures are applied to each candidate's probabilities
on the test texts: a linear head refit on every labelled text (as the final stage refits it), a kept
trial's model as tuning left it (train split only). ``full`` is the same procedure on the whole
pool, so each line is a difference within one procedure; the export itself is scored apart.

Levers: ``tfidf`` (the TF-IDF heads), ``tuned`` (every trial), ``contrastive`` (contrastive trials),
``balanced`` (heads and selection without class weights; trials keep theirs).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

PROBE = "probe:"


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _embed(handle: str, texts: list[str]) -> np.ndarray:
    import tensorflow as tf

    from autotransfer.backbones import HubBackbone

    bb = HubBackbone(handle)
    return np.concatenate([bb(tf.constant(texts[i:i + 64])).numpy() for i in range(0, len(texts), 64)])


class Pool:
    """A finished run's selection pool: out-of-fold and test probabilities of every candidate."""

    def __init__(self, run_dir: Path, test_texts: list[str]) -> None:
        from autotransfer.data.split import Splits
        from autotransfer.objective import Objective
        from autotransfer.probe.probe import ProbeResult
        from autotransfer.tune.store import TrialStore

        self.run_dir, self.texts = run_dir, test_texts
        oof = np.load(run_dir / "final" / "oof.npz")
        self.y = oof["labels"]
        self.names = [k for k in oof.files if k.startswith(PROBE) or k.startswith("trial_")]
        self.oof = {n: oof[n] for n in self.names}
        self.probed = ProbeResult.load(run_dir)
        self.splits = Splits.from_dict(json.loads((run_dir / "splits.json").read_text()))
        metrics = json.loads((run_dir / "test_metrics.json").read_text())
        self.objective = Objective.from_dict(metrics.get("objective"))
        self.num_classes = len(metrics["class_names"])
        config = json.loads((run_dir / "config.json").read_text())
        self.seed = int(config.get("seed", 0))  # the selection's bags
        self.space = config["search_space_resolved"]
        self.store = TrialStore(run_dir / "trials")
        self.records = {int(n[len("trial_"):]): self.store.record(int(n[len("trial_"):]))
                        for n in self.names if n.startswith("trial_")}
        self._test: dict[tuple[str, bool], np.ndarray] = {}
        self.specs = self._specs()

    def _specs(self) -> dict:
        """Every probed candidate's spec, a fitted one (TF-IDF) at its module in ``fitted/``."""
        from dataclasses import replace

        from autotransfer.backbones import BackboneSpec

        out = {}
        for c in self.space["candidates"]:
            spec = BackboneSpec.from_dict(c, "config.json", sized=False)
            out[spec.name] = replace(spec, handle=str(self.run_dir / "fitted" / spec.name)) if spec.is_fitted else spec
        return out

    def head_probs(self, name: str, balanced: bool) -> np.ndarray:
        """Test probabilities of candidate ``name``'s linear head refit on every labelled text."""
        from autotransfer.final.members import standardize_head
        from autotransfer.train.trainer import probe_head_weights

        key = (name, balanced)
        if key not in self._test:
            f = self.probed.features[name]
            x = np.concatenate([f["train"], f["val"]]).astype(np.float32)
            head = probe_head_weights(x, self.y, self.num_classes, balanced=balanced,
                                      standardize=standardize_head(self.specs[name]))
            xt = _embed(self.specs[name].handle, self.texts)
            self._test[key] = _softmax(xt.astype(np.float64) @ head[0] + head[1])
        return self._test[key]

    def trial_probs(self, trial_id: int) -> np.ndarray:
        """Test probabilities of a kept trial's model (its tuned, train-only weights)."""
        import tensorflow as tf

        from autotransfer.space import TuneSpace
        from autotransfer.train.trainer import load_trial_model

        key = (f"trial_{trial_id}", False)
        if key not in self._test:
            params = dict(self.records[trial_id]["params"])
            model = load_trial_model(self.specs[params["backbone"]], params,
                                     TuneSpace.from_dict(self.space.get("tuning") or {}, "config.json"),
                                     self.num_classes, self.store.weights_path(trial_id))
            texts = self.texts
            self._test[key] = np.concatenate([model(tf.constant(texts[i:i + 64]), training=False).numpy()
                                              for i in range(0, len(texts), 64)])
        return self._test[key]

    def test_probs(self, name: str, balanced: bool) -> np.ndarray:
        if name.startswith(PROBE):
            return self.head_probs(name[len(PROBE):], balanced)
        return self.trial_probs(int(name[len("trial_"):]))

    def unbalanced_oof(self) -> dict[str, np.ndarray]:
        """The heads' out-of-fold probabilities refit without class weights (the trials' as they are)."""
        from autotransfer.final.crossfit import oof_heads

        heads = oof_heads(self.probed.features, {n[len(PROBE):]: self.specs[n[len(PROBE):]] for n in self.names
                                                 if n.startswith(PROBE)},
                          self.splits, self._all_labels(), self.num_classes, balanced=False)
        return {**self.oof, **{n: p for n, (_, p) in heads.items()}}

    def _all_labels(self) -> np.ndarray:
        y = np.zeros(int(self.splits.labelled.max()) + 1, dtype=np.int64)
        y[self.splits.labelled] = self.y
        return y


def select(pool: Pool, keep: Callable[[str], bool], y_test: np.ndarray, *, balanced: bool,
           max_members: int = 4) -> dict:
    """The run's selection rule on the candidates ``keep`` accepts; the test macro-F1 it gives."""
    from sklearn.metrics import f1_score

    from autotransfer.final.ensemble import scaled_selection, temperature_scale

    oof = pool.oof if balanced == pool.objective.balanced else pool.unbalanced_oof()
    names = [n for n in pool.names if keep(n)]
    if not names:
        return {"macro_f1": None, "members": {}}
    choice, temps = scaled_selection({n: oof[n] for n in names}, pool.y, max_members=max_members, balanced=balanced,
                                     seed=pool.seed)
    probs = sum(w * temperature_scale(pool.test_probs(n, balanced), temps[n]) for n, w in choice.weights.items())
    pred = np.argmax(probs, axis=1)
    return {"macro_f1": float(f1_score(y_test, pred, average="macro", zero_division=0)),
            "members": {n: round(float(w), 3) for n, w in choice.weights.items()}}


def ablations(run_dir: Path, test_texts: list[str], y_test: np.ndarray) -> dict[str, dict]:
    """``{variant: {macro_f1, members}}`` for the full pool and each lever left out."""
    pool = Pool(run_dir, test_texts)
    trial_type = {f"trial_{t}": r["params"].get("trial_type", "finetune") for t, r in pool.records.items()}
    bal = pool.objective.balanced
    variants = {
        "full": (lambda n: True, bal),
        "no_tfidf": (lambda n: not n.startswith(PROBE + "tfidf"), bal),
        "no_tuned_members": (lambda n: n.startswith(PROBE), bal),
        "no_contrastive": (lambda n: trial_type.get(n) != "contrastive", bal),
        "no_class_weights": (lambda n: True, False),
    }
    return {v: select(pool, keep, y_test, balanced=b) for v, (keep, b) in variants.items()}


__all__ = ["Pool", "ablations", "select"]
