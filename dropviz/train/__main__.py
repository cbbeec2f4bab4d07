"""``python -m dropviz.train``: train a model with a regularizer, logging to the runs database.

Examples::

    python -m dropviz.train --model resnet20 --dataset imagefolder --data-dir data/cifar10-jpeg \\
        --regularizer dropblock --drop-prob 0.1 --block-size 3 --epochs 30
    python -m dropviz.train --dataset digits --epochs 3                # offline, no data needed
    python -m dropviz.train --resume 20261122-220630-3fa9c1            # continue from the last checkpoint
    torchrun --nproc-per-node 4 -m dropviz.train --epochs 30 ...       # DistributedDataParallel
"""
from __future__ import annotations

import argparse
import signal
import sqlite3
import sys
from dataclasses import fields
from pathlib import Path

import torch.distributed

from dropviz.data.datasets import DATASETS
from dropviz.models import MODELS, PLACEMENT, feature_layer_names
from dropviz.regularizers import REGISTRY

from .config import DEVICES, SCHEDULES, ConfigError, RunConfig, flag, regularizer_names
from .db import DB_NAME, RunsDB, check_run_id
from .engine import distributed, train_run
from .jobs import JobManager, default_runs_dir, live_worker_problem

EXIT_CODES = {"finished": 0, "failed": 1, "cancelled": 130}
RESUME_FLAGS = {"resume", "runs_dir", "device", "no_progress"}  # what a resume may be given: not the run's settings


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def regularizer_params() -> dict[str, tuple[type, str]]:
    """Every parameter some registry method takes: name -> (kind, help naming the methods that take it)."""
    params: dict[str, tuple[type, str, list[str]]] = {}
    for spec in REGISTRY.values():
        for p in spec.params:
            params.setdefault(p.name, (p.kind, p.help, []))[2].append(f"{spec.name} (default {p.default})")
    return {name: (kind, f"{help_text} For {', '.join(users)}.") for name, (kind, help_text, users) in params.items()}


