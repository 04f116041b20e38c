"""Selection benchmark: does the probe pick what brute-force fine-tuning would pick, at what cost?

    python benchmarks/selection.py digits --search-space search_spaces/offline.yaml \
        --input-sizes 96,128,160 --per-class 40 --max-trials 2 --max-epochs 4 --out reports/selection

DATA is an image folder (one sub-folder per class), the word ``digits`` (scikit-learn's 8x8
digits written as an image folder, ``--per-class`` images per class, ``--image-size`` px), or the
word ``fashion-mnist`` (``--per-class`` training images per class from the official train file,
drawn with ``--seed``, train+val; the official test file's ``--test-per-class`` per class as the
test split: a CSV with a split column, written by ``benchmarks/accuracy.py``'s writer).
``--test-rest`` (digits only): train and val come from ``--per-class`` images per class and ALL the
other digits (about 1,400) are the test split, so that the reference accuracies are not dominated
by test-set noise (one test image = 0.07 pp instead of 0.8 pp).
On ONE set of splits (``make_splits(seed)``, or the ``--test-rest`` split):

(a) brute force: every candidate fine-tuned alone with the selector's final-stage tuner budget
    (``tune([candidate], max_trials=T)`` with the same TuneSpace and backend) and evaluated on test,
    repeated with ``--bf-seeds`` tuner seeds (same splits); candidates ranked by their MEAN test
    accuracy over those seeds. The reference's own reliability is printed: Kendall's tau between
    the rankings of two brute-force seeds (mean over pairs). A scorer cannot be expected to agree
    with the reference better than the reference agrees with itself.
(b) autotransfer: ``probe`` over all candidates (the default scorer plus every other registered
    scorer as ``score_<name>`` columns, cold: no feature cache), then ``tune`` over the default
    scorer's top-k with the same budget, and the winner evaluated on test.

Per scorer it prints Kendall's tau (tau-b, scipy) of the scorer's scores against the brute-force
test accuracies, and the top-1 regret (see REGRET_DEF). Wall times of both arms, the per-candidate
table, JSON and CSV go under ``--out``. Timings on a shared CPU are noisy.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from autotransfer.defaults import DEFAULT_SCORER  # noqa: E402

REGRET_DEF = ("top-1 regret (pp) = 100 * (best mean brute-force test acc over all candidates - mean brute-force "
              "test acc of the candidate this scorer ranks first)")


def write_digits(dest: Path, per_class: int, size: int, seed: int) -> Path:
    """scikit-learn digits as an image folder, as examples/write_digits.py does."""
    from sklearn.datasets import load_digits

    from autotransfer.testing import write_image_folder

    digits = load_digits()
    rng = np.random.default_rng(seed)
    keep = np.concatenate([rng.permutation(np.flatnonzero(digits.target == c))[:per_class] for c in range(10)])
    x = 1.0 - digits.images[keep] / 16.0
    return write_image_folder(x, digits.target[keep], [str(c) for c in range(10)], dest, image_size=size)


def write_fashion_mnist_csv(dest: Path, per_class: int, test_per_class: int, seed: int) -> Path:
    """Fashion-MNIST PNGs (benchmarks/accuracy.py's writer) listed in ``dest/data.csv`` with a split
    column: the training subset as ``train`` (val is carved from it), the official test images as ``test``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from accuracy import write_fashion_mnist

    train, test = write_fashion_mnist(dest, per_class, test_per_class, seed)
    rows = ["path,label,split"] + [f"{p.relative_to(dest)},{p.parent.name},{split}"
                                   for split, root in (("train", train), ("test", test))
                                   for p in sorted(root.glob("*/*.png"))]
    (dest / "data.csv").write_text("\n".join(rows) + "\n")
    return dest / "data.csv"


def rest_as_test_splits(data, per_class: int, val_fraction: float, seed: int):
    """Train/val from ``per_class`` items per class (val stratified), every other item is test."""
    from sklearn.model_selection import train_test_split

    from autotransfer.data import Splits

    y = np.asarray(data.labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    keep = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per_class] for c in np.unique(y)])
    train, val = train_test_split(keep, test_size=val_fraction, stratify=y[keep], random_state=seed)
    test = np.setdiff1d(np.arange(len(y)), keep)
    return Splits(np.sort(train).astype(np.int64), np.sort(val).astype(np.int64), test.astype(np.int64))


