"""Where the time of the default adversarial step goes: each part timed on its own, round-robin.

Builds the trainer as ``upsampler benchmark`` does (paper profile, untrained VGG19 - weights
change values, not speed - synthetic data, the default speed-ups and precision unless told
otherwise) and compiles every part of the step as its own ``tf.function``:

    input pipeline   one batch from the trainer's feed (uint8 -> float, cached HR features)
    G fwd+bwd        generator forward and the weight + input gradients of a loss on SR
    D fwd+bwd        D on HR and SR (one head pass) and D's weight gradients
    D input grad     the generator's pass back through D on SR (adversarial term)
    VGG fwd+bwd      content-loss network forward on SR and its input gradient (HR features cached)
    Adam G / Adam D  the optimiser updates with fixed gradients
    full step        the trainer's compiled adversarial step (D then G)

The parts are timed round-robin (one repetition of each in turn, ``--rounds`` times) so every
part sees the same machine load; the table gives medians, their sum, and each part's share
of the full step. The parts do not overlap in time inside one ``tf.function`` the way they may
inside the full step, so the sum can exceed it.

    .venv/bin/python benchmarks/profile_step.py --batch-size 8 --rounds 5 \
        --output benchmarks/results/cpu-<date>-profile.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time


def build_parts(trainer):
    """{name: zero-argument callable running one compiled part} for ``trainer``."""
    import tensorflow as tf

    steps, feed = trainer.steps, trainer.feed
    g, d = trainer.generator, trainer.discriminator
    lr, hr = next(iter(feed.dataset(1)))
    hr_images, hr_features = hr if isinstance(hr, (tuple, list)) else (hr, None)
    sr_fixed = tf.constant(g(lr, training=False))
    g_vars, d_vars = g.trainable_variables, d.trainable_variables
    g_grads = [tf.constant(0.01 * tf.ones_like(v)) for v in g_vars]
    d_grads = [tf.constant(0.01 * tf.ones_like(v)) for v in d_vars]

    @tf.function(autograph=False)
    def g_part():
        with tf.GradientTape() as tape:
            tape.watch(lr)
            sr = g(lr, training=True)
            loss = tf.reduce_mean(tf.cast(sr, tf.float32) * sr_fixed)
        return tape.gradient(loss, [*g_vars, lr])[-1]

    @tf.function(autograph=False)
    def d_part():
        with tf.GradientTape() as tape:
            real, fake = steps.discriminate(hr_images, sr_fixed)
            loss = tf.reduce_mean(tf.cast(real, tf.float32)) - tf.reduce_mean(tf.cast(fake, tf.float32))
        return tape.gradient(loss, d_vars)[0]

    @tf.function(autograph=False)
    def d_input_part():
        with tf.GradientTape() as tape:
            tape.watch(sr_fixed)
            loss = tf.reduce_mean(tf.cast(d(sr_fixed, training=True), tf.float32))
        return tape.gradient(loss, sr_fixed)

    @tf.function(autograph=False)
    def vgg_part():
        with tf.GradientTape() as tape:
            tape.watch(sr_fixed)
            loss = tf.reduce_mean(steps.content_loss.per_example(hr_images, sr_fixed, hr_features=hr_features))
        return tape.gradient(loss, sr_fixed)

    @tf.function(autograph=False)
    def adam_g():
        steps.g_optimizer.apply(g_grads, g_vars)
        return steps.g_optimizer.iterations

    @tf.function(autograph=False)
    def adam_d():
        steps.d_optimizer.apply(d_grads, d_vars)
        return steps.d_optimizer.iterations

    counter = [0]

    def full():
        counter[0] += 1
        return steps.adversarial_step(lr, hr, tf.constant(counter[0], tf.int64))

    epoch = [0]
    batches = [iter(feed.dataset(1))]

    def pipeline():
        try:
            return next(batches[0])[0]
        except StopIteration:
            epoch[0] += 1
            batches[0] = iter(feed.dataset(epoch[0] + 2))
            return next(batches[0])[0]

    return {
        "input pipeline": pipeline,
        "G fwd+bwd": g_part,
        "D fwd+bwd (HR and SR)": d_part,
        "D input grad (G's adversarial term)": d_input_part,
        "VGG fwd+bwd (SR)": vgg_part,
        "Adam G": adam_g,
        "Adam D": adam_d,
        "full step": full,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="paper")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--precision", default=None, help="train.precision (default: the profile's)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    p.add_argument("--output")
    args = p.parse_args(argv)

    from upsampler.tools import bench, measure
    from upsampler.training.trainer import SRGANTrainer

    config = measure.build_config(args.profile, batch_size=args.batch_size, xla="auto", precision=args.precision,
                                  content_network="untrained", hr_cache="auto", strategy="default", deterministic=None,
                                  overrides=args.set)
    d = config.data
    trainer = SRGANTrainer(config, arrays=measure.synthetic_arrays(4 * args.batch_size, d.lr_size, d.hr_size))
    if trainer.feed.use_hr_feature_cache:
        trainer.feed.prepare_hr_features()
    parts = build_parts(trainer)
    for name, fn in parts.items():  # compile and warm up
        start = time.perf_counter()
        _ = [fn() for _ in range(2)]
        print(f"{name}: warm ({time.perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)
    times: dict[str, list[float]] = {name: [] for name in parts}
    for r in range(args.rounds):
        for name, fn in parts.items():
            start = time.perf_counter()
            out = fn()
            if hasattr(out, "numpy"):
                out.numpy()
            times[name].append(time.perf_counter() - start)
        print(f"round {r + 1}/{args.rounds}: full step {times['full step'][-1]:.3f} s", file=sys.stderr, flush=True)

    medians = {name: statistics.median(values) for name, values in times.items()}
    full = medians["full step"]
    parts_sum = sum(v for k, v in medians.items() if k != "full step")
    onednn = bench.hardware.onednn_enabled()
    lines = [f"{bench.hardware.cpu_model()}; oneDNN {bench.hardware.onednn_word(onednn)}; {trainer.describe()}",
             f"batch {args.batch_size}, {args.rounds} rounds, medians",
             f"{'part':<38} {'ms':>9} {'of full step':>13}"]
    for name, value in medians.items():
        lines.append(f"{name:<38} {1e3 * value:>9.1f} {100 * value / full:>12.1f}%")
    lines.append(f"{'sum of the parts':<38} {1e3 * parts_sum:>9.1f} {100 * parts_sum / full:>12.1f}%")
    table = "\n".join(lines)
    print(table)
    if args.output:
        result = {"trainer": trainer.describe(), "precision": trainer.steps.precision, "batch_size": args.batch_size,
                  "rounds": args.rounds, "seconds": times, "median_seconds": medians, "cpu": bench.hardware.cpu_model(),
                  "onednn": onednn}
        bench.write_result(args.output, result, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
