"""Behaviour unchanged by a reorganisation (issue 30): a fixed-seed run matches the files recorded
before it (``python -m tests.golden.harness`` records them)."""
from __future__ import annotations

import json

import pytest
from harness import HERE, TUNERS, differences, run_golden, snapshot

pytestmark = pytest.mark.slow  # end-to-end runs on both tuner backends


@pytest.mark.parametrize("tuner", TUNERS)
def test_fixed_seed_run_matches_the_recorded_one(tuner, tiny_modules, pattern_folder, tmp_path):
    want = json.loads((HERE / f"{tuner}.json").read_text())
    got = snapshot(run_golden(tiny_modules, pattern_folder, tmp_path / "run", tuner))
    diff = differences(json.loads(json.dumps(got)), want)
    assert not diff, "\n".join(diff[:20])
