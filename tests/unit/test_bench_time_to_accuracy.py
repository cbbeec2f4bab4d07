"""`bench/time_to_accuracy.py`: the time-to-accuracy figures in the README come from its report of a real run."""
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = [sys.executable, str(ROOT / "bench" / "time_to_accuracy.py")]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
_spec = importlib.util.spec_from_file_location("bench_tta", ROOT / "bench" / "time_to_accuracy.py")
bench_tta = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_tta)
DIGITS = ["--dataset", "digits", "--limit-train", "256", "--limit-test", "64", "--batch-size", "64", "--device", "cpu"]


def test_reports_every_epoch_and_the_first_that_reaches_the_target():
    out = subprocess.run([*SCRIPT, "--target", "0", "--", *DIGITS, "--epochs", "2"], capture_output=True,
                         text=True, cwd=ROOT, env=ENV, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "status finished on cpu" in out.stdout
    rows = re.findall(r"^\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+\d+$", out.stdout, re.MULTILINE)
    assert [int(epoch) for epoch, _, _ in rows] == [1, 2]
    first_epoch_seconds = float(rows[0][1])
    assert f"reached at epoch 1: {first_epoch_seconds:.1f} s from launch" in out.stdout


def test_a_refused_launch_is_reported_not_a_traceback():
    out = subprocess.run([*SCRIPT, "--", *DIGITS, "--epochs", "0"], capture_output=True, text=True, env=ENV,
                         timeout=300)
    assert out.returncode != 0
    assert "--epochs must be" in out.stderr
    assert "the run was not created" in out.stderr and "Traceback" not in out.stderr


def test_with_no_run_given_it_times_the_issues_check_on_the_shared_copy(monkeypatch, tmp_path):
    monkeypatch.setattr(bench_tta, "SHARED_COPY", tmp_path / "missing")
    with pytest.raises(SystemExit, match="make test"):
        bench_tta.default_run()
    (tmp_path / "train").mkdir()
    monkeypatch.setattr(bench_tta, "SHARED_COPY", tmp_path)
    monkeypatch.setattr(bench_tta.torch.cuda, "is_available", lambda: False)
    target, cli = bench_tta.default_run()
    assert target == 0.25 and cli[cli.index("--data-dir") + 1] == str(tmp_path)
    assert cli[cli.index("--epochs") + 1] == "3" and cli[cli.index("--limit-train") + 1] == "4000"
    monkeypatch.setattr(bench_tta.torch.cuda, "is_available", lambda: True)
    target, cli = bench_tta.default_run()
    assert target == 0.91 and cli[cli.index("--device") + 1] == "cuda"
