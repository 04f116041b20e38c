"""load_data on texts: CSV/DataFrame text columns (given or detected) and lists of strings."""
from __future__ import annotations

import pandas as pd
import pytest

from autotransfer.data import load_data
from autotransfer.errors import UserInputError

REVIEWS = ["Worked well, no side effects.", "Made me dizzy.", "Fine.", "Terrible headaches!", "Great relief",
           "Would not take again"]


def _csv(tmp_path, text: str):
    path = tmp_path / "reviews.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_csv_without_a_path_column_is_text_and_its_text_column_is_found(tmp_path):
    rows = "\n".join(f'"{t}",{"good" if i % 2 == 0 else "bad"}' for i, t in enumerate(REVIEWS))
    d = load_data(_csv(tmp_path, "review,label\n" + rows + "\n"))
    assert d.modality == "text" and not d.is_paths and d.items == REVIEWS
    assert d.class_names == ["bad", "good"] and d.labels.tolist() == [1, 0, 1, 0, 1, 0]
    assert d.summary()["modality"] == "text"


def test_blank_duplicate_conflicting_and_leaking_texts_are_skipped_naming_rows(tmp_path):
    df = pd.DataFrame({
        "id": range(9),
        "text": [REVIEWS[0], "  ", REVIEWS[1], REVIEWS[0], REVIEWS[2], REVIEWS[2], REVIEWS[3], REVIEWS[4], REVIEWS[3]],
        "label": ["a", "a", "b", "a", "a", "b", "b", "a", "b"],
        "split": ["train", "train", "train", "train", "train", "train", "train", "val", "test"],
    })
    d = load_data(df, text_column="text")
    assert d.summary()["skipped_counts"] == {"duplicate": 1, "conflict": 2, "leakage": 1, "empty_text": 1}
    by_kind = {s.kind: s.item for s in d.skipped}
    assert by_kind["empty_text"] == "DataFrame row 1" and by_kind["duplicate"] == "DataFrame row 3"
    assert by_kind["leakage"] == "DataFrame row 8"  # the test copy of a train text
    assert all(REVIEWS[0] not in s.reason for s in d.skipped)  # rows are named, not the texts
    assert d.items == [REVIEWS[0], REVIEWS[1], REVIEWS[3], REVIEWS[4]] and d.split.tolist() == [
        "train", "train", "train", "val"]
    with pytest.raises(UserInputError, match=r"5 item\(s\) cannot be used .*1 empty text"):
        load_data(df, text_column="text", strict=True)


def test_an_explicit_text_column_and_errors_name_it(tmp_path):
    df = pd.DataFrame({"body": REVIEWS, "title": ["t"] * 6, "stars": [1, 5, 1, 5, 1, 5]})
    with pytest.raises(UserInputError, match="column 'path' is missing .* For texts, name the text column with "
                                             "--text-column NAME"):
        load_data(df)  # two string columns: which one is the text is the user's to say
    d = load_data(df, text_column="body", label_column="stars")
    assert d.items == REVIEWS and d.class_names == ["1", "5"]
    with pytest.raises(UserInputError, match=r"column 'text' is missing .* --text-column NAME"):
        load_data(df, text_column="text", label_column="stars")


def test_a_list_of_strings_is_text_and_a_list_of_image_paths_is_not(tmp_path):
    d = load_data(REVIEWS, labels=[0, 1] * 3)
    assert d.modality == "text" and d.source == "text list"
    with pytest.raises(UserInputError, match="does not exist"):
        load_data(["a.png", "b.png", "c.png", "d.png"], labels=[0, 1, 0, 1])  # paths, still
    with pytest.raises(UserInputError, match="got 6 texts but 2 labels"):
        load_data(REVIEWS, labels=[0, 1])


def test_text_fingerprints_follow_the_texts():
    a = load_data(REVIEWS, labels=[0, 1] * 3)
    b = load_data([*REVIEWS[:-1], "Would not take it again"], labels=[0, 1] * 3)
    assert a.fingerprint() == load_data(REVIEWS, labels=[0, 1] * 3).fingerprint() != b.fingerprint()


def test_a_non_utf8_text_csv_names_the_line(tmp_path):
    path = tmp_path / "r.csv"
    path.write_bytes("review,label\nok,a\nfine,b\n".encode() + b"caf\xe9,a\n")
    with pytest.raises(UserInputError, match=r"line 4, byte 4 is not UTF-8 \(0xe9\)"):
        load_data(path)
