"""Exports are atomic: a reader never sees a partial version, a killed export is no export and is cleaned up."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import keras
import pytest

from autotransfer.export.saved_model import export_model, remove_stale_exports
from autotransfer.locks import try_lock, unlock
from autotransfer.report import render_report
from autotransfer.report.context import load_context

pytestmark = pytest.mark.slow  # export subprocesses killed mid-write

pytest.importorskip("tensorflow_serving.apis.predict_pb2")

CLASSES = ["a", "b"]
SIZE = 8


def _model() -> keras.Model:
    inp = keras.Input((SIZE, SIZE, 3))
    return keras.Model(inp, keras.layers.Dense(len(CLASSES), activation="softmax")(keras.layers.Flatten()(inp)))


def _complete(version_dir: Path) -> bool:
    return ((version_dir / "saved_model.pb").is_file() and (version_dir / "variables" / "variables.index").is_file()
            and (version_dir / "assets" / "labels.txt").is_file() and (version_dir / "autotransfer_export.json").is_file())


def test_a_concurrent_reader_never_sees_a_partial_version(tmp_path):
    model_dir = tmp_path / "export" / "m"
    seen_partial, seen_tmp, done = [], set(), threading.Event()

    def poll() -> None:  # as TF Serving's file-system source polls the model dir
        while not done.is_set():
            for p in list(model_dir.iterdir()) if model_dir.is_dir() else []:
                if p.name.isdigit() and not _complete(p):
                    seen_partial.append(p.name)
                elif p.name.startswith(".tmp-"):
                    seen_tmp.add(p.name)

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        paths = [export_model(_model(), class_names=CLASSES, input_size=SIZE, export_dir=tmp_path / "export",
                              model_name="m", verify=False) for _ in range(2)]
    finally:
        done.set()
        reader.join()
    assert [p.name for p in paths] == ["1", "2"] and all(_complete(p) for p in paths)
    assert seen_tmp  # the reader did run while versions were being written
    assert seen_partial == []
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "2"]  # no temporary directory or lock left


def test_a_killed_export_shows_no_export_and_the_next_removes_it(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "data.json").write_text(json.dumps({"class_names": CLASSES, "num_classes": 2}))
    # An export SIGKILLed after writing the SavedModel, while verifying it (the slowest part).
    script = textwrap.dedent(f"""
        import time, keras
        import autotransfer.export.saved_model as sm
        def hang(*args, **kwargs):
            print("verifying", flush=True)
            time.sleep(600)
        sm._verify = hang
        inp = keras.Input(({SIZE}, {SIZE}, 3))
        model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inp)))
        sm.export_model(model, class_names={CLASSES!r}, input_size={SIZE}, export_dir={str(run_dir / "export")!r},
                        model_name="m")
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "verifying", proc.stderr.read()[-2000:]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    model_dir = run_dir / "export" / "m"
    left = sorted(p.name for p in model_dir.iterdir())
    assert len(left) == 2 and left[0].startswith(".tmp-1-") and left[1] == left[0] + ".lock"
    assert (model_dir / left[0] / "saved_model.pb").is_file()  # as complete as it got, but never renamed

    html = render_report(run_dir).read_text()
    ctx = load_context(run_dir)
    assert ctx["export"] is None and "export" in ctx["missing_stages"]
    assert ".tmp-" not in html and "docker run" not in html

    live = model_dir / ".tmp-9-running"  # an export in progress elsewhere holds its lock: left alone
    live.mkdir()
    fd = try_lock(model_dir / ".tmp-9-running.lock")
    try:
        path = export_model(_model(), class_names=CLASSES, input_size=SIZE, export_dir=run_dir / "export",
                            model_name="m", verify=False)
        assert path.name == "1" and _complete(path)
        assert sorted(p.name for p in model_dir.iterdir()) == [".tmp-9-running", ".tmp-9-running.lock", "1"]
    finally:
        unlock(fd)
    assert remove_stale_exports(model_dir) == [".tmp-9-running"]  # its holder is gone now
    html = render_report(run_dir).read_text()
    assert load_context(run_dir)["export"]["version"] == "1" and ".tmp-" not in html