def candidates_of(space, input_sizes: list[int] | None):
    """The search space's expanded candidates, optionally re-expanded at ``input_sizes``."""
    if not input_sizes:
        return space.expanded()
    out = []
    for entry in space.candidates:
        out.extend(replace(entry, extra={**entry.extra, "input_sizes": list(input_sizes)}).expand())
    return out


def compare_plan(plan, probe_actual: float, work: Path, head_epochs: int) -> dict:
    """Planner estimates vs what the arms took: the probe, and every trial at its own epoch count."""
    import pandas as pd

    from autotransfer.plan import CandidateCost, trial_seconds

    costs = {k: CandidateCost(**v) for k, v in plan.costs.items()}
    rows = []
    for arm, cached in (("autotransfer", True), ("brute", False)):
        for f in sorted(work.glob("brute-seed*/**/trials.csv")) if arm == "brute" else [work / arm / "trials.csv"]:
            if not f.exists():
                continue
            for _, t in pd.read_csv(f).iterrows():
                if t["status"] != "ok" or t["backbone"] not in costs:
                    continue
                ft = int(t["epochs"]) - head_epochs if int(t["unfreeze_blocks"]) > 0 else 0
                est = trial_seconds(costs[t["backbone"]], n_train=plan.n_train, n_val=plan.n_val, epochs=max(0, ft),
                                    features_cached=cached)
                rows.append({"arm": arm, "backbone": t["backbone"], "unfreeze": int(t["unfreeze_blocks"]),
                             "ft_epochs": ft, "actual_s": float(t["seconds"]), "estimate_s": est})
    df = pd.DataFrame(rows)
    ratio = (df["actual_s"] / df["estimate_s"]) if len(df) else pd.Series(dtype=float)
    print(f"\nplanner check: probe estimate {plan.probe_s:.0f} s vs actual {probe_actual:.0f} s "
          f"(actual/estimate {probe_actual / plan.probe_s:.2f})")
    if len(df):
        print(f"trials (estimate at each trial's own fine-tune epochs, train cost measured at the unfreeze upper "
              f"bound): actual/estimate median {ratio.median():.2f}, range {ratio.min():.2f}-{ratio.max():.2f} "
              f"over {len(df)} trials; sum actual {df['actual_s'].sum():.0f} s vs estimate {df['estimate_s'].sum():.0f} s")
        print(df.assign(ratio=ratio).to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    return {"probe_estimate_s": plan.probe_s, "probe_actual_s": probe_actual,
            "trial_ratio_median": float(ratio.median()) if len(df) else None, "trials": df.to_dict(orient="records")}


def _fmt(v, spec=".3f"):
    return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", help="image folder, 'digits' or 'fashion-mnist'")
    p.add_argument("--search-space", required=True)
    p.add_argument("--input-sizes", default=None, help="comma list: re-expand every entry at these sizes")
    p.add_argument("--per-class", type=int, default=40, help="digits only: images per class")
    p.add_argument("--image-size", type=int, default=32, help="digits only: written image size (px)")
    p.add_argument("--test-per-class", type=int, default=200, help="fashion-mnist only: test images per class")
    p.add_argument("--max-trials", type=int, default=2)
    p.add_argument("--max-epochs", type=int, default=4)
    p.add_argument("--head-epochs", type=int, default=None)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--tuner", default="keras-tuner")
    p.add_argument("--test-fraction", type=float, default=0.15)
    p.add_argument("--test-rest", action="store_true",
                   help="digits only: train/val from --per-class per class, every other digit is test")
    p.add_argument("--bf-seeds", type=int, default=1,
                   help="brute force repeated with this many tuner seeds (seed, seed+1, ...); reference = mean")
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--scorer", default=DEFAULT_SCORER, help="the selector's default scorer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16, help="training batch size")
    p.add_argument("--feature-batch-size", type=int, default=None,
                   help="probe featurization batch (default: by input size, as `run` picks it)")
    p.add_argument("--out", default="reports/selection")
    p.add_argument("--plan", action="store_true",
                   help="also measure costs first (autotransfer.plan) and compare its estimates with the actual times")
    args = p.parse_args(argv)

    import pandas as pd
    from scipy.stats import kendalltau

    from autotransfer.config import load_search_space
    from autotransfer.data import load_data, make_splits
    from autotransfer.evaluate import evaluate_model
    from autotransfer.probe import available_scorers, probe
    from autotransfer.tune import tune

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="selection-", dir=out))
    if args.test_rest and args.data != "digits":
        p.error("--test-rest needs DATA=digits")
    if args.data == "digits":
        folder = write_digits(work / "digits", 10**6 if args.test_rest else args.per_class, args.image_size, args.seed)
    elif args.data == "fashion-mnist":
        folder = write_fashion_mnist_csv(work / "fashion-mnist", args.per_class, args.test_per_class, args.seed)
    else:
        folder = Path(args.data)
    data = load_data(str(folder))
    if args.test_rest:
        splits = rest_as_test_splits(data, args.per_class, args.val_fraction, args.seed)
    else:
        splits = make_splits(data, val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed)
    space = load_search_space(args.search_space)
    sizes = [int(s) for s in args.input_sizes.split(",")] if args.input_sizes else None
    cands = candidates_of(space, sizes)
    tspace = replace(space.tuning, max_epochs=args.max_epochs, batch_size=args.batch_size,
                     **({} if args.head_epochs is None else {"head_epochs": args.head_epochs}))
    n = {k: len(v) for k, v in splits.to_dict().items()}
    print(f"data {folder}: {len(data)} items, {data.num_classes} classes, splits {n}; "
          f"{len(cands)} candidates: {', '.join(c.name for c in cands)}")
    bf_seeds = [args.seed + i for i in range(max(1, args.bf_seeds))]
    print(f"tuner {args.tuner}: max_trials={args.max_trials} per tune() call, max_epochs={tspace.max_epochs}, "
          f"head_warmup={tspace.head_warmup}, head_epochs={tspace.head_epochs}, unfreeze_blocks={list(tspace.unfreeze_blocks)}; top_k={args.top_k}; "
          f"seed={args.seed}; brute-force seeds {bf_seeds}")
    sys.stdout.flush()

    def evaluate(res, name: str) -> float:
        spec = next(c for c in cands if c.name == name)
        return evaluate_model(res.best_model, data, splits.test, input_size=spec.input_size,
                              batch_size=args.batch_size)["accuracy"]

    plan = None
    if args.plan:
        from autotransfer.plan import make_plan, measure_costs

        t = time.monotonic()
        hi = tspace.unfreeze_blocks[1]
        costs = measure_costs(cands, data, splits, batch_size=args.batch_size, feature_batch_size=args.feature_batch_size,
                              unfreeze=10**6 if hi == "all" else int(hi), head_epochs=tspace.head_epochs,
                              head_warmup=tspace.head_warmup)
        spent = time.monotonic() - t
        plan = make_plan(costs, n_items=len(data), n_train=n["train"], n_val=n["val"], n_test=n["test"],
                         budget_s=None, top_k=args.top_k, max_trials=args.max_trials, max_epochs=tspace.max_epochs,
                         spent_s=spent)
        print("plan (measured before the arms, not part of either arm's time):")
        print(str(plan))
        (out / f"plan-seed{args.seed}.json").write_text(json.dumps(plan.to_dict(), indent=2, default=str))
        sys.stdout.flush()

    # (b) autotransfer as `run` does it: probe (cold: a fresh feature cache) with the probe's default
    # extra scorers -> tune top-k -> evaluate the winner. The other registered scorers (LEEP-style ones
    # need a second, source-logits pass) are scored afterwards from the same cached features, outside
    # the timed arm, so the time ratio is that of the default pipeline.
    default_extras = [s for s in ("linear", "linear_ll", "knn", "logme") if s != args.scorer and s in available_scorers()]
    later = [s for s in available_scorers() if s != args.scorer and s not in default_extras]
    cache_dir = work / "feature-cache"
    t0 = time.monotonic()
    probed = probe(cands, data, splits, scorer=args.scorer, extra_scorers=default_extras, cache_dir=cache_dir,
                   batch_size=args.feature_batch_size, seed=args.seed)
    t_probe = time.monotonic() - t0
    top = probed.top(args.top_k)
    t1 = time.monotonic()
    at = tune([c for c in cands if c.name in top], data, splits, space=tspace, backend=args.tuner,
              max_trials=args.max_trials, features=probed.features, out_dir=work / "autotransfer", seed=args.seed)
    at_winner = at.best_backbone
    at_acc = evaluate(at, at_winner)
    t_at = time.monotonic() - t0
    print(f"autotransfer: probe {t_probe:.1f} s, tune+evaluate top-{len(top)} {top} {time.monotonic() - t1:.1f} s; "
          f"winner {at_winner} test acc {at_acc:.4f}")
    sys.stdout.flush()
    del at

    # (a) brute force: every candidate fine-tuned with the same budget, once per tuner seed.
    bf: dict[str, dict] = {c.name: {} for c in cands}
    per_seed: dict[int, dict[str, float]] = {}
    pass_seconds: list[float] = []
    for bseed in bf_seeds:
        t0 = time.monotonic()
        per_seed[bseed] = {}
        for c in cands:
            t = time.monotonic()
            res = tune([c], data, splits, space=tspace, backend=args.tuner, max_trials=args.max_trials,
                       out_dir=work / f"brute-seed{bseed}" / c.name.replace("@", "_"), seed=bseed)
            acc = evaluate(res, c.name)
            per_seed[bseed][c.name] = acc
            bf[c.name][f"bf_seed{bseed}"] = acc
            bf[c.name].setdefault("bf_seconds", []).append(time.monotonic() - t)
            print(f"  brute force seed {bseed} {c.name}: test acc {acc:.4f} (val {res.best_val_accuracy:.4f}, "
                  f"unfreeze {int(res.best_params.get('unfreeze_blocks', 0))}) {time.monotonic() - t:.1f} s")
            sys.stdout.flush()
            del res
        pass_seconds.append(time.monotonic() - t0)
    for name, d in bf.items():
        accs = [d[f"bf_seed{s}"] for s in bf_seeds]
        d["bf_test_accuracy"] = float(np.mean(accs))
        d["bf_test_std"] = float(np.std(accs))
        d["bf_seconds"] = float(np.mean(d["bf_seconds"]))
    # One brute-force pass (the selector's alternative) is what the time ratio compares with.
    t_bf = float(np.mean(pass_seconds))
    self_tau = [kendalltau([per_seed[a][c.name] for c in cands], [per_seed[b][c.name] for c in cands])[0]
                for i, a in enumerate(bf_seeds) for b in bf_seeds[i + 1:]]
    ref_tau = float(np.mean(self_tau)) if self_tau else math.nan

    lb = probed.leaderboard.set_index("name")
    if later:
        t = time.monotonic()
        more = probe(cands, data, splits, scorer=args.scorer, extra_scorers=later, cache_dir=cache_dir,
                     batch_size=args.feature_batch_size, seed=args.seed).leaderboard.set_index("name")
        for col in [c for c in more.columns if c.startswith("score_")]:
            lb[col] = more[col].reindex(lb.index)
        print(f"extra scorers {later}: {time.monotonic() - t:.1f} s (not in the autotransfer time)")
    extras = [*default_extras, *later]
    score_cols = {args.scorer: "score", **{s: f"score_{s}" for s in extras if f"score_{s}" in lb.columns}}
    rows = []
    for c in cands:
        r = {"name": c.name, "input_size": c.input_size, **bf[c.name]}
        for s, col in score_cols.items():
            r[f"score_{s}"] = float(lb.loc[c.name, col])
        r["probe_val_accuracy"] = float(lb.loc[c.name, "val_accuracy"])
        r["probe_test_accuracy"] = float(lb.loc[c.name, "test_accuracy"])
        r["feature_seconds"] = float(lb.loc[c.name, "feature_seconds"])
        rows.append(r)
    table = pd.DataFrame(rows).sort_values("bf_test_accuracy", ascending=False, kind="mergesort")
    table.insert(0, "bf_rank", np.arange(1, len(table) + 1))
    acc = table.set_index("name")["bf_test_accuracy"]
    best = float(acc.max())

    summary = {}
    for s in score_cols:
        sc = table.set_index("name")[f"score_{s}"]
        ok = sc.notna()
        if ok.sum() < 2:
            summary[s] = {"kendall_tau": math.nan, "p_value": math.nan, "top1": None, "regret_pp": math.nan}
            continue
        tau, pval = kendalltau(sc[ok].to_numpy(), acc[ok].to_numpy())
        # Ties on the score: the probe's own order (score, then val accuracy) decides.
        pick = next(name for name in lb.reset_index().sort_values(
            [score_cols[s], "val_accuracy"], ascending=[False, False], kind="mergesort")["name"] if ok.get(name, False))
        summary[s] = {"kendall_tau": float(tau), "p_value": float(pval), "top1": pick,
                      "regret_pp": 100 * (best - float(acc[pick]))}

    one_image = 100.0 / max(1, n["test"])
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 30)
    print("\nper-candidate (sorted by brute-force test accuracy):")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"\n{REGRET_DEF}; one test image = {one_image:.2f} pp ({n['test']} test items)")
    print(f"brute-force best: {acc.idxmax()} mean test acc {best:.4f} over seeds {bf_seeds}")
    if self_tau:
        print(f"reference reliability: Kendall tau between brute-force seeds' rankings {ref_tau:.3f} "
              f"(pairs: {', '.join(f'{t:.3f}' for t in self_tau)})")
    print(f"{'scorer':<18}{'kendall_tau':>12}{'p':>8}{'top1':>28}{'regret_pp':>11}")
    for s, v in summary.items():
        print(f"{s + (' (default)' if s == args.scorer else ''):<18}{_fmt(v['kendall_tau']):>12}{_fmt(v['p_value'], '.3f'):>8}"
              f"{str(v['top1']):>28}{_fmt(v['regret_pp'], '.2f'):>11}")
    at_regret = 100 * (best - at_acc)
    print(f"autotransfer end-to-end: tuned winner {at_winner} test acc {at_acc:.4f} -> "
          f"regret vs brute-force best {at_regret:.2f} pp")
    print(f"wall time: autotransfer {t_at:.1f} s (probe {t_probe:.1f} s), brute force {t_bf:.1f} s per pass "
          f"(mean of {len(pass_seconds)}: {', '.join(f'{v:.0f}' for v in pass_seconds)}), "
          f"ratio {t_at / t_bf:.3f}  (shared 2-core CPU: noisy)")
    plan_check = None
    if plan is not None:
        plan_check = compare_plan(plan, t_probe, work, 1 if tspace.head_warmup == "probe" else tspace.head_epochs)
    d = summary[args.scorer]
    checks = {
        f"{args.scorer} kendall tau >= 0.8": d["kendall_tau"] >= 0.8,
        f"{args.scorer} regret <= 0.5 pp": d["regret_pp"] <= 0.5,
        "autotransfer time <= 0.2 x brute force": t_at <= 0.2 * t_bf,
    }
    if "logme" in summary:
        checks[f"{args.scorer} at least as good as logme (tau)"] = d["kendall_tau"] >= summary["logme"]["kendall_tau"]
    for k, v in checks.items():
        print(f"target {k}: {'MET' if v else 'MISSED'}")

    result = {
        "args": vars(args), "splits": n, "candidates": [c.name for c in cands], "regret_definition": REGRET_DEF,
        "scorers": summary, "autotransfer": {"top": top, "winner": at_winner,
                                             "test_accuracy": at_acc, "regret_pp": at_regret,
                                             "seconds": t_at, "probe_seconds": t_probe},
        "brute_force": {"best": str(acc.idxmax()), "best_test_accuracy": best, "seconds": t_bf,
                        "pass_seconds": pass_seconds, "seeds": bf_seeds, "seed_vs_seed_tau": self_tau,
                        "reference_tau": ref_tau},
        "time_ratio": t_at / t_bf, "targets": checks, "plan_check": plan_check, "table": table.to_dict(orient="records"),
    }
    (out / f"selection-seed{args.seed}.json").write_text(json.dumps(result, indent=2, default=str))
    table.to_csv(out / f"selection-seed{args.seed}.csv", index=False)
    print(f"wrote {out / f'selection-seed{args.seed}.json'} and .csv")
    return result


if __name__ == "__main__":
    main()
