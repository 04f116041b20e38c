"""Text items: a table's text column (CSV, DataFrame) or a list of strings, screened as files are.

A blank text is skipped as ``empty_text`` (counted and listed, never dropped silently); the same
text under two labels is a conflict, twice under one label a duplicate, in two splits leakage
(:func:`autotransfer.data.checks.content_skips` on a hash of the text). Skips name the row, not
the text. Pure Python: no TensorFlow.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from autotransfer.data.checks import Skip, content_skips, strict_error
from autotransfer.data.dataset import LabelledData
from autotransfer.data.loaders import (
    _check_left,
    _finish,
    _is_blank,
    _Listing,
    check_columns,
    has_image_extension,
    labels_and_split,
)

MODALITY = "text"


def text_column_of(df: pd.DataFrame, text_column: str | None, path_column: str, label_column: str,
                   split_column: str) -> str | None:
    """The column of texts: ``text_column`` when given; else, in a table without ``path_column``,
    its one column of strings (other than the labels and splits) that are not image file names."""
    if text_column is not None:
        return text_column
    if path_column in df.columns:
        return None
    found = [c for c in df.columns if c not in (label_column, split_column) and _holds_text(df[c])]
    return str(found[0]) if len(found) == 1 else None


def _holds_text(column: pd.Series) -> bool:
    values = column.dropna().tolist()
    return bool(values) and all(isinstance(v, str) for v in values) and not looks_like_paths(values)


def looks_like_paths(values: Sequence[Any]) -> bool:
    """Whether every value is a file name with an image extension (then they are images, not texts)."""
    return all(has_image_extension(str(v)) for v in values)


def table_texts(df: pd.DataFrame, where: str, row_name: Callable[[int, Any], str], text_column: str,
                label_column: str, split_column: str, source: str) -> _Listing:
    """Rows of a table with a text column as a listing (blank texts already skipped)."""
    has_split = check_columns(df, where, text_column, label_column, split_column, item_kwarg="text_column")
    texts: list[str] = []
    rows: list[int] = []
    names: list[str] = []
    skips: list[Skip] = []
    for i, (idx, value) in enumerate(df[text_column].items()):
        if _is_blank(value):
            skips.append(Skip(row_name(i, idx), f"column '{text_column}' is empty", "empty_text"))
            continue
        texts.append(str(value))
        rows.append(i)
        names.append(row_name(i, idx))
    raw_labels, split = labels_and_split(df, rows, row_name, label_column, split_column if has_split else None)
    return _Listing(texts, raw_labels, split, source, where, skips, modality=MODALITY, names=names)


def text_list(texts: Sequence[str], labels: np.ndarray) -> _Listing:
    """A list of strings with one label each, as a listing."""
    df = pd.DataFrame({"text": list(texts), "label": list(labels)})
    return table_texts(df, "text list", lambda i, idx: f"text list item {i}", "text", "label", "split",
                       source="text list")


def screen_texts(found: _Listing, *, strict: bool) -> LabelledData:
    """Leave out duplicate, conflicting and leaking texts (``skipped``); validate what is left."""
    texts, labels, split = found.items, np.asarray(found.raw_labels), found.split
    digests = [hashlib.blake2b(t.encode("utf-8"), digest_size=16).hexdigest() for t in texts]
    dropped = content_skips(found.names or texts, labels, split, digests)
    skips = found.skips + [dropped[i] for i in sorted(dropped)]
    if strict and skips:
        raise strict_error(skips, found.where)
    keep = np.asarray([i for i in range(len(texts)) if i not in dropped], dtype=np.int64)
    _check_left(labels, keep, skips, found.where)
    data = _finish([texts[i] for i in keep], labels[keep],
                   None if split is None else np.asarray(split, dtype=str)[keep], found.source, found.where)
    data.modality, data.skipped, data.screened = MODALITY, skips, True
    return data


__all__ = ["looks_like_paths", "screen_texts", "table_texts", "text_column_of", "text_list"]
