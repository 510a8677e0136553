"""Time krasserm/super-resolution's SRGAN ``train_step`` the way ``upsampler benchmark`` times its own.

The peer's code is not part of this project: point ``--peer-dir`` at a checkout of
https://github.com/krasserm/super-resolution (``model/`` and ``train.py``). It is used as it is,
with three adjustments made here, from outside, none in its files:

* imports: it imports ``tensorflow.python.keras`` (Keras 2, gone from TensorFlow >= 2.16); this
  script runs it on ``tf_keras`` (``pip install tf_keras`` matching TensorFlow) by aliasing those
  modules and setting ``TF_USE_LEGACY_KERAS=1``. ``pixel_shuffle`` is its later name for
  ``subpixel_conv2d`` (``tf.nn.depth_to_space``); older checkouts only have the latter.
* the study's size: ``srgan.HR_SIZE = 176`` (its discriminator's fixed input), LR 44;
* VGG19 without ImageNet weights (nothing is downloaded; weights change values, not speed),
  as ``upsampler benchmark --content-network untrained``.

TensorFlow loads before anything of upsampler, so the peer runs on TensorFlow's own choice of CPU
kernels (oneDNN only on AVX-512 VNNI/BF16 and AMX CPUs), as its users get it; with
``TF_ENABLE_ONEDNN_OPTS=1`` in the environment (variant ``krasserm-onednn`` of ``alternate.py``)
it runs on oneDNN like upsampler's default. The JSON records which (``onednn``).

The step is timed on one fixed synthetic uint8 batch (``--batch-size``, default 8) after
``--warmup`` untimed calls, and a float32 4096x4096 matmul (TensorFlow's and NumPy's, the faster
median is the yardstick) runs between the timed steps, as in ``upsampler benchmark``. It prints one
JSON line with the keys ``benchmarks/alternate.py`` reads (variant ``krasserm``).

    .venv/bin/pip install --target /tmp/tfk --no-deps tf_keras==<TensorFlow's version>
    PYTHONPATH=/tmp/tfk .venv/bin/python benchmarks/peer_krasserm.py --peer-dir /path/to/super-resolution
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

LR_SIZE, HR_SIZE = 44, 176


def _alias_legacy_keras() -> None:
    """Make ``tensorflow.python.keras.*`` resolve to ``tf_keras.*`` and VGG19 load without weights."""
    try:
        import tf_keras
    except ImportError:
        raise SystemExit("peer_krasserm: tf_keras is not importable; install the version matching TensorFlow "
                         "(pip install --target DIR --no-deps tf_keras==X.Y) and put DIR on PYTHONPATH") from None
    for name in ("layers", "models", "applications", "applications.vgg19"):
        sys.modules[f"tensorflow.python.keras.{name}"] = importlib.import_module(f"tf_keras.{name}")
    sys.modules["tensorflow.python.keras"] = tf_keras
    vgg19 = sys.modules["tensorflow.python.keras.applications.vgg19"]
    vgg19.VGG19 = functools.partial(vgg19.VGG19, weights=None)


def _import_peer(peer_dir: Path):
    for needed in ("train.py", "model/srgan.py", "model/common.py"):
        if not (peer_dir / needed).is_file():
            raise SystemExit(f"peer_krasserm: {peer_dir / needed}: missing (is --peer-dir a checkout of "
                             "krasserm/super-resolution?)")
    sys.path.insert(0, str(peer_dir))
    common = importlib.import_module("model.common")
    if not hasattr(common, "pixel_shuffle"):
        common.pixel_shuffle = common.subpixel_conv2d
    srgan = importlib.import_module("model.srgan")
    srgan.HR_SIZE = HR_SIZE
    train = importlib.import_module("train")
    return srgan, train


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peer-dir", type=Path, required=True, help="checkout of krasserm/super-resolution")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=3, help="timed steps (default %(default)s)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--matmul-size", type=int, default=4096)
    args = p.parse_args(argv)

    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    _alias_legacy_keras()
    import numpy as np
    import tensorflow as tf  # before upsampler: its oneDNN preference must not reach the peer

    from upsampler.tools.measure import (TensorFlowMatmul, choose_yardstick, device_info, matmul_gflops_once,
                                         matmul_operands)

    srgan, train = _import_peer(args.peer_dir.resolve())
    trainer = train.SrganTrainer(generator=srgan.generator(), discriminator=srgan.discriminator())

    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (args.batch_size, HR_SIZE, HR_SIZE, 3), dtype=np.uint8)
    s = HR_SIZE // LR_SIZE
    lr = hr.reshape(args.batch_size, LR_SIZE, s, LR_SIZE, s, 3).mean(axis=(2, 4)).astype(np.uint8)
    lr, hr = tf.constant(lr), tf.constant(hr)

    def step():
        perceptual, _ = trainer.train_step(lr, hr)
        perceptual.numpy()

    a, b = matmul_operands(args.matmul_size)
    matmuls = {"tensorflow": TensorFlowMatmul("float32", "/CPU:0", args.matmul_size),
               "numpy": lambda: matmul_gflops_once(a, b)}
    samples: dict[str, list[float]] = {name: [] for name in matmuls}

    def interleaved_matmul():
        for name, fn in matmuls.items():
            samples[name].append(fn())

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        interleaved_matmul()
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
        print(f"  krasserm step {times[-1]:.3f} s", file=sys.stderr, flush=True)
    interleaved_matmul()
    yardstick, gflops = choose_yardstick(samples)
    seconds = statistics.median(times)
    info = device_info()
    print(json.dumps({
        "implementation": "krasserm/super-resolution SrganTrainer.train_step (tf_keras, untrained VGG19)",
        "device": info["device"], "precision": "float32", "batch": args.batch_size,
        "train_step_seconds": seconds, "train_step_seconds_all": times,
        "train_images_per_s": args.batch_size / seconds,
        "matmul_yardstick": yardstick, "matmul_gflops": gflops, "matmul_dtype": "float32",
        "matmul_samples": samples, "tensorflow": tf.__version__, "onednn": info["onednn"],
        "generator_params": trainer.generator.count_params(),
        "discriminator_params": trainer.discriminator.count_params(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
