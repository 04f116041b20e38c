"""load_data: folder / CSV / DataFrame / arrays / path lists, error messages, fingerprint."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from autotransfer.data import LabelledData, load_data
from autotransfer.errors import UserInputError


def test_folder_loading(image_folder: Path) -> None:
    d = load_data(image_folder)
    assert d.class_names == ["cats", "dogs"]
    names = sorted(os.path.relpath(p, image_folder) for p in d.items)
    assert names == sorted([
        "cats/rgb.png", "cats/grey.png", "cats/rgba.png", "cats/palette.png",
        "dogs/a.jpg", "dogs/deep/er/b.JPG", "dogs/c.gif", "dogs/d.bmp", "dogs/e.webp",
    ])
    assert all(os.path.isabs(p) for p in d.items)
    assert d.labels.dtype == np.int64
    for p, y in zip(d.items, d.labels):
        assert Path(p).relative_to(image_folder).parts[0] == d.class_names[y]
    s = d.summary()
    assert s["class_counts"] == {"cats": 4, "dogs": 5}
    assert s["num_items"] == len(d) == 9 and s["modality"] == "image" and d.split is None
    assert "image folder" in s["source"]
    json.dumps(s)


def test_folder_deterministic_and_str_path(image_folder: Path) -> None:
    a, b = load_data(image_folder), load_data(str(image_folder))
    assert a.items == b.items and a.fingerprint() == b.fingerprint()


def test_folder_empty_class(image_folder: Path) -> None:
    (image_folder / "empty").mkdir()
    (image_folder / "empty" / "readme.txt").write_text("x")
    with pytest.raises(UserInputError, match=r"class folder 'empty' has no images \(\.jpg"):
        load_data(image_folder)


def test_folder_no_class_folders(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "a.png")
    with pytest.raises(UserInputError, match="no class sub-folders"):
        load_data(tmp_path)


def test_folder_single_class(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "only" / "a.png")
    make_image(tmp_path / "only" / "b.png")
    with pytest.raises(UserInputError, match=r"Image folder .*: fewer than 2 classes \(found 1: only\)"):
        load_data(tmp_path)


def test_folder_class_with_one_item(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "a" / "1.png")
    make_image(tmp_path / "a" / "2.png")
    make_image(tmp_path / "b" / "1.png")
    with pytest.raises(UserInputError, match="class 'b' has only 1 item"):
        load_data(tmp_path)


def _csv_dataset(tmp_path: Path, make_image, extra: str = "") -> Path:
    make_image(tmp_path / "images" / "a1.png", seed=1)
    make_image(tmp_path / "images" / "a2.png", seed=2)
    make_image(tmp_path / "images" / "b1.jpg", seed=3)
    absolute = make_image(tmp_path / "elsewhere" / "b2.png", seed=4)
    csv = tmp_path / "data.csv"
    csv.write_text(
        "path,label,split\n"
        "images/a1.png,2,train\n"
        "./images/a2.png,2, VAL\n"
        f"images/b1.jpg,10,train\n"
        f"{absolute},10,test\n" + extra
    )
    return csv


def test_csv_relative_paths_and_split(tmp_path: Path, make_image) -> None:
    d = load_data(_csv_dataset(tmp_path, make_image))
    assert d.items[0] == str(tmp_path / "images" / "a1.png")
    assert d.items[3] == str(tmp_path / "elsewhere" / "b2.png")
    assert d.class_names == ["2", "10"]  # integer labels keep numeric order
    assert d.labels.tolist() == [0, 0, 1, 1]
    assert d.split.tolist() == ["train", "val", "train", "test"]
    assert d.source.startswith("CSV ")


def test_csv_missing_column(tmp_path: Path) -> None:
    csv = tmp_path / "data.csv"
    csv.write_text("path,y\na.png,1\n")
    with pytest.raises(UserInputError) as e:
        load_data(csv)
    msg = str(e.value)
    assert "data.csv: column 'label' is missing (found: path, y)" in msg
    assert "label_column=" in msg


def test_csv_label_column_option(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "a.png")
    make_image(tmp_path / "b.png")
    make_image(tmp_path / "c.png")
    make_image(tmp_path / "d.png")
    csv = tmp_path / "data.csv"
    csv.write_text("file,y\na.png,x\nb.png,x\nc.png,z\nd.png,z\n")
    d = load_data(csv, path_column="file", label_column="y")
    assert d.class_names == ["x", "z"] and len(d) == 4


def test_csv_missing_file_names_row(tmp_path: Path, make_image) -> None:
    csv = _csv_dataset(tmp_path, make_image, extra="images/nope.png,2,train\n")
    with pytest.raises(UserInputError, match=r"data\.csv row 5 \(line 6\): file 'images/nope\.png' "
                                             r"does not exist"):
        load_data(csv)


def test_csv_bad_split_value(tmp_path: Path, make_image) -> None:
    csv = _csv_dataset(tmp_path, make_image, extra="images/a1.png,2,holdout\n")
    with pytest.raises(UserInputError, match=r"row 5 .*column 'split' is 'holdout'; it must be one of "
                                             r"train, val, test"):
        load_data(csv)


def test_csv_unsupported_extension(tmp_path: Path) -> None:
    (tmp_path / "a.tif").write_bytes(b"x")
    csv = tmp_path / "data.csv"
    csv.write_text("path,label\na.tif,1\n")
    with pytest.raises(UserInputError, match=r"row 1 \(line 2\): file 'a\.tif' is not a supported image type"):
        load_data(csv)


def test_csv_empty_and_blank_label(tmp_path: Path, make_image) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(UserInputError, match="CSV .*empty.csv is empty"):
        load_data(empty)
    make_image(tmp_path / "a.png")
    blank = tmp_path / "blank.csv"
    blank.write_text("path,label\na.png,\n")
    with pytest.raises(UserInputError, match=r"blank\.csv row 1 \(line 2\): column 'label' is empty"):
        load_data(blank)


def test_dataframe_relative_to_cwd(tmp_path: Path, make_image, monkeypatch) -> None:
    for i in range(4):
        make_image(tmp_path / f"{i}.png", seed=i)
    monkeypatch.chdir(tmp_path)
    df = pd.DataFrame({"path": [f"{i}.png" for i in range(4)], "label": ["b", "a", "b", "a"],
                       "split": ["train", "train", "val", "test"]})
    d = load_data(df)
    assert d.items == [str(tmp_path / f"{i}.png") for i in range(4)]
    assert d.class_names == ["a", "b"] and d.labels.tolist() == [1, 0, 1, 0]
    assert d.split.tolist() == ["train", "train", "val", "test"] and d.source == "DataFrame"


def test_dataframe_missing_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    df = pd.DataFrame({"path": ["x.png", "y.png"], "label": [0, 1]}, index=[10, 11])
    with pytest.raises(UserInputError, match=r"DataFrame row 10: file 'x\.png' does not exist .*2 of 2"):
        load_data(df)


def test_arrays_with_string_labels() -> None:
    x = np.zeros((6, 5, 5, 3), np.uint8)
    y = np.array(["dog", "cat", "dog", "cat", "bird", "bird"])
    d = load_data(x, labels=y)
    assert d.class_names == ["bird", "cat", "dog"]
    assert d.labels.tolist() == [2, 1, 2, 1, 0, 0]
    assert d.items is x and d.source == "arrays" and not d.is_paths
    d2 = load_data((x, list(y)))
    assert d2.labels.tolist() == d.labels.tolist()


def test_arrays_int_labels_and_grey() -> None:
    x = np.zeros((4, 5, 5), np.int32)
    d = load_data(x, labels=[3, 7, 3, 7])
    assert d.class_names == ["3", "7"] and d.items.dtype == np.uint8


@pytest.mark.parametrize(
    "x, y, pattern",
    [
        (np.zeros((5, 4, 4, 3)), np.zeros(4), r"arrays: len\(x\) is 5 but len\(y\) is 4"),
        (np.zeros((5, 4, 4, 2)), np.zeros(5), r"arrays: x has shape \(5, 4, 4, 2\)"),
        (np.zeros((4, 4)), np.zeros(4), r"arrays: x has shape \(4, 4\)"),
        (np.zeros((4, 4, 4, 3)), np.eye(4), "looks one-hot"),
        (np.full((4, 4, 4, 3), -0.5), [0, 0, 1, 1], r"float pixels must be in \[0, 1\]"),
        (np.full((4, 4, 4, 3), 300), [0, 0, 1, 1], r"integer pixels must be within 0\.\.255"),
        (np.zeros((4, 4, 4, 3)), [0.5, 1, 0, 1], "non-integer"),
        (np.zeros((4, 4, 4, 3)), [0, 0, 0, 0], "fewer than 2 classes"),
    ],
)
def test_array_errors(x, y, pattern) -> None:
    with pytest.raises(UserInputError, match=pattern):
        load_data(x, labels=y)


def test_array_without_labels() -> None:
    with pytest.raises(UserInputError, match="labels are missing"):
        load_data(np.zeros((4, 4, 4, 3)))


def test_path_errors(tmp_path: Path, image_folder: Path) -> None:
    with pytest.raises(UserInputError, match=r"Data path '.*nope' does not exist"):
        load_data(tmp_path / "nope")
    (tmp_path / "data.json").write_text("{}")
    with pytest.raises(UserInputError, match=r"'.*data\.json' is not a \.csv"):
        load_data(tmp_path / "data.json")
    with pytest.raises(UserInputError, match="Unsupported data of type int"):
        load_data(42)
    with pytest.raises(UserInputError, match="labels= is only used with arrays"):
        load_data(image_folder, labels=[0, 1])


def test_path_list(image_folder: Path) -> None:
    ref = load_data(image_folder)
    d = load_data(list(ref.items), labels=[ref.class_names[i] for i in ref.labels])
    assert d.items == ref.items and d.labels.tolist() == ref.labels.tolist()
    with pytest.raises(UserInputError, match="9 paths but 2 labels"):
        load_data(list(ref.items), labels=[0, 1])


def test_labelled_data_passthrough(image_folder: Path) -> None:
    d = load_data(image_folder)
    assert load_data(d) is d


def test_fingerprint(image_folder: Path) -> None:
    d = load_data(image_folder)
    fp = d.fingerprint()
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert load_data(image_folder).fingerprint() == fp
    changed = LabelledData(list(d.items), d.labels.copy(), list(d.class_names), source=d.source)
    assert changed.fingerprint() == fp
    changed.labels[0] = 1 - changed.labels[0]
    assert changed.fingerprint() != fp
    st = os.stat(d.items[0])
    os.utime(d.items[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert d.fingerprint() != fp


def test_fingerprint_arrays() -> None:
    x = np.zeros((4, 3, 3, 3), np.uint8)
    d = load_data(x, labels=[0, 1, 0, 1])
    fp = d.fingerprint()
    assert load_data(x.copy(), labels=[0, 1, 0, 1]).fingerprint() == fp
    assert load_data(x, labels=[1, 0, 0, 1]).fingerprint() != fp
    x2 = x.copy()
    x2[0, 0, 0, 0] = 1
    assert load_data(x2, labels=[0, 1, 0, 1]).fingerprint() != fp
