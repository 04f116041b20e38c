"""A candidate that breaks the module contract becomes a failed leaderboard row; the rest go on."""
from __future__ import annotations

import pytest

from autotransfer.backbones import BackboneSpec, HubBackbone
from autotransfer.errors import BackboneError
from autotransfer.probe import probe
from autotransfer.testing import BROKEN_KINDS, write_broken_module

#: What each broken kind's failed row must say.
REASONS = {
    "nonfinite": "not finite (inf or NaN) for 64 of 64 items",
    "map": "returns shape [1, 4, 4, 3] for one image",
    "flat_input": "it takes float32 [None, 10]",
    "load_error": "tf.saved_model.load",
}


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("broken")
    return {kind: str(write_broken_module(root / kind, kind)) for kind in BROKEN_KINDS}


@pytest.mark.slow
@pytest.mark.parametrize("kind", BROKEN_KINDS)
def test_broken_candidate_is_a_failed_row_and_the_rest_are_ranked(kind, broken, tiny_modules, pattern_data):
    data, splits = pattern_data
    specs = [BackboneSpec(kind, broken[kind], 16), BackboneSpec("good", tiny_modules["good"], 16),
             BackboneSpec("bad", tiny_modules["bad"], 16)]
    board = probe(specs, data, splits, cache=False).leaderboard.set_index("name")
    status = board.loc[kind, "status"]
    assert status.startswith("failed: BackboneError: ") and REASONS[kind] in status, status
    assert "\n" not in status and len(status) < 400
    assert board.loc[["good", "bad"], "status"].tolist() == ["ok", "ok"]
    assert board.loc["good", "rank"] == 1 and board.loc[kind, "rank"] == 3  # failed rows last


def test_halving_fails_broken_candidates_in_their_first_rung(broken, tiny_modules, pattern_data):
    data, splits = pattern_data
    specs = [BackboneSpec(k, broken[k], 16) for k in BROKEN_KINDS] + [BackboneSpec("good", tiny_modules["good"], 16)]
    board = probe(specs, data, splits, cache=False, halving=True, min_per_class=2, top_k=1).leaderboard
    assert board.iloc[0]["name"] == "good" and board.iloc[0]["status"] == "ok"
    failed = board.set_index("name").loc[list(BROKEN_KINDS), "status"]
    assert all(s.startswith("failed: ") for s in failed), failed.tolist()
    assert "not finite" in failed["nonfinite"]


def test_nonfinite_features_are_never_cached(broken, pattern_data, tmp_path):
    data, splits = pattern_data
    specs = [BackboneSpec("nonfinite", broken["nonfinite"], 16), BackboneSpec("bad", broken["map"], 16)]
    with pytest.raises(BackboneError):
        probe(specs, data, splits, cache_dir=tmp_path)
    assert not list(tmp_path.rglob("*.npz")) and not list(tmp_path.rglob("*.npy"))


def test_every_candidate_failing_is_one_line_naming_each(broken, pattern_data):
    data, splits = pattern_data
    specs = [BackboneSpec(k, broken[k], 16) for k in BROKEN_KINDS]
    with pytest.raises(BackboneError) as info:
        probe(specs, data, splits, cache=False)
    message = str(info.value)
    assert message.startswith("probe: every candidate failed (") and "\n" not in message
    for kind in BROKEN_KINDS:
        assert f"{kind}: BackboneError" in message and REASONS[kind] in message


def test_contract_is_checked_when_the_layer_loads(broken):
    with pytest.raises(BackboneError, match=r"returns shape \[1, 4, 4, 3\]"):
        HubBackbone(broken["map"])
    with pytest.raises(BackboneError) as info:
        HubBackbone(broken["flat_input"], input_size=16)
    assert "\n" not in str(info.value) and "[1, 16, 16, 3]" in str(info.value)
    assert HubBackbone(broken["nonfinite"]).output_dim == 8  # finite on zeros: caught on real data
