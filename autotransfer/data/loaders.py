"""Turn whatever the user hands us (folder, CSV, DataFrame, arrays) into a validated LabelledData.

Every problem is reported upfront as one :class:`UserInputError` naming the file/field, what is
wrong and the fix, so that a bad dataset fails in seconds instead of after an hour of probing.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autotransfer.data.dataset import SPLIT_NAMES, LabelledData
from autotransfer.errors import UserInputError

#: The formats ``tf.io.decode_image`` can decode (JPEG XL aside); matched case-insensitively.
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
_EXT_TEXT = "/".join(IMAGE_EXTENSIONS)
_DEFAULT_SPLIT_COLUMN = "split"
_MAX_LISTED = 5


def load_data(
    data: Any,
    *,
    labels: Any = None,
    path_column: str = "path",
    label_column: str = "label",
    split_column: str = _DEFAULT_SPLIT_COLUMN,
) -> LabelledData:
    """Load and validate a labelled dataset.

    Accepted ``data``:

    * a directory path: one sub-folder per class; images (``.jpg/.jpeg/.png/.bmp/.gif/.webp``,
      any case) are found recursively inside each class folder; hidden files/folders are ignored;
      class names are the sorted sub-folder names;
    * a ``.csv`` path with columns ``path,label[,split]``; relative paths are relative to the
      CSV's folder;
    * a pandas DataFrame with the same columns; relative paths are relative to the cwd;
    * an array ``x`` with ``labels=y``, or a tuple ``(x, y)``; ``x`` is ``[N,H,W,C]`` (C in 1, 3, 4)
      or ``[N,H,W]``; integer arrays other than uint8 must be within 0..255 and become uint8;
    * a list of image paths with ``labels=y`` (relative paths are relative to the cwd);
    * a :class:`LabelledData` (returned as is).

    Labels may be ints or strings. Integer labels keep numeric order (``class_names`` are their
    ``str``); string labels are sorted lexicographically. Every class must have at least 2 items.

    Raises:
        UserInputError: on any bad input, with a message naming the file/field and the fix.
    """
    if isinstance(data, LabelledData):
        _no_labels_kwarg(labels, "a LabelledData")
        return data
    if isinstance(data, (str, os.PathLike)):
        path = Path(os.fspath(data)).expanduser()
        if not path.exists():
            raise UserInputError(
                f"Data path '{data}' does not exist. Pass an image folder (one sub-folder per "
                "class) or a .csv file with path,label columns."
            )
        if path.is_dir():
            _no_labels_kwarg(labels, f"image folder {data}")
            return _load_folder(path, shown=str(data))
        if path.suffix.lower() == ".csv":
            _no_labels_kwarg(labels, f"CSV {data}")
            return _load_csv(path, str(data), path_column, label_column, split_column)
        raise UserInputError(
            f"Data file '{data}' is not a .csv file. Pass an image folder (one sub-folder per "
            "class) or a .csv file with path,label[,split] columns."
        )
    if isinstance(data, pd.DataFrame):
        _no_labels_kwarg(labels, "a DataFrame")
        return _from_table(
            data, "DataFrame", Path.cwd(), lambda i, idx: f"DataFrame row {idx!r}",
            path_column, label_column, split_column, source="DataFrame",
        )
    if isinstance(data, tuple) and len(data) == 2 and labels is None:
        return _load_arrays(data[0], data[1])
    if isinstance(data, np.ndarray):
        if labels is None:
            raise UserInputError(
                "arrays: labels are missing. Call load_data(x, labels=y) or load_data((x, y))."
            )
        return _load_arrays(data, labels)
    if isinstance(data, (list, tuple)) and data and all(isinstance(p, (str, os.PathLike)) for p in data):
        if labels is None:
            raise UserInputError(
                "path list: labels are missing. Call load_data(paths, labels=y) with one label "
                "per path."
            )
        return _load_path_list(data, labels)
    raise UserInputError(
        f"Unsupported data of type {type(data).__name__}. Pass an image folder path, a .csv path, "
        "a pandas DataFrame with path/label columns, an array x with labels=y, or a tuple (x, y)."
    )


def _no_labels_kwarg(labels: Any, what: str) -> None:
    if labels is not None:
        raise UserInputError(
            f"labels= is only used with arrays or path lists; {what} already carries its labels. "
            "Drop the labels= argument."
        )


# --------------------------------------------------------------------------------------- folder


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _images_under(folder: Path) -> list[str]:
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        # Pruning in place keeps os.walk out of hidden folders (.ipynb_checkpoints, .git, ...).
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(os.path.join(dirpath, f) for f in filenames if _is_image_name(f))
    return sorted(found)


def _load_folder(root: Path, shown: str) -> LabelledData:
    where = f"Image folder {shown}"
    root = root.absolute()
    class_dirs = sorted(
        (d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")),
        key=lambda d: d.name,
    )
    if not class_dirs:
        raise UserInputError(
            f"{where}: no class sub-folders found. Put the images of each class in its own "
            f"sub-folder, e.g. {shown}/cats/1.jpg and {shown}/dogs/2.jpg."
        )
    items: list[str] = []
    raw_labels: list[str] = []
    for d in class_dirs:
        files = _images_under(d)
        if not files:
            raise UserInputError(
                f"{where}: class folder '{d.name}' has no images ({_EXT_TEXT}). Add images to it "
                "or remove the folder."
            )
        items.extend(files)
        raw_labels.extend([d.name] * len(files))
    return _finish(items, np.asarray(raw_labels), None, f"image folder {shown}", where)


# ----------------------------------------------------------------------------------- CSV / table


def _load_csv(
    path: Path, shown: str, path_column: str, label_column: str, split_column: str
) -> LabelledData:
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise UserInputError(
            f"CSV {shown} is empty. It needs a header row '{path_column},{label_column}' and "
            "one row per image."
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as e:
        raise UserInputError(
            f"CSV {shown} could not be parsed ({str(e).strip().splitlines()[0]}). Fix the file so "
            f"it is a comma-separated table with a '{path_column},{label_column}' header."
        ) from None
    return _from_table(
        df, f"CSV {shown}", path.absolute().parent,
        # Row numbers are 1-based data rows; the line number also counts the header.
        lambda i, idx: f"{shown} row {i + 1} (line {i + 2})",
        path_column, label_column, split_column, source=f"CSV {shown}",
    )


def _from_table(
    df: pd.DataFrame,
    where: str,
    base_dir: Path,
    row_name: Any,
    path_column: str,
    label_column: str,
    split_column: str,
    source: str,
) -> LabelledData:
    found = ", ".join(map(str, df.columns)) or "no columns"
    for col, kwarg in ((path_column, "path_column"), (label_column, "label_column")):
        if col not in df.columns:
            raise UserInputError(
                f"{where}: column '{col}' is missing (found: {found}). Add a '{col}' column or "
                f"pass {kwarg}=..."
            )
    has_split = split_column in df.columns
    if not has_split and split_column != _DEFAULT_SPLIT_COLUMN:
        raise UserInputError(
            f"{where}: column '{split_column}' is missing (found: {found}). Add it or pass "
            f"split_column='{_DEFAULT_SPLIT_COLUMN}' (optional column)."
        )
    if len(df) == 0:
        raise UserInputError(f"{where} has no rows. Add one row per image.")

    items: list[str] = []
    missing: list[tuple[str, str, str]] = []
    for i, (idx, value) in enumerate(df[path_column].items()):
        if _is_blank(value):
            raise UserInputError(
                f"{row_name(i, idx)}: column '{path_column}' is empty. Give every row an image path."
            )
        rel = str(value).strip()
        if os.path.splitext(rel)[1].lower() not in IMAGE_EXTENSIONS:
            raise UserInputError(
                f"{row_name(i, idx)}: file '{rel}' is not a supported image type ({_EXT_TEXT}). "
                "Convert it or drop the row."
            )
        p = Path(rel).expanduser()
        full = os.path.normpath(p if p.is_absolute() else base_dir / p)
        if not os.path.isfile(full):
            missing.append((row_name(i, idx), rel, full))
        items.append(full)
    if missing:
        first_row, rel, full = missing[0]
        more = f" ({len(missing)} of {len(df)} files are missing)" if len(missing) > 1 else ""
        base = "the CSV's folder" if where.startswith("CSV") else "the current directory"
        raise UserInputError(
            f"{first_row}: file '{rel}' does not exist (looked for {full}){more}. Fix the "
            f"'{path_column}' column; relative paths are relative to {base}."
        )

    raw_labels = df[label_column]
    for i, (idx, value) in enumerate(raw_labels.items()):
        if _is_blank(value):
            raise UserInputError(
                f"{row_name(i, idx)}: column '{label_column}' is empty. Give every row a label "
                "or drop the row."
            )

    split = None
    if has_split:
        values = []
        for i, (idx, value) in enumerate(df[split_column].items()):
            v = "" if _is_blank(value) else str(value).strip().lower()
            if v not in SPLIT_NAMES:
                raise UserInputError(
                    f"{row_name(i, idx)}: column '{split_column}' is {value!r}; it must be one of "
                    "train, val, test. Fix the value or drop the column to split automatically."
                )
            values.append(v)
        split = np.asarray(values, dtype=str)
    return _finish(items, raw_labels.to_numpy(), split, source, where)


def _is_blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _load_path_list(paths: Sequence[Any], labels: Any) -> LabelledData:
    where = "path list"
    y = _as_label_array(labels, where)
    if len(y) != len(paths):
        raise UserInputError(
            f"{where}: got {len(paths)} paths but {len(y)} labels. Pass exactly one label per path."
        )
    df = pd.DataFrame({"path": [os.fspath(p) for p in paths], "label": list(y)})
    return _from_table(
        df, where, Path.cwd(), lambda i, idx: f"path list item {i}", "path", "label",
        _DEFAULT_SPLIT_COLUMN, source="path list",
    )


# ---------------------------------------------------------------------------------------- arrays


def _load_arrays(x: Any, y: Any) -> LabelledData:
    where = "arrays"
    try:
        x = np.asarray(x)
    except ValueError as e:  # ragged lists of images
        raise UserInputError(
            f"{where}: x could not be stacked into one array ({e}). Resize the images to one "
            "size first, or write them to an image folder."
        ) from None
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3, 4)):
        raise UserInputError(
            f"{where}: x has shape {x.shape}; it must be [N,H,W,C] with C in 1, 3 or 4, or "
            "[N,H,W] for greyscale. Reshape x (channels last)."
        )
    if x.dtype.kind in "iu" and x.dtype != np.uint8:
        lo, hi = (int(x.min()), int(x.max())) if x.size else (0, 0)
        if lo < 0 or hi > 255:
            raise UserInputError(
                f"{where}: integer pixels must be within 0..255 (got {lo}..{hi}). Rescale x to "
                "uint8 or to floats in [0, 1]."
            )
        x = x.astype(np.uint8)
    elif x.dtype.kind == "f":
        if x.size and not np.isfinite(x).all():
            raise UserInputError(f"{where}: x contains NaN or infinite values. Clean x first.")
        if x.size and float(x.min()) < 0:
            raise UserInputError(
                f"{where}: float pixels must be in [0, 1] (or 0..255) but the minimum is "
                f"{float(x.min()):g}. Undo any normalisation before passing x."
            )
    elif x.dtype != np.uint8:
        raise UserInputError(
            f"{where}: x has dtype {x.dtype}; use uint8 pixels (0..255) or floats in [0, 1]."
        )
    y_arr = _as_label_array(y, where)
    if len(x) != len(y_arr):
        raise UserInputError(
            f"{where}: len(x) is {len(x)} but len(y) is {len(y_arr)}. Pass exactly one label per "
            "image."
        )
    return _finish(x, y_arr, None, "arrays", where)


def _as_label_array(y: Any, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        raise UserInputError(
            f"{where}: labels have shape {y.shape}, which looks one-hot. Pass class ids or names, "
            "e.g. y.argmax(axis=1)."
        )
    if y.ndim == 2:
        y = y[:, 0]
    if y.ndim != 1:
        raise UserInputError(f"{where}: labels must be 1-D (one per item); got shape {y.shape}.")
    return y


# ---------------------------------------------------------------------------------------- common


def _encode_labels(raw: np.ndarray, where: str) -> tuple[np.ndarray, list[str]]:
    """Map raw labels to 0..K-1; ints keep numeric order, everything else sorts as strings."""
    raw = np.asarray(raw)
    if raw.dtype == object and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in raw.tolist()
    ):
        raw = raw.astype(np.int64)  # e.g. ints that went through a pandas object column
    if raw.dtype.kind == "f":
        if not np.isfinite(raw).all():
            raise UserInputError(f"{where}: some labels are NaN. Give every item a label.")
        if not np.all(raw == np.round(raw)):
            raise UserInputError(
                f"{where}: labels are non-integer numbers (e.g. {raw[raw != np.round(raw)][0]!r}); "
                "classification needs class ids or names."
            )
        raw = raw.astype(np.int64)
    if raw.dtype.kind in "iub":
        uniq, inv = np.unique(raw, return_inverse=True)
        names = [str(v.item()) for v in uniq]
    else:
        as_str = np.asarray([str(v) for v in raw.tolist()], dtype=object)
        uniq, inv = np.unique(as_str, return_inverse=True)
        names = [str(v) for v in uniq]
    return inv.astype(np.int64).reshape(-1), names


def _finish(
    items: list[str] | np.ndarray,
    raw_labels: np.ndarray,
    split: np.ndarray | None,
    source: str,
    where: str,
) -> LabelledData:
    if len(raw_labels) == 0:
        raise UserInputError(f"{where}: no items found. Add labelled images.")
    labels, names = _encode_labels(raw_labels, where)
    if len(names) < 2:
        raise UserInputError(
            f"{where}: fewer than 2 classes (found {len(names)}: {', '.join(names)}). A classifier "
            "needs at least 2 classes; add another class."
        )
    counts = np.bincount(labels, minlength=len(names))
    small = [n for n, c in zip(names, counts) if c < 2]
    if small:
        listed = ", ".join(f"'{n}'" for n in small[:_MAX_LISTED])
        more = f" and {len(small) - _MAX_LISTED} more" if len(small) > _MAX_LISTED else ""
        which = f"class {listed} has" if len(small) == 1 else f"classes {listed}{more} have"
        raise UserInputError(
            f"{where}: {which} only 1 item; every class needs at least 2 (one to train on, one "
            "to validate). Add items or remove the class."
        )
    if isinstance(items, list):
        items = [str(p) for p in items]
    return LabelledData(items=items, labels=labels, class_names=names, split=split, source=source)
