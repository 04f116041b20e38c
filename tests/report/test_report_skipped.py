"""The report's "Skipped items" section: counts, up to 20 items listed, the rest pointed to data.json."""
from __future__ import annotations

import json
from pathlib import Path

from autotransfer.report import render_report


def _run_dir(tmp_path: Path, skipped: list[dict], counts: dict[str, int]) -> Path:
    data = {"source": "image folder x", "num_items": 10, "num_classes": 2, "class_names": ["a", "b"],
            "class_counts": {"a": 5, "b": 5}, "modality": "image", "skipped": skipped, "skipped_counts": counts}
    (tmp_path / "data.json").write_text(json.dumps(data))
    return tmp_path


def test_skipped_items_section_lists_twenty_and_counts(tmp_path: Path) -> None:
    skipped = [{"item": f"/d/a/{i}<x>.png", "reason": "truncated PNG (no IEND chunk)", "kind": "truncated"}
               for i in range(24)] + [{"item": "/d/b/loop", "reason": "link loop", "kind": "link_loop"}]
    html = render_report(_run_dir(tmp_path, skipped, {"truncated": 24, "link_loop": 1})).read_text()
    assert "Skipped items" in html and "25 items left out of the run (24 truncated, 1 link loop)" in html
    assert "/d/a/19&lt;x&gt;.png" in html and "/d/a/20&lt;x&gt;.png" not in html  # escaped, 20 listed
    assert "and 5 more in data.json" in html


def test_no_section_without_skips(tmp_path: Path) -> None:
    assert "Skipped items" not in render_report(_run_dir(tmp_path, [], {})).read_text()
