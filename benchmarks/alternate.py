"""Compare step variants in separate processes launched alternately (A B C A B C ...).

Each round runs ``upsampler benchmark --skip inference,fid,pipeline,pretrain`` once per
variant; the summary gives, per variant, the median step time over all timed steps of all
rounds, images/s, the ratio to the first variant, and the yardstick (best same-precision
matmul, measured inside every run). Separate processes because op determinism, XLA and the
dtype policy are process-wide; alternating because a shared machine's load drifts.

    .venv/bin/python benchmarks/alternate.py --rounds 3 --steps 3 --batch-size 8 \
        --output benchmarks/results/cpu-<date>-alternate.json

Variants (``--variants``, comma-separated; the first is the reference):
    default          the trainer as it trains (train.precision=auto)
    fp32             the default step in float32
    bf16             the default step in mixed_bfloat16
    baseline         the straightforward step in float32 (stock layers and Adam, two D calls, no HR cache)
    flatten          the default step with the study's Flatten head and conv biases before BN
    plain-study      the straightforward step on the study's networks (Flatten head, biases) in
                     float32: what a plain Keras SRGAN step (krasserm/super-resolution's) computes
    op-determinism   the default step with TensorFlow's op determinism switched on
    eigen            the default step on TensorFlow's Eigen CPU kernels (TF_ENABLE_ONEDNN_OPTS=0; upsampler
                     asks for oneDNN on every x86 CPU, TensorFlow alone only on AVX-512 VNNI/BF16 and AMX)
    krasserm         krasserm/super-resolution's SRGAN train_step (benchmarks/peer_krasserm.py; needs
                     --peer-dir, a checkout of it, and tf_keras importable, e.g. on PYTHONPATH) on
                     TensorFlow's own choice of CPU kernels, as its users run it; its useful GFLOP/s
                     uses the FLOP count of the study's networks (the same layers) from a
                     flatten/plain-study variant of the same run, if there is one
    krasserm-onednn  the same on oneDNN's kernels (TF_ENABLE_ONEDNN_OPTS=1), as upsampler's default

Every variant but these three runs with the environment this script was started in.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

VARIANTS = {
    "default": [],
    "fp32": ["--precision", "float32"],
    "bf16": ["--precision", "mixed_bfloat16"],
    "baseline": ["--precision", "float32", "--baseline"],
    "flatten": ["--set", "model.disc_head=flatten", "--set", "model.bias_before_bn=true"],
    "plain-study": ["--precision", "float32", "--baseline", "--set", "model.disc_head=flatten",
                    "--set", "model.bias_before_bn=true"],
    "op-determinism": [],
    "eigen": [],
    "krasserm": [],
    "krasserm-onednn": [],
}
# The CPU kernels are chosen when TensorFlow loads, by this variable; these variants fix it.
VARIANT_ENV = {"eigen": {"TF_ENABLE_ONEDNN_OPTS": "0"}, "krasserm-onednn": {"TF_ENABLE_ONEDNN_OPTS": "1"}}
PEERS = ("krasserm", "krasserm-onednn")
PEER_SCRIPT = Path(__file__).with_name("peer_krasserm.py")
# Op determinism is process-wide and the trainer leaves it off on CPUs; this prefix switches it on first.
DETERMINISM_PREFIX = "import tensorflow as tf; tf.config.experimental.enable_op_determinism(); "


def command(variant: str, args) -> list[str]:
    if variant in PEERS:
        return [sys.executable, str(PEER_SCRIPT), "--peer-dir", str(args.peer_dir), "--batch-size",
                str(args.batch_size), "--steps", str(args.steps), "--warmup", "1"]
    bench_args = ["benchmark", "--profile", args.profile, "--batch-size", str(args.batch_size), "--steps",
                  str(args.steps), "--warmup", "1", "--skip", "inference,fid,pipeline,pretrain", "--json",
                  *VARIANTS[variant]]
    code = "import sys; from upsampler.cli import main; sys.exit(main(sys.argv[1:]))"
    if variant == "op-determinism":
        code = DETERMINISM_PREFIX + code
    return [sys.executable, "-c", code, *bench_args]


def _fmt(value: float | None, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default="default,baseline")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--profile", default="paper")
    p.add_argument("--output")
    p.add_argument("--peer-dir", type=Path, help="checkout of krasserm/super-resolution (variant krasserm)")
    args = p.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if any(v in PEERS for v in variants) and args.peer_dir is None:
        p.error("variants krasserm and krasserm-onednn need --peer-dir")

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for r in range(args.rounds):
        for variant in variants:
            done = subprocess.run(command(variant, args), capture_output=True, text=True,
                                  env={**env, **VARIANT_ENV.get(variant, {})})
            if done.returncode != 0:
                raise SystemExit(f"{variant}: benchmark failed: {done.stderr[-2000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            runs[variant].append(result)
            print(f"round {r + 1}/{args.rounds} {variant:>15}: {result['train_step_seconds']:.3f} s/step, "
                  f"{result['precision']}, oneDNN {result.get('onednn')}, yardstick {result['matmul_yardstick']} {result['matmul_gflops']:.0f} GFLOP/s",
                  file=sys.stderr, flush=True)

    # The peer runs the study's networks (Flatten head, biases); their FLOP count comes from ours.
    study_flops = next((runs[v][0]["flops"] for v in ("plain-study", "flatten") if v in runs), None)
    summary = {}
    for variant in variants:
        steps = [t for result in runs[variant] for t in result["train_step_seconds_all"]]
        median = statistics.median(steps)
        matmul = statistics.median([result["matmul_gflops"] for result in runs[variant]])
        flops = runs[variant][0].get("flops", study_flops)
        useful = flops["adversarial_gflop_per_step"] / median if flops else None
        summary[variant] = {
            "step_seconds": median, "images_per_s": args.batch_size / median, "precision": runs[variant][0]["precision"],
            "onednn": runs[variant][0].get("onednn"),
            "useful_gflops": useful, "matmul_gflops": matmul,
            "ratio_to_matmul": None if useful is None else useful / matmul,
            "matmul_yardstick": sorted({result["matmul_yardstick"] for result in runs[variant]}),
            "matmul_dtype": runs[variant][0]["matmul_dtype"],
        }
    # Only now: importing upsampler asks for oneDNN in this process's environment, which the
    # variants above must not inherit (krasserm runs on TensorFlow's own choice).
    from upsampler.utils.hardware import onednn_word

    reference = summary[variants[0]]["images_per_s"]
    lines = [f"{runs[variants[0]][0]['device']}; {args.rounds} rounds x {args.steps} timed steps, batch "
             f"{args.batch_size}, {args.profile} profile; medians",
             f"{'variant':<16} {'precision':<15} {'oneDNN':<6} {'s/step':>7} {'img/s':>6} {'vs ' + variants[0]:>12} "
             f"{'useful GF/s':>11} {'matmul GF/s':>11} {'ratio':>6}  yardstick"]
    for variant, row in summary.items():
        onednn = onednn_word(row["onednn"])
        lines.append(f"{variant:<16} {row['precision']:<15} {onednn:<6} {row['step_seconds']:>7.3f} {row['images_per_s']:>6.2f} "
                     f"{row['images_per_s'] / reference:>11.2f}x {_fmt(row['useful_gflops'], 11, 0)} "
                     f"{row['matmul_gflops']:>11.0f} {_fmt(row['ratio_to_matmul'], 6, 2)}  "
                     f"{'/'.join(row['matmul_yardstick'])} {row['matmul_dtype']}")
    table = "\n".join(lines)
    print(table)
    if args.output:
        from upsampler.tools.bench import write_result

        write_result(args.output, {"summary": summary, "runs": runs}, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
