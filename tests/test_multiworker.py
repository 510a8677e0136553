"""MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 train exactly as one device.

``upsampler train --strategy multiworker`` runs in two CPU processes (a TF_CONFIG cluster of
two workers on free loopback ports) while the same training runs on one device in a third
process: one MSE pre-training epoch and one adversarial epoch of the smoke profile, the
global batch of 4 split 2 + 2. Then the two-worker run directory is resumed on ONE device
for one more adversarial epoch and compared with the uninterrupted one-device run.

Compared: every variable of the checkpoints (G, D, the optimisers' slots and counters) and
every loss.csv value, within 1e-5; and that only the chief wrote the run directory. About
50 s on two shared CPU cores, most of it TensorFlow's start and the first trace of each step.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import processed_demo_set, require_module

tf = require_module("tensorflow")

from upsampler.training import distribute  # noqa: E402
from upsampler.training.rundir import read_loss_rows  # noqa: E402

TIMEOUT = 300  # seconds, for each group of processes
TOLERANCE = 1e-5
STEPS = 2  # steps per epoch
# --epochs is the total of adversarial epochs; both runs first do one MSE pre-training epoch.
TRAIN = ["train", "--profile", "smoke", "--batch-size", "4", "--steps-per-epoch", str(STEPS),
         "--pretrain-epochs", "1"]  # at the study's Adam epsilon 1e-8 (see test_distribute.py)
ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def start(args: list[str], log: Path, **env: str) -> subprocess.Popen:
    """``python -m upsampler.cli ARGS`` with its stdout and stderr in ``log``."""
    full_env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    handle = log.open("w")
    try:
        return subprocess.Popen([sys.executable, "-m", "upsampler.cli", *args], stdout=handle,
                                stderr=subprocess.STDOUT, env={**full_env, **ENV, **env})
    finally:
        handle.close()


def finish(processes: dict[str, tuple[subprocess.Popen, Path]]) -> dict[str, float]:
    """Wait for every process (TIMEOUT in all); kill them all if one fails or time runs out.
    Returns each one's wall time; fails naming the process and showing the end of its log."""
    started = time.monotonic()
    seconds: dict[str, float] = {}
    try:
        while len(seconds) < len(processes):
            for name, (proc, log) in processes.items():
                if name in seconds or proc.poll() is None:
                    continue
                seconds[name] = time.monotonic() - started
                if proc.returncode != 0:
                    pytest.fail(f"{name} exited with {proc.returncode}; the end of its output:\n"
                                + log.read_text()[-4000:], pytrace=False)
            if time.monotonic() - started > TIMEOUT:
                pytest.fail(f"timed out after {TIMEOUT} s waiting for {sorted(set(processes) - set(seconds))}; "
                            "the end of their output:\n" + "\n".join(
                                f"--- {n}\n{log.read_text()[-2000:]}" for n, (p, log) in processes.items()
                                if n not in seconds), pytrace=False)
            time.sleep(0.2)
    finally:
        for proc, _ in processes.values():  # only the processes this test started
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return seconds


def checkpoint(run_dir: Path, step: int) -> dict:
    """Every saved tensor of the run's checkpoint at ``step`` but the epoch's wall time."""
    reader = tf.train.load_checkpoint(str(run_dir / "checkpoints" / f"ckpt-{step}"))
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if not k.startswith(("_CHECKPOINTABLE_OBJECT_GRAPH", "last_epoch_metrics"))}


def max_difference(a: dict, b: dict) -> tuple[float, str]:
    import numpy as np

    assert sorted(a) == sorted(b), sorted(set(a) ^ set(b))
    worst = max(a, key=lambda k: float(np.max(np.abs(np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64)))))
    return float(np.max(np.abs(np.asarray(a[worst], np.float64) - np.asarray(b[worst], np.float64)))), worst


def loss_values(run_dir: Path) -> list[tuple[str, int, int, list[float]]]:
    rows = read_loss_rows(run_dir / "loss.csv")
    columns = ["d_loss", "g_loss", "content_loss", "adversarial_loss", "d_real", "d_fake"]
    return [(r["phase"], int(r["epoch"]), int(r["step"]), [float(r[c]) if r[c] else math.nan for c in columns])
            for r in rows]


def assert_same_losses(got, expected, what: str) -> float:
    assert [r[:3] for r in got] == [r[:3] for r in expected], f"{what}: loss.csv rows {got} != {expected}"
    worst = 0.0
    for (phase, epoch, _, a), (_, _, _, b) in zip(got, expected):
        for x, y in zip(a, b):
            assert math.isnan(x) == math.isnan(y), f"{what}: {phase} epoch {epoch}: {a} != {b}"
            if not math.isnan(x):
                worst = max(worst, abs(x - y) / max(1.0, abs(y)))
    assert worst <= TOLERANCE, f"{what}: loss.csv differs by {worst:.3g} (relative): {got} vs {expected}"
    return worst


@pytest.fixture(scope="module")
def processed(tmp_path_factory) -> Path:
    """18 training images of the built-in demo set, 32 px HR / 8 px LR."""
    return processed_demo_set(tmp_path_factory.mktemp("multiworker-data"), count=24, size=40, hr_size=32)


def test_tf_config_is_checked_with_a_one_line_message():
    good = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 1}}
    assert distribute.check_tf_config(json.dumps(good)) == good
    for text, message in [
        (None, "it is not set"),
        ("{not json", "not valid JSON"),
        ('{"cluster": {"worker": ["a:1"]}}', 'no "cluster" or no "task"'),
        ('{"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}', 'a "worker" list'),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}', "not a place in the cluster"),
    ]:
        with pytest.raises(ValueError, match=message) as caught:
            distribute.check_tf_config(text)
        assert "\n" not in str(caught.value) and "TF_CONFIG=" in str(caught.value)


