"""Accuracy benchmark: does the exported model beat the fixed recipe a practitioner tries first?

    python benchmarks/accuracy.py --fashion-mnist 100 --test-per-class 200 --time-budget 20m [--seed 0]
    python benchmarks/accuracy.py --train DIR --test DIR --time-budget 15m [-- --no-refit --ensemble 1]

1. ``--fashion-mnist N`` writes the dev set: N training images per class from the official
   Fashion-MNIST train file (a stratified subset drawn with ``--subset-seed``, default ``--seed``)
   and ``--test-per-class M`` images per class from the official test file, as class-per-folder
   PNGs (28 px greyscale), from the Debian package ``dataset-fashion-mnist``
   (``apt-get install -y dataset-fashion-mnist``). Or ``--train``/``--test`` give two folders.
2. Runs ``autotransfer run TRAIN --time-budget B --seed S`` as a user would (the CLI, its own
   process; anything after ``--`` is passed on), and times it.
3. Scores the run's export on every TEST image: the PNG bytes as stored, through ``serving_bytes``
   in PredictRequests built with tensorflow-serving-api.
4. The fixed recipe beside it: EfficientNet-Lite0 at 224 px, frozen, features of ALL training
   images, ``StandardScaler + LogisticRegressionCV`` (scikit-learn defaults: 10 Cs, 5 folds), on
   the same TEST images; and the same recipe on every zoo backbone at its native size.

5. Post hoc, from the run's saved member weights (``final/``): the same TEST images through the
   final model without the refit (tuned, train-only weights), without flip averaging, and the best
   single model alone (refit): what the refit, the flip averaging and the ensemble each added.

Prints the export's accuracy minus the recipe's (pp), against the best zoo recipe too, the run's
own test_metrics (its internal test split) and wall time; appends to ``accuracy.jsonl`` under ``--out``.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]
ZOO = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}
RECIPE = "efficientnet_lite0"


def _idx(path: Path) -> np.ndarray:
    """An idx file (gzip) as an array: uint8 images [n, h, w] or labels [n]."""
    raw = gzip.open(path).read()
    ndim = raw[3]
    shape = np.frombuffer(raw[4:4 + 4 * ndim], ">u4").astype(int)
    return np.frombuffer(raw[4 + 4 * ndim:], np.uint8).reshape(shape)


def write_fashion_mnist(dest: Path, per_class: int, test_per_class: int, seed: int) -> tuple[Path, Path]:
    """Class-per-folder PNGs: ``dest/train`` (per_class a class, drawn with ``seed``) and ``dest/test``."""
    from PIL import Image

    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file():
        sys.exit(f"error: Fashion-MNIST not found in {FASHION_DIR}; run `apt-get install -y dataset-fashion-mnist`.")
    for split, n, file_seed in (("train", per_class, seed), ("test", test_per_class, 10_000 + seed)):
        prefix = "train" if split == "train" else "t10k"
        x, y = _idx(FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz"), _idx(FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz")
        rng = np.random.default_rng(file_seed)
        for c, name in enumerate(FASHION_CLASSES):
            (dest / split / name).mkdir(parents=True, exist_ok=True)
            for i in rng.choice(np.flatnonzero(y == c), n, replace=False):
                Image.fromarray(x[i]).save(dest / split / name / f"{i:05d}.png")
    return dest / "train", dest / "test"


def ablation_space(settings: list[str], dest: Path) -> Path:
    """``search_spaces/offline.yaml`` with ``tuning.FIELD=YAML`` settings applied, written to ``dest``."""
    import yaml

    space = yaml.safe_load((Path(__file__).resolve().parent.parent / "search_spaces" / "offline.yaml").read_text())
    for item in settings:
        key, _, value = item.partition("=")
        section, _, field = key.partition(".")
        if section != "tuning" or not field:
            sys.exit(f"error: --set {item!r}: expected tuning.FIELD=VALUE")
        space.setdefault("tuning", {})[field] = yaml.safe_load(value)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump(space, sort_keys=False))
    return dest


def run_autotransfer(train: Path, out: Path, budget: str, seed: int, extra: list[str]) -> tuple[float, int]:
    # A rerun of one configuration replaces its run directory (unless it continues it).
    again = [] if "--resume" in extra or "--overwrite" in extra else ["--overwrite"]
    cmd = [sys.executable, "-m", "autotransfer.cli", "run", str(train), "--time-budget", budget, "--seed", str(seed),
           "--out", str(out), *again, *extra]
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.monotonic()
    rc = subprocess.call(cmd)
    return time.monotonic() - t0, rc


def score_export(run_dir: Path, test: Path, batch: int = 64) -> tuple[float, int]:
    """Accuracy of the run's latest export on ``test`` through ``serving_bytes`` PredictRequests."""
    from autotransfer.export import load_exported, make_predict_request, run_predict_request

    version = max((p for p in (run_dir / "export").glob("*/*") if p.name.isdigit()), key=lambda p: int(p.name))
    loaded = load_exported(version)
    files = sorted(test.glob("*/*.png"))
    hits = 0
    for i in range(0, len(files), batch):
        chunk = files[i:i + batch]
        request = make_predict_request([p.read_bytes() for p in chunk], model_name=version.parent.name,
                                       signature_name="serving_bytes")
        labels = run_predict_request(loaded, request)["label"].astype(str)
        hits += int(np.sum(labels == np.array([p.parent.name for p in chunk])))
    return hits / len(files), len(files)


