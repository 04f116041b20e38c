"""Every bad input of issue 13, through the CLI's own entry point: exit code, one message line, no traceback.

The cases run in-process (``cli.main()`` with ``sys.argv`` set), so the whole matrix costs seconds;
each fails before any heavy work. Runs that go on past per-item problems are in
``test_cli_skips.py``.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from autotransfer import cli
from autotransfer.testing import write_tiny_space


@pytest.fixture(scope="module")
def space(tiny_modules, tmp_path_factory) -> Path:
    return write_tiny_space(tmp_path_factory.mktemp("space") / "tiny.yaml", {"good": tiny_modules["good"]},
                            {"unfreeze_blocks": [0, 1], "learning_rate": [1.0e-3, 1.0e-2], "head_epochs": 2,
                             "max_epochs": 2, "patience": [1, 1], "batch_size": 16})


def _folder(root: Path, classes: dict[str, int], size: int = 16) -> Path:
    rng = np.random.default_rng(0)
    for name, n in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def _csv(root: Path, text: bytes | str) -> Path:
    _folder(root, {"a": 3, "b": 3})
    path = root / "data.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _text_csv(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "reviews.csv").write_text("review,label\n" + "".join(f"text number {i},{'ab'[i % 2]}\n" for i in range(6)))
    return root / "reviews.csv"


def _space_file(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "s.yaml").write_text(text)
    return root / "s.yaml"


def _earlier_run(root: Path) -> Path:
    (root / "out").mkdir(parents=True)
    (root / "out" / "config.json").write_text("{}")
    return root / "out"


# (case, argv builder given (tmp_path, space), message fragments). Each builder returns the argv after `autotransfer`.
Case = tuple[str, Callable[[Path, Path], list[str]], tuple[str, ...]]
CASES: list[Case] = [
    ("missing data dir", lambda t, s: ["run", str(t / "nope"), "--search-space", str(s)],
     ("does not exist", "Pass an image folder")),
    ("empty data dir", lambda t, s: (t / "e").mkdir() or ["run", str(t / "e"), "--search-space", str(s)],
     ("no class sub-folders",)),
    ("one class", lambda t, s: ["run", str(_folder(t / "d", {"a": 4})), "--search-space", str(s)],
     ("fewer than 2 classes", "add another class")),
    ("class with one image", lambda t, s: ["run", str(_folder(t / "d", {"a": 4, "b": 1})), "--search-space", str(s)],
     ("class 'b' has only 1 item",)),
    ("empty class folder", lambda t, s: (_folder(t / "d", {"a": 3}) / "b").mkdir() or
     ["run", str(t / "d"), "--search-space", str(s)], ("class folder 'b' has no images",)),
    ("CSV row with a missing file", lambda t, s: ["run", str(_csv(t / "c", "path,label\na/0.png,a\nnope.png,b\n")),
                                                   "--search-space", str(s)],
     ("row 2 (line 3): file 'nope.png' does not exist",)),
    ("CSV row that is no image type", lambda t, s: ["run", str(_csv(t / "c", "path,label\n../../etc/passwd,a\n")),
                                                     "--search-space", str(s)],
     ("row 1 (line 2): file '../../etc/passwd' is not a supported image type",)),
    ("CSV without a label column", lambda t, s: ["run", str(_csv(t / "c", "path,klass\na/0.png,a\n")),
                                                  "--search-space", str(s)],
     ("column 'label' is missing (found: path, klass)", "--label-column")),
    ("CSV that is not UTF-8", lambda t, s: ["run", str(_csv(t / "c", b"path,label\na/0.png,a\na/1.png,caf\xe9\n")),
                                             "--search-space", str(s)],
     ("line 3", "UTF-8")),
    ("CSV split value", lambda t, s: ["run", str(_csv(t / "c", "path,label,split\na/0.png,a,train\na/1.png,a,dev\n")),
                                       "--search-space", str(s)],
     ("row 2 (line 3): column 'split' is 'dev'", "train, val, test")),
    ("malformed YAML", lambda t, s: ["run", str(_folder(t / "d", {"a": 2, "b": 2})), "--search-space",
                                      str(_space_file(t / "y", "candidates:\n  - name: a\n   handle: /x\n"))],
     ("s.yaml: line 3, column 4: not valid YAML",)),
    ("misspelt candidate key", lambda t, s: ["run", str(_folder(t / "d", {"a": 2, "b": 2})), "--search-space",
                                              str(_space_file(t / "y", "candidates:\n  - {name: a, handle: /x, "
                                                              "input_size: 8, clasifier_handle: /y}\n"))],
     ("'clasifier_handle' (did you mean 'classifier_handle'?)",)),
    ("unknown top-level key", lambda t, s: ["run", str(_folder(t / "d", {"a": 2, "b": 2})), "--search-space",
                                             str(_space_file(t / "y", "candidtes: []\n"))],
     ("unknown key 'candidtes' (did you mean 'candidates'?)",)),
    ("unknown search space", lambda t, s: ["run", str(_folder(t / "d", {"a": 2, "b": 2})), "--search-space", "nope"],
     ("nope",)),
    ("seed below 0", lambda t, s: ["run", str(t), "--seed", "-5"], ("--seed must be an integer in [0, 4294967295]",)),
    ("seed above 2**32-1", lambda t, s: ["run", str(t), "--seed", "99999999999"], ("--seed must be an integer in",)),
    ("top-k 0", lambda t, s: ["run", str(t), "--top-k", "0"], ("--top-k must be an integer >= 1",)),
    ("budget 0s", lambda t, s: ["run", str(t), "--time-budget", "0s"], ("--time-budget must be a positive duration", "Got '0s'")),
    ("budget -5m", lambda t, s: ["run", str(t), "--time-budget", "-5m"], ("--time-budget must be a positive duration", "Got '-5m'")),
    ("budget abc", lambda t, s: ["run", str(t), "--time-budget", "abc"], ("--time-budget must be", "'20m'", "Got 'abc'")),
    ("budget 1s: no trial fits", lambda t, s: ["run", str(_folder(t / "d", {"a": 8, "b": 8})), "--search-space", str(s),
                                               "--time-budget", "1s", "--out", str(t / "out")],
     ("--time-budget 1s is too short", "plan.json")),
    ("--out is a file", lambda t, s: (t / "f").write_text("x") and ["run", str(_folder(t / "d", {"a": 2, "b": 2})),
                                                                   "--search-space", str(s), "--out", str(t / "f")],
     ("is a file, not a directory",)),
    ("--out holds an earlier run", lambda t, s: ["run", str(_folder(t / "d", {"a": 2, "b": 2})), "--search-space",
                                                  str(s), "--out", str(_earlier_run(t))],
     ("holds an earlier run", "--resume", "--overwrite")),
    ("--out holds other files", lambda t, s: (t / "o").mkdir() or (t / "o" / "notes.txt").write_text("x") and
     ["run", str(_folder(t / "d", {"a": 2, "b": 2})), "--search-space", str(s), "--out", str(t / "o")],
     ("is not empty and holds no autotransfer run",)),
    ("--resume with --overwrite", lambda t, s: ["run", str(t), "--out", str(t / "o"), "--resume", "--overwrite"],
     ("--resume continues the run in --out and --overwrite replaces it",)),
    ("--resume without --out", lambda t, s: ["run", str(t), "--resume"], ("--resume needs the run to continue",)),
    ("--storage with keras-tuner", lambda t, s: ["run", str(t), "--storage", "sqlite:///x.db", "--tuner", "keras-tuner"],
     ("optuna",)),
    ("text CSV with an image search space", lambda t, s: ["run", str(_text_csv(t / "c")), "--search-space", str(s),
                                                          "--out", str(t / "o")],
     ("CSV ", "reviews.csv holds text (6 items loaded)", "is for image: pass --search-space text-offline")),
    ("unknown search-space modality", lambda t, s: ["run", str(t), "--search-space", str(_space_file(
        t / "m", "modality: audio\ncandidates: [{name: a, handle: h}]\n"))],
     ("'modality' must be one of image, text", "Got 'audio'")),
    ("report on the data folder", lambda t, s: ["report", str(_folder(t / "d", {"a": 2, "b": 2}))],
     ("not a run directory",)),
]


AFTER_THE_PLAN = {"budget 1s: no trial fits"}


@pytest.mark.parametrize("case, argv, parts", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(case, argv, parts, space, tmp_path, monkeypatch, capsys):
    args = argv(tmp_path, space)
    monkeypatch.chdir(tmp_path)  # any generated run dir (reports/...) stays in tmp_path
    monkeypatch.setattr(sys, "argv", ["autotransfer", *args])
    with pytest.raises(SystemExit) as info:
        cli.main()
    out = capsys.readouterr().err.strip()
    assert info.value.code == 2, out
    lines = out.splitlines()
    # Only a run refused by its own plan has progress lines (the plan's) before its error.
    assert "Traceback" not in out, out
    assert len(lines) == 1 or case in AFTER_THE_PLAN, out
    err = lines[-1]
    assert err.startswith("error: ") and sum(line.startswith("error:") for line in lines) == 1, out
    for part in parts:
        assert part in err, f"{case}: {part!r} not in {err!r}"
