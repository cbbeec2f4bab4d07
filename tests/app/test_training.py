"""AppTest of the Training page over a prepared runs database (no browser, no training)."""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dropviz.train import JobManager, RunConfig, RunsDB, process_start_time

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "training.py")
TIMEOUT_S = 120


@pytest.fixture
def runs_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("DROPVIZ_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("DROPVIZ_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DROPVIZ_READONLY", raising=False)
    return tmp_path / "runs"


def add_run(runs_dir: Path, status: str, regularizer: str = "none", error: str | None = None) -> str:
    db = RunsDB(runs_dir)
    params = {"drop_prob": 0.2} if regularizer != "none" else {}
    run_id = db.create_run(RunConfig(dataset="digits", epochs=2, regularizer=regularizer, params=params), status=status)
    db.update_run(run_id, step=8, total_steps=8, epoch=2, error=error, device="cpu")
    for step in range(1, 9):
        db.log_step(run_id, step, step / 4, train_loss=2.3 - step / 10, train_acc=step / 20, lr=0.1, drop_prob=0.2)
    for epoch in (1, 2):
        db.log_epoch(run_id, epoch, epoch * 4, train_loss=2.0, train_acc=0.3, test_loss=1.9, test_acc=0.2 * epoch)
    return run_id


def plotly_specs(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def test_empty_runs_dir_invites_a_launch(runs_dir):
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT_S).run()
    assert not at.exception
    assert any("No runs yet" in i.value for i in at.info)
    assert at.button(key="train_launch").disabled is False


def test_runs_are_listed_overlaid_and_a_failed_run_shows_its_error(runs_dir):
    finished = add_run(runs_dir, "finished", "dropout")
    failed = add_run(runs_dir, "failed", error="worker died: out of memory")
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT_S).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert set(table["status"]) == {"finished", "failed"}
    [figure] = plotly_specs(at)
    names = [trace["name"] for trace in figure["data"]]
    assert len(names) == 4 and sum("test" in n for n in names) == 2 and any("dropout p=0.2" in n for n in names)
    assert figure["layout"]["uirevision"] == "training-curves"

    at.selectbox(key="train_action_run").set_value(failed).run()
    assert any("out of memory" in e.value for e in at.error)
    at.segmented_control(key="train_splits").set_value(["test"]).run()
    assert all("test" in t["name"] for t in plotly_specs(at)[0]["data"])
    at.selectbox(key="train_action_run").set_value(finished).run()
    at.button(key="train_delete").click().run()
    at.button(key="train_delete_yes").click().run()
    assert not at.exception and RunsDB(runs_dir).run(finished) is None


def test_invalid_launch_is_refused_with_a_message(runs_dir):
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT_S).run()
    at.selectbox(key="train_dataset").set_value("imagefolder").run()
    at.button(key="train_launch").click().run()
    assert not at.exception
    assert any("Not launched" in e.value and "train/ and test/" in e.value for e in at.error)
    assert RunsDB(runs_dir).runs() == []


def test_dropcluster_place_is_chosen_among_the_models_layers_and_launched(runs_dir, monkeypatch):
    monkeypatch.setattr(JobManager, "_spawn", lambda self, run_id: None)  # queue the run, start no worker
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT_S).run()
    assert not any(s.label == "DropCluster after" for s in at.selectbox)  # only DropCluster has a place to pick
    at.selectbox(key="train_dataset").set_value("digits")
    at.selectbox(key="train_regularizer").set_value("dropcluster").run()
    place = at.selectbox(key="train_dropcluster_after_resnet20")
    assert place.label == "DropCluster after" and place.options == ["stem", "stage1", "stage2", "stage3"]
    assert place.value == "stem"
    at.selectbox(key="train_model").set_value("resnet18").run()
    assert at.selectbox(key="train_dropcluster_after_resnet18").options[-1] == "stage4"
    at.selectbox(key="train_dropcluster_after_resnet18").set_value("stage3")
    at.button(key="train_launch").click().run()
    assert not at.exception and not at.error
    [run] = RunsDB(runs_dir).runs()
    config = json.loads(run["config"])
    chosen = config["model"], config["regularizer"], config["dropcluster_after"]
    assert chosen == ("resnet18", "dropcluster", "stage3") and config["compile"] is False


def test_a_run_launched_with_compile_checked_compiles_its_step(runs_dir, monkeypatch):
    monkeypatch.setattr(JobManager, "_spawn", lambda self, run_id: None)  # queue the run, start no worker
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT_S).run()
    at.selectbox(key="train_dataset").set_value("digits")
    at.checkbox(key="train_compile").check()
    at.button(key="train_launch").click().run()
    assert not at.exception and not at.error
    [run] = RunsDB(runs_dir).runs()
    assert json.loads(run["config"])["compile"] is True
    assert at.dataframe[0].value["device"].tolist() == ["compiled"]  # queued: no device yet
    RunsDB(runs_dir).update_run(run["id"], device="cuda")
    assert at.run().dataframe[0].value["device"].tolist() == ["cuda, compiled"]


def test_read_only_dashboard_says_so_and_disables_actions(runs_dir, monkeypatch):
    add_run(runs_dir, "failed", error="boom")
    monkeypatch.setenv("DROPVIZ_READONLY", "1")
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT_S).run()
    assert not at.exception and any("read-only" in i.value for i in at.info)
    for key in ("train_launch", "train_resume", "train_delete", "train_cancel"):
        assert at.button(key=key).disabled


def test_a_run_id_in_the_url_is_checked(runs_dir):
    add_run(runs_dir, "finished")
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT_S)
    at.query_params["run"] = "../../etc/passwd"
    at.run()
    assert not at.exception and any("not a run id" in w.value for w in at.warning)


