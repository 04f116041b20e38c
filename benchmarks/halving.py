"""Successive halving vs probing every candidate on full data: same top-k, less time?

    python benchmarks/halving.py --all --eta 3 --min-per-class 10   # search_spaces/offline-layers.yaml, all 1,797 digits
    python benchmarks/halving.py --space search_spaces/offline.yaml --input-sizes 128,176,224 --all --eta 3 --min-per-class 10

Data: scikit-learn's digits (8x8 greyscale), ``--per-class`` images per class, upscaled to
``--image-px`` and written as a PNG image folder with ``write_image_folder`` (so both runs decode
files like a real run). Both runs are cold: each gets its own fresh temporary feature cache, and
the full run goes first (any OS file-cache warm-up favours the halving run only for the PNG reads,
which are a tiny part of the cost; ``--halving-first`` swaps the order to check). The scorer is
the default ``linear`` unless ``--scorer`` says otherwise; extra scorers are off (``--extras``) so
the comparison is the ranking work only.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from autotransfer.defaults import DEFAULT_SCORER  # noqa: E402


def _digits_folder(root: Path, per_class: int, px: int, seed: int) -> Path:
    from sklearn.datasets import load_digits

    from autotransfer.testing import write_image_folder

    d = load_digits()
    rng = np.random.default_rng(seed)
    keep = np.concatenate([rng.permutation(np.flatnonzero(d.target == c))[:per_class] for c in range(10)])
    x = (d.images[keep] / 16.0 * 255).round().astype("uint8")
    return write_image_folder(x, d.target[keep], [str(c) for c in range(10)], root / "digits", image_size=px)


def _candidates(space: str, input_sizes: str | None):
    from autotransfer.config import load_search_space

    cands = load_search_space(space).expanded()
    if input_sizes:
        sizes = [int(s) for s in input_sizes.split(",")]
        cands = [replace(c, name=c.name if s == c.input_size else f"{c.name}@{s}", input_size=s)
                 for c in cands for s in sizes]
    return cands


def main() -> None:
    root_dir = Path(__file__).resolve().parents[1]
    default_space = root_dir / "search_spaces" / "offline-layers.yaml"
    if not default_space.exists():
        default_space = root_dir / "search_spaces" / "offline.yaml"
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default=str(default_space), help="search-space YAML or built-in name")
    ap.add_argument("--input-sizes", help="comma-separated input sizes: every candidate once per size (more candidates)")
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--image-px", type=int, default=32)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--eta", type=int, default=3)
    ap.add_argument("--min-per-class", type=int, default=5)
    ap.add_argument("--keep-within", type=float, default=2.0,
                    help="a rung also keeps candidates within this many standard errors of its cut-off (0 = classic)")
    ap.add_argument("--all", action="store_true",
                    help="digits only: every digit (1,797; ~180 per class) instead of --per-class")
    ap.add_argument("--scorer", default=DEFAULT_SCORER)
    ap.add_argument("--extras", default="", help="comma-separated extra scorers for both runs (default none)")
    ap.add_argument("--batch-size", type=int, default=None, help="featurization batch (default: by input size, as the probe picks it)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--halving-first", action="store_true")
    args = ap.parse_args()

    from autotransfer.data import load_data, make_splits
    from autotransfer.probe import FeatureCache, probe

    cands = _candidates(args.space, args.input_sizes)
    extras = [e for e in args.extras.split(",") if e]
    with tempfile.TemporaryDirectory(prefix="halving-bench-") as tmp:
        tmp = Path(tmp)
        data = load_data(str(_digits_folder(tmp, 10**6 if args.all else args.per_class, args.image_px, args.seed)))
        splits = make_splits(data, seed=args.seed)
        print(f"space={args.space} candidates={len(cands)} ({', '.join(c.name for c in cands)})")
        print(f"data: digits {len(data)} PNGs {args.image_px}px, splits {splits.sizes()}; scorer={args.scorer} "
              f"eta={args.eta} min_per_class={args.min_per_class} keep_within={args.keep_within} top_k={args.top_k}",
              flush=True)

        def run(halving: bool):
            cache = FeatureCache(tmp / ("cache-half" if halving else "cache-full"))
            t = time.perf_counter()
            res = probe(cands, data, splits, scorer=args.scorer, extra_scorers=extras, cache=cache,
                        batch_size=args.batch_size, seed=args.seed, halving=halving, eta=args.eta,
                        min_per_class=args.min_per_class, top_k=args.top_k, keep_within=args.keep_within)
            return res, time.perf_counter() - t

        order = [True, False] if args.halving_first else [False, True]
        out = {h: run(h) for h in order}
        (full, t_full), (half, t_half) = out[False], out[True]
        cols = ["rank", "name", "score", "val_accuracy", "feature_seconds"]
        print("\nfull probe leaderboard:\n" + full.leaderboard[cols].to_string(index=False))
        hcols = cols + [c for c in half.leaderboard.columns if c.startswith("score_rung")] + ["rung", "featurized_items"]
        print("\nhalving leaderboard:\n" + half.leaderboard[hcols].to_string(index=False))
        for r in half.rungs:
            print(f"  rung {r['rung']}: {r['per_class']}/class = {r['num_items']} items, {len(r['candidates'])} -> "
                  f"{len(r['kept'])} kept ({r['keep_n']} by rank, the rest within noise of the cut-off "
                  f"{r['cutoff']:.3f}) {r['kept']}, {r['seconds']:.1f} s")
        top_full, top_half = full.top(args.top_k), half.top(args.top_k)
        print(f"\ntop-{args.top_k} full:    {top_full}")
        print(f"top-{args.top_k} halving: {top_half}")
        print(f"same top-{args.top_k}? {'yes' if top_full == top_half else ('same set' if set(top_full) == set(top_half) else 'no')}")
        print(f"time halving / time full: {t_half:.1f} s / {t_full:.1f} s = {t_half / t_full:.2f}")


if __name__ == "__main__":
    main()
