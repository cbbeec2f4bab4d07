"""Run settings are checked before launch, with messages naming the flag; run ids never become paths."""
from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys

import pytest
from PIL import Image

from dropviz.train import ConfigError, JobManager, RunConfig, RunsDB, check_run_id, run_dir, train_run
from dropviz.train.__main__ import config_from_args, main, parser
from dropviz.train.config import datasets_present, flag


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
    ({"regularizer": "dropcluster", "dropcluster_after": "stage4"},
     "--dropcluster-after must be one of stem, stage1, stage2, stage3 for resnet20; got 'stage4'"),
    ({"regularizer": "dropcluster", "dropcluster_after": None}, "--dropcluster-after must be one of"),
    ({"regularizer": "dropblock", "dropcluster_after": "stage2"},
     "--dropcluster-after applies only to --regularizer dropcluster; got 'stage2' with dropblock"),
    ({"dropcluster_after": "stage1"}, "--dropcluster-after applies only to --regularizer dropcluster"),
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
                                "--share-channels", "true", "--limit-train", "1000"])
    config = config_from_args(args)
    assert config.params == {"drop_prob": 0.2, "block_size": 3, "share_channels": True}
    assert config.limit_train == 1000 and config.validate() is config
    assert not config.compile and config_from_args(parser().parse_args(["--compile"])).validate().compile


def test_compile_is_true_or_false_and_old_configs_load_without_it():
    with pytest.raises(ConfigError, match="--compile must be true or false"):
        RunConfig(compile="yes").validate()
    old = dataclasses.asdict(RunConfig())
    del old["compile"]
    assert RunConfig.from_dict(old).compile is False


def test_dropcluster_may_sit_after_any_stage_of_the_model():
    RunConfig(model="resnet18", regularizer="dropcluster", dropcluster_after="stage4").validate()
    args = parser().parse_args(["--regularizer", "dropcluster", "--dropcluster-after", "stage2"])
    assert config_from_args(args).validate().dropcluster_after == "stage2"
    assert config_from_args(parser().parse_args([])).dropcluster_after == "stem"


def test_a_stored_config_from_before_the_dropcluster_place_loads_with_the_stem():
    old = dataclasses.asdict(RunConfig(regularizer="dropcluster"))
    del old["dropcluster_after"]
    assert RunConfig.from_dict(json.loads(json.dumps(old))).validate().dropcluster_after == "stem"


def test_cli_refuses_a_dropcluster_place_the_model_lacks_before_launch(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("signal.signal", lambda *args: None)  # main() sets a SIGTERM handler: not in pytest
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", "resnet56", "--regularizer", "dropcluster", "--dropcluster-after", "stage4",
              "--runs-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "--dropcluster-after must be one of stem, stage1, stage2, stage3 for resnet56" in capsys.readouterr().err
    assert not (tmp_path / "runs.sqlite").exists()


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


def image_folder(root, train_classes, test_classes, per_class: int = 2):
    """An imagefolder dataset of blank 32x32 PNGs under ``root``: ``train/<class>/`` and ``test/<class>/``."""
    for split, classes in (("train", train_classes), ("test", test_classes)):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (32, 32)).save(root / split / name / f"{i}.png")
    return root


@pytest.mark.parametrize("test_classes, message", [
    (("cat", "frog"), r"test/ lacks dog\b"),
    (("cat", "dog", "frog", "horse", "ship"), r"test/ has horse, ship, which train/ lacks"),
])
def test_imagefolder_test_classes_must_be_those_of_train(tmp_path, capsys, monkeypatch, test_classes, message):
    """Labels are numbered by train/'s classes: a test/ without one would shift every later label silently (and a
    wrong accuracy be reported), one with more would crash after the first epoch."""
    data = image_folder(tmp_path / "data", ("cat", "dog", "frog"), test_classes)
    manager = JobManager(tmp_path / "dashboard")
    with pytest.raises(ConfigError, match=message):  # what the Training page shows as "Not launched"
        manager.launch(RunConfig(dataset="imagefolder", data_dir=str(data)))
    assert manager.runs() == []
    monkeypatch.setattr("signal.signal", lambda *args: None)  # main() sets a SIGTERM handler: not in pytest
    with pytest.raises(SystemExit) as exit_info:
        main(["--dataset", "imagefolder", "--data-dir", str(data), "--runs-dir", str(tmp_path / "runs")])
    assert exit_info.value.code == 2 and "class folders of train/" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "runs.sqlite").exists()


def test_imagefolder_classes_changed_after_the_launch_fail_the_run_with_the_message(tmp_path):
    data = image_folder(tmp_path / "data", ("cat", "dog"), ("cat", "dog"))
    run_id = RunsDB(tmp_path).create_run(RunConfig(dataset="imagefolder", data_dir=str(data), epochs=1,
                                                   batch_size=2, device="cpu").validate())
    (data / "test" / "dog").rename(data / "test" / "horse")
    assert train_run(tmp_path, run_id, progress=False) == "failed"
    assert "test/ lacks dog; test/ has horse" in RunsDB(tmp_path).run(run_id)["error"]


@pytest.fixture
def cli(monkeypatch, capsys):
    """``cli(*args)``: main()'s exit code and what it wrote to stderr; refusals exit through argparse."""
    monkeypatch.setattr("signal.signal", lambda *args: None)  # main() sets a SIGTERM handler: not in pytest

    def run(*args: str) -> tuple[int, str]:
        try:
            code = main(list(args))
        except SystemExit as exit_info:
            code = exit_info.code
        return code, capsys.readouterr().err
    return run


def test_resume_of_an_empty_run_id_is_refused_not_a_new_run(tmp_path, cli):
    code, err = cli("--resume", "", "--runs-dir", str(tmp_path / "runs"))
    assert code == 2 and "not a run id" in err and not (tmp_path / "runs").exists()