def parser() -> argparse.ArgumentParser:
    defaults = RunConfig()
    p = argparse.ArgumentParser(prog="python -m dropviz.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Regularizer placement: " + "; ".join(f"{k}: {v}" for k, v in PLACEMENT.items()))
    p.add_argument("--model", choices=list(MODELS), default=defaults.model)
    p.add_argument("--dataset", choices=list(DATASETS), default=defaults.dataset)
    p.add_argument("--data-dir", help="cifar10, cifar100: the folder their files are in or downloaded to (default "
                                      "$DROPVIZ_DATA_DIR or data/); imagefolder: the folder holding train/ and "
                                      "test/, which must be given (no default)")
    p.add_argument("--regularizer", choices=regularizer_names(), default=defaults.regularizer)
    for name, (kind, help_text) in regularizer_params().items():
        p.add_argument(f"--{flag(name)}", dest=f"param_{name}", metavar=name.upper(),
                       type=_bool if kind is bool else kind, help=help_text)
    models_by_layers: dict[tuple[str, ...], list[str]] = {}
    for name in MODELS:
        models_by_layers.setdefault(feature_layer_names(name), []).append(name)
    places = "; ".join(f"{', '.join(names)}: {', '.join(layers)}" for layers, names in models_by_layers.items())
    p.add_argument("--dropcluster-after", metavar="LAYER", default=defaults.dropcluster_after,
                   help=f"with --regularizer dropcluster: the layer it sits after (default "
                        f"{defaults.dropcluster_after}, as Chen et al. 2020); its clusters are fitted on that "
                        f"layer's activations. {places}")
    p.add_argument("--schedule", choices=SCHEDULES, default=defaults.schedule,
                   help="linear: drop_prob ramps from 0 to its value over the run (as DropBlock does)")
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="per process under torchrun")
    p.add_argument("--lr", type=float, default=defaults.lr, help="peak SGD learning rate (warm-up, cosine decay)")
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--device", choices=DEVICES, default=defaults.device,
                   help="with --resume: continue the run on this device instead of its own")
    p.add_argument("--limit-train", type=int, help="train on a seeded random subset of this many images")
    p.add_argument("--limit-test", type=int, help="test on a seeded random subset of this many images")
    p.add_argument("--log-every", type=int, default=defaults.log_every, help="steps between logged metrics")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the training step: on a GPU, where a small model's eager step waits on the "
                        "host, it is the fast way, replayed as CUDA graphs with no regularizer, dropout, droppath "
                        "or multisample (compiling takes 20-30 s before the first step); on the CPU the "
                        "regularizers' sparse draws give way to dense ones, so it is slower there")
    p.add_argument("--runs-dir", default=None, help="default $DROPVIZ_RUNS_DIR or runs/")
    p.add_argument("--resume", metavar="RUN_ID", help="continue this run from its last checkpoint, with its own "
                                                       "settings (--runs-dir, --device and --no-progress may be given)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    p.add_argument("--worker", metavar="RUN_ID", help=argparse.SUPPRESS)  # how JobManager starts a queued run
    return p


def config_from_args(args: argparse.Namespace) -> RunConfig:
    names = {f.name for f in fields(RunConfig)} - {"params"}
    values = {name: getattr(args, name) for name in names}
    values["params"] = {key[len("param_"):]: value for key, value in vars(args).items()
                        if key.startswith("param_") and value is not None}
    return RunConfig(**values)


def flags_given(p: argparse.ArgumentParser, argv: list[str] | None) -> dict[str, str]:
    """The options the command line names, whatever their values: destination -> flag. Parsed again into a
    namespace that already holds every destination, which argparse then fills only from the command line."""
    unset = object()
    given = p.parse_args(argv, argparse.Namespace(**{action.dest: unset for action in p._actions}))
    return {action.dest: action.option_strings[0] for action in p._actions
            if action.option_strings and getattr(given, action.dest) is not unset}


def open_runs_db(p: argparse.ArgumentParser, runs_dir: Path) -> RunsDB:
    try:
        return RunsDB(runs_dir)
    except (OSError, sqlite3.Error) as error:
        p.error(f"--runs-dir {runs_dir} cannot hold the runs database: {error}")


def resumable_run(p: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str] | None,
                  runs_dir: Path) -> str:
    """Check a ``--resume`` (or ``--worker``) and return its run id, ready to train: with its stored settings,
    valid here (a changed ``--device`` among them), and no earlier cancel request."""
    resuming = args.worker is None
    run_id = args.resume if resuming else args.worker
    given = flags_given(p, argv) if resuming else {}
    if resuming:
        ignored = [flag for dest, flag in given.items() if dest not in RESUME_FLAGS]
        if ignored:
            p.error(f"--resume continues a run with the settings it was launched with: {', '.join(ignored)} cannot "
                    f"be given with it (only --runs-dir, --device and --no-progress can)")
    try:
        check_run_id(run_id)
    except ValueError as error:
        p.error(str(error))
    if not (runs_dir / DB_NAME).is_file():  # opening the database would create it, and the folder
        p.error(f"no run {run_id} in {runs_dir} (it has no {DB_NAME})")
    db = open_runs_db(p, runs_dir)
    run = db.run(run_id)
    if run is None:
        p.error(f"no run {run_id} in {runs_dir}")
    if resuming:
        problem = live_worker_problem(run)
        if problem:
            p.error(problem)
        try:
            config = db.config(run_id)
            if "device" in given:
                config.device = args.device
            config.validate()
        except ConfigError as error:
            p.error(f"run {run_id} cannot continue here: {error}")
        # the new device, and no earlier cancel request stopping this resume
        db.update_run(run_id, config=config.to_json(), cancel_requested=0)
    return run_id


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops a run cleanly, as cancelled
    runs_dir = Path(args.runs_dir or default_runs_dir())
    if runs_dir.exists() and not runs_dir.is_dir():
        p.error(f"--runs-dir {runs_dir} is a file, not a folder")
    progress = False if args.no_progress else None
    if args.worker is not None or args.resume is not None:
        run_id = resumable_run(p, args, argv, runs_dir)
        status = train_run(runs_dir, run_id, progress)
    else:
        try:
            config = config_from_args(args).validate()
        except ConfigError as error:
            p.error(str(error))
        try:
            rank, world_size = distributed(config.device)
        except ConfigError as error:
            p.error(str(error))
        run_id = open_runs_db(p, runs_dir).create_run(config, status="starting") if rank == 0 else None
        if world_size > 1:  # under torchrun: one run, registered by rank 0
            shared = [run_id]
            torch.distributed.broadcast_object_list(shared, src=0)
            run_id = shared[0]
        if rank == 0:
            print(f"run {run_id} in {runs_dir}", file=sys.stderr)
        status = train_run(runs_dir, run_id, progress)
        if rank > 0:
            return EXIT_CODES.get(status, 1)
    JobManager(runs_dir).schedule()  # this run's slot is free now: start whatever waits in the queue
    print(f"run {run_id}: {status}", file=sys.stderr)  # train_run has printed what went wrong
    return EXIT_CODES.get(status, 1)


if __name__ == "__main__":
    sys.exit(main())
