"""Probe-stage benchmarks: featurization throughput, peak memory vs dataset size, warm/cold time.

    python benchmarks/featurize.py                       # tiny generated module (grid 4)
    python benchmarks/featurize.py --module /path/to/zoo/efficientnet_lite0/feature_vector --n 256

(a) throughput of the probe path (its tf.data input from the LabelledData -> extract_features)
    divided by a bare tf.function forward loop over the same images already in memory, at
    several batch sizes (target >= 0.95). Two bare loops: float tensors in [0, 1] ("ratio
    float", the target's definition) and the uint8 pixels scaled inside the traced function
    ("ratio uint8": the same bytes the probe feeds, so only the pipeline's own cost differs);
(b) peak RSS of probe() over 5k and 50k generated PNG files, one subprocess per size (target:
    50k within 10% of 5k: images stream, only the [N, D] features are held);
(c) warm re-run probe() time / cold time with a fresh feature cache (target <= 0.05);
(d) (``--only d``) the module's ``all_features`` pass (or its forward) in images/s by batch size
    at several image sizes, the batch the probe picks (``auto_batch_size``) and its throughput
    / the best batch's.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def _tiny(root: Path, grid: int, seed: int = 0) -> str:
    from autotransfer.testing import write_tiny_module

    path = root / f"tiny_grid{grid}"
    if not (path / "saved_model.pb").exists():
        write_tiny_module(path, grid=grid, seed=seed)
    return str(path)


def _input_size(module: str) -> int:
    meta = Path(module) / "autotransfer_module.json"
    return int(json.loads(meta.read_text()).get("input_size", 224)) if meta.exists() else 224


def _data(n: int, size: int):
    from autotransfer.data import load_data
    from autotransfer.testing import pattern_images

    x, y = pattern_images(max(1, n // 4), num_classes=4, size=size, seed=0)
    return load_data((x, y))


def throughput(module: str, n: int, batch_sizes: list[int], repeats: int) -> None:
    import tensorflow as tf

    from autotransfer.backbones import HubBackbone
    from autotransfer.probe import extract_features, forward_fn
    from autotransfer.probe.featurize import feature_dataset, images_dtype

    size = _input_size(module)
    data = _data(n, size)
    n = len(data)
    idx = np.arange(n)
    bb = HubBackbone(module)
    # The bare loops' in-memory inputs: float in [0, 1] (what a hand-written loop feeds), and the
    # uint8 pixels themselves with the scaling inside the traced forward (what the probe feeds).
    inputs = {tf.float32: tf.constant(data.items.astype("float32") / 255.0), tf.uint8: tf.constant(data.items)}

    def bare(batch: int, dtype: tf.DType) -> float:
        images = inputs[dtype]
        forward_fn(bb, dtype)(images[:batch])  # warm-up outside the timing
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            # Traced inside the timing, as the probe path traces once per extract_features call:
            # both sides do the same work per pass.
            fn = forward_fn(bb, dtype)
            for i in range(0, n, batch):
                fn(images[i : i + batch]).numpy()
            best = min(best, time.perf_counter() - t)
        return n / best

    def probe_path(batch: int) -> float:
        ds = feature_dataset(data, idx, size, batch)  # exactly the probe's input pipeline
        extract_features(bb, ds.take(1))  # warm-up: pipeline threads, first trace
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            extract_features(bb, ds, num_items=n)
            best = min(best, time.perf_counter() - t)
        return n / best

    dtype = images_dtype(feature_dataset(data, idx[:1], size, 1)).name
    print(f"(a) throughput: module={module} input={size} n={n} probe feeds {dtype} (best of {repeats})")
    print(f"    {'batch':>5} {'probe img/s':>12} {'bare float':>11} {'bare uint8':>11} {'ratio float':>12} "
          f"{'ratio uint8':>12}")
    for b in batch_sizes:
        p, rf, ru = probe_path(b), bare(b, tf.float32), bare(b, tf.uint8)
        print(f"    {b:>5} {p:>12.1f} {rf:>11.1f} {ru:>11.1f} {p / rf:>12.2f} {p / ru:>12.2f}", flush=True)


def _write_pngs(n: int, root: Path) -> tuple[list[str], np.ndarray]:
    """n small PNG files (generated once, reused across runs), their paths and labels."""
    from PIL import Image

    from autotransfer.testing import pattern_images

    folder = root / f"pngs_{n}"
    if not (folder / "labels.npy").exists():
        x, y = pattern_images(n // 4, num_classes=4, size=16, seed=1)
        folder.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(x):
            Image.fromarray(img).save(folder / f"{i:06d}.png")
        np.save(folder / "labels.npy", y)  # last: marks the folder complete
    # Read back without generating images, so the measured process never holds pixel arrays.
    y = np.load(folder / "labels.npy")
    return [str(folder / f"{i:06d}.png") for i in range(len(y))], y


def _peak_rss_mib() -> float:
    """This process's peak RSS. VmHWM (Linux) belongs to the current address space; ru_maxrss
    survives fork+exec, so a child would report its parent's peak (TensorFlow, part (a)'s model)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_child(n: int, module: str, root: str, batch: int) -> None:
    """Run in a subprocess: probe() over n PNG files; prints peak RSS (MiB) as JSON."""
    from autotransfer.backbones import BackboneSpec
    from autotransfer.data import load_data, make_splits
    from autotransfer.probe import probe

    paths, y = _write_pngs(n, Path(root))
    data = load_data(paths, labels=y)
    splits = make_splits(data, seed=0)
    t = time.perf_counter()
    before = _peak_rss_mib()
    result = probe([BackboneSpec("m", module, _input_size(module))], data, splits, cache=False,
                   extra_scorers=(), batch_size=batch)
    peak = _peak_rss_mib()
    print(json.dumps({"n": n, "peak_mib": peak, "before_probe_mib": before, "seconds": time.perf_counter() - t,
                      "score": float(result.leaderboard["score"][0])}))