def recipe_accuracy(train: Path, test: Path, name: str, size: int, cache: Path) -> float:
    """Frozen ``name`` at ``size`` + StandardScaler + LogisticRegressionCV on all of ``train``."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from autotransfer.backbones import HubBackbone
    from autotransfer.data import load_data
    from autotransfer.probe.featurize import extract_features, feature_dataset

    tr, te = load_data(str(train)), load_data(str(test))
    if tr.class_names != te.class_names:
        sys.exit(f"error: train and test folders have different classes: {tr.class_names} vs {te.class_names}")
    path = cache / f"{tr.fingerprint()[:16]}-{te.fingerprint()[:16]}-{name}-{size}.npz"
    if path.is_file():
        z = np.load(path)
        xtr, xte = z["train"], z["test"]
    else:
        bb = HubBackbone(f"zoo://{name}/feature_vector", input_size=size)
        xtr = extract_features(bb, feature_dataset(tr, np.arange(len(tr)), size))
        xte = extract_features(bb, feature_dataset(te, np.arange(len(te)), size))
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(path, train=xtr, test=xte)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = make_pipeline(StandardScaler(), LogisticRegressionCV(max_iter=3000)).fit(xtr, tr.labels)
    return float(np.mean(model.predict(xte) == te.labels))


def posthoc(run_dir: Path, test: Path) -> dict[str, float]:
    """Test accuracy of the final model's variants, rebuilt from ``final/member_<i>*.weights.h5``."""
    from autotransfer.data import image_dataset, load_data
    from autotransfer.final.ensemble import temperature_scale
    from autotransfer.final.members import member_model

    final = json.loads((run_dir / "final_model.json").read_text())
    te = load_data(str(test))
    y = np.asarray(te.labels)
    probs: dict[tuple[int, bool, bool], np.ndarray] = {}  # (member, tuned, flipped) -> [n, K]
    for i, m in enumerate(final["members"]):
        ds = image_dataset(te, np.arange(len(te)), image_size=m["input_size"], batch_size=64, with_labels=False)
        for tuned in ((False, True) if m.get("refit") else (False,)):
            model = member_model(run_dir, m, te.num_classes, tuned=tuned)
            plain, flipped = [], []
            for x in ds:
                plain.append(model(x, training=False).numpy())
                flipped.append(model(x[:, :, ::-1], training=False).numpy())
            probs[(i, tuned, False)], probs[(i, tuned, True)] = np.concatenate(plain), np.concatenate(flipped)
            del model

    def acc(weights: str = "export", tta: bool = True, only: int | None = None, scaled: bool = True) -> float:
        """``weights``: "export" (as served: refit, with the tuned twin where blended), "refit"
        (refit weights alone), "tuned" (train-only weights alone); ``scaled``: with each member's
        temperature (as served) or without."""
        total = 0
        for i, m in enumerate(final["members"]):
            if only is not None and i != only:
                continue
            if weights == "export" and m.get("blended"):
                halves = (False, True)
            else:
                halves = (weights == "tuned" and bool(m.get("refit")),)
            temp = float(m.get("temperature", 1.0)) if scaled else 1.0
            for t in halves:
                p = temperature_scale(probs[(i, t, False)], temp)
                if tta and m["flip_tta"]:
                    p = 0.5 * (p + temperature_scale(probs[(i, t, True)], temp))
                total = total + (1.0 if only is not None else m["weight"]) / len(halves) * p
        return float(np.mean(np.argmax(total, axis=1) == y))

    single = next(i for i, m in enumerate(final["members"]) if m["name"] == final["selection"]["single"])
    return {"final": acc(), "no_refit": acc("tuned"), "refit_only": acc("refit"), "no_tta": acc(tta=False),
            "unscaled": acc(scaled=False),
            "single": acc(only=single), "single_name": final["members"][single]["name"],
            "members": len(final["members"]), "blended": sum(bool(m.get("blended")) for m in final["members"])}