def test_resume_refuses_settings_it_would_ignore(tmp_path, cli):
    run_id = RunsDB(tmp_path).create_run(RunConfig(dataset="digits", epochs=1), status="failed")
    code, err = cli("--resume", run_id, "--runs-dir", str(tmp_path), "--epochs", "5", "--lr=0.5", "--no-progress")
    assert code == 2 and "--epochs, --lr cannot be given with it" in err
    assert RunsDB(tmp_path).run(run_id)["status"] == "failed"


def test_resume_in_a_runs_dir_without_a_database_creates_nothing(tmp_path, cli):
    code, err = cli("--resume", "20261122-220630-3fa9c1", "--runs-dir", str(tmp_path / "none"))
    assert code == 2 and "no run 20261122-220630-3fa9c1" in err and not (tmp_path / "none").exists()


def test_a_runs_dir_that_is_a_file_is_refused_with_a_message(tmp_path, cli):
    (tmp_path / "afile").write_text("")
    for args in (["--dataset", "digits"], ["--resume", "20261122-220630-3fa9c1"]):
        code, err = cli(*args, "--runs-dir", str(tmp_path / "afile"))
        assert code == 2 and "is a file, not a folder" in err and "Traceback" not in err


def test_resume_checks_the_stored_settings_here_and_may_change_the_device(tmp_path, cli, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    tiny = dict(dataset="digits", epochs=1, limit_train=64, limit_test=32, batch_size=32)
    run_id = RunsDB(tmp_path).create_run(RunConfig(device="cuda", **tiny), status="failed")  # from a GPU machine
    code, err = cli("--resume", run_id, "--runs-dir", str(tmp_path))
    assert code == 2 and f"run {run_id} cannot continue here: --device cuda" in err and "Traceback" not in err
    with pytest.raises(ConfigError, match="CUDA is not available"):  # the Training page's Resume
        JobManager(tmp_path).resume(run_id)
    assert RunsDB(tmp_path).run(run_id)["status"] == "failed"
    assert cli("--resume", run_id, "--runs-dir", str(tmp_path), "--device", "cpu", "--no-progress")[0] == 0
    assert RunsDB(tmp_path).config(run_id).device == "cpu"


@pytest.mark.parametrize("settings, message", [
    (dict(dataset="digits", limit_train=64, batch_size=128), "--batch-size 128 is larger than the 64 training images "
                                                             r"\(--limit-train 64\)"),
    (dict(dataset="digits", batch_size=2000), "--batch-size 2000 is larger than the 1438 training images of digits"),
    (dict(dataset="cifar10", batch_size=60_000), "larger than the 50000 training images of cifar10"),
])
def test_a_batch_larger_than_the_training_set_is_refused_before_the_run_is_registered(tmp_path, cli, settings,
                                                                                       message):
    with pytest.raises(ConfigError, match=message):
        JobManager(tmp_path / "dashboard").launch(RunConfig(**settings))
    assert JobManager(tmp_path / "dashboard").runs() == []
    code, err = cli(*(f"--{flag(name)}={value}" for name, value in settings.items()), "--runs-dir",
                    str(tmp_path / "runs"))
    assert code == 2 and len(re.findall(message, err)) == 1  # said once
    assert not (tmp_path / "runs").exists()


def test_a_batch_larger_than_an_image_folder_is_refused(tmp_path):
    data = image_folder(tmp_path, ("cat", "dog"), ("cat", "dog"), per_class=3)
    with pytest.raises(ConfigError, match="--batch-size 8 is larger than the 6 training images of imagefolder"):
        RunConfig(dataset="imagefolder", data_dir=str(data), batch_size=8).validate()
    RunConfig(dataset="imagefolder", data_dir=str(data), batch_size=6).validate()


def test_imagefolder_takes_its_folder_from_data_dir_only_as_the_help_says(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("DROPVIZ_DATA_DIR", str(image_folder(tmp_path / "data", ("cat",), ("cat",))))
    code, err = cli("--dataset", "imagefolder", "--runs-dir", str(tmp_path / "runs"))
    assert code == 2 and "needs --data-dir" in err
    assert "$DROPVIZ_DATA_DIR, which holds all datasets, is not taken" in err
    [data_dir] = [action for action in parser()._actions if action.dest == "data_dir"]
    assert "imagefolder: the folder holding train/ and test/, which must be given (no default)" in data_dir.help


def test_a_form_gets_refusals_in_its_own_words():
    labels = {"batch_size": "Batch size", "limit_train": "Training images", "data_dir": "Data folder"}
    with pytest.raises(ConfigError) as refused:
        RunConfig(dataset="digits", batch_size=64, limit_train=32).validate(labels)
    assert str(refused.value) == "Batch size 64 is larger than the 32 training images (Training images 32)"
    with pytest.raises(ConfigError, match=r"^Data folder: choose a folder with train/ and test/ class folders"):
        RunConfig(dataset="imagefolder", data_dir="/nonexistent").validate(labels)
    with pytest.raises(ConfigError, match=r"^--batch-size 64 is larger than the 32 training images \(--limit-train"):
        RunConfig(dataset="digits", batch_size=64, limit_train=32).validate()  # the command line keeps its flags


def test_datasets_present_are_those_a_run_can_load_offline(tmp_path):
    assert datasets_present(tmp_path) == ["digits"]
    (tmp_path / "cifar-10-python.tar.gz").touch()  # torchvision extracts its archive without a network
    for split in ("train", "test"):
        (tmp_path / "cifar10-jpeg" / split).mkdir(parents=True)
    assert datasets_present(tmp_path) == ["imagefolder", "cifar10", "digits"]
