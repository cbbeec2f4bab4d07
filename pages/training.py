"""Training: launch background runs with a regularizer and watch their accuracy curves, overlaid and live."""
from __future__ import annotations

import streamlit as st

from dropviz.data.datasets import DATASETS
from dropviz.data.images import data_dir
from dropviz.models import DROPCLUSTER_DEFAULT, MODELS, PLACEMENT, feature_layer_names
from dropviz.regularizers import REGISTRY
from dropviz.train import (ConfigError, JobManager, ReadOnlyError, RunConfig, RunsDirError, check_run_id, readonly,
                           regularizer_names)
from dropviz.train.config import CIFAR10_JPEG, DEFAULT_DATASETS, DEVICES, SCHEDULES, datasets_present
from dropviz.train.jobs import unresponsive_for
from dropviz.train.report import ACTIVE_OR_WAITING, duration, metrics_csv, run_label, runs_table
from dropviz.ui.controls import METHOD_CONTROL_WIDTH, method_controls, wrapping_columns
from dropviz.ui.panels import plotly_config
from dropviz.viz.curves import METRICS, SPLITS, curves_figure

OVERLAY = "train_overlay"
ACTION_RUN = "train_action_run"
SHOWN_RUN = "train_action_run_shown"
READ_ONLY = readonly()
# What the form calls each run setting: refusals name settings this way, not by the CLI's flags.
FORM_LABELS = {"model": "Model", "dataset": "Dataset", "data_dir": "Data folder", "regularizer": "Regularizer",
               "dropcluster_after": "DropCluster after", "schedule": "drop_prob schedule", "epochs": "Epochs",
               "batch_size": "Batch size", "lr": "Learning rate", "limit_train": "Training images",
               "limit_test": "Test images", "device": "Device", "seed": "Seed", "compile": "Compile the step",
               **{param.name: param.label for spec in REGISTRY.values() for param in spec.params}}

st.title("Training")
st.caption("Train a ResNet with a regularizer in a background process and compare runs' accuracy curves. "
           "Runs keep going when you close the page.")
if READ_ONLY:
    st.info("This dashboard is read-only (DROPVIZ_READONLY): you can watch runs and download their metrics, "
            "but launching, cancelling, resuming and deleting runs is turned off.", icon=":material/lock:")

try:
    manager = JobManager()
except RunsDirError as error:
    st.error(f"Training is unavailable: {error}. The other pages work without it.", icon=":material/folder_off:")
    st.stop()


def available_datasets_note(present: list[str]) -> str:
    """Which datasets this machine has, so that nobody launches one that waits on a download it cannot make."""
    shown = [f"{name} (the CIFAR-10 JPEG copy)" if name == "imagefolder" else name for name in present]
    note = f"Available here: {', '.join(shown)}."
    absent = [name for name in DATASETS if name not in present and name != "imagefolder"]
    if absent:
        note += f" Not here yet: {', '.join(absent)} (a launch downloads them: needs a network)."
    return note