def test_a_run_whose_worker_died_is_shown_failed_with_what_happened(runs_dir):
    run_id = add_run(runs_dir, "running")
    RunsDB(runs_dir).update_run(run_id, pid=2**22 + 1, heartbeat=1.0)  # above Linux's pid_max: no such process
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT_S).run()
    assert not at.exception
    assert list(at.dataframe[0].value["status"]) == ["failed"]
    assert any("stopped without reporting" in e.value for e in at.error)
    assert RunsDB(runs_dir).run(run_id)["status"] == "failed"


def test_a_live_worker_that_stopped_reporting_is_shown_unresponsive_not_failed(runs_dir):
    run_id = add_run(runs_dir, "running")
    # this test's own process stands in for a worker that is alive but stopped (Ctrl-Z) for 10 minutes
    RunsDB(runs_dir).update_run(run_id, pid=os.getpid(), pid_start=process_start_time(os.getpid()),
                                heartbeat=time.time() - 600)
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT_S).run()
    assert not at.exception
    [status] = at.dataframe[0].value["status"]
    assert re.fullmatch(r"running, unresponsive 1[0-2]m\d\ds", status)  # 10 min, and the page's run time
    assert any(f"pid {os.getpid()}) is alive but has not reported" in w.value for w in at.warning)
    assert not at.error and RunsDB(runs_dir).run(run_id)["status"] == "running"
    assert at.button(key="train_resume").disabled


def test_a_resume_that_cannot_continue_here_is_refused_with_a_message(runs_dir, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    db = RunsDB(runs_dir)
    run_id = db.create_run(RunConfig(dataset="digits", device="cuda"), status="failed")  # launched on a GPU machine
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT_S).run()
    at.button(key="train_resume").click().run()
    assert not at.exception
    assert any("Not resumed" in e.value and "CUDA is not available" in e.value for e in at.error)
    assert db.run(run_id)["status"] == "failed"


def test_a_max_runs_setting_that_is_no_count_is_shown(runs_dir, monkeypatch):
    monkeypatch.setenv("DROPVIZ_MAX_RUNS", "abc")
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT_S).run()
    assert not at.exception
    assert any("DROPVIZ_MAX_RUNS='abc' is not a whole number" in w.value for w in at.warning)


def test_the_run_selector_shows_a_new_status_and_keeps_the_choice(runs_dir):
    running = add_run(runs_dir, "running")
    RunsDB(runs_dir).update_run(running, pid=os.getpid(), pid_start=process_start_time(os.getpid()),
                                heartbeat=time.time())  # this test's own process stands in for a live worker
    add_run(runs_dir, "finished")  # the newest, shown first: the running one is a choice
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT_S).run()
    at.selectbox(key="train_action_run").set_value(running).run()
    assert not at.selectbox(key="train_action_run").proto.set_value  # the browser made that choice: nothing to send
    RunsDB(runs_dir).update_run(running, status="cancelled")
    at.run()
    selector = at.selectbox(key="train_action_run")
    assert not at.exception and selector.value == running
    # the browser shows the label it was last sent: a changed label must be sent again
    assert selector.proto.set_value and selector.proto.raw_value.endswith("(cancelled)")
    assert not at.button(key="train_resume").disabled


def test_a_link_to_a_run_that_is_not_here_says_so_and_shows_the_others(runs_dir):
    kept = add_run(runs_dir, "finished")
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT_S)
    at.query_params["run"] = "20991231-000000-abcdef"
    at.run()
    assert not at.exception
    assert any("no run with that id is in this runs folder" in w.value and "deleted" in w.value for w in at.warning)
    assert at.multiselect(key="train_overlay").value == [kept]


def test_the_default_dataset_is_one_that_is_here(runs_dir):
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT_S).run()
    assert at.selectbox(key="train_dataset").value == "digits"  # an empty data folder: only digits is here
    assert any("Available here: digits." in c.value for c in at.caption)
    copy = runs_dir.parent / "data" / "cifar10-jpeg"
    for split in ("train", "test"):
        (copy / split / "cat").mkdir(parents=True)
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT_S).run()
    assert at.selectbox(key="train_dataset").value == "imagefolder"
    assert at.text_input(key="train_data_dir_imagefolder").value == str(copy)
    assert any("Available here: imagefolder (the CIFAR-10 JPEG copy), digits." in c.value for c in at.caption)


def test_a_refusal_names_the_forms_fields_not_the_command_lines_flags(runs_dir):
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT_S).run()
    at.selectbox(key="train_dataset").set_value("imagefolder").run()
    at.text_input(key="train_data_dir_imagefolder").set_value("/nonexistent").run()
    at.button(key="train_launch").click().run()
    [refusal] = [e.value for e in at.error]
    assert "Data folder: choose a folder with train/ and test/" in refusal and "--" not in refusal
    at.selectbox(key="train_dataset").set_value("digits").run()
    at.number_input(key="train_limit").set_value(100)
    at.number_input(key="train_batch_size").set_value(128)
    at.button(key="train_launch").click().run()
    [refusal] = [e.value for e in at.error]
    assert "Batch size 128 is larger than the 100 training images (Training images 100)" in refusal
    assert RunsDB(runs_dir).runs() == []


def test_a_runs_dir_that_is_a_file_is_named_not_a_crash(runs_dir, monkeypatch):
    runs_dir.parent.mkdir(parents=True, exist_ok=True)
    runs_dir.write_text("not a folder")
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT_S).run()
    assert not at.exception
    [message] = [e.value for e in at.error]
    assert f"DROPVIZ_RUNS_DIR, the runs folder, {runs_dir.resolve()} is a file, not a folder" in message
