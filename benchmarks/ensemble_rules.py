"""Post hoc: how the ensemble-selection rule changes test accuracy, on a finished run.

    python benchmarks/ensemble_rules.py RUN_DIR TEST_FOLDER [RUN_DIR TEST_FOLDER ...]

For each run (an `autotransfer run` directory, e.g. one `benchmarks/accuracy.py` wrote, and the
test folder it was scored on) it predicts TEST_FOLDER with every kept trial (its train-only weights,
`trials/<id>/model.weights.h5`) and every probed candidate's linear head (fitted on the run's train
features, as the final stage fits it), then selects members on the run's own validation split
with each rule and prints the selected average's test accuracy:

- ``greedy``: one greedy pass (Caruana et al. 2004) on raw probabilities (the rule before 3c925e7);
- ``greedy+T``: the same on temperature-scaled probabilities;
- ``bagged+T``: bagged selection on temperature-scaled probabilities (the default since 3c925e7);
- ``uniform``: every candidate at equal weight (no selection, no member cap).

No refit and no flip averaging, so the rules compare on equal terms (the served model adds both).
Candidates' test features are cached in ``--cache`` (one file per candidate and test folder).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autotransfer.final.ensemble import (accuracy, average, bagged_ensemble, fit_temperature, greedy_ensemble,  # noqa: E402
                                   temperature_scale)

MAX_MEMBERS = 4


def _predict(model, data, size: int) -> np.ndarray:
    from autotransfer.data import image_dataset

    ds = image_dataset(data, np.arange(len(data)), image_size=size, batch_size=100, with_labels=False)
    return np.concatenate([model(x, training=False).numpy() for x in ds])


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _specs(run_dir: Path) -> dict:
    from autotransfer.backbones import BackboneSpec
    from autotransfer.config import load_search_space

    config = json.loads((run_dir / "config.json").read_text())
    return {s.name: s for s in load_search_space(config["search_space_resolved"]["path"]).expanded()
            if isinstance(s, BackboneSpec)}


def head_test_features(specs: dict, names: list[str], test, cache: Path, test_dir: Path) -> dict[str, np.ndarray]:
    """Each candidate's frozen features of the test images (the input of its head layer), cached."""
    import keras

    from autotransfer.train.task import HEAD_LAYER, build_task_model

    tag = hashlib.sha1(str(test_dir.resolve()).encode()).hexdigest()[:10]
    out = {}
    for name in names:
        path = cache / f"{tag}-{name.replace('@', '_')}.npy"
        if not path.is_file():
            model, _ = build_task_model(specs[name], test.num_classes, dropout=0.0)
            features = keras.Model(model.inputs, model.get_layer(HEAD_LAYER).input)
            cache.mkdir(parents=True, exist_ok=True)
            np.save(path, _predict(features, test, specs[name].input_size))
        out[name] = np.load(path)
    return out


def candidates(run_dir: Path, test, cache: Path, test_dir: Path) -> tuple[dict, dict, np.ndarray]:
    """``(val probs, test probs, y_val)`` of every kept trial and every probe head of the run."""
    from autotransfer.final.members import PROBE_PREFIX
    from autotransfer.train.task import build_task_model
    from autotransfer.train.trainer import at_trial_size, probe_head_weights

    specs = _specs(run_dir)
    arrays = np.load(run_dir / "probe" / "arrays.npz")
    feats: dict[str, dict[str, np.ndarray]] = {}
    for name, part, key in json.loads((run_dir / "probe" / "probe.json").read_text())["features"]:
        feats.setdefault(name, {})[part] = arrays[key]
    val, tst = {}, {}
    test_feats = head_test_features(specs, [n for n in feats if n in specs], test, cache, test_dir)
    for name, f in test_feats.items():
        head = probe_head_weights(feats[name]["train"].astype(np.float32), arrays["y_train"], test.num_classes)
        val[PROBE_PREFIX + name] = _softmax(feats[name]["val"] @ head[0] + head[1])
        tst[PROBE_PREFIX + name] = _softmax(f @ head[0] + head[1])
    for trial in sorted((run_dir / "trials").iterdir()):
        if not (trial / "model.weights.h5").is_file():
            continue
        p = json.loads((trial / "record.json").read_text())["params"]
        spec = at_trial_size(specs[p["backbone"]], p)
        model, _ = build_task_model(spec, test.num_classes, dropout=float(p.get("dropout", 0.0)))
        model.load_weights(str(trial / "model.weights.h5"))
        val[f"trial {int(trial.name)}"] = np.load(trial / "val_probs.npy")
        tst[f"trial {int(trial.name)}"] = _predict(model, test, spec.input_size)
    return val, tst, arrays["y_val"]


def rules(val: dict, tst: dict, y_val: np.ndarray, y_test: np.ndarray, seed: int) -> dict[str, float]:
    """Test accuracy of the average each rule selects on val."""
    temps = {n: fit_temperature(p, y_val) for n, p in val.items()}
    val_t = {n: temperature_scale(p, temps[n]) for n, p in val.items()}
    tst_t = {n: temperature_scale(p, temps[n]) for n, p in tst.items()}
    chosen = {
        "greedy": (greedy_ensemble(val, y_val, max_members=MAX_MEMBERS).weights, tst),
        "greedy+T": (greedy_ensemble(val_t, y_val, max_members=MAX_MEMBERS).weights, tst_t),
        "bagged+T": (bagged_ensemble(val_t, y_val, max_members=MAX_MEMBERS, seed=seed).weights, tst_t),
        "uniform": ({n: 1 / len(tst) for n in tst}, tst),
    }
    return {rule: accuracy(average(probs, w), y_test) for rule, (w, probs) in chosen.items()}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pairs", nargs="+", help="RUN_DIR TEST_FOLDER, one pair per run")
    p.add_argument("--cache", type=Path, default=Path("reports/ensemble-rules-cache"))
    args = p.parse_args(argv)
    if len(args.pairs) % 2:
        p.error("give RUN_DIR TEST_FOLDER pairs")
    from autotransfer.data import load_data

    results = {}
    for run, test_dir in zip(args.pairs[::2], args.pairs[1::2]):
        run_dir, test_dir = Path(run), Path(test_dir)
        test = load_data(str(test_dir))
        val, tst, y_val = candidates(run_dir, test, args.cache, test_dir)
        seed = int(json.loads((run_dir / "config.json").read_text()).get("seed", 0))
        results[run_dir.name] = r = rules(val, tst, y_val, np.asarray(test.labels), seed)
        print(f"{run_dir.name} ({len(tst)} candidates, {len(test)} test images): "
              + ", ".join(f"{k} {100 * v:.2f}%" for k, v in r.items()), flush=True)
    base = "greedy"
    for rule in next(iter(results.values())):
        gains = [100 * (r[rule] - r[base]) for r in results.values()]
        print(f"{rule:>9}: mean {100 * np.mean([r[rule] for r in results.values()]):.2f}%, "
              f"vs {base} {' / '.join(f'{g:+.2f}' for g in gains)} pp (mean {np.mean(gains):+.2f})")
    return results


if __name__ == "__main__":
    main()