def launch_form() -> None:
    # Beside the sidebar at 800 px the three columns wrap (two a row) instead of squeezing their labels.
    left, middle, right = wrapping_columns(3, key="train_form", min_width="10rem")
    model = left.selectbox(FORM_LABELS["model"], list(MODELS), key="train_model")
    present = datasets_present(data_dir())
    default = next(name for name in DEFAULT_DATASETS if name in present)
    dataset = left.selectbox(FORM_LABELS["dataset"], list(DATASETS), index=DATASETS.index(default),
                             key="train_dataset",
                             help="digits ships with scikit-learn and works offline; imagefolder reads "
                                  "train/ and test/ class folders (e.g. the CIFAR-10 JPEG copy)")
    left.caption(available_datasets_note(present))
    folder = left.text_input(FORM_LABELS["data_dir"], str(data_dir() / CIFAR10_JPEG) if dataset == "imagefolder"
                             else str(data_dir()), key=f"train_data_dir_{dataset}",
                             disabled=dataset == "digits")
    regularizer = middle.selectbox(FORM_LABELS["regularizer"], regularizer_names(), key="train_regularizer",
                                   format_func=lambda n: REGISTRY[n].display_name if n in REGISTRY else "none")
    params, dropcluster_after = {}, DROPCLUSTER_DEFAULT
    if regularizer in REGISTRY:
        middle.caption(f"Inserted at: {PLACEMENT[regularizer]}.")
        with middle:
            params = method_controls(REGISTRY[regularizer], key="train_", bind_url=False)
    if regularizer == "dropcluster":  # one choice per model: they have different stages
        dropcluster_after = middle.selectbox(
            FORM_LABELS["dropcluster_after"], feature_layer_names(model), key=f"train_dropcluster_after_{model}",
            help="The layer whose output DropCluster drops clusters of, and fits them on: the stem, as in the "
                 "paper, or the output of a stage.")
    schedule = middle.selectbox(FORM_LABELS["schedule"], SCHEDULES, key="train_schedule",
                                help="linear: ramps from 0 to drop_prob over the run, as DropBlock does")
    epochs = right.number_input(FORM_LABELS["epochs"], 1, 500, 3, key="train_epochs")
    batch_size = right.number_input(FORM_LABELS["batch_size"], 8, 4096, 128, key="train_batch_size")
    lr = right.number_input(FORM_LABELS["lr"], 0.0001, 10.0, 0.1, format="%.4f", key="train_lr")
    limit_train = right.number_input(f"{FORM_LABELS['limit_train']} (0 = all)", 0, 1_000_000, 4000, step=500,
                                     key="train_limit")
    limit_test = right.number_input(f"{FORM_LABELS['limit_test']} (0 = all)", 0, 1_000_000, 2000, step=500,
                                    key="train_limit_test")
    device = left.selectbox(FORM_LABELS["device"], DEVICES, key="train_device")
    seed = left.number_input(FORM_LABELS["seed"], 0, 2**31 - 1, 0, key="train_seed")
    compile_step = left.checkbox(FORM_LABELS["compile"], key="train_compile",
                                 help="torch.compile the training step: on a GPU the fast way (CUDA graphs with no "
                                      "regularizer, Dropout, DropPath or Multi-Sample Dropout), after 20-30 s of "
                                      "compiling; on the CPU slower than without")
    if st.button("Launch run", type="primary", disabled=READ_ONLY, key="train_launch", icon=":material/play_arrow:"):
        config = RunConfig(model=model, dataset=dataset, data_dir=None if dataset == "digits" else folder,
                           regularizer=regularizer, params=params, dropcluster_after=dropcluster_after,
                           schedule=schedule, epochs=int(epochs), batch_size=int(batch_size), lr=float(lr),
                           seed=int(seed), device=device, limit_train=int(limit_train) or None,
                           limit_test=int(limit_test) or None, compile=compile_step)
        try:
            run_id = manager.launch(config, FORM_LABELS)
        except (ConfigError, ReadOnlyError) as error:
            st.error(f"Not launched: {error}")
        else:
            st.session_state[OVERLAY] = [run_id, *st.session_state.get(OVERLAY, [])]
            st.toast(f"Launched {run_id}")


with st.expander("Launch a run", expanded=not manager.runs(), icon=":material/rocket_launch:"):
    launch_form()


def act(action, run_id: str, refused: str) -> bool:
    """``action(run_id)``, and whether it was done; a refusal is shown (e.g. a resume while the run's worker lives,
    or of settings that do not hold here, such as CUDA on a machine without it), not raised."""
    try:
        action(run_id)
    except (ValueError, ReadOnlyError) as error:
        st.error(f"{refused}: {error}")
        return False
    return True


def run_actions(runs_by_id: dict[str, dict]) -> None:
    """Cancel, resume or delete one run; a failed run shows its error and the end of its log."""
    labels = {run_id: f"{run_label(run)} ({run['status']})" for run_id, run in runs_by_id.items()}
    shown_id, shown_label = st.session_state.get(SHOWN_RUN, (None, None))  # what the browser was last sent
    if shown_id in labels and shown_id == st.session_state.get(ACTION_RUN) and shown_label != labels[shown_id]:
        # the browser keeps showing the old label of an unchanged choice (a new status): set the choice again
        st.session_state[ACTION_RUN] = shown_id
    chosen = st.selectbox("Run", list(runs_by_id), key=ACTION_RUN, format_func=labels.get)
    st.session_state[SHOWN_RUN] = chosen, labels[chosen]
    run = runs_by_id[chosen]
    cancel, resume, delete = st.columns(3)
    if cancel.button("Cancel", disabled=READ_ONLY or run["status"] not in ACTIVE_OR_WAITING, key="train_cancel"):
        if act(manager.cancel, chosen, "Not cancelled"):
            st.toast(f"Cancelling {chosen}")
    if resume.button("Resume", disabled=READ_ONLY or run["status"] not in ("failed", "cancelled"), key="train_resume"):
        if act(lambda run_id: manager.resume(run_id, FORM_LABELS), chosen, "Not resumed"):
            st.rerun()
    if delete.button("Delete...", disabled=READ_ONLY or run["status"] in ACTIVE_OR_WAITING, key="train_delete"):
        st.session_state["train_confirm_delete"] = chosen
    if st.session_state.get("train_confirm_delete") == chosen:
        st.warning(f"Delete {run_label(run)} with its metrics and checkpoint? This cannot be undone.")
        yes, no = st.columns(2)
        if yes.button("Yes, delete", type="primary", key="train_delete_yes"):
            st.session_state.pop("train_confirm_delete")
            if act(manager.delete, chosen, "Not deleted"):
                st.rerun()
        if no.button("Keep it", key="train_delete_no"):
            st.session_state.pop("train_confirm_delete")
            st.rerun()
    silent = unresponsive_for(run)
    if silent:
        st.warning(f"The worker (pid {run['pid']}) is alive but has not reported for {duration(silent)}: it may be "
                   f"stopped (Ctrl-Z, SIGSTOP), its machine may have slept, or it hangs. It is not marked failed, so "
                   f"nothing is lost and no second worker can start on it: it carries on when its process does. To "
                   f"give it up, end it (`kill -9 {run['pid']}`); the run then shows as failed, and Resume continues "
                   f"from its last checkpoint.", icon=":material/hourglass_disabled:")
    if run["status"] == "failed":
        st.error(run["error"] or "The run failed.")
        with st.expander("End of the worker's log"):
            st.code(manager.log_tail(chosen) or "(empty)", language=None)


