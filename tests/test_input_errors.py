"""Bad inputs get one line before any heavy work: search-space keys, YAML syntax, --seed, CLI flag names."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from autotransfer.config import RunConfig, load_search_space
from autotransfer.errors import ParamError, UserInputError


def _space(tmp_path, text: str):
    path = tmp_path / "my_space.yaml"
    path.write_text(text)
    return path


def test_misspelt_candidate_keys_are_rejected_with_did_you_mean(tmp_path):
    path = _space(tmp_path, "candidates:\n  - {name: a, handle: /x, input_size: 8}\n"
                            "  - {name: b, handle: /y, input_size: 8, clasifier_handle: /z, layres: [final]}\n")
    with pytest.raises(UserInputError) as info:
        load_search_space(path)
    msg = str(info.value)
    assert str(path) in msg and "candidates[1] (candidate 'b')" in msg and "\n" not in msg
    assert "'clasifier_handle' (did you mean 'classifier_handle'?)" in msg
    assert "'layres' (did you mean 'layers'?)" in msg


def test_unknown_top_level_key_suggests_the_right_one(tmp_path):
    with pytest.raises(UserInputError, match=r"my_space.yaml: unknown key 'candidtes' \(did you mean 'candidates'\?\)"):
        load_search_space(_space(tmp_path, "candidtes: []\n"))


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = _space(tmp_path, "name: x\ncandidates:\n  - name: a\n   handle: /x\n")
    with pytest.raises(UserInputError, match=r"my_space.yaml: line 4, column 4: not valid YAML \(") as info:
        load_search_space(path)
    assert "\n" not in str(info.value)


def test_round_trip_specs_keep_their_extra_keys(tmp_path):
    from autotransfer.backbones import BackboneSpec

    spec = BackboneSpec("c", "/x", 8, base="a", extra={"sources": ["a", "b"]})
    back = BackboneSpec.from_dict(spec.to_dict(), "probe.json")
    assert back == spec and back.base == "a" and back.extra == {"sources": ["a", "b"]}
    with pytest.raises(UserInputError, match="unknown keys 'base', 'sources'"):
        BackboneSpec.from_dict(spec.to_dict(), "space.yaml", strict=True)


@pytest.mark.parametrize("seed", [-5, 99_999_999_999, 2**32])
def test_seed_out_of_range_is_a_param_error(seed):
    with pytest.raises(ParamError, match=rf"The 'seed' parameter of autotransfer.run must be an integer in "
                                          rf"\[0, 4294967295\]. Got {seed} instead."):
        RunConfig(seed=seed).validate()
    RunConfig(seed=2**32 - 1).validate()


@pytest.mark.parametrize("args, message", [
    (["--seed", "-5"], "error: --seed must be an integer in [0, 4294967295]. Got -5 instead."),
    (["--seed", "99999999999", "--top-k", "2"], "error: --seed must be an integer in [0, 4294967295]. Got 99999999999"),
    (["--top-k", "0"], "error: --top-k must be an integer >= 1. Got 0 instead."),
])
@pytest.mark.slow
def test_cli_names_flags_and_creates_no_run_dir(args, message, pattern_folder, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "autotransfer.cli", "run", str(pattern_folder), "--out", str(out),
                           *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip() == message or proc.stderr.strip().startswith(message), proc.stderr
    assert "Traceback" not in proc.stderr and "parameter of" not in proc.stderr
    assert not out.exists()


def test_evaluate_model_on_no_items_does_not_crash():
    from autotransfer.data import load_data
    from autotransfer.evaluate import evaluate_model

    data = load_data((np.zeros((4, 8, 8, 3), np.uint8), np.array([0, 1, 0, 1])))
    m = evaluate_model(None, data, np.array([], np.int64), input_size=8)
    assert np.isnan(m["accuracy"]) and m["num_test"] == 0 and m["confusion_matrix"] == [[0, 0], [0, 0]]