def _estimate(metrics: dict) -> dict | None:
    """The run's own estimate of its export: the cross-validated one (with its interval) when the run
    cross-validated, else its internal test split's score (no interval)."""
    cv = metrics.get("cv_estimate")
    if cv:
        return {"accuracy": cv["accuracy"], "ci95": cv["accuracy_ci95"],
                "how": f"{cv['folds']}-fold cross-validation over {cv['num_labelled']} images"}
    if metrics.get("accuracy") is None:
        return None
    return {"accuracy": metrics["accuracy"], "ci95": None,
            "how": f"internal {metrics.get('split', 'test')} split, {metrics.get('num_test')} images"}


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fashion-mnist", type=int, metavar="N", help="write the Fashion-MNIST dev set, N train images a class")
    p.add_argument("--test-per-class", type=int, default=200)
    p.add_argument("--train", type=Path)
    p.add_argument("--test", type=Path)
    p.add_argument("--time-budget", default="20m")
    p.add_argument("--seed", type=int, default=0, help="autotransfer's --seed")
    p.add_argument("--subset-seed", type=int, default=None, help="which Fashion-MNIST subset (default: --seed)")
    p.add_argument("--out", type=Path, default=Path("reports/accuracy"))
    p.add_argument("--tag", default="", help="name of this configuration in the output (e.g. an ablation)")
    p.add_argument("--no-run", action="store_true", help="only the recipes (and score an existing run dir)")
    p.add_argument("--no-posthoc", action="store_true",
                   help="skip step 5 (it predicts the test images once per variant: ~20 min for a 4-member export)")
    p.add_argument("--set", action="append", default=[], metavar="tuning.FIELD=YAML",
                   help="ablation: run on the offline search space with this tuning field replaced "
                        "(e.g. tuning.augment=none); repeatable")
    args = p.parse_args(argv)
    subset = args.seed if args.subset_seed is None else args.subset_seed
    tag = args.tag or "default"
    if args.fashion_mnist:
        data_dir = args.out / f"fashion-mnist-{args.fashion_mnist}-{args.test_per_class}-s{subset}"
        if not (data_dir / "test").is_dir():
            write_fashion_mnist(data_dir, args.fashion_mnist, args.test_per_class, subset)
        train, test = data_dir / "train", data_dir / "test"
    elif args.train and args.test:
        train, test = args.train, args.test
    else:
        p.error("give --fashion-mnist N, or --train DIR and --test DIR")
    # The data's own name in the run's: runs at two subset sizes must not share (overwrite) a directory.
    run_dir = args.out / f"run-{tag}-{train.parent.name}-seed{args.seed}"
    if args.set:
        extra = ["--search-space", str(ablation_space(args.set, args.out / f"space-{tag}.yaml")), *extra]
    seconds, rc = (0.0, 0) if args.no_run else run_autotransfer(train, run_dir, args.time_budget, args.seed, extra)
    if rc != 0:
        sys.exit(f"error: autotransfer run exited {rc}")
    acc, n = score_export(run_dir, test)
    recipes = {name: recipe_accuracy(train, test, name, size, args.out / "recipe-cache") for name, size in ZOO.items()}
    metrics = json.loads((run_dir / "test_metrics.json").read_text())
    best_name = max(recipes, key=recipes.get)
    parts = posthoc(run_dir, test) if (run_dir / "final_model.json").is_file() and not args.no_posthoc else None
    result = {"tag": tag, "extra_args": extra, "subset_seed": subset, "seed": args.seed, "train": str(train),
              "test": str(test), "test_images": n, "time_budget": args.time_budget, "run_seconds": seconds,
              "export_accuracy": acc, "recipes": recipes, "recipe": RECIPE, "gain_pp": 100 * (acc - recipes[RECIPE]),
              "gain_vs_best_recipe_pp": 100 * (acc - recipes[best_name]), "best_recipe": best_name,
              "run_test_metrics": {k: metrics.get(k) for k in ("split", "accuracy", "tuned", "refit", "ensemble",
                                                                "num_test", "cv_estimate")},
              "estimate": _estimate(metrics), "posthoc": parts}
    est = result["estimate"]
    result["estimate_covers_test"] = est["ci95"][0] <= acc <= est["ci95"][1] if est and est.get("ci95") else None
    print(f"\n{tag} (subset {subset}, seed {args.seed}): export through serving_bytes on {n} test images: {acc:.4f}")
    for name, a in recipes.items():
        print(f"  recipe {name} frozen + LogisticRegressionCV on all {len(list(train.glob('*/*.png')))} train images: {a:.4f}")
    print(f"  export - recipe ({RECIPE}): {result['gain_pp']:+.2f} pp; export - best recipe ({best_name}): "
          f"{result['gain_vs_best_recipe_pp']:+.2f} pp; run wall time {seconds / 60:.1f} min")
    if est:
        ci = est.get("ci95")
        print(f"  run's own estimate ({est['how']}): {est['accuracy']:.4f}"
              + (f", 95% interval {ci[0]:.4f}-{ci[1]:.4f}" if ci else "")
              + f"; real test {acc:.4f} ({100 * (acc - est['accuracy']):+.2f} pp"
              + (f", {'inside' if result['estimate_covers_test'] else 'OUTSIDE'} the interval)" if ci else ")")
              + f"; members {metrics.get('ensemble')}")
    if parts:
        fin = parts["final"]
        print(f"  post hoc from the member weights ({parts['members']} member(s)): final {fin:.4f} "
              f"(serving_bytes {acc:.4f}); refit adds {100 * (fin - parts['no_refit']):+.2f} pp, flip averaging "
              f"{100 * (fin - parts['no_tta']):+.2f} pp, the ensemble {100 * (fin - parts['single']):+.2f} pp over its best "
              f"single model ({parts['single_name']}: {parts['single']:.4f}); keeping the tuned twins of "
              f"{parts['blended']} refit member(s) {100 * (fin - parts['refit_only']):+.2f} pp over the refit alone "
              f"({parts['refit_only']:.4f}); the members' temperatures {100 * (fin - parts['unscaled']):+.2f} pp "
              f"over the same weights unscaled")
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "accuracy.jsonl", "a") as f:
        f.write(json.dumps(result) + "\n")
    return result


if __name__ == "__main__":
    main()