def test_a_non_chief_worker_saves_its_share_of_a_checkpoint_in_a_temporary_folder(tmp_path, monkeypatch):
    import shutil
    import tempfile

    from upsampler.training import rundir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    seen, remove = [], shutil.rmtree

    def rmtree(path, **kwargs):
        seen.extend(sorted(p.name for p in Path(path).iterdir()))
        remove(path, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", rmtree)
    worker = rundir.RunDirectory(tmp_path / "run", worker="worker-1")
    worker.attach(tf.train.Checkpoint(v=tf.Variable(1.0)), keep=3)
    assert worker.save_checkpoint(7) is None
    assert "ckpt-7.index" in seen, seen  # it did save ...
    assert list((tmp_path / "tmp").iterdir()) == [] and not (tmp_path / "run").exists()  # ... and left nothing


def test_multiworker_without_tf_config_is_a_one_line_cli_error(processed, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "upsampler.cli", *TRAIN, "--data", str(processed), "--run-dir",
                           str(tmp_path / "run"), "--strategy", "multiworker"], capture_output=True, text=True,
                          env={**{k: v for k, v in os.environ.items() if k != "TF_CONFIG"}, **ENV}, timeout=TIMEOUT)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().count("\n") == 0 and "needs TF_CONFIG" in proc.stderr, proc.stderr[-3000:]


@pytest.mark.slow
def test_two_workers_train_as_one_device_and_resume_on_one_device(processed, tmp_path):
    two, one = tmp_path / "two-workers", tmp_path / "one-device"
    scratch = tmp_path / "worker-tmp"  # the workers' temporary directory: their private checkpoints go here
    scratch.mkdir()
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    data = ["--data", str(processed)]

    # Two workers to 1 adversarial epoch, and beside them one device to 2 (the reference).
    workers = {
        f"worker {i}": (start([*TRAIN, *data, "--run-dir", str(two), "--epochs", "1", "--strategy", "multiworker"],
                              tmp_path / f"worker-{i}.log", TMPDIR=str(scratch),
                              TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})),
                        tmp_path / f"worker-{i}.log")
        for i in range(2)
    }
    reference = (start([*TRAIN, *data, "--run-dir", str(one), "--epochs", "2"], tmp_path / "one.log"),
                 tmp_path / "one.log")
    seconds = finish({**workers, "one device": reference})

    log0, log1 = ((tmp_path / f"worker-{i}.log").read_text() for i in range(2))
    assert "MultiWorkerMirroredStrategy x2 (worker-0" in log0, log0[-3000:]
    assert "MultiWorkerMirroredStrategy x2 (worker-1" in log1, log1[-3000:]

    # The same maths: pre-training ends at step 2, the adversarial epoch at step 4.
    first = assert_same_losses(loss_values(two), loss_values(one)[:2], "two workers vs one device")
    pretrain_diff, _ = max_difference(checkpoint(two, STEPS), checkpoint(one, STEPS))
    weight_diff, worst = max_difference(checkpoint(two, 2 * STEPS), checkpoint(one, 2 * STEPS))
    assert weight_diff <= TOLERANCE, f"two workers vs one device: {worst} differs by {weight_diff:.3g}"
    assert pretrain_diff <= TOLERANCE, f"after pre-training: differs by {pretrain_diff:.3g}"
    moved, _ = max_difference(checkpoint(one, 2 * STEPS), checkpoint(one, STEPS))
    assert moved > 1e-4  # the adversarial epoch did change the weights

    # Only the chief wrote the run directory; the other worker's private checkpoints are gone.
    assert sorted(p.name for p in scratch.iterdir()) == [], "a worker left its temporary checkpoint folder"
    log = (two / "train.log").read_text()
    assert log.count("starting at pretrain epoch 0/1") == 1, log  # one writer of train.log
    assert "worker-1" not in log, log
    assert (two / "generator.keras").is_file() and (two / "generator_pretrained.keras").is_file()
    assert sorted(p.name for p in (two / "samples").iterdir()) == [
        "adversarial_epoch_00001.png", "pretrain_epoch_00001.png"]

    # Resume the two-worker run on one device for one more epoch: the uninterrupted run's result.
    resumed = start([*TRAIN, *data, "--run-dir", str(two), "--epochs", "2"], tmp_path / "resumed.log")
    seconds.update(finish({"resume on one device": (resumed, tmp_path / "resumed.log")}))
    out = (tmp_path / "resumed.log").read_text()
    assert f"resumed at pretrain epoch 1/1, adversarial epoch 1/2, step {2 * STEPS}" in out, out[-3000:]
    assert "not bit-exact: train.strategy: saved 'multiworker', requested 'default'" in out, out[-3000:]
    assert_same_losses(loss_values(two), loss_values(one), "resumed vs uninterrupted")
    resumed_diff, worst = max_difference(checkpoint(two, 3 * STEPS), checkpoint(one, 3 * STEPS))
    assert resumed_diff <= TOLERANCE, f"resumed vs uninterrupted: {worst} differs by {resumed_diff:.3g}"
    print(f"\nmulti-worker: loss max rel diff {first:.3g}, weights max diff after pre-training "
          f"{pretrain_diff:.3g}, after the adversarial epoch {weight_diff:.3g}, after the resume {resumed_diff:.3g}; "
          + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