def linked_run(runs_by_id: dict[str, dict]) -> str | None:
    """The run a link opens the page on (``?run=<id>``), if it is one of these; says why when it is not."""
    requested = st.query_params.get("run")
    if not requested:
        return None
    try:
        run_id = check_run_id(requested)
    except ValueError as error:
        st.warning(f"Ignoring the run in the link: {error}")
        return None
    if run_id not in runs_by_id:
        st.warning(f"The link names run {run_id}, but no run with that id is in this runs folder "
                   f"({manager.runs_dir}): it may have been deleted.",
                   icon=":material/link_off:")
        return None
    return run_id


def runs_panel(polling: bool) -> None:
    runs = manager.runs()
    runs_by_id = {run["id"]: run for run in runs}
    linked = linked_run(runs_by_id)
    if not runs:
        st.info("No runs yet: launch one above.")
        return
    st.dataframe(runs_table(manager.db, runs), hide_index=True, key="train_runs_table", column_config={
        "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent"),
        "test acc": st.column_config.NumberColumn("test acc", format="percent"), "id": None})

    if linked and OVERLAY not in st.session_state:
        st.session_state[OVERLAY] = [linked]
    kept = [i for i in st.session_state.get(OVERLAY, [r["id"] for r in runs[:6]]) if i in runs_by_id]
    st.session_state[OVERLAY] = kept
    overlay = st.multiselect("Runs to overlay", list(runs_by_id), key=OVERLAY,
                             format_func=lambda i: run_label(runs_by_id[i]))
    # One row that wraps on a narrow page: columns cut the segmented controls' last options off at 800 px.
    with st.container(horizontal=True, vertical_alignment="bottom"):
        metric = st.segmented_control("Metric", list(METRICS), default="accuracy", key="train_metric") or "accuracy"
        splits = st.segmented_control("Curves", list(SPLITS), default=list(SPLITS), selection_mode="multi",
                                      key="train_splits")
        smoothing = st.slider("Smoothing (train)", 0.0, 0.99, 0.6, 0.01, key="train_smoothing",
                              width=METHOD_CONTROL_WIDTH)
    curves = {run_label(runs_by_id[i]): {"steps": manager.db.steps(i), "epochs": manager.db.epochs(i)} for i in overlay}
    st.plotly_chart(curves_figure(curves, metric, splits, smoothing), key="train_curves",
                    config=plotly_config("dropviz-training-curves"))
    st.download_button("Download metrics (CSV)", lambda: metrics_csv(manager.db, overlay), "dropviz-metrics.csv",
                       mime="text/csv", disabled=not overlay, key="train_csv", icon=":material/download:")
    run_actions(runs_by_id)
    if polling and not any(r["status"] in ACTIVE_OR_WAITING for r in runs):
        st.rerun()  # the last run ended: rerun the page once, which stops the polling


active = any(r["status"] in ACTIVE_OR_WAITING for r in manager.runs())
st.subheader("Runs")
st.caption(f"At most {manager.max_running} runs train at once (DROPVIZ_MAX_RUNS); more launches wait in the queue.")
if manager.max_running_warning:
    st.warning(manager.max_running_warning, icon=":material/warning:")
st.fragment(runs_panel, run_every="2s" if active else None)(active)
