"""Turn whatever the user hands us (folder, CSV, DataFrame, arrays) into a validated LabelledData.

A problem with the input as a whole (a missing column, a missing file, too few classes) is one
:class:`UserInputError` naming the file/field, what is wrong and the fix, so that a bad dataset
fails in seconds instead of after an hour of probing. A problem with single files (truncated,
unreadable, duplicate, ...: ``data/checks.py``) skips those items, recorded in
``LabelledData.skipped``; ``strict=True`` makes it an error instead.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autotransfer.data.checks import Skip, check_files, content_skips, counts_text, path_conflicts, strict_error
from autotransfer.data.dataset import SPLIT_NAMES, LabelledData
from autotransfer.defaults import MAX_PIXELS
from autotransfer.errors import UserInputError, check_param

#: The formats ``tf.io.decode_image`` can decode (JPEG XL aside); matched case-insensitively.
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
_EXT_TEXT = "/".join(IMAGE_EXTENSIONS)
_DEFAULT_SPLIT_COLUMN = "split"
_MAX_LISTED = 5


@dataclass
class _Listing:
    """The file items a loader found, before their files are screened."""

    items: list[str]
    raw_labels: np.ndarray
    split: list[str] | None
    source: str
    where: str
    skips: list[Skip] = field(default_factory=list)  # found while listing: link loops, outside the root
    modality: str = "image"
    names: list[str] | None = None  # how skips name the items (texts: their rows), when not the items


def load_data(
    data: Any,
    *,
    labels: Any = None,
    path_column: str = "path",
    label_column: str = "label",
    split_column: str = _DEFAULT_SPLIT_COLUMN,
    strict: bool = False,
    max_pixels: int = MAX_PIXELS,
    text_column: str | None = None,
) -> LabelledData:
    """Load and validate a labelled dataset.

    Accepted ``data``:

    * a directory path: one sub-folder per class; images (``.jpg/.jpeg/.png/.bmp/.gif/.webp``,
      any case) are found recursively inside each class folder (links followed, loops skipped);
      hidden files/folders are ignored; class names are the sorted sub-folder names;
    * a ``.csv`` path with columns ``path,label[,split]``; relative paths are relative to the
      CSV's folder and must stay inside it (symlinks resolved); absolute paths are taken as given;
    * a pandas DataFrame with the same columns; relative paths are relative to the cwd;
    * an array ``x`` with ``labels=y``, or a tuple ``(x, y)``; ``x`` is ``[N,H,W,C]`` (C in 1, 3, 4)
      or ``[N,H,W]``; integer arrays other than uint8 must be within 0..255 and become uint8;
    * a list of image paths with ``labels=y`` (relative paths are relative to the cwd);
    * text (``modality`` "text"): a CSV or DataFrame with ``text_column`` (or, without a path
      column, its one column of strings other than the labels), or a list of strings that are
      not image file names with ``labels=y``; blank texts are skipped;
    * a :class:`LabelledData` (returned as is).

    Labels may be ints or strings. Integer labels keep numeric order (``class_names`` are their
    ``str``); string labels are sorted lexicographically. Every class must have at least 2 items.

    Files are screened (``data/checks.py``): truncated, unreadable, duplicate, conflicting (one
    content or path under two labels), leaking (one content in two splits), outside-the-root,
    link-loop and over-``max_pixels`` items are skipped and listed in ``.skipped``;
    ``strict=True`` raises instead.

    Raises:
        UserInputError: on any bad input, with a message naming the file/field and the fix.
    """
    check_param("max_pixels", max_pixels, "load_data", "a positive integer",
                isinstance(max_pixels, (int, np.integer)) and not isinstance(max_pixels, bool) and max_pixels >= 1)
    found = _list_items(data, labels, path_column, label_column, split_column, text_column)
    if isinstance(found, LabelledData):
        return found
    if found.modality == "text":
        from autotransfer.data.text import screen_texts

        return screen_texts(found, strict=strict)
    return _screen(found, strict=strict, max_pixels=int(max_pixels))


def _list_items(
    data: Any, labels: Any, path_column: str, label_column: str, split_column: str, text_column: str | None,
) -> _Listing | LabelledData:
    """The loader for this kind of ``data``: a listing of files or texts, or arrays already validated."""
    if isinstance(data, LabelledData):
        _no_labels_kwarg(labels, "a LabelledData")
        return data
    if isinstance(data, (str, os.PathLike)):
        return _list_path(data, labels, path_column, label_column, split_column, text_column)
    if isinstance(data, pd.DataFrame):
        return _list_dataframe(data, labels, path_column, label_column, split_column, text_column)
    if isinstance(data, tuple) and len(data) == 2 and labels is None:
        return _load_arrays(data[0], data[1])
    if isinstance(data, np.ndarray):
        if labels is None:
            raise UserInputError(
                "arrays: labels are missing. Call load_data(x, labels=y) or load_data((x, y))."
            )
        return _load_arrays(data, labels)
    if _is_text_list(data, text_column):
        return _list_texts(data, labels)
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


def _list_path(data: str | os.PathLike, labels: Any, path_column: str, label_column: str, split_column: str,
               text_column: str | None) -> _Listing:
    """The listing of an image folder or a CSV file at ``data``."""
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
        return _load_csv(path, str(data), path_column, label_column, split_column, text_column)
    raise UserInputError(
        f"Data file '{data}' is not a .csv file. Pass an image folder (one sub-folder per "
        "class) or a .csv file with path,label[,split] columns."
    )


def _list_dataframe(data: pd.DataFrame, labels: Any, path_column: str, label_column: str, split_column: str,
                    text_column: str | None) -> _Listing:
    """The listing of a DataFrame: its texts when it has a text column, else its image paths
    (relative to the cwd)."""
    from autotransfer.data import text  # lazy: it builds on this module

    _no_labels_kwarg(labels, "a DataFrame")
    column = text.text_column_of(data, text_column, path_column, label_column, split_column)
    if column is not None:
        return text.table_texts(data, "DataFrame", lambda i, idx: f"DataFrame row {idx!r}", column,
                                label_column, split_column, source="DataFrame")
    return _from_table(
        data, "DataFrame", Path.cwd(), lambda i, idx: f"DataFrame row {idx!r}",
        path_column, label_column, split_column, source="DataFrame",
    )


def _is_text_list(data: Any, text_column: str | None) -> bool:
    """A non-empty list of strings that are texts: ``text_column`` is given, or none is an image file name."""
    return bool(isinstance(data, (list, tuple)) and data and all(isinstance(t, str) for t in data) and (
        text_column is not None or not any(has_image_extension(t) for t in data)))


def _list_texts(data: Sequence[str], labels: Any) -> _Listing:
    """The listing of a list of texts with one label each."""
    from autotransfer.data import text  # lazy: it builds on this module

    if labels is None:
        raise UserInputError("text list: labels are missing. Call load_data(texts, labels=y) with one label "
                             "per text.")
    y = _as_label_array(labels, "text list")
    if len(y) != len(data):
        raise UserInputError(f"text list: got {len(data)} texts but {len(y)} labels. Pass exactly one label "
                             "per text.")
    return text.text_list(list(data), y)


def _no_labels_kwarg(labels: Any, what: str) -> None:
    if labels is not None:
        raise UserInputError(
            f"labels= is only used with arrays or path lists; {what} already carries its labels. "
            "Drop the labels= argument."
        )


# --------------------------------------------------------------------------------------- folder


def has_image_extension(path: str) -> bool:
    """Whether ``path`` ends in one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and has_image_extension(name)


