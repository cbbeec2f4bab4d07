"""Server-side time from a regularizer slider change to figures ready to send, on the Feature Maps page.

    PYTHONPATH=. .venv/bin/python bench/features.py            # 8 draws, 16 channels, every method

What a slider change recomputes in the app (model, clean activations and DropCluster's clusters are cached):
build the regularizer, apply it to the cached clean activation for ``--draws`` draws and run the layers
after it (:func:`layer_effect`), compare the top-5, build the before/after grid, the stage row of one channel and the
top-5 bars, and the JSON ``st.plotly_chart`` sends. Each timed call uses a new seed. Prints the median of
``--repeats`` runs and its ratio to a plain forward pass of the same model on the same image (the peer,
measured in the same run). Goals on this CPU: ResNet-20 at 32 x 32 < 150 ms, ResNet-18 at 224 x 224 < 400 ms.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import plotly.io as pio
import torch

from dropviz.data.images import SAMPLES, load_sample, to_feature_map
from dropviz.features import compare_predictions, load_feature_model, rank_channels
from dropviz.features.extract import fit_clusters, layer_effect
from dropviz.regularizers import REGISTRY
from dropviz.viz import features as fig
from dropviz.viz.figures import stage_row

GOALS_MS = {"resnet20": 150.0, "resnet18-imagenet": 400.0}
LAYERS = ("stem", "stage2.block1", "stage3.block1")


def median_ms(fn: Callable[[int], object], repeats: int, warmup: int = 2) -> tuple[float, float]:
    """Median wall-clock and process CPU milliseconds of ``fn(seed)`` over ``repeats`` new seeds. On a
    shared machine the CPU time is the steadier figure (with one thread it is the wall time of a quiet CPU)."""
    for seed in range(warmup):
        fn(seed)
    wall, cpu = [], []
    for seed in range(warmup, warmup + repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn(seed)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return 1e3 * statistics.median(wall), 1e3 * statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=8)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--methods", nargs="*", default=list(REGISTRY))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steady CPU-time figures)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.draws} draws, {args.channels} channels shown, parameters at their defaults, random weights; "
          f"{torch.get_num_threads()} thread(s); median of {args.repeats}: wall ms / CPU ms (CPU time as a "
          "multiple of one forward pass)")
    photo = load_sample("chelsea")
    worst: dict[str, float] = {}
    for arch, goal in GOALS_MS.items():
        model = load_feature_model(arch)
        x = model.input_tensor(photo)
        with torch.no_grad():
            forward_wall, forward_ms = median_ms(lambda seed: model.model(x), args.repeats)
        print(f"\n{arch} at {model.input_size} x {model.input_size}: plain forward pass (peer) "
              f"{forward_wall:.1f} / {forward_ms:.1f} ms")
        print(f"  {'layer':<14}" + "".join(f"{m:>22}" for m in args.methods))
        for layer in LAYERS:
            acts, clean_logits = model.capture(x, [layer])  # cached in the app
            clean = acts[layer][0]
            channels = rank_channels(clean)[:args.channels].tolist()
            photos = model.normalise(torch.cat([to_feature_map(load_sample(n), model.input_size) for n in SAMPLES]))
            labels = None
            row = []
            for method in args.methods:
                spec = REGISTRY[method]
                if method == "dropcluster" and labels is None:  # cached in the app: fitted once per n_clusters
                    labels = fit_clusters(model, layer, photos, spec.make())

                def slider_change(seed: int) -> None:
                    regularizer = spec.make(drop_prob=0.1 + 0.01 * (seed % 5))
                    if labels is not None and hasattr(regularizer, "set_clusters"):
                        regularizer.set_clusters(labels)
                    effect = layer_effect(model, acts[layer], layer, regularizer, args.draws, seed)
                    rows, agreement = compare_predictions(clean_logits, effect.logits, model.class_names)
                    figures = [*fig.before_after(clean, effect.stages["output"], channels),
                               stage_row({k: t[channels[0]] for k, t in effect.stages.items() if t.dim() == 3},
                                         width=700),
                               fig.topk_bars(rows, args.draws, agreement)]
                    if "clusters" in effect.stages:
                        figures.append(fig.cluster_mosaic(effect.stages["clusters"], channels, effect.stages["mask"]))
                    for figure in figures:
                        pio.to_json(figure, validate=False)

                wall, ms = median_ms(slider_change, args.repeats)
                worst[arch] = max(worst.get(arch, 0.0), ms)
                row.append(f"{wall:.0f} / {ms:.0f} ({ms / forward_ms:.1f}x)")
            print(f"  {layer:<14}" + "".join(f"{cell:>22}" for cell in row))
    print()
    for arch, goal in GOALS_MS.items():
        verdict = "meets" if worst[arch] < goal else "MISSES"
        print(f"{arch}: slowest slider change {worst[arch]:.1f} ms of CPU time, {verdict} the goal of {goal:.0f} ms")


if __name__ == "__main__":
    main()
