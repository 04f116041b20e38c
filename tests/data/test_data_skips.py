"""Per-item data problems are skipped, counted and listed (strict=True makes them errors)."""
from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import pytest

from autotransfer.config import RunConfig
from autotransfer.data import load_data
from autotransfer.data.checks import skip_summary
from autotransfer.defaults import MAX_PIXELS
from autotransfer.errors import ParamError, UserInputError


def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header says ``width x height`` (signature, IHDR, IEND; no pixels to decode)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def _two_classes(root: Path, make_image, n: int = 3) -> Path:
    for i in range(n):
        make_image(root / "a" / f"{i}.png", seed=i)
        make_image(root / "b" / f"{i}.jpg", seed=100 + i)
    return root


def _cut_jpeg(tmp_path: Path, make_image) -> bytes:
    """A JPEG cut short inside its entropy-coded data (headers intact)."""
    data = make_image(tmp_path / "src" / "big.jpg", size=(64, 64), seed=99).read_bytes()
    return data[: len(data) * 2 // 3]


def _kinds(d) -> dict[str, int]:
    return d.summary()["skipped_counts"]


def test_each_file_problem_is_skipped_with_its_kind(tmp_path: Path, make_image) -> None:
    root = _two_classes(tmp_path / "d", make_image)
    jpg, png = (root / "b" / "0.jpg").read_bytes(), (root / "a" / "0.png").read_bytes()
    (root / "b" / "cut.jpg").write_bytes(_cut_jpeg(tmp_path, make_image))
    (root / "a" / "cut.png").write_bytes(png[: len(png) // 2])
    (root / "a" / "empty.png").write_bytes(b"")
    (root / "a" / "text.png").write_text("not an image")
    (root / "a" / "copy.png").write_bytes(png)               # same class: the first copy stays
    (root / "b" / "also_a.jpg").write_bytes((root / "a" / "1.png").read_bytes())  # two labels: all go
    _png_header(root / "b" / "huge.png", 10_000, 10_000)
    (root / "b" / "tail.jpg").write_bytes(jpg + b"camera trailer")  # data after EOI decodes: kept
    d = load_data(root)
    assert _kinds(d) == {"truncated": 2, "unreadable": 2, "duplicate": 1, "conflict": 2, "too_large": 1}
    names = {os.path.relpath(s["item"], root): s["kind"] for s in d.summary()["skipped"]}
    assert names == {"b/cut.jpg": "truncated", "a/cut.png": "truncated", "a/empty.png": "unreadable",
                     "a/text.png": "unreadable", "a/copy.png": "duplicate", "a/1.png": "conflict",
                     "b/also_a.jpg": "conflict", "b/huge.png": "too_large"}
    kept = sorted(os.path.relpath(p, root) for p in d.items)
    assert kept == ["a/0.png", "a/2.png", "b/0.jpg", "b/1.jpg", "b/2.jpg", "b/tail.jpg"]
    assert d.screened and json.loads(json.dumps(d.summary()))["skipped_counts"]["too_large"] == 1
    assert skip_summary(d.skipped) == ("data: skipped 8 items (2 truncated, 2 unreadable, 1 duplicate, 2 conflict, "
                                       "1 too large); listed in data.json; --strict makes this an error")


@pytest.mark.parametrize("ext", ["png", "jpg", "gif", "bmp", "webp"])
def test_cut_files_are_truncated_whole_ones_pass(tmp_path: Path, make_image, ext: str) -> None:
    from autotransfer.data.checks import check_file, pillow_size_check_off

    whole = make_image(tmp_path / f"whole.{ext}", "P" if ext == "gif" else "RGB", size=(32, 32), seed=5)
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])
    with pillow_size_check_off():
        assert check_file(str(whole), MAX_PIXELS)[1] is None
        skip = check_file(str(cut), MAX_PIXELS)[1]
    assert skip is not None and skip.kind == "truncated", skip


def test_strict_makes_any_skip_one_line_error(tmp_path: Path, make_image) -> None:
    root = _two_classes(tmp_path / "d", make_image)
    (root / "b" / "cut.jpg").write_bytes(_cut_jpeg(tmp_path, make_image))
    assert load_data(root, strict=False).skipped[0].kind == "truncated"
    with pytest.raises(UserInputError) as e:
        load_data(root, strict=True)
    msg = str(e.value)
    assert "\n" not in msg and "cut.jpg" in msg and "1 truncated" in msg and "drop --strict" in msg


def test_max_pixels_reads_headers_only(tmp_path: Path, make_image) -> None:
    root = _two_classes(tmp_path / "d", make_image)  # 12 x 10 = 120 pixels each
    make_image(root / "a" / "big.png", size=(20, 20), seed=50)
    d = load_data(root, max_pixels=120)
    assert [os.path.basename(s.item) for s in d.skipped] == ["big.png"] and _kinds(d) == {"too_large": 1}
    assert "20x20 = 400 pixels, over the limit of 120" in d.skipped[0].reason
    assert load_data(root).skipped == []  # the default (MAX_PIXELS) keeps it
    _png_header(root / "a" / "bomb.png", 30_000, 30_000)  # 900 MP: past Pillow's own bomb limit too
    with _no_warnings():
        assert _kinds(load_data(root)) == {"too_large": 1}
    for bad in (0, -3, 1.5, True):
        with pytest.raises(ParamError, match="max_pixels"):
            load_data(root, max_pixels=bad)
        with pytest.raises(ParamError, match="'max_pixels' parameter of autotransfer.run must be a positive"):
            RunConfig(max_pixels=bad).validate()
    assert RunConfig().max_pixels == MAX_PIXELS


class _no_warnings:
    """``with _no_warnings():`` fails on any warning raised inside (Pillow's DecompressionBombWarning)."""

    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings(record=True)
        self._seen = self._ctx.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)
        assert not self._seen, [str(w.message) for w in self._seen]


