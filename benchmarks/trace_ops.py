"""Where the time of the default adversarial step goes, op by op: a TensorFlow profiler trace.

Builds the trainer as ``upsampler benchmark`` does (paper profile, untrained VGG19, synthetic
data, the default speed-ups and precision unless told otherwise), runs ``--warmup`` steps,
traces ``--steps`` steps with ``tf.profiler.experimental`` and reads the trace (the
``.xplane.pb`` TensorFlow writes) with TensorFlow's own protobuf classes: for every op that ran
on TensorFlow's executor threads, the busy time per step, by op type and by op name.

Busy time is summed over TensorFlow's inter-op threads: where two ops run at once, sharing the
cores, both count, so the total exceeds the step's wall time (the table gives both).

    .venv/bin/python benchmarks/trace_ops.py --batch-size 8 --steps 2 \
        --output benchmarks/results/cpu-<date>-ops.json
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path


def read_trace(logdir: str) -> dict[str, dict[str, float]]:
    """{"by_type": {op type: seconds}, "by_name": {op name: seconds}} of the executor threads in the trace."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    files = sorted(Path(logdir).rglob("*.xplane.pb"))
    if not files:
        raise SystemExit(f"trace_ops: no .xplane.pb under {logdir}")
    space = xplane_pb2.XSpace()
    space.ParseFromString(files[-1].read_bytes())
    by_type: collections.Counter = collections.Counter()
    by_name: collections.Counter = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):  # the executor's inter-op threads
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" not in name or "::" in name:  # executor bookkeeping, not an op ("name:Type")
                    continue
                seconds = event.duration_ps / 1e12
                by_name[name] += seconds
                by_type[name.rsplit(":", 1)[1]] += seconds
    return {"by_type": dict(by_type), "by_name": dict(by_name)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="paper")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=2, help="traced steps (default %(default)s)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--precision", default=None, help="train.precision (default: the profile's)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    p.add_argument("--top", type=int, default=25, help="op names to list (default %(default)s)")
    p.add_argument("--output")
    args = p.parse_args(argv)

    from upsampler.tools import bench, measure  # before TensorFlow: it picks the CPU kernels
    from upsampler.utils import hardware
    from upsampler.training.trainer import SRGANTrainer

    import tensorflow as tf

    config = measure.build_config(args.profile, batch_size=args.batch_size, xla="auto", precision=args.precision,
                                  content_network="untrained", hr_cache="auto", strategy="default",
                                  deterministic=None, overrides=args.set)
    d = config.data
    trainer = SRGANTrainer(config, arrays=measure.synthetic_arrays(2 * args.batch_size, d.lr_size, d.hr_size))
    if trainer.feed.use_hr_feature_cache:
        trainer.feed.prepare_hr_features()
    lr, hr = next(iter(trainer.feed.dataset(1)))
    step = trainer.steps.adversarial_step
    for i in range(args.warmup):
        step(lr, hr, tf.constant(i + 1, tf.int64)).numpy()
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        for i in range(args.steps):
            step(lr, hr, tf.constant(args.warmup + i + 1, tf.int64)).numpy()
        wall = (time.perf_counter() - start) / args.steps
        tf.profiler.experimental.stop()
        trace = read_trace(logdir)

    per_step = {kind: {k: v / args.steps for k, v in values.items()} for kind, values in trace.items()}
    busy = sum(per_step["by_type"].values())
    onednn = hardware.onednn_enabled()
    lines = [f"{hardware.cpu_model()}; oneDNN {hardware.onednn_word(onednn)}; {trainer.describe()}",
             f"batch {args.batch_size}, {args.steps} traced steps: wall {wall:.2f} s/step, "
             f"busy {busy:.2f} s/step summed over the executor threads",
             f"{'op type':<28} {'busy ms/step':>12} {'share':>6}"]
    for name, seconds in sorted(per_step["by_type"].items(), key=lambda kv: -kv[1]):
        if seconds / busy >= 0.002:
            lines.append(f"{name:<28} {seconds * 1000:>12.1f} {seconds / busy:>6.1%}")
    lines.append(f"\n{'op name (top ' + str(args.top) + ')':<100} {'busy ms/step':>12}")
    for name, seconds in sorted(per_step["by_name"].items(), key=lambda kv: -kv[1])[: args.top]:
        lines.append(f"{name:<100} {seconds * 1000:>12.1f}")
    table = "\n".join(lines)
    print(table)
    if args.output:
        bench.write_result(args.output, {"cpu": hardware.cpu_model(), "onednn": onednn, "trainer": trainer.describe(),
                                         "batch": args.batch_size, "wall_seconds_per_step": wall,
                                         "busy_seconds_per_step": busy, **per_step}, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
