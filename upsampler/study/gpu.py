"""``upsampler gpu-study``: the study's training on one GPU, in one command, against a clock.

Preprocesses the two image sets (Model A's varied photos, Model B's faces), then trains every
(model, seed) run with ``upsampler train --profile study-gpu`` (MSE pre-training, then the
adversarial phase, each until its wall-clock budget is used, stopping at an epoch boundary with a
checkpoint and an export carrying population BatchNorm statistics). The runs share the GPU as
separate processes started together (``--parallel``), each given its share of the device memory,
so the compile of one overlaps the steps of another. Progress is printed as it happens; at the end
each run is packed into ``<out>/pack/<run>.tar.gz`` (generators, config, loss.csv, train.log,
exports.json, the last samples): few, small files to copy off the machine.

Rerunning the same command resumes every run from its checkpoint (each run directory is an
ordinary ``upsampler train`` run directory). On a machine lent for a fixed time (Colab, a rented
GPU), ``--stop-after`` ends every run still training at that point of the command's own clock (at
most one checkpoint interval is lost) and still packs what was exported.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from upsampler.utils.argtypes import integer, number

PACKED = ("config.json", "loss.csv", "train.log", "exports.json", "generator.keras", "generator_pretrained.keras")


def run_names(seeds: int) -> list[tuple[str, str, int]]:
    """``(run name, data key, seed)`` for every model and seed, seeds interleaved (A0, B0, A1, B1, ...)."""
    return [(f"model_{m}_seed{s}", m, s) for s in range(seeds) for m in ("a", "b")]


def configure_gpu_study_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--coco", required=True, help="Model A's images (a folder; several joined with ':')")
    p.add_argument("--celeba", required=True, help="Model B's face images (a folder)")
    p.add_argument("--celeba-groups", help="CSV file -> identity: split the faces by identity")
    p.add_argument("--test-fraction", type=number(0, 1), default=0.2,
                   help="test share of each set (0 when the folders hold training images only)")
    p.add_argument("--out", required=True, help="output folder: data/, runs/, pack/")
    p.add_argument("--seeds", type=integer(1, 100), default=3, help="training seeds per model")
    p.add_argument("--pretrain-minutes", type=number(0), default=3.0, help="MSE pre-training budget per run")
    p.add_argument("--minutes", type=number(0, low_open=True), default=3.0, help="adversarial budget per run")
    p.add_argument("--parallel", type=integer(0), default=0, help="runs started together (0: all)")
    p.add_argument("--stop-after", type=number(0), default=0.0, metavar="MINUTES",
                   help="stop every run still training this many minutes after the command started, then pack "
                        "(0: no limit); a rerun resumes from the last checkpoints")
    p.add_argument("--profile", default="study-gpu", help="training profile")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="config override passed to every run (repeatable)")


def _prepare(args) -> dict[str, Path]:
    from upsampler.config import get_profile
    from upsampler.data.preprocess import preprocess
    from upsampler.data.sources import split_sources
    from upsampler.data.splits import read_groups_csv

    data_config = get_profile(args.profile).override(args.set).data  # the runs' own image size and scale
    out = Path(args.out)
    sets = {"a": (split_sources(args.coco), None), "b": (split_sources(args.celeba), args.celeba_groups)}
    folders = {}
    for key, (sources, groups_csv) in sets.items():
        folder = out / "data" / f"model_{key}"
        groups = read_groups_csv(groups_csv, "file", "celeba_identity") if groups_csv else None
        summary = preprocess(sources if len(sources) > 1 else sources[0], folder, hr_size=data_config.hr_size,
                             scale=data_config.scale, crop=data_config.crop, test_fraction=args.test_fraction,
                             groups=groups, progress=False)
        print(f"[gpu-study] data {key.upper()}: {summary.n_accepted} images, {summary.n_rejected} rejected -> {folder}",
              flush=True)
        folders[key] = folder
    return folders


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(starting)"
    return lines[-1] if lines else "(starting)"


def _stop(active: dict, grace: float = 30.0) -> None:
    """SIGTERM to every run, SIGKILL to those still alive after ``grace`` seconds (checkpoints are atomic)."""
    for proc, _, _ in active.values():
        proc.terminate()
    end = time.time() + grace
    for proc, _, _ in active.values():
        try:
            proc.wait(timeout=max(0.1, end - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _train_all(args, folders: dict[str, Path], deadline: float | None = None) -> dict[str, int]:
    out = Path(args.out)
    runs = run_names(args.seeds)
    parallel = args.parallel or len(runs)
    share = max(0.05, min(0.9, 0.9 / min(parallel, len(runs))))
    env = {**os.environ, "XLA_PYTHON_CLIENT_MEM_FRACTION": f"{share:.3f}", "PYTHONUNBUFFERED": "1"}
    waiting, active, codes, shown = list(runs), {}, {}, {}
    while waiting or active:
        while waiting and len(active) < parallel:
            name, key, seed = waiting.pop(0)
            run_dir = out / "runs" / name
            run_dir.mkdir(parents=True, exist_ok=True)
            command = [sys.executable, "-m", "upsampler.cli", "train", "--data", str(folders[key]),
                       "--run-dir", str(run_dir), "--profile", args.profile, "--set", f"train.seed={seed}",
                       "--set", "train.progress=false", "--pretrain-minutes", str(args.pretrain_minutes),
                       "--minutes", str(args.minutes), *sum((["--set", s] for s in args.set), [])]
            log = open(run_dir / "stdout.log", "a")
            active[name] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env), log, run_dir)
            print(f"[gpu-study] started {name}", flush=True)
        for _ in range(15):
            if deadline is not None and time.time() >= deadline:
                break
            time.sleep(1)
        if deadline is not None and time.time() >= deadline and active:
            print(f"[gpu-study] --stop-after {args.stop_after:g} min reached: stopping {', '.join(active)} "
                  f"(they resume from their last checkpoint on rerun)", flush=True)
            _stop(active)
            waiting.clear()
        for name, (proc, log, run_dir) in list(active.items()):
            line = _last_line(run_dir / "train.log")
            if shown.get(name) != line:  # each new log line once
                shown[name] = line
                print(f"[gpu-study] {name}: {line}", flush=True)
            if proc.poll() is not None:
                log.close()
                codes[name] = proc.returncode
                del active[name]
                print(f"[gpu-study] {name} ended with exit code {proc.returncode}", flush=True)
                if proc.returncode:
                    print(_tail(run_dir / "stdout.log"), file=sys.stderr, flush=True)
    return codes


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def pack_run(run_dir: Path, target: Path) -> Path:
    """A gzipped tar of the run's generators, config, logs and its last sample image."""
    target.parent.mkdir(parents=True, exist_ok=True)
    samples = sorted((run_dir / "samples").glob("*.png"))
    with tarfile.open(target, "w:gz") as tar:
        for name in PACKED:
            if (run_dir / name).exists():
                tar.add(run_dir / name, arcname=f"{run_dir.name}/{name}")
        for sample in samples[-2:]:
            tar.add(sample, arcname=f"{run_dir.name}/samples/{sample.name}")
    return target


def run_gpu_study(args) -> int:
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    if args.stop_after < 0:
        raise ValueError(f"--stop-after must be >= 0 minutes, got {args.stop_after}")
    start = time.time()
    folders = _prepare(args)
    codes = _train_all(args, folders, deadline=start + 60 * args.stop_after if args.stop_after else None)
    out = Path(args.out)
    for name, _, _ in run_names(args.seeds):
        if not (out / "runs" / name).is_dir():
            continue  # never started (--stop-after came first)
        packed = pack_run(out / "runs" / name, out / "pack" / f"{name}.tar.gz")
        print(f"[gpu-study] packed {packed} ({packed.stat().st_size / 2**20:.1f} MiB)", flush=True)
    print(f"[gpu-study] done in {(time.time() - start) / 60:.1f} min; exit codes {codes}", flush=True)
    return 0 if all(code == 0 for code in codes.values()) else 1