def rss(module: str, sizes: list[int], root: Path, batch: int) -> None:
    print(f"(b) peak RSS of probe() over PNG files (module={module}, batch={batch}, subprocess per size)")
    peaks = {}
    for n in sizes:
        _write_pngs(n, root)  # file generation is not part of the measured process
        out = subprocess.run(
            [sys.executable, __file__, "--_rss-child", str(n), "--module", module, "--root", str(root),
             "--batch-size", str(batch)],
            capture_output=True, text=True, check=True,
        ).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        peaks[n] = r["peak_mib"]
        print(f"    n={n:>6}: peak {r['peak_mib']:.0f} MiB (at probe start {r['before_probe_mib']:.0f} MiB), "
              f"probe {r['seconds']:.1f}s, default score {r['score']:.3f}", flush=True)
    lo, hi = min(sizes), max(sizes)
    print(f"    peak({hi}) / peak({lo}) = {peaks[hi] / peaks[lo]:.3f} (target <= 1.10)")


def warm_cold(modules: list[str], n: int, batch: int) -> None:
    from autotransfer.backbones import BackboneSpec
    from autotransfer.data import make_splits
    from autotransfer.probe import FeatureCache, probe

    size = _input_size(modules[0])
    data = _data(n, size)
    splits = make_splits(data, seed=0)
    specs = [BackboneSpec(Path(m).name, m, _input_size(m)) for m in modules]
    with tempfile.TemporaryDirectory() as tmp:
        cache = FeatureCache(tmp)
        t = time.perf_counter()
        cold = probe(specs, data, splits, cache=cache, batch_size=batch)
        cold_s = time.perf_counter() - t
        t = time.perf_counter()
        warm = probe(specs, data, splits, cache=cache, batch_size=batch)
        warm_s = time.perf_counter() - t
    assert warm.leaderboard["cached"].all()
    scored = [c.removeprefix("score_") for c in cold.leaderboard.columns
              if c.startswith("score_") and cold.leaderboard[c].notna().any()]
    print(f"(c) warm/cold probe() with {len(specs)} candidate(s), n={len(data)}, default scorers ({'+'.join(scored)})")
    print(f"    cold {cold_s:.2f}s  warm {warm_s:.3f}s  ratio {warm_s / cold_s:.3f} (target <= 0.05)")
    print("    leaderboard:", ", ".join(f"{r.name}={r.score:.3f}" for r in cold.leaderboard.itertuples()))


