"""Run settings are checked before launch, with messages naming the flag; run ids never become paths."""
from __future__ import annotations

import subprocess
import sys

import pytest

from dropviz.train import ConfigError, RunConfig, check_run_id, run_dir
from dropviz.train.__main__ import config_from_args, parser


def test_defaults_are_valid():
    RunConfig().validate()


@pytest.mark.parametrize("changes, message", [
    ({"model": "vgg"}, "--model must be one of"),
    ({"epochs": 0}, "--epochs must be an integer >= 1"),
    ({"lr": -1.0}, "--lr must be a number in"),
    ({"batch_size": 2.5}, "--batch-size must be an integer"),
    ({"dataset": "imagefolder"}, "needs --data-dir"),
    ({"params": {"drop_prob": 0.2}}, "--drop-prob needs a --regularizer"),
    ({"regularizer": "dropblock", "params": {"drop_prob": 1.5}}, r"--drop-prob must be in \[0.0, 0.95\]"),
    ({"regularizer": "dropblock", "params": {"n_clusters": 3}}, "--n-clusters does not apply to dropblock"),
    ({"regularizer": "dropblock", "params": {"block_size": 2.5}}, "--block-size must be an integer"),
    ({"regularizer": "magic"}, "--regularizer must be one of"),
])
def test_invalid_settings_are_refused_naming_the_flag(changes, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(**changes).validate()


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as info:
        RunConfig(epochs=0, lr=0.0).validate()
    assert "--epochs" in str(info.value) and "--lr" in str(info.value)


def test_cli_flags_become_the_config():
    args = parser().parse_args(["--regularizer", "dropblock", "--drop-prob", "0.2", "--block-size", "3",
                                "--share-channels", "true", "--limit-train", "100"])
    config = config_from_args(args)
    assert config.params == {"drop_prob": 0.2, "block_size": 3, "share_channels": True}
    assert config.limit_train == 100 and config.validate() is config


def test_cli_refuses_invalid_launches_with_a_message_not_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "dropviz.train", "--regularizer", "disout", "--n-clusters", "4",
                             "--runs-dir", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "--n-clusters does not apply to disout" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs.sqlite").exists()  # refused before any run was registered


@pytest.mark.parametrize("bad", ["../etc", "20261122-220630-3fa9c1/../../x", "20261122-220630-3FA9C1", "",
                                 None, "20261122-220630-3fa9c1\n", "/tmp/20261122-220630-3fa9c1"])
def test_run_ids_are_validated_before_touching_a_path(tmp_path, bad):
    with pytest.raises(ValueError, match="not a run id"):
        run_dir(tmp_path, bad)


def test_valid_run_id():
    assert check_run_id("20261122-220630-3fa9c1") == "20261122-220630-3fa9c1"
