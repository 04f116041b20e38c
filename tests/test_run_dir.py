"""One run per run directory: the lock, --resume/--overwrite for an earlier run, `report` on other folders."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from autotransfer.errors import UserInputError
from autotransfer.locks import read_holder
from autotransfer.rundir import LOCK_FILE, RunDirLock
from autotransfer.testing import write_tiny_space

pytestmark = pytest.mark.slow  # end-to-end runs

CLI = [sys.executable, "-m", "autotransfer.cli"]


@pytest.fixture(scope="module")
def space(tiny_modules, tmp_path_factory):
    return write_tiny_space(tmp_path_factory.mktemp("space") / "tiny.yaml", {"good": tiny_modules["good"]},
                            {"unfreeze_blocks": [0, 1], "learning_rate": [1.0e-3, 1.0e-2], "head_epochs": 2,
                             "max_epochs": 2, "patience": [1, 1], "batch_size": 16})


def _run(folder: Path, space: Path, out: Path, *extra: str, trials: int = 2) -> list[str]:
    return [*CLI, "run", str(folder), "--search-space", str(space), "--out", str(out), "--max-trials", str(trials),
            "--top-k", "1", "--ensemble", "1", "--no-tta", *extra]


def _one_line_error(proc: subprocess.CompletedProcess, *parts: str) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for part in parts:
        assert part in proc.stderr, proc.stderr
    return proc.stderr.strip()


def _snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_a_held_run_dir_is_refused_naming_the_holder_and_freed_when_it_dies(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from autotransfer.rundir import RunDirLock
        RunDirLock.claim({str(out)!r})
        print("held", flush=True)
        time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserInputError, match=rf"--out {out} is in use by another autotransfer run: .+:{holder.pid} "
                                                 r"\(started "):
            RunDirLock.claim(out)
        assert f":{holder.pid} " in read_holder(out / LOCK_FILE)
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: the kernel drops its lock
        holder.wait(timeout=30)
    with RunDirLock.claim(out) as claim:
        assert f":{os.getpid()} " in read_holder(claim.run_dir / LOCK_FILE)


def test_an_earlier_run_needs_resume_or_overwrite(tmp_path):
    out = tmp_path / "run"
    (out / "trials" / "0").mkdir(parents=True)
    (out / "config.json").write_text("{}")
    (out / "trials" / "0" / "record.json").write_text("{}")
    (out / "data.json.tmp").write_text("")  # a half-written file of the old run
    before = _snapshot(out)
    with pytest.raises(UserInputError, match=r"holds an earlier run \(config.json, trials\)\. Continue it with "
                                             r"--resume, replace it with --overwrite"):
        RunDirLock.claim(out)
    assert _snapshot(out) == before  # nothing touched
    RunDirLock.claim(out, resume=True).release()  # check_resumable judges the rest
    with RunDirLock.claim(out, overwrite=True):
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # no stale file survives

    (out / "config.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserInputError, match=r"--overwrite: .* also holds files a run does not write \(notes.txt\); "
                                             "nothing was deleted"):
        RunDirLock.claim(out, overwrite=True)
    assert (out / "config.json").is_file() and (out / "notes.txt").is_file()
    other = tmp_path / "other"
    other.mkdir()
    (other / "photo.jpg").write_text("")
    with pytest.raises(UserInputError, match=r"is not empty and holds no autotransfer run \(photo.jpg\)"):
        RunDirLock.claim(other, overwrite=True)
    assert sorted(p.name for p in other.iterdir()) == ["photo.jpg"]


def test_empty_or_new_dirs_are_fine_and_a_refused_claim_leaves_nothing(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    RunDirLock.claim(empty).release()
    assert empty.is_dir() and not any(empty.iterdir())  # as it was
    new = tmp_path / "a" / "new"
    RunDirLock.claim(new).release()
    assert not new.exists()  # nothing was written into it, so it is gone again
    file = tmp_path / "file.txt"
    file.write_text("x")
    with pytest.raises(UserInputError, match=r"--out .*file.txt is a file, not a directory"):
        RunDirLock.claim(file)
    with pytest.raises(UserInputError, match="cannot create the run directory"):
        RunDirLock.claim(file / "run")


def test_resume_and_overwrite_contradict():
    from autotransfer.config import RunConfig

    with pytest.raises(UserInputError, match="pass one of them"):
        RunConfig(out="x", resume=True, overwrite=True).validate()


def test_cli_refuses_a_file_an_earlier_run_and_a_report_of_a_non_run_dir(space, pattern_folder, tmp_path):
    file = tmp_path / "out.txt"
    file.write_text("x")
    _one_line_error(subprocess.run(_run(pattern_folder, space, file), capture_output=True, text=True, timeout=300),
                    "error: --out ", "out.txt is a file, not a directory")
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "config.json").write_text("{}")
    (earlier / "leaderboard.csv").write_text("rank\n")
    before = _snapshot(earlier)
    _one_line_error(subprocess.run(_run(pattern_folder, space, earlier), capture_output=True, text=True, timeout=300),
                    "holds an earlier run", "--resume", "--overwrite")
    assert _snapshot(earlier) == before
    data_before = _snapshot(pattern_folder)
    _one_line_error(subprocess.run([*CLI, "report", str(pattern_folder)], capture_output=True, text=True, timeout=300),
                    "is not a run directory", "nothing was written there")
    assert _snapshot(pattern_folder) == data_before


def test_two_concurrent_runs_into_one_out(space, pattern_folder, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "AUTOTRANSFER_CACHE_DIR": str(tmp_path / "features")}
    # More trials than needed: the first must still be running when the second has started up.
    first = subprocess.Popen(_run(pattern_folder, space, out, "--seed", "0", trials=4), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 300
    while not read_holder(out / LOCK_FILE) and first.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    second = subprocess.run(_run(pattern_folder, space, out, "--seed", "1"), capture_output=True, text=True,
                            timeout=300, env=env)
    first_running = first.poll() is None
    _, first_err = first.communicate(timeout=600)
    _one_line_error(second, f"--out {out} is in use by another autotransfer run", f":{first.pid} (started ")
    assert first_running  # refused at once, not after waiting for the first
    assert first.returncode == 0, first_err[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert config["seed"] == 0  # the first run's files only
    assert [p.name for p in (out / "export").glob("*/*")] == ["1"] and (out / "report.html").is_file()
    assert f":{first.pid} " in read_holder(out / LOCK_FILE)  # the second did not even rewrite the lock file


def test_overwrite_replaces_a_whole_earlier_run(space, pattern_folder, tmp_path):
    import autotransfer

    out = tmp_path / "run"
    kw = dict(search_space=space, out=out, max_trials=1, top_k=1, ensemble=1, tta=False, progress=False)
    autotransfer.run(pattern_folder, seed=0, **kw)
    (out / "export" / "stale-model").mkdir()  # what only the earlier run had must not survive
    with pytest.raises(UserInputError, match="holds an earlier run"):
        autotransfer.run(pattern_folder, seed=1, **kw)
    res = autotransfer.run(pattern_folder, seed=1, overwrite=True, **kw)
    assert json.loads((out / "config.json").read_text())["seed"] == 1
    assert [p.relative_to(out / "export").as_posix() for p in (out / "export").glob("*/*")] == [
        f"{out.name}/1"] and res.export_path == out / "export" / out.name / "1"
