"""The run parameters have one source (autotransfer.params.PARAMS): the API, the command line and
RunConfig agree with it, and a parameter given on the command line reaches the stage that uses it."""
from __future__ import annotations

import dataclasses
import inspect
import io
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from autotransfer import api, cli
from autotransfer.config import RunConfig
from autotransfer.errors import ParamError
from autotransfer.params import BY_NAME, PARAMS
from autotransfer.testing import write_tiny_space

NOT_PARAMS = ("data", "labels", "progress")  # run()'s inputs besides the table: the data and a display switch


def test_api_run_takes_every_parameter_with_the_table_default():
    sig = inspect.signature(api.run)
    kwargs = {n: p.default for n, p in sig.parameters.items() if n not in NOT_PARAMS}
    assert list(kwargs) == [p.name for p in PARAMS]
    assert kwargs == {p.name: p.default for p in PARAMS}
    for p in PARAMS:  # documented in run()'s docstring
        assert f"``{p.name}``" in api.run.__doc__, p.name


def test_cli_options_are_the_table_with_its_defaults_flags_and_help():
    options = {n: p.default for n, p in inspect.signature(cli.run_cmd).parameters.items() if n != "data"}
    assert list(options) == [p.name for p in PARAMS]
    for p in PARAMS:
        info = options[p.name]
        assert info.default == p.default and info.help == p.help, p.name
        assert list(info.param_decls) == [f for f in (p.flag, p.short) if f], p.name


def test_run_config_fields_take_the_table_defaults():
    fields = {f.name: f.default for f in dataclasses.fields(RunConfig)}
    for p in PARAMS:
        if p.name not in api._RESOLVED:
            assert fields[p.name] == p.default, p.name
    RunConfig().validate()  # the defaults pass their own constraints


@pytest.mark.parametrize("name", [p.name for p in PARAMS if p.check is not None])
def test_a_value_outside_the_constraint_is_one_param_error(name):
    with pytest.raises(ParamError) as info:  # "": no number, switch, choice or column name
        dataclasses.replace(RunConfig(), **{name: ""}).validate()
    assert info.value.name == name and BY_NAME[name].expect in str(info.value)


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.slow
def test_max_pixels_reaches_serving_bytes_through_the_cli(tiny_modules, pattern_folder, tmp_path):
    space = write_tiny_space(tmp_path / "tiny.yaml", {"good": tiny_modules["good"]},
                             {"unfreeze_blocks": [0, 0], "learning_rate": [1.0e-3, 1.0e-2], "head_epochs": 2,
                              "max_epochs": 1, "patience": [1, 1], "batch_size": 16})
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "autotransfer.cli", "run", str(pattern_folder), "--search-space",
                           str(space), "--out", str(out), "--max-trials", "1", "--max-pixels", "256"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    export = next(p.parent for p in (out / "export").rglob("saved_model.pb"))
    serve = tf.saved_model.load(str(export)).signatures["serving_bytes"]
    assert serve(image_bytes=tf.constant([_png(16, 16)]))["label"].shape == (1,)  # 256 px: at the limit
    with pytest.raises(tf.errors.InvalidArgumentError, match="over the limit of 256 pixels"):
        serve(image_bytes=tf.constant([_png(17, 16)]))


def test_readme_lists_every_option_from_the_table():
    from pathlib import Path

    from autotransfer.params import markdown

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- options:start -->\n")[1].split("<!-- options:end -->")[0]
    assert block == markdown(), "README options out of date: python -m autotransfer.params prints them"
