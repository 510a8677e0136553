"""Cumulative ablation of the training-step speed-ups, measured in ONE process.

Builds one trainer per variant (paper profile, untrained VGG, synthetic data) and times their
adversarial steps round-robin, so every variant sees the same machine load - on a shared
machine that matters more than anything else. Prints a table (median and best step time,
useful GFLOP/s, ratio to the NumPy matmul measured between the steps) and writes JSON.

    .venv/bin/python benchmarks/ablation.py --batch-size 8 --rounds 5 \
        --output benchmarks/results/cpu-<date>-ablation.json

Variants (each adds one change to the previous):
    baseline        stock Keras layers and Adam, D called twice, HR VGG features in the step
    +hr-cache       HR VGG features computed once per dataset and fed with the batches
    +fused-adam     ResourceApplyAdam instead of Keras' per-op Adam update
    +fused-layers   fused BatchNorm, PReLU with fewer ops, space-to-depth output convolution
    +d-head-concat  one pass of D's Flatten->Dense head over HR and SR together (= the default)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

VARIANTS = ["baseline", "+hr-cache", "+fused-adam", "+fused-layers", "+d-head-concat"]


def build(variant: str, batch: int, arrays):
    from upsampler.tools import measure
    from upsampler.training.steps_tf import Speedups
    from upsampler.training.trainer import SRGANTrainer

    index = VARIANTS.index(variant)
    cache = "auto" if index >= 1 else "off"
    config = measure.build_config("paper", batch_size=batch, xla="off", precision="float32", content_network="untrained",
                                  hr_cache=cache, strategy="default", deterministic=None, overrides=[])
    speedups = Speedups(fused_adam=index >= 2, fused_layers=index >= 3, shared_d_head=index >= 4)
    trainer = SRGANTrainer(config, arrays=arrays, speedups=speedups)
    trainer.feed.prepare_hr_features()
    return trainer


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--output")
    args = p.parse_args(argv)

    import numpy as np

    from upsampler.tools import bench, measure  # before TensorFlow: it picks the CPU kernels
    from upsampler.tools.flops import step_flops

    import tensorflow as tf

    variants = [v for v in args.variants.split(",") if v]
    arrays = measure.synthetic_arrays(2 * args.batch_size, 44, 176)
    runs = []
    flops = None
    for variant in variants:
        trainer = build(variant, args.batch_size, arrays)
        if flops is None:
            flops = step_flops(trainer.generator, trainer.discriminator, trainer.steps.content_loss.vgg,
                               lr_size=44, hr_size=176, batch=args.batch_size)["adversarial_gflop_per_step"]
        lr, hr = next(iter(trainer.feed.dataset(1)))
        counter = [0]

        def step(trainer=trainer, lr=lr, hr=hr, counter=counter):
            counter[0] += 1
            return trainer.steps.adversarial_step(lr, hr, tf.constant(counter[0], tf.int64)).numpy()

        start = time.perf_counter()
        first = step()
        print(f"{variant:>15}: built, first step {time.perf_counter() - start:.1f} s, metrics {np.round(first, 4)}",
              file=sys.stderr, flush=True)
        runs.append((variant, step, []))
    a, b = measure.matmul_operands()
    np.matmul(a, b)
    matmul = []
    for r in range(args.rounds):
        for variant, step, times in runs:
            matmul.append(measure.matmul_gflops_once(a, b))
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{v} {t[-1]:.2f}s" for v, _, t in runs),
              file=sys.stderr, flush=True)
    mm = statistics.median(matmul)
    rows = []
    base = statistics.median(runs[0][2])
    onednn = bench.hardware.onednn_enabled()
    lines = [f"{bench.hardware.cpu_model()}; oneDNN {bench.hardware.onednn_word(onednn)}; batch {args.batch_size}, "
             f"{args.rounds} rounds, round-robin in one process",
             f"{'variant':<15} {'median s':>9} {'best s':>7} {'vs base':>8} {'useful GF/s':>12} {'ratio':>6}"]
    for variant, _, times in runs:
        med = statistics.median(times)
        row = {"variant": variant, "median_s": med, "best_s": min(times), "times": times,
               "speedup_vs_baseline": base / med, "useful_gflops": flops / med, "ratio_to_matmul": flops / med / mm}
        rows.append(row)
        lines.append(f"{variant:<15} {med:9.3f} {min(times):7.3f} {base / med:7.2f}x {flops / med:12.0f} "
                     f"{flops / med / mm:6.3f}")
    lines.append(f"matmul (NumPy f32 4096, between the steps): median {mm:.0f}, max {max(matmul):.0f} GFLOP/s; "
                 f"useful GFLOP per step {flops:.1f}")
    table = "\n".join(lines)
    print(table)
    if args.output:
        out = {"device": bench.hardware.cpu_model(), "onednn": onednn, "batch_size": args.batch_size,
               "rounds": args.rounds, "useful_gflop_per_step": flops, "matmul_gflops_all": matmul,
               "matmul_gflops": mm, "tensorflow_version": tf.__version__, "variants": rows}
        bench.write_result(args.output, out, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
