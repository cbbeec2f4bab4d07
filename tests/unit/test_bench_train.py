"""The statistics `bench/train.py` reports its overheads with (the README's speed claims rest on them), and
`bench/step_modes.py`'s table."""
import importlib.util
import math
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_train", ROOT / "bench" / "train.py")
bench_train = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_train)


def test_median_interval_of_40_rounds_is_order_statistics_14_and_27():
    # Tables of distribution-free confidence intervals for the median (e.g. Conover, Practical Nonparametric
    # Statistics) give ranks 14 and 27 at 95% for n = 40.
    values = list(range(1, 41))
    random.Random(0).shuffle(values)
    assert bench_train.median_interval(values) == (20.5, 14, 27)


def test_median_interval_too_few_values_gives_the_whole_range():
    # n = 5: even the widest interval, (min, max), covers the median with only 1 - 2 / 32 < 95%
    assert bench_train.median_interval([3.0, 1.0, 5.0, 2.0, 4.0]) == (3.0, 1.0, 5.0)


def test_median_interval_covers_the_median_as_often_as_it_says():
    # 40 draws from a skewed law (exponential, median log 2). The exact coverage of ranks 14..27 is
    # 1 - 2 P(Binomial(40, 1/2) <= 13); over 4000 trials the observed rate has SD sqrt(c (1 - c) / 4000) ~ 0.003,
    # and ranks 13..28 (0.983) or 15..26 (0.919) would be off by 7 SDs or more.
    coverage = 1 - 2 * sum(math.comb(40, i) for i in range(14)) / 2**40
    rng = random.Random(1)
    trials = 4000
    hits = 0
    for _ in range(trials):
        _, low, high = bench_train.median_interval([rng.expovariate(1.0) for _ in range(40)])
        hits += low <= math.log(2) <= high
    sd = math.sqrt(coverage * (1 - coverage) / trials)
    assert abs(hits / trials - coverage) < 4.5 * sd


@pytest.mark.parametrize(("low", "high", "expected"), [
    (0.01, 0.049, "met"), (0.051, 0.09, "missed"), (0.03, 0.07, "unclear"), (0.05, 0.06, "unclear"),
])
def test_verdict_reads_the_interval_against_the_goal(low, high, expected):
    assert bench_train.verdict(low, high) == expected


def test_median_is_the_sample_median():
    values = [0.9, 1.3, 1.1, 1.0]
    assert bench_train.median_interval(values)[0] == statistics.median(values)


def test_step_modes_prints_each_batch_size_with_its_ratio_to_eager():
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "step_modes.py"), "--device", "cpu",
                           "--modes", "eager", "--batch-size", "8", "16", "--images", "64", "--steps", "2",
                           "--warmup", "1"],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith("eager")]
    assert [(row[1], row[-1]) for row in rows] == [("8", "1.00"), ("16", "1.00")]
    assert all(float(row[2]) > 0 and float(row[3]) > 0 for row in rows)
