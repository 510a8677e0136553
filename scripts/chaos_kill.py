"""Kill `upsampler train` at random moments, resume after each kill, and compare with an uninterrupted run.

    python scripts/chaos_kill.py --kills 8 [--seed 0] [--work DIR]

A small run on built-in demo images (the smoke profile: 3 MSE pre-training epochs, then 5 adversarial epochs, a
checkpoint every epoch) is trained once without interruption, then again in another run
directory where each invocation is SIGKILLed in a random epoch still to do, a random time into
it (so kills land in the steps, the checkpoint writes, the exports, the loss-row and log appends,
and the phase boundary), until ``--kills`` kills have landed; a last invocation finishes it. Then the two run directories
must agree: ``generator.keras`` and ``generator_pretrained.keras`` within ``--atol`` (default
1e-6), every variable of the final checkpoint within ``--atol``, and ``loss.csv`` with every
epoch exactly once and the same losses. Prints a JSON summary; exit status 0 when they agree.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PRETRAIN_EPOCHS, EPOCHS = 3, 5


def synthetic_processed_set(root: Path) -> Path:
    """24 of the built-in demo images (``upsampler.data.demo``), processed to 32 px HR / 8 px LR."""
    from upsampler.data.preprocess import preprocess
    from upsampler.data.demo import write_demo_datasets

    images = write_demo_datasets(root / "images", broad_count=24, narrow_count=3, size=40)["broad"]
    out = root / "processed"
    preprocess(images, out, hr_size=32, scale=4, test_fraction=0.25, seed=0, progress=False)
    return out


def command(data: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "upsampler.cli", "train", "--profile", "smoke", "--data", str(data),
            "--run-dir", str(run_dir), "--pretrain-epochs", str(PRETRAIN_EPOCHS), "--epochs", str(EPOCHS),
            "--set", "train.checkpoint_every=1", "--set", "train.sample_every=1"]


def training_started(run_dir: Path, log_size: int) -> bool:
    """True once this invocation has logged its 'starting at' / 'resumed at' line."""
    log = run_dir / "train.log"
    if not log.exists() or log.stat().st_size <= log_size:
        return False
    with log.open() as f:
        f.seek(log_size)
        return any("starting at" in line or "resumed at" in line for line in f)


def epochs_saved(run_dir: Path) -> int:
    """Whole rows in loss.csv: with a checkpoint every epoch, the epochs saved so far."""
    path = run_dir / "loss.csv"
    if not path.exists():
        return 0
    lines = path.read_text().splitlines(keepends=True)
    return max(0, sum(1 for line in lines if line.endswith("\n")) - 1)


def epoch_name(index: int) -> str:
    return f"pretrain {index + 1}" if index < PRETRAIN_EPOCHS else f"adversarial {index - PRETRAIN_EPOCHS + 1}"


def chaos_run(data: Path, run_dir: Path, kills: int, rng: random.Random, epoch_seconds: float,
              env: dict[str, str]) -> list[dict]:
    """Kill an invocation ``kills`` times: each time in a random epoch still to do (its steps or,
    right after them, its checkpoint, exports, loss row and log line), a random time into it."""
    total = PRETRAIN_EPOCHS + EPOCHS
    landed: list[dict] = []
    attempts = 0
    while len(landed) < kills and attempts < 4 * kills:
        attempts += 1
        log = run_dir / "train.log"
        size = log.stat().st_size if log.exists() else 0
        proc = subprocess.Popen(command(data, run_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, env=env)
        while proc.poll() is None and not training_started(run_dir, size):
            time.sleep(0.01)
        saved = epochs_saved(run_dir)
        if saved >= total:
            proc.kill()
            proc.wait()
            break  # finished
        target = rng.randint(saved, total - 1)  # kill in epoch `target` (0-based)
        while proc.poll() is None and epochs_saved(run_dir) < target:
            time.sleep(0.01)
        # In the last epoch only early on, so the run is still there to kill; before the last epoch,
        # never past the end of the one before it (epochs may run faster than the reference's), so
        # a kill aimed before the last epoch cannot find the run already finished.
        deadline = time.monotonic() + rng.uniform(0, epoch_seconds * (0.3 if target == total - 1 else 1.2))
        limit = total if target == total - 1 else total - 1
        while proc.poll() is None and time.monotonic() < deadline and epochs_saved(run_dir) < limit:
            time.sleep(0.005)
        if proc.poll() is not None:
            if proc.returncode != 0:
                raise SystemExit(f"chaos: invocation failed with {proc.returncode}: {proc.stderr.read()[-2000:]}")
            break  # the run finished before the kill
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        landed.append({"kill": len(landed) + 1, "in": epoch_name(target), "saved": epochs_saved(run_dir)})
    final = subprocess.run(command(data, run_dir), capture_output=True, text=True, env=env)
    if final.returncode != 0:
        raise SystemExit(f"chaos: the final resume failed: {final.stderr[-2000:]}")
    return landed


def compare(reference: Path, chaos: Path) -> dict:
    import pandas as pd
    import tensorflow as tf

    from upsampler.archs.srgan import load_generator

    out: dict = {}
    for name in ("generator.keras", "generator_pretrained.keras"):
        a, b = load_generator(reference / name).weights, load_generator(chaos / name).weights
        out[name] = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a, b, strict=True))
    ra = tf.train.load_checkpoint(str(reference / "checkpoints"))
    rb = tf.train.load_checkpoint(str(chaos / "checkpoints"))
    keys = sorted(k for k in ra.get_variable_to_shape_map() if "OBJECT_GRAPH" not in k and "save_counter" not in k)
    assert keys == sorted(k for k in rb.get_variable_to_shape_map() if "OBJECT_GRAPH" not in k
                          and "save_counter" not in k), "the checkpoints hold different variables"
    diffs = []
    for k in keys:
        x, y = ra.get_tensor(k), rb.get_tensor(k)
        if k.startswith("last_epoch_metrics"):
            x, y = x[:-1], y[:-1]  # the last value is the epoch's wall time
        if np.asarray(x).dtype.kind in "fiu":
            diffs.append(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)), initial=0)))
    out["checkpoint"] = max(diffs)
    out["checkpoint_variables"] = len(keys)
    la, lb = pd.read_csv(reference / "loss.csv"), pd.read_csv(chaos / "loss.csv")
    out["loss_rows"] = [f"{p}:{e}" for p, e in zip(lb["phase"], lb["epoch"])]
    out["loss_rows_once"] = bool(list(zip(la["phase"], la["epoch"])) == list(zip(lb["phase"], lb["epoch"])))
    cols = ["d_loss", "g_loss", "content_loss", "adversarial_loss", "d_real", "d_fake"]
    out["loss_values"] = float(np.nanmax(np.abs(la[cols].to_numpy(float) - lb[cols].to_numpy(float))))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--atol", type=float, default=1e-6)
    p.add_argument("--work", help="working folder (default: a temporary one)")
    args = p.parse_args(argv)

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="chaos-"))
    data = synthetic_processed_set(work / "data")
    reference = work / "reference"
    proc = subprocess.Popen(command(data, reference), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=env)
    while proc.poll() is None and not training_started(reference, 0):
        time.sleep(0.02)
    started = time.perf_counter()
    if proc.wait() != 0:
        raise SystemExit(f"chaos: the reference run failed: {proc.stderr.read()[-2000:]}")
    training_seconds = time.perf_counter() - started
    epoch_seconds = training_seconds / (PRETRAIN_EPOCHS + EPOCHS)
    landed = chaos_run(data, work / "chaos", args.kills, random.Random(args.seed), epoch_seconds, env)
    result = {"kills": len(landed), "kill_log": landed, "reference_training_seconds": round(training_seconds, 2),
              "epoch_seconds": round(epoch_seconds, 3),
              **compare(reference, work / "chaos"), "work": str(work)}
    ok = (len(landed) >= args.kills and result["loss_rows_once"]
          and max(result["generator.keras"], result["generator_pretrained.keras"], result["checkpoint"],
                  result["loss_values"]) <= args.atol)
    result["ok"] = bool(ok)
    print(json.dumps(result, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
