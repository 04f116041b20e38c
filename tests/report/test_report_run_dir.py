"""report.html from the ``fake_run`` directory (tests/report/conftest.py): content, formats, partial runs."""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from autotransfer.errors import UserInputError
from autotransfer.report import render_report
from autotransfer.report.context import load_context
from autotransfer.report.savedmodel import read_signatures
from autotransfer.evaluate.verdicts import verdict

CLASS_NAMES = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]  # == conftest.CLASS_NAMES
CANDIDATES = ["efficientnet_lite2", "efficientnet_lite1", "efficientnet_lite0", "mobilenet_v3_small"]

VOID = {"meta", "br", "hr", "img", "input", "link", "area", "base", "col", "embed", "source", "track", "wbr"}


class _TagBalance(HTMLParser):
    """Checks that non-void tags close in order (well-formed enough for browsers and diffing)."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        pass

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()


def _html(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_full_report_content(fake_run) -> None:
    run = fake_run()
    out = render_report(run)
    assert out == run / "report.html" and out.is_file()
    html = _html(out)
    assert "efficientnet_lite2" in html
    for name in CANDIDATES:
        assert name in html
    assert "fine-tuning beat the best linear probe by 3.7 pp" in html.lower()
    for name in CLASS_NAMES:
        assert name in html
    assert "93.4%" in html  # test accuracy as a percentage
    assert "4.65 M" in html  # params
    assert "120.4 s" in html  # trial seconds, one decimal
    assert "score_logme" in html.replace("score logme", "score_logme")
    assert "Incomplete run" not in html


def test_serving_section(fake_run) -> None:
    run = fake_run()
    html = _html(render_report(run))
    source = (run / "export" / "flowers").resolve().as_posix()
    assert f"source={source},target=/models/flowers" in html
    assert "-e MODEL_NAME=flowers tensorflow/serving" in html
    assert "/v1/models/flowers:predict" in html
    assert "serving_bytes" in html and "serving_default" in html
    assert "(?, 260, 260, 3)" in html  # signature shapes from autotransfer_export.json
    assert "export/flowers/3" in html  # latest version, not 1
    assert "__saved_model_init_op" not in html


def test_no_external_urls_and_well_formed(fake_run) -> None:
    html = _html(render_report(fake_run()))
    refs = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)|url\(\s*["']?([^"')]+)""", html, flags=re.I)
    for ref in (a or b for a, b in refs):
        assert ref.startswith("#"), ref
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html.lower()
    parser = _TagBalance()
    parser.feed(html)
    parser.close()
    assert not parser.errors and not parser.stack, (parser.errors[:5], parser.stack)


def test_partial_run_says_which_stages_missing(fake_run, tmp_path: Path) -> None:
    run = fake_run(files={"leaderboard.csv", "data.json"})
    out = render_report(run, out=tmp_path / "elsewhere" / "r.html")
    assert out == tmp_path / "elsewhere" / "r.html"
    html = _html(out)
    assert "Incomplete run" in html
    assert "the tune, evaluate, export stages did not run" in html
    assert "efficientnet_lite0" in html  # the probe section is still there
    ctx = load_context(run)
    assert ctx["missing_stages"] == ["tune", "evaluate", "export"]
    assert ctx["winner"] is None and ctx["probe_winner"] == "efficientnet_lite2"
    assert ctx["selected"] == []  # no trials.csv and no config.json top_k


def test_top_k_from_config_when_no_trials(fake_run) -> None:
    ctx = load_context(fake_run(files={"leaderboard.csv", "data.json", "config.json"}))
    assert ctx["selected"] == ["efficientnet_lite2", "efficientnet_lite1"]


def test_a_dir_without_run_files_is_refused_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / "cat.png").write_bytes(b"")  # e.g. the data folder
    with pytest.raises(UserInputError, match="is not a run directory: it holds none of the files a run writes"):
        render_report(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.png"]


def test_a_run_that_only_started_renders(fake_run) -> None:
    html = _html(render_report(fake_run(files={"config.json"})))
    assert "the data, probe, tune, evaluate, export stages did not run" in html


def test_missing_run_dir_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="does not exist"):
        render_report(tmp_path / "nope")


def test_escapes_malicious_class_names(fake_run) -> None:
    evil = ["<script>alert(1)</script>", 'a"b&c', "normal"]
    html = _html(render_report(fake_run(class_names=evil)))
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'a"b' not in html  # quotes escaped everywhere (attributes and SVG titles)


def test_verdict_when_finetuning_loses(fake_run) -> None:
    run = fake_run(finetune_beats_probe=False)
    html = _html(render_report(run))
    assert "did NOT beat the probe (87.1% vs 89.7%): likely because" in html
    ctx = load_context(run)
    assert ctx["verdict"]["beats"] is False and ctx["verdict"]["reasons"]
    assert ctx["verdict"]["diff_pp"] == pytest.approx(-2.59, abs=0.01)


def test_report_of_a_run_without_verdict_uses_the_runs_rules(fake_run) -> None:
    run = fake_run(finetune_beats_probe=False)
    data = json.loads((run / "data.json").read_text())
    data["split_sizes"]["train"] = 40 * data["num_classes"]  # 40/class: below the run's threshold (50)
    (run / "data.json").write_text(json.dumps(data))
    reasons = load_context(run)["verdict"]["reasons"]
    _, text = verdict(0.8712, 0.8971, num_test=10_000, train_per_class=40, unfreeze_blocks=3, trials_ok=4,
                      budget_hit=False, val_accuracy=0.938)
    assert reasons and all(r in text for r in reasons)
    assert any("~40 training images per class" in r for r in reasons)


def test_unreadable_json_is_a_warning_not_a_crash(fake_run) -> None:
    run = fake_run()
    (run / "timings.json").write_text("{not json", encoding="utf-8")
    html = _html(render_report(run))
    assert "timings.json could not be read" in html


def test_signature_reader_tolerates_missing_or_bad_metadata(tmp_path: Path) -> None:
    assert read_signatures(tmp_path) is None
    (tmp_path / "autotransfer_export.json").write_text("{not json", encoding="utf-8")
    assert read_signatures(tmp_path) is None
