"""Memory bound on huge inputs: one 10000 x 10000 PNG among small images is skipped, never decoded.

    python benchmarks/huge_image.py [--out reports/huge_image] [--time-budget 3m] [--limit-mb 1024]

Writes 50 small PNGs (2 classes of 25, 16 px pattern images) and one solid-colour 10000 x 10000 RGB
PNG (~300 KB on disk, 300 MB as uint8 pixels, 1.2 GB as float32), streamed row by row so this
process never holds its pixels; a tiny generated backbone and search space (``autotransfer.testing``);
then runs ``python -m autotransfer.cli run`` on them as its own process with a short
``--time-budget``. Prints the run's skip counts (``data.json``), the child's peak RSS
(``getrusage(RUSAGE_CHILDREN).ru_maxrss``) and PASS/FAIL against ``--limit-mb``; then the same run
without the huge file (``--baseline``, on by default), whose peak the first should match.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

TUNING = {"unfreeze_blocks": [0, 1], "learning_rate": [1.0e-3, 1.0e-2], "head_epochs": 2, "max_epochs": 2,
          "patience": [1, 1], "batch_size": 16}


def write_solid_png(path: Path, side: int, rgb: tuple[int, int, int] = (200, 120, 40)) -> int:
    """A ``side x side`` RGB PNG of one colour, compressed a row at a time; returns its size in bytes."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\x00" + bytes(rgb) * side  # filter type 0, then the pixels
    z = zlib.compressobj(9)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)))
        for _ in range(side):
            out = z.compress(row)
            if out:
                f.write(chunk(b"IDAT", out))
        f.write(chunk(b"IDAT", z.flush()) + chunk(b"IEND", b""))
    return path.stat().st_size


def write_inputs(root: Path) -> tuple[Path, Path]:
    """The image folder (50 small PNGs + the huge one) and a one-candidate tiny search space."""
    from autotransfer.testing import write_image_folder
    from autotransfer.testing import pattern_images, write_tiny_module, write_tiny_space

    x, y = pattern_images(25, num_classes=2, size=16, seed=0)
    data = write_image_folder(x, y, ["a", "b"], root / "data")
    size = write_solid_png(data / "a" / "huge.png", 10_000)
    print(f"wrote {len(x)} small PNGs and a 10000x10000 PNG of {size / 1e3:.0f} KB under {data}")
    module = write_tiny_module(root / "modules" / "good", grid=4, seed=0)
    return data, write_tiny_space(root / "space.yaml", {"good": str(module)}, TUNING)


def cli_command(data: Path, space: Path, run_dir: Path, budget: str) -> list[str]:
    return [sys.executable, "-m", "autotransfer.cli", "run", str(data), "--search-space", str(space), "--out",
            str(run_dir), "--time-budget", budget, "--max-trials", "1", "--top-k", "1", "--ensemble", "1", "--no-tta"]


def run_cli(data: Path, space: Path, run_dir: Path, budget: str) -> tuple[int, float, dict]:
    """One ``autotransfer run`` in a child process: (exit code, seconds, data.json)."""
    t0 = time.monotonic()
    proc = subprocess.run(cli_command(data, space, run_dir, budget), capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr[-3000:])
    info = json.loads((run_dir / "data.json").read_text()) if (run_dir / "data.json").is_file() else {}
    return proc.returncode, time.monotonic() - t0, info


def peak_child_mb() -> float:
    """Largest peak RSS of the children waited for so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("reports/huge_image"))
    ap.add_argument("--time-budget", default="3m")
    ap.add_argument("--limit-mb", type=float, default=1024.0)
    ap.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    data, space = write_inputs(args.out)
    code, wall, info = run_cli(data, space, args.out / "run", args.time_budget)
    peak = peak_child_mb()
    skipped = info.get("skipped_counts")
    ok = code == 0 and peak <= args.limit_mb and skipped == {"too_large": 1}
    print(f"run exit {code} in {wall:.1f} s; items {info.get('num_items')}; skipped {skipped}")
    print(f"child peak RSS: {peak:.0f} MiB (limit {args.limit_mb:.0f} MiB): {'PASS' if ok else 'FAIL'}")
    if args.baseline:
        (data / "a" / "huge.png").unlink()
        # The first child's peak stays in RUSAGE_CHILDREN: measure the baseline in a child of a child.
        probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], capture_output=True); "
                 "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)")
        cmd = cli_command(data, space, args.out / "baseline", args.time_budget)
        base = float(subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True).stdout)
        print(f"baseline without the huge file: {base:.0f} MiB; with / without = {peak / base:.3f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