def batch_sweep(module: str, sizes: list[int], batch_sizes: list[int], repeats: int) -> None:
    import tensorflow as tf

    from autotransfer.probe.featurize import auto_batch_size

    mod = tf.saved_model.load(module)
    fn = getattr(mod, "all_features", None) or (lambda x: mod(x, training=False))
    print(f"(d) images/s by featurization batch and image size ({'all_features' if hasattr(mod, 'all_features') else '__call__'} "
          f"of {module}, best of {repeats})")
    rng = np.random.default_rng(0)
    for size in sizes:
        n = max(max(batch_sizes), 2**17 // size**2 * 8)  # a few batches of the largest size
        x = tf.constant(rng.random((n, size, size, 3), dtype=np.float32))
        rates: dict[int, float] = {}
        for b in batch_sizes + [auto_batch_size(size)]:
            if b in rates:
                continue
            tf.nest.map_structure(lambda t: t.numpy(), fn(x[:b]))  # warm-up: first call per shape
            best = float("inf")
            for _ in range(repeats):
                t = time.perf_counter()
                for i in range(0, n - n % b, b):
                    tf.nest.map_structure(lambda t: t.numpy(), fn(x[i : i + b]))
                best = min(best, time.perf_counter() - t)
            rates[b] = (n - n % b) / best
        auto = auto_batch_size(size)
        row = "  ".join(f"{b}: {r:.0f}" for b, r in sorted(rates.items()))
        print(f"    {size:>4} px  {row}  | auto {auto}: {rates[auto] / max(rates.values()):.2f} of the best")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--module", help="TF-Hub-format module dir (default: a generated tiny grid-4 module)")
    ap.add_argument("--n", type=int, default=2048, help="images for (a) and (c)")
    ap.add_argument("--batch-size", type=int, default=16, help="batch size for (b) and (c)")
    ap.add_argument("--batch-sizes", default="8,16,32,64", help="batch sizes for (a)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rss-sizes", default="5000,50000")
    ap.add_argument("--rss-module", help="module for (b) (default: the tiny module; 50k real-size images take long)")
    ap.add_argument("--root", help="where generated modules/PNGs live (default: a temp dir under /tmp)")
    ap.add_argument("--only", default="abc", help="which parts to run, e.g. 'ac' (d: batch sweep)")
    ap.add_argument("--sweep-sizes", default="32,64,128,224", help="image sizes for (d)")
    ap.add_argument("--sweep-batches", default="8,16,32,64,128,256", help="batch sizes for (d)")
    ap.add_argument("--_rss-child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()

    root = Path(args.root or Path(tempfile.gettempdir()) / "autotransfer_bench")
    root.mkdir(parents=True, exist_ok=True)
    if args._rss_child:
        rss_child(args._rss_child, args.module, str(root), args.batch_size)
        return
    tiny = _tiny(root, 4)
    module = args.module or tiny
    if "a" in args.only:
        throughput(module, args.n, [int(b) for b in args.batch_sizes.split(",")], args.repeats)
    if "b" in args.only:
        rss(args.rss_module or tiny, [int(s) for s in args.rss_sizes.split(",")], root, args.batch_size)
    if "c" in args.only:
        modules = [module] if args.module else [tiny, _tiny(root, 2, 1), _tiny(root, 1, 2)]
        warm_cold(modules, args.n, args.batch_size)
    if "d" in args.only:
        batch_sweep(module, [int(s) for s in args.sweep_sizes.split(",")],
                    [int(b) for b in args.sweep_batches.split(",")], args.repeats)


if __name__ == "__main__":
    main()
