"""``upsampler benchmark``: throughput and useful GFLOP/s, measured in one process.

Sections (each can be skipped with ``--skip``):

``train``     the trainer's compiled adversarial step (G, D, VGG content loss, both Adam
              updates) on a fixed synthetic batch: images/s and *useful* GFLOP/s;
``matmul``    the yardstick: the best dense 4096x4096 matmul this machine reaches in the
              step's compute precision, measured interleaved with the training repetitions
              (same load, same run) with the backend (``tf.matmul`` on the step's device, or
              ``jnp.matmul`` on JAX's default device) and,
              in float32 on a CPU, with NumPy's BLAS; the faster median is the yardstick
              (``matmul_yardstick`` names it) and ``ratio_to_matmul = useful_gflops /
              matmul_gflops``;
``pretrain``  the generator-only (pixel MSE) step;
``inference`` ``upsampler.inference.tiles.upscale_image`` with tiling: output megapixels/s;
``pipeline``  the trainer's input pipeline (``make_train_dataset`` + cached HR features),
              images/s, which must exceed what the training step consumes;
``fid``       ``inception-untrained`` feature extraction (299 px), images/s.

Every figure is the median of ``--steps`` repetitions after ``--warmup`` untimed ones. It runs on
the Keras backend in use (``KERAS_BACKEND``: TensorFlow, or JAX where the GPUs have no
TensorFlow) and reports it (``backend``, ``backend_version``).

Useful FLOPs follow the convention of :mod:`upsampler.tools.flops` (its docstring says what
``useful_gflops`` and ``executed_gflops`` count). The VGG weights default to ``untrained`` here:
weights change the values, never the speed. The sections are measured by :mod:`upsampler.tools.measure`;
this module holds the command line and the report.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from upsampler.tools.measure import build_config, run
from upsampler.utils import hardware
from upsampler.config import CONTENT_NETWORKS, JIT_COMPILE, PRECISIONS, STRATEGIES
from upsampler.utils.argtypes import integer, number

SECTIONS = ("train", "matmul", "pretrain", "inference", "pipeline", "fid")


# ---- output --------------------------------------------------------------------------------

def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def format_table(result: dict[str, Any]) -> str:
    """The human-readable table of a :func:`run` result."""
    rows = [
        ("device", result.get("device")),
        ("backend / Keras", f"{result.get('backend', 'tensorflow')} "
                            f"{result.get('backend_version') or result.get('tensorflow_version')} / "
                            f"{result.get('keras_version')}"),
        ("oneDNN CPU kernels", hardware.onednn_word(result.get("onednn"))
         if result.get("backend", "tensorflow") == "tensorflow" else "- (not TensorFlow)"),
        ("precision / XLA", f"{result.get('precision')} / {'on' if result.get('xla') else 'off'}"),
        ("strategy", f"{result.get('strategy')}"),
        ("threads intra / inter", f"{result.get('intra_op_threads') or 'auto'} / {result.get('inter_op_threads') or 'auto'}"),
        ("profile / batch", f"{result.get('profile')} / {result.get('batch_size')} "
                            f"({result.get('lr_size')}->{result.get('hr_size')} px)"),
        ("HR VGG feature cache", "on" if result.get("hr_feature_cache") else "off"),
        ("step implementation", "one jitted step (training/steps_jax.py)" if result.get("backend") == "jax" else
         "fast paths" if result.get("fast_paths", True) else "baseline (straightforward)"),
        ("useful GFLOP per step", _fmt(result.get("flops", {}).get("adversarial_gflop_per_step"), 4)),
        ("train step (median)", f"{_fmt(result.get('train_step_seconds'), 4)} s"),
        ("train images/s", _fmt(result.get("train_images_per_s"))),
        ("useful GFLOP/s", _fmt(result.get("useful_gflops"))),
        ("executed GFLOP/s (cached work not counted)", _fmt(result.get("executed_gflops"))),
        (f"matmul GFLOP/s ({result.get('matmul_dtype')} {result.get('matmul_size', 4096)}, "
         f"{result.get('matmul_device')})",
         f"{_fmt(result.get('matmul_gflops'))} = {result.get('matmul_yardstick')}"
         f" ({'JAX' if 'matmul_jax_gflops' in result else 'TensorFlow'} "
         f"{_fmt(result.get('matmul_jax_gflops', result.get('matmul_tensorflow_gflops')))}, NumPy "
         f"{_fmt(result.get('matmul_numpy_gflops'))} {result.get('blas')})"),
        ("ratio useful / matmul (medians)", _fmt(result.get("ratio_to_matmul"))),
        ("ratio executed / matmul (medians)", _fmt(result.get("ratio_executed_to_matmul"))),
        ("  best step / best matmul", f"{_fmt(result.get('useful_gflops_best'))} / {_fmt(result.get('matmul_gflops_best'))}"
                                      f" = {_fmt(result.get('ratio_to_matmul_best'))}"),
        ("pretrain images/s", _fmt(result.get("pretrain_images_per_s"))),
        ("pretrain useful GFLOP/s", _fmt(result.get("pretrain_useful_gflops"))),
        ("inference output MP/s (tiled)", f"{_fmt(result.get('inference_megapixels_per_s'))} "
                                          f"({result.get('inference_lr_size')} px LR -> "
                                          f"{(result.get('inference_output_size') or ['?'])[0]} px, tile "
                                          f"{result.get('inference_tile')})"),
        ("pipeline images/s", f"{_fmt(result.get('pipeline_images_per_s'))} "
                              f"({_fmt(result.get('pipeline_margin'))} x training)"),
        ("FID features images/s", _fmt(result.get("fid_images_per_s"))),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    for section, reason in result.get("skipped", {}).items():
        lines.append(f"skipped {section}: {reason}")
    lines.extend(f"note: {n}" for n in result.get("notes", []))
    return "\n".join(lines)


# ---- command line --------------------------------------------------------------------------

def _parse_skip(values: list[str]) -> tuple[str, ...]:
    out: list[str] = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            if item not in SECTIONS:
                raise ValueError(f"--skip: unknown section {item!r}; choose from {', '.join(SECTIONS)}")
            out.append(item)
    return tuple(out)


def configure_benchmark_parser(p) -> None:
    p.add_argument("--profile", default="paper", help="config profile: paper (default), demo or smoke")
    p.add_argument("--batch-size", type=integer(1), help="global batch (default: the profile's)")
    p.add_argument("--steps", type=integer(1), default=5, help="timed repetitions per section (default %(default)s)")
    p.add_argument("--warmup", type=integer(0), default=1, help="untimed repetitions first (default %(default)s)")
    p.add_argument("--xla", choices=JIT_COMPILE, default="auto", help="XLA: auto = on GPU only")
    p.add_argument("--precision", choices=[p for p in PRECISIONS if p != "mixed"],
                   help="train.precision (default: the profile's; paper: auto = bf16 where the hardware has it, "
                        "else float32 on CPU / float16 on older GPUs; upsampler.training.precision)")
    p.add_argument("--content-network", choices=CONTENT_NETWORKS, default="untrained",
                   help="content-loss network (default untrained VGG19: weights change values, not speed)")
    p.add_argument("--hr-cache", choices=["auto", "on", "off"],
                   help="precompute HR VGG features once per dataset (train.cache_hr_features; "
                        "default auto, off with --baseline)")
    p.add_argument("--baseline", action="store_true",
                   help="the straightforward step: stock Keras layers and Adam, two D calls, no HR feature "
                        "cache (what the speed-ups are measured against)")
    p.add_argument("--strategy", choices=[s for s in STRATEGIES if s != "multiworker"], default="default",
                   help="tf.distribute strategy (train.strategy)")
    p.add_argument("--nondeterministic", action="store_true", help="train.deterministic=false")
    p.add_argument("--intra-op-threads", type=integer(0), help="TensorFlow intra-op threads (default: TF's)")
    p.add_argument("--inter-op-threads", type=integer(0), help="TensorFlow inter-op threads (default: TF's)")
    p.add_argument("--inference-size", type=integer(1), default=176, help="LR side of the inference image (default %(default)s)")
    p.add_argument("--tile", type=integer(1), default=88, help="inference tile, LR pixels (default %(default)s)")
    p.add_argument("--pipeline-seconds", type=number(0, low_open=True), default=2.0,
                   help="measure the input pipeline for at least this long (default %(default)s)")
    p.add_argument("--fid-batch", type=integer(1), default=16, help="images per FID feature batch (default %(default)s)")
    p.add_argument("--matmul-size", type=integer(1), default=4096, help="side of the NumPy matmul (default %(default)s)")
    p.add_argument("--skip", action="append", default=[], metavar="SECTIONS",
                   help=f"comma-separated sections to skip: {', '.join(SECTIONS)}")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="config override")
    p.add_argument("--json", action="store_true", help="print one JSON object (progress goes to stderr)")
    p.add_argument("--output", help="also write the JSON here (and the table beside it as .txt)")


def _json_ready(value):
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_result(path: str | Path, result: dict[str, Any], table: str) -> None:
    """``result`` as JSON at ``path`` and ``table`` beside it (same name, ``.txt``); folders created."""
    from upsampler.utils.files import write_atomically

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(out, json.dumps(result, indent=2) + "\n")
    write_atomically(out.with_suffix(".txt"), table + "\n")


def run_benchmark(args) -> int:
    skip = _parse_skip(args.skip)
    if args.steps < 1 or args.warmup < 0:
        raise ValueError("--steps must be >= 1 and --warmup >= 0")
    import keras

    backend = keras.backend.backend()
    if args.baseline and backend != "tensorflow":
        raise ValueError("--baseline is TensorFlow's straightforward step (what its speed-ups are measured against); "
                         f"on {backend} there is one jitted step")
    if args.intra_op_threads or args.inter_op_threads:
        if backend != "tensorflow":
            raise ValueError(f"--intra-op-threads / --inter-op-threads set TensorFlow's thread pools; the Keras "
                             f"backend here is {backend}")
        import tensorflow as tf

        if args.intra_op_threads:
            tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
        if args.inter_op_threads:
            tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
    config = build_config(
        args.profile, batch_size=args.batch_size, xla=args.xla, precision=args.precision,
        content_network=args.content_network, hr_cache=args.hr_cache or ("off" if args.baseline else "auto"),
        strategy=args.strategy,
        deterministic=False if args.nondeterministic else None, overrides=args.set,
    )

    def log(message: str) -> None:
        print(message, file=sys.stderr if args.json else sys.stdout, flush=True)

    result = _json_ready(run(config, steps=args.steps, warmup=args.warmup, skip=skip,
                             inference_size=args.inference_size, tile=args.tile, fid_batch=args.fid_batch,
                             matmul_size=args.matmul_size, pipeline_seconds=args.pipeline_seconds,
                             fast=not args.baseline, log=log))
    table = format_table(result)
    if args.output:
        write_result(args.output, result, table)
    if args.json:
        print(json.dumps(result))
    else:
        print(table)
    return 0
