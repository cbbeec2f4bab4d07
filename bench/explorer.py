"""Server-side time from a parameter change to figures ready to send, for the Explorer and Compare pages.

    PYTHONPATH=. .venv/bin/python bench/explorer.py            # 224 x 224 RGB astronaut, drop_prob 0.1

A "parameter change" is a new seed (nothing cached can be reused): the draw (``explain()``), the figure
(PNG panels), its numbers and the JSON that ``st.plotly_chart`` sends. The input tensor is cached in the
app, so it is built once here too. Prints the median of ``--repeats`` runs and the ratio to a plain
``F.dropout`` on the same tensor. Goals on this CPU: one method < 50 ms, the whole grid < 300 ms.
The machine is shared: the best of the runs is printed too (what an idle CPU gives).
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import plotly.io as pio
import torch
import torch.nn.functional as F

from dropviz.data.images import load_sample, to_feature_map
from dropviz.regularizers import REGISTRY
from dropviz.viz import explain, figures

ONE_METHOD_GOAL_MS, GRID_GOAL_MS = 50.0, 300.0


def timed_ms(fn: Callable[[int], object], repeats: int, warmup: int = 2) -> tuple[float, float]:
    """(median, best) milliseconds of ``fn(seed)`` over ``repeats`` new seeds. The best run shows the cost
    on an idle CPU when the machine is shared; the median what a user sees now."""
    for seed in range(warmup):
        fn(seed)
    times = []
    for seed in range(warmup, warmup + repeats):
        start = time.perf_counter()
        fn(seed)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times), 1e3 * min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=224)
    parser.add_argument("--drop-prob", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    x = to_feature_map(load_sample("astronaut"), args.side)
    params = {"drop_prob": args.drop_prob}
    print(f"input {tuple(x.shape)}, drop_prob {args.drop_prob}, other parameters at their defaults; "
          f"{torch.get_num_threads()} threads; {args.repeats} runs each")

    def dropout(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return F.dropout(x, args.drop_prob, training=True)

    base, base_best = timed_ms(dropout, max(args.repeats, 50))
    print(f"{'':34s} {'median':>10s} {'best':>10s}   median vs F.dropout")
    print(f"{'F.dropout (peer)':34s} {base:7.3f} ms {base_best:7.3f} ms   1.0x")

    def one(name: str) -> Callable[[int], list[str]]:
        def run(seed: int) -> list[str]:
            stages = explain.draw(REGISTRY[name], params, x, seed)
            figures.stage_stats(stages, args.drop_prob)
            return [pio.to_json(figure, validate=False)  # a figure per stage, as the page sends them
                    for figure in figures.stage_figures(stages)]
        return run

    slowest = 0.0
    for name, spec in REGISTRY.items():
        ms, best = timed_ms(one(name), args.repeats)
        slowest = max(slowest, ms)
        print(f"{'Explorer: ' + spec.display_name:34s} {ms:7.1f} ms {best:7.1f} ms {ms / base:6.0f}x")

    names = list(REGISTRY)

    def grid(seed: int) -> list[str]:
        results = explain.draw_all(names, params, x, seed)
        explain.comparison_rows(names, results, params)
        return [pio.to_json(figures.comparison_column(label, result), validate=False)
                for label, result in results.items()]  # a figure per method, as the page sends them

    grid_ms, grid_best = timed_ms(grid, args.repeats)
    print(f"{'Compare: grid of all ' + str(len(names)):34s} {grid_ms:7.1f} ms {grid_best:7.1f} ms {grid_ms / base:6.0f}x")
    print(f"goals (median): one method < {ONE_METHOD_GOAL_MS:.0f} ms: "
          f"{'met' if slowest < ONE_METHOD_GOAL_MS else 'MISSED'} (slowest {slowest:.1f} ms); "
          f"grid < {GRID_GOAL_MS:.0f} ms: {'met' if grid_ms < GRID_GOAL_MS else 'MISSED'} ({grid_ms:.1f} ms)")


if __name__ == "__main__":
    main()
