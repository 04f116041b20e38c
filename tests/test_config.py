from __future__ import annotations

import pytest

from autotransfer.config import RunConfig, builtin_spaces, load_search_space, parse_duration
from autotransfer.errors import UserInputError


def _write(tmp_path, text: str):
    p = tmp_path / "space.yaml"
    p.write_text(text)
    return p


def test_parse_duration():
    assert parse_duration("20m") == 1200
    assert parse_duration("1.5h") == 5400
    assert parse_duration("90") == 90
    assert parse_duration(None) is None
    with pytest.raises(UserInputError, match="must be a positive duration"):
        parse_duration("soon")
    with pytest.raises(UserInputError, match="positive"):
        parse_duration(0)


def test_builtin_spaces_load():
    assert {"offline", "online"} <= set(builtin_spaces())
    space = load_search_space("offline")
    assert [c.name for c in space.candidates] == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    assert all(c.handle.startswith("zoo://") for c in space.candidates)
    online = load_search_space("online")
    assert all(c.handle.startswith("https://") for c in online.candidates)


def test_search_space_errors_name_the_field(tmp_path):
    with pytest.raises(UserInputError, match="candidates"):
        load_search_space(_write(tmp_path, "name: x\n"))
    with pytest.raises(UserInputError, match=r"candidates\[0\].*input_size"):
        load_search_space(_write(tmp_path, "candidates:\n  - {name: a, handle: /x}\n"))
    with pytest.raises(UserInputError, match="unique"):
        load_search_space(_write(tmp_path, "candidates:\n  - {name: a, handle: /x, input_size: 8}\n  - {name: a, handle: /y, input_size: 8}\n"))
    with pytest.raises(UserInputError, match="unknown key"):
        load_search_space(_write(tmp_path, "candidate: []\n"))
    with pytest.raises(UserInputError, match="not valid YAML"):
        load_search_space(_write(tmp_path, "candidates: [\n"))
    with pytest.raises(UserInputError, match="neither a YAML file nor a built-in"):
        load_search_space("no-such-space")


def test_run_config_validation_messages():
    RunConfig().validate()
    with pytest.raises(UserInputError, match="The 'tuner' parameter of autotransfer.run must be one of keras-tuner, optuna. Got 'grid' instead."):
        RunConfig(tuner="grid").validate()
    with pytest.raises(UserInputError, match="'top_k'.*>= 1"):
        RunConfig(top_k=0).validate()
    with pytest.raises(UserInputError, match="'scorer'"):
        RunConfig(scorer="magic").validate()
    RunConfig(feature_batch_size=64).validate()
    with pytest.raises(UserInputError, match="'feature_batch_size'.*None for automatic"):
        RunConfig(feature_batch_size=0).validate()


def test_layers_and_sizes_expand_into_candidates(tmp_path):
    space = load_search_space(_write(tmp_path, (
        "candidates:\n"
        "  - {name: a, handle: /x, input_size: 32, layers: [final, block_01], input_sizes: [32, 16]}\n"
        "  - {name: b, handle: /y, input_size: 8}\n")))
    names = [c.name for c in space.expanded()]
    assert names == ["a", "a@16", "a@block_01", "a@block_01@16", "b"]
    by_name = {c.name: c for c in space.expanded()}
    assert by_name["a@block_01@16"].layer == "block_01" and by_name["a@block_01@16"].input_size == 16
    assert by_name["a"].layer is None and by_name["a@16"].base == "a"
    with pytest.raises(UserInputError, match="input_sizes"):
        load_search_space(_write(tmp_path, "candidates:\n  - {name: a, handle: /x, input_size: 32, input_sizes: [4]}\n"))


def test_text_online_space_loads_offline_with_its_bert_pairs(monkeypatch):
    from autotransfer.backbones import BackboneSpec, sources

    def no_network(handle):
        raise AssertionError(f"loading a search space resolved {handle}")

    for scheme in ("http", "https"):
        monkeypatch.setitem(sources._SOURCES, scheme, no_network)
    assert "text-online" in builtin_spaces()
    space = load_search_space("text-online")
    assert space.modality == "text"
    assert [c.name for c in space.candidates] == ["nnlm_en_dim50", "universal_sentence_encoder",
                                                  "small_bert_L4_H512", "electra_small"]
    assert all(c.handle.startswith("https://tfhub.dev/") and c.input_size == 0 for c in space.candidates)
    pre = "https://tfhub.dev/tensorflow/bert_en_uncased_preprocess/3"
    assert {c.name: c.preprocess_handle for c in space.candidates if c.is_pair} == {
        "small_bert_L4_H512": pre, "electra_small": pre}
    assert space.tuning.unfreeze_blocks == (0, 2) and space.tuning.head_warmup == "probe"
    # config.json keeps the pairs
    assert [BackboneSpec.from_dict(d, "config.json") for d in space.to_dict()["candidates"]] == space.candidates


def test_a_pair_in_an_image_space_is_one_line_naming_the_fix(tmp_path):
    text = ("candidates:\n  - {name: bert, handle: /enc, preprocess_handle: /pre, input_size: 224}\n")
    with pytest.raises(UserInputError, match=r"candidates\[0\]: 'preprocess_handle' of candidate 'bert'.*"
                                             r"'modality: text'"):
        load_search_space(_write(tmp_path, text))
    with pytest.raises(UserInputError, match="unknown key 'preprocess' \\(did you mean 'preprocess_handle'\\?\\)"):
        load_search_space(_write(tmp_path, "modality: text\ncandidates:\n  - {name: b, handle: /e, preprocess: /p}\n"))