def test_symlink_loops_are_walked_once(tmp_path: Path, make_image) -> None:
    root = tmp_path / "d"
    for i in range(18):
        make_image(root / "a" / f"{i}.png", seed=i)
        make_image(root / "b" / "sub" / f"{i}.png", seed=100 + i)
    os.symlink(".", root / "a" / "self")
    os.symlink("..", root / "a" / "up")
    os.symlink("..", root / "b" / "sub" / "back")
    d = load_data(root)
    assert len(d) == 36 and d.class_counts() == {"a": 18, "b": 18}
    assert _kinds(d) == {"link_loop": 3}
    assert sorted(os.path.relpath(s.item, root) for s in d.skipped) == ["a/self", "a/up", "b/sub/back"]


def test_class_left_too_small_after_skipping_says_how_many_went(tmp_path: Path, make_image) -> None:
    root = _two_classes(tmp_path / "d", make_image, n=2)
    (root / "b" / "0.jpg").write_bytes(b"")
    with pytest.raises(UserInputError, match=r"class 'b' \(1\) has fewer than 2 items after skipping 1 unusable "
                                             r"item\(s\) \(1 unreadable; e\.g\. '.*0\.jpg': empty file"):
        load_data(root)
    (root / "b" / "1.jpg").write_bytes(b"")
    with pytest.raises(UserInputError, match="fewer than 2 classes have items after skipping 2 unusable"):
        load_data(root)


def _csv(root: Path, rows: list[str]) -> Path:
    path = root / "data.csv"
    path.write_text("path,label,split\n" + "\n".join(rows) + "\n")
    return path


def test_csv_leakage_duplicates_and_conflicts(tmp_path: Path, make_image) -> None:
    root = tmp_path / "d"
    for i in range(6):
        make_image(root / "img" / f"{i}.png", seed=i)
    (root / "img" / "test_copy.png").write_bytes((root / "img" / "0.png").read_bytes())
    (root / "img" / "train_copy.png").write_bytes((root / "img" / "1.png").read_bytes())
    d = load_data(_csv(root, [
        "img/test_copy.png,x,test",   # listed first, but the train copy stays: later splits go
        "img/0.png,x,train", "img/1.png,x,train", "img/train_copy.png,x,train", "img/2.png,y,train",
        "img/3.png,y,val", "img/4.png,x,val", "img/4.png,y,train",   # one file, two labels: both rows go
        "img/5.png,y,test",
    ]))
    assert _kinds(d) == {"duplicate": 1, "conflict": 2, "leakage": 1}
    by_kind = {s.kind: os.path.basename(s.item) for s in d.skipped}
    assert by_kind == {"leakage": "test_copy.png", "duplicate": "train_copy.png", "conflict": "4.png"}
    leak = next(s for s in d.skipped if s.kind == "leakage")
    assert "test copy of the train item" in leak.reason and leak.reason.endswith("0.png' (same content): it would "
                                                                                 "leak between splits")
    assert d.split.tolist() == ["train", "train", "train", "val", "test"]
    assert [os.path.basename(p) for p in d.items] == ["0.png", "1.png", "2.png", "3.png", "5.png"]


def test_csv_paths_outside_its_folder_are_skipped(tmp_path: Path, make_image) -> None:
    root = _two_classes(tmp_path / "d", make_image)
    outside = make_image(tmp_path / "secret" / "s.png", seed=77)
    os.symlink(outside, root / "a" / "link.png")
    absolute = make_image(tmp_path / "other" / "o.png", seed=78)
    rows = [f"a/{i}.png,a,train" for i in range(3)] + [f"b/{i}.jpg,b,train" for i in range(3)]
    d = load_data(_csv(root, rows + ["../../etc/passwd.png,a,train", "a/link.png,b,train", f"{absolute},b,val"]))
    assert _kinds(d) == {"outside_root": 2} and len(d) == 7 and str(absolute) in d.items
    assert "row 7 (line 8): '../../etc/passwd.png' leads outside the CSV's folder" in d.skipped[0].reason
    assert os.path.basename(d.skipped[1].item) == "link.png"
    with pytest.raises(UserInputError, match=r"2 item\(s\) cannot be used \(2 outside root\).*passwd\.png"):
        load_data(root / "data.csv", strict=True)



def test_csv_file_problems_are_skipped_like_folder_ones(tmp_path: Path, make_image) -> None:
    root = _two_classes(tmp_path / "d", make_image)
    (root / "a" / "cut.png").write_bytes((root / "a" / "0.png").read_bytes()[:60])
    _png_header(root / "b" / "huge.png", 10_000, 10_000)
    (root / "b" / "empty.jpg").write_bytes(b"")
    (root / "b" / "dup.png").write_bytes((root / "a" / "1.png").read_bytes())  # same content, other label
    rows = [f"a/{i}.png,a,train" for i in range(3)] + [f"b/{i}.jpg,b,train" for i in range(3)]
    d = load_data(_csv(root, rows + ["a/cut.png,a,val", "b/huge.png,b,val", "b/empty.jpg,b,val", "b/dup.png,b,val"]))
    assert _kinds(d) == {"truncated": 1, "unreadable": 1, "conflict": 2, "too_large": 1}
    assert len(d) == 5 and d.class_counts() == {"a": 2, "b": 3}