def _dir_key(path: str | os.PathLike) -> tuple[int, int] | None:
    """The real directory behind ``path`` (links followed) as ``(st_dev, st_ino)``; None if unreadable."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _images_under(folder: Path, walked: set[tuple[int, int]], skips: list[Skip]) -> list[str]:
    """Image files under ``folder``, links followed; a directory whose real one was already walked
    (``walked`` starts with the root, its ancestors and the class folders) is a link loop, skipped."""
    seen = set(walked)
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        keep = []
        # Pruning in place keeps os.walk out of hidden folders (.ipynb_checkpoints, .git, ...) and loops.
        for d in sorted(d for d in dirnames if not d.startswith(".")):
            full = os.path.join(dirpath, d)
            key = _dir_key(full)
            if key in seen:
                skips.append(Skip(full, f"link loop: leads back to {os.path.realpath(full)}, already walked; "
                                        "remove the link", "link_loop"))
                continue
            if key is not None:
                seen.add(key)
            keep.append(d)
        dirnames[:] = keep
        found.extend(os.path.join(dirpath, f) for f in filenames if _is_image_name(f))
    return sorted(found)


def _load_folder(root: Path, shown: str) -> _Listing:
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
    real = Path(os.path.realpath(root))
    walked = {k for k in map(_dir_key, [real, *real.parents, *class_dirs]) if k is not None}
    items: list[str] = []
    raw_labels: list[str] = []
    skips: list[Skip] = []
    for d in class_dirs:
        files = _images_under(d, walked, skips)
        if not files:
            raise UserInputError(
                f"{where}: class folder '{d.name}' has no images ({_EXT_TEXT}). Add images to it "
                "or remove the folder."
            )
        items.extend(files)
        raw_labels.extend([d.name] * len(files))
    return _Listing(items, np.asarray(raw_labels), None, f"image folder {shown}", where, skips)


# ----------------------------------------------------------------------------------- CSV / table


def _load_csv(
    path: Path, shown: str, path_column: str, label_column: str, split_column: str, text_column: str | None = None,
) -> _Listing:
    _check_utf8(path, shown)
    try:
        df = pd.read_csv(path, encoding="utf-8-sig")  # -sig: a byte-order mark is not part of the header
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
    from autotransfer.data import text  # lazy: it builds on this module

    # Row numbers are 1-based data rows; the line number also counts the header (and assumes no
    # quoted line breaks).
    row_name = lambda i, idx: f"{shown} row {i + 1} (line {i + 2})"  # noqa: E731
    column = text.text_column_of(df, text_column, path_column, label_column, split_column)
    if column is not None:
        return text.table_texts(df, f"CSV {shown}", row_name, column, label_column, split_column,
                                source=f"CSV {shown}")
    return _from_table(df, f"CSV {shown}", path.absolute().parent, row_name, path_column, label_column, split_column,
                       source=f"CSV {shown}", root=path.absolute().parent)


def _check_utf8(path: Path, shown: str) -> None:
    """Raise one line naming the line and byte of the first non-UTF-8 byte of the CSV."""
    try:
        data = path.read_bytes()
    except OSError:
        return  # pandas reports it with the file's name
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise UserInputError(
            f"CSV {shown}: line {line}, byte {column} is not UTF-8 (0x{data[e.start]:02x}). Save the file as "
            "UTF-8 (e.g. 'iconv -f latin1 -t utf-8' or your editor's 'Save as UTF-8')."
        ) from None


def _from_table(
    df: pd.DataFrame,
    where: str,
    base_dir: Path,
    row_name: Callable[[int, Any], str],
    path_column: str,
    label_column: str,
    split_column: str,
    source: str,
    root: Path | None = None,
) -> _Listing:
    """Rows of a table as a listing; relative paths under ``root`` only (a CSV's folder), when given."""
    has_split = check_columns(df, where, path_column, label_column, split_column)
    items, rows, skips = _table_items(df, where, base_dir, row_name, path_column, root)
    raw_labels, split = labels_and_split(df, rows, row_name, label_column, split_column if has_split else None)
    return _Listing(items, raw_labels, split, source, where, skips)


def labels_and_split(
    df: pd.DataFrame, rows: list[int], row_name: Callable[[int, Any], str], label_column: str,
    split_column: str | None,
) -> tuple[np.ndarray, list[str] | None]:
    """The labels and (with ``split_column``) train/val/test values of the table's ``rows``;
    raises on a blank label or an unknown split value, naming the row."""
    for i, (idx, value) in enumerate(df[label_column].items()):
        if _is_blank(value):
            raise UserInputError(
                f"{row_name(i, idx)}: column '{label_column}' is empty. Give every row a label "
                "or drop the row."
            )
    split = None
    if split_column is not None:
        values = []
        for i, (idx, value) in enumerate(df[split_column].items()):
            v = "" if _is_blank(value) else str(value).strip().lower()
            if v not in SPLIT_NAMES:
                raise UserInputError(
                    f"{row_name(i, idx)}: column '{split_column}' is {value!r}; it must be one of "
                    "train, val, test. Fix the value or drop the column to split automatically."
                )
            values.append(v)
        split = [values[i] for i in rows]
    return df[label_column].to_numpy()[rows], split


def _flag(param: str) -> str:
    """The CLI flag of a ``load_data`` parameter (``label_column`` -> ``--label-column``)."""
    return "--" + param.replace("_", "-")


def check_columns(df: pd.DataFrame, where: str, item_column: str, label_column: str, split_column: str,
                  item_kwarg: str = "path_column") -> bool:
    """Raise on missing columns or no rows; whether the table has a split column."""
    found = ", ".join(map(str, df.columns)) or "no columns"
    for col, kwarg in ((item_column, item_kwarg), (label_column, "label_column")):
        if col not in df.columns:
            texts = (" For texts, name the text column with --text-column NAME (text_column= in Python)."
                     if kwarg == "path_column" else "")
            raise UserInputError(
                f"{where}: column '{col}' is missing (found: {found}). Add a '{col}' column or name "
                f"yours with {_flag(kwarg)} NAME ({kwarg}= in Python).{texts}"
            )
    has_split = split_column in df.columns
    if not has_split and split_column != _DEFAULT_SPLIT_COLUMN:
        raise UserInputError(
            f"{where}: column '{split_column}' is missing (found: {found}). Add it, or drop "
            f"{_flag('split_column')} (split_column= in Python) to split automatically."
        )
    if len(df) == 0:
        raise UserInputError(f"{where} has no rows. Add one row per item.")
    return has_split


def _table_items(
    df: pd.DataFrame, where: str, base_dir: Path, row_name: Callable[[int, Any], str], path_column: str,
    root: Path | None,
) -> tuple[list[str], list[int], list[Skip]]:
    """``(paths, their row positions, skips)``: a relative path leaving ``root`` is skipped; a
    blank, non-image or missing path is an error."""
    inside = None if root is None else _inside(root)
    items: list[str] = []
    rows: list[int] = []
    skips: list[Skip] = []
    missing: list[tuple[str, str, str]] = []
    for i, (idx, value) in enumerate(df[path_column].items()):
        if _is_blank(value):
            raise UserInputError(
                f"{row_name(i, idx)}: column '{path_column}' is empty. Give every row an image path."
            )
        rel = str(value).strip()
        if not has_image_extension(rel):
            raise UserInputError(
                f"{row_name(i, idx)}: file '{rel}' is not a supported image type ({_EXT_TEXT}). "
                "Convert it or drop the row."
            )
        p = Path(rel).expanduser()
        full = os.path.normpath(p if p.is_absolute() else base_dir / p)
        if inside is not None and not p.is_absolute() and not inside(full):
            skips.append(Skip(full, f"{row_name(i, idx)}: '{rel}' leads outside the CSV's folder {root} (links "
                                    "resolved); move the file there or give its absolute path", "outside_root"))
            continue
        if not os.path.isfile(full):
            missing.append((row_name(i, idx), rel, full))
        items.append(full)
        rows.append(i)
    if missing:
        first_row, rel, full = missing[0]
        more = f" ({len(missing)} of {len(df)} files are missing)" if len(missing) > 1 else ""
        base = "the CSV's folder" if where.startswith("CSV") else "the current directory"
        raise UserInputError(
            f"{first_row}: file '{rel}' does not exist (looked for {full}){more}. Fix the "
            f"'{path_column}' column; relative paths are relative to {base}."
        )
    return items, rows, skips


def _inside(root: Path) -> Callable[[str], bool]:
    """A test whether a path, links resolved, lies under ``root`` (real folders cached: one
    ``lstat`` per file)."""
    real_root = os.path.realpath(root)
    real_dir = functools.lru_cache(maxsize=None)(os.path.realpath)

    def inside(path: str) -> bool:
        real = (os.path.realpath(path) if os.path.islink(path)
                else os.path.join(real_dir(os.path.dirname(path)), os.path.basename(path)))
        return os.path.commonpath([real_root, real]) == real_root

    return inside


def _is_blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _load_path_list(paths: Sequence[Any], labels: Any) -> _Listing:
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


def _screen(found: _Listing, *, strict: bool, max_pixels: int) -> LabelledData:
    """Check every listed file, leave out the unusable ones (``skipped``), validate what is left."""
    items, labels, split = found.items, found.raw_labels, found.split
    dropped = path_conflicts(items, labels)
    todo = [i for i in range(len(items)) if i not in dropped]
    digests: list[str | None] = [None] * len(items)
    for i, (digest, skip) in zip(todo, check_files([items[i] for i in todo], max_pixels)):
        if skip is None:
            digests[i] = digest
        else:
            dropped[i] = skip
    dropped.update(content_skips(items, labels, split, digests))
    skips = found.skips + [dropped[i] for i in sorted(dropped)]
    if strict and skips:
        raise strict_error(skips, found.where)
    keep = np.asarray([i for i in range(len(items)) if i not in dropped], dtype=np.int64)
    _check_left(np.asarray(labels), keep, skips, found.where)
    data = _finish([items[i] for i in keep], np.asarray(labels)[keep],
                   None if split is None else np.asarray(split, dtype=str)[keep], found.source, found.where)
    data.skipped, data.screened = skips, True
    return data


def _check_left(raw: np.ndarray, keep: np.ndarray, skips: list[Skip], where: str) -> None:
    """Once items were skipped: 2 classes with 2 items each must be left; the error says what went."""
    if not skips:
        return  # _finish says what is wrong without skips
    first = skips[0]
    after = (f"after skipping {len(skips)} unusable item(s) ({counts_text(skips)}; e.g. '{first.item}': "
             f"{first.reason})")
    fix = "Fix or replace the skipped files (--strict lists them)"
    if len(raw) == 0:
        raise UserInputError(f"{where}: no items left {after}. {fix}.")
    codes, names = _encode_labels(raw, where)
    counts = np.bincount(codes[keep], minlength=len(names))
    if int((counts > 0).sum()) < 2:
        raise UserInputError(f"{where}: fewer than 2 classes have items {after}. A classifier needs at least 2 "
                             f"classes. {fix}, or add another class.")
    small = [f"'{n}' ({c})" for n, c in zip(names, counts.tolist()) if c < 2]
    if small:
        more = f" and {len(small) - _MAX_LISTED} more" if len(small) > _MAX_LISTED else ""
        listed = ", ".join(small[:_MAX_LISTED]) + more
        which = f"class {listed} has" if len(small) == 1 else f"classes {listed} have"
        raise UserInputError(f"{where}: {which} fewer than 2 items {after}; every class needs at least 2 (one to "
                             f"train on, one to validate). {fix}, add items or remove the class.")


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
