"""Training: run directory contents, exact resume after SIGKILL, health checks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import require_module

tf = require_module("tensorflow")

from upsampler.config import UNTRAINED_VGG_WARNING, get_profile  # noqa: E402
from upsampler.data.preprocess import preprocess  # noqa: E402
from upsampler.data.images import save_png  # noqa: E402
from upsampler.training.train import FAULT_ENV, train  # noqa: E402
from upsampler.training.trainer import TrainingDiverged  # noqa: E402


def _synthetic_images(folder: Path, count: int, size: int = 40, seed: int = 0) -> Path:
    """Smooth random colour fields with edges: enough structure for a GAN to see."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(count):
        f = rng.uniform(1, 4, 3)
        phase = rng.uniform(0, 6.3, 3)
        img = np.stack([np.sin(f[c] * 6.3 * (xx + yy * c / 2) + phase[c]) for c in range(3)], -1)
        img = (img > rng.uniform(-0.5, 0.5)) * 0.5 + img * 0.25 + 0.25
        save_png((np.clip(img, 0, 1) * 255).astype(np.uint8), folder / f"img_{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("smoke")
    source = _synthetic_images(root / "images", 24)
    out = root / "processed"
    preprocess(source, out, hr_size=32, scale=4, test_fraction=0.25, seed=0, progress=False)
    return out


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.run([sys.executable, "-m", "upsampler.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=600)


def _generator_weights(run_dir: Path) -> list[np.ndarray]:
    from upsampler.archs.srgan import load_generator

    return [np.asarray(w) for w in load_generator(run_dir / "generator.keras").weights]


@pytest.mark.slow
def test_resume_after_sigkill_is_exact(smoke_data, tmp_path):
    """4 epochs straight == 2 epochs, SIGKILL in the middle of epoch 3, rerun to epoch 4."""
    common = ["train", "--profile", "smoke", "--data", str(smoke_data)]
    straight = tmp_path / "straight"
    result = _cli(*common, "--run-dir", str(straight), "--epochs", "4")
    assert result.returncode == 0, result.stderr[-3000:]

    interrupted = tmp_path / "interrupted"
    assert _cli(*common, "--run-dir", str(interrupted), "--epochs", "2").returncode == 0
    steps = get_profile("smoke").train.steps_per_epoch  # epoch 3 covers steps 2*steps+1 .. 3*steps
    killed = _cli(*common, "--run-dir", str(interrupted), "--epochs", "4", env={FAULT_ENV: str(2 * steps + 2)})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    log_after_kill = (interrupted / "loss.csv").read_text()
    resumed = _cli(*common, "--run-dir", str(interrupted), "--epochs", "4")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed at" in resumed.stdout

    for a, b in zip(_generator_weights(straight), _generator_weights(interrupted), strict=True):
        assert np.max(np.abs(a - b)) <= 1e-6
    log = pd.read_csv(interrupted / "loss.csv")
    assert log["epoch"].tolist() == [1, 2, 3, 4]
    assert (interrupted / "loss.csv").read_text().startswith(log_after_kill)  # appended, never truncated
    straight_log = pd.read_csv(straight / "loss.csv")
    np.testing.assert_allclose(log["g_loss"], straight_log["g_loss"], rtol=1e-6)
    np.testing.assert_allclose(log["d_loss"], straight_log["d_loss"], rtol=1e-6)


@pytest.mark.slow
def test_smoke_run_directory_and_a_learning_discriminator(smoke_data, tmp_path):
    config = get_profile("smoke").override(["train.epochs=4", "train.pretrain_epochs=1"])
    run_dir = tmp_path / "run"
    result = train(config, smoke_data, run_dir)
    assert (run_dir / "config.json").exists() and (run_dir / "generator.keras").exists()
    assert (run_dir / "checkpoints" / "checkpoint").exists()
    samples = {p.name for p in (run_dir / "samples").iterdir()}
    assert {"pretrain_epoch_00001.png", "adversarial_epoch_00004.png"} <= samples
    log = pd.read_csv(run_dir / "loss.csv")
    assert list(log.columns[:10]) == ["phase", "epoch", "step", "d_loss", "g_loss", "content_loss",
                                      "adversarial_loss", "d_real", "d_fake", "seconds"]
    adversarial = log[log["phase"] == "adversarial"]
    assert adversarial["epoch"].tolist() == [1, 2, 3, 4]
    assert adversarial["d_loss"].std() > 1e-3  # D learns: its loss moves (the original's sat at 7.97)
    assert adversarial["d_real"].iloc[-1] > adversarial["d_fake"].iloc[-1]
    assert UNTRAINED_VGG_WARNING in str(result)
    assert UNTRAINED_VGG_WARNING in (run_dir / "train.log").read_text()

    # A larger --epochs continues the finished run; nothing is lost.
    before = (run_dir / "loss.csv").read_text()
    train(config.override(["train.epochs=5"]), smoke_data, run_dir)
    assert (run_dir / "loss.csv").read_text().startswith(before)
    assert pd.read_csv(run_dir / "loss.csv")["epoch"].tolist()[-1] == 5


def test_resume_with_a_different_model_is_refused(smoke_data, tmp_path):
    config = get_profile("smoke").override(["train.epochs=1"])
    train(config, smoke_data, tmp_path / "run")
    with pytest.raises(ValueError, match="model.filters"):
        train(config.override(["model.filters=4"]), smoke_data, tmp_path / "run")


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(smoke_data, tmp_path, monkeypatch):
    from upsampler.training import steps_tf as steps_module

    config = get_profile("smoke").override(["train.epochs=1"])
    run_dir = tmp_path / "run"
    train(config, smoke_data, run_dir)
    checkpoint_files = sorted((run_dir / "checkpoints").iterdir())

    def poisoned(self, lr, hr, step):
        return tf.constant([np.nan] * 6, tf.float32)

    monkeypatch.setattr(steps_module.SRGANSteps, "adversarial_replica_step", poisoned)
    with pytest.raises(TrainingDiverged, match="non-finite"):
        train(config.override(["train.epochs=2"]), smoke_data, run_dir)
    assert sorted((run_dir / "checkpoints").iterdir()) == checkpoint_files
    assert pd.read_csv(run_dir / "loss.csv")["epoch"].tolist() == [1]
    assert "non-finite" in (run_dir / "train.log").read_text()


def test_a_saturated_discriminator_is_reported(smoke_data, tmp_path, monkeypatch):
    from upsampler.training import steps_tf as steps_module

    def saturated(self, lr, hr, step):
        return tf.constant([7.97, 0.07, 0.07, 16.1, 1.0, 1.0], tf.float32)

    monkeypatch.setattr(steps_module.SRGANSteps, "adversarial_replica_step", saturated)
    config = get_profile("smoke").override(["train.epochs=4", "train.saturation_patience=3"])
    result = train(config, smoke_data, tmp_path / "run")
    assert result.saturation_warning and "saturated" in result.saturation_warning
    assert "saturated" in (tmp_path / "run" / "train.log").read_text()


def test_a_collapsed_discriminator_is_reported(smoke_data, tmp_path, monkeypatch):
    from upsampler.training import steps_tf as steps_module

    def collapsed(self, lr, hr, step):
        return tf.constant([1.39, 0.7, 0.0, 0.69, 0.5, 0.49], tf.float32)

    monkeypatch.setattr(steps_module.SRGANSteps, "adversarial_replica_step", collapsed)
    config = get_profile("smoke").override(["train.epochs=4", "train.saturation_patience=3"])
    result = train(config, smoke_data, tmp_path / "run")
    log = (tmp_path / "run" / "train.log").read_text()
    assert "discriminator collapsed" in log and "collapsed for 3 consecutive epochs (1-3)" in log
    assert not result.saturation_warning
    assert any("collapsed" in line for line in result.summary)


def test_cli_names_a_missing_data_folder(tmp_path):
    from upsampler.cli import main

    assert main(["train", "--profile", "smoke", "--data", str(tmp_path / "nowhere"),
                 "--run-dir", str(tmp_path / "run")]) == 2


@pytest.mark.slow
def test_cli_preprocess_faces_then_smoke_training(shared_data, tmp_path):
    """The issue's walk-through on real CelebA faces: preprocess, then `train --profile smoke`."""
    processed, run_dir = tmp_path / "faces", tmp_path / "run"
    done = _cli("preprocess", str(shared_data / "faces"), "--out", str(processed), "--hr-size", "32",
                "--limit", "60", "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    trained = _cli("train", "--profile", "smoke", "--data", str(processed), "--run-dir", str(run_dir),
                   "--epochs", "3")
    assert trained.returncode == 0, trained.stderr[-3000:]
    for name in ("config.json", "loss.csv", "train.log", "generator.keras", "checkpoints", "samples"):
        assert (run_dir / name).exists(), name
    log = pd.read_csv(run_dir / "loss.csv")
    assert log["epoch"].tolist() == [1, 2, 3]
    assert log["d_loss"].std() > 1e-3 and log["d_real"].notna().all()
    assert UNTRAINED_VGG_WARNING in trained.stdout


def test_smoke_training_with_the_pretrained_offline_content_network(smoke_data, tmp_path):
    import json

    config = get_profile("smoke").override(["loss.content_network=vgg16-hed", "train.epochs=1"])
    result = train(config, smoke_data, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["loss"]["content_network"] == "vgg16-hed"
    assert saved["provenance"]["tensorflow"] and saved["provenance"]["commit"]
    assert isinstance(saved["provenance"]["onednn"], bool)  # the CPU kernels change round-off: recorded
    assert UNTRAINED_VGG_WARNING not in str(result)
    log = (tmp_path / "run" / "train.log").read_text()
    assert "vgg16-hed block2_conv2" in log and "produced by upsampler" in log


def _one_step_weights(smoke_data, order: str):
    from upsampler.training.trainer import SRGANTrainer

    config = get_profile("smoke").override([f"train.update_order={order}", "train.steps_per_epoch=1",
                                            "loss.adversarial_weight=1.0"])
    trainer = SRGANTrainer(config, smoke_data)
    trainer.run_epoch("adversarial", 1)
    return ([np.asarray(w) for w in trainer.generator.trainable_weights],
            [np.asarray(w) for w in trainer.discriminator.trainable_weights])


def test_d_then_g_updates_d_as_before_and_g_against_the_updated_d(smoke_data):
    """Both orders take the same D step (D sees the same G output); only G's step differs,
    because in d_then_g its adversarial gradient comes from the already-updated D."""
    g_seq, d_seq = _one_step_weights(smoke_data, "d_then_g")
    g_sim, d_sim = _one_step_weights(smoke_data, "simultaneous")
    for a, b in zip(d_seq, d_sim):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert max(float(np.abs(a - b).max()) for a, b in zip(g_seq, g_sim)) > 1e-7


def test_random_training_crops_train_a_discriminator_of_the_crop_size(smoke_data, tmp_path):
    from upsampler.training.trainer import SRGANTrainer

    config = get_profile("smoke").override(["data.train_crop=16", "train.steps_per_epoch=2"])
    trainer = SRGANTrainer(config, smoke_data)
    assert trainer.discriminator.input_shape[1:3] == (16, 16)
    assert not trainer.feed.use_hr_feature_cache
    metrics = trainer.run_epoch("adversarial", 1)
    assert np.isfinite(metrics["g_loss"]) and np.isfinite(metrics["d_loss"])


@pytest.mark.slow
def test_exported_generator_loads_without_upsampler_and_matches_the_trainer(smoke_data, tmp_path):
    from upsampler.training.trainer import SRGANTrainer

    config = get_profile("smoke").override(["train.epochs=1"])
    train(config, smoke_data, tmp_path / "run")
    trainer = SRGANTrainer(config, smoke_data, tmp_path / "run")
    assert trainer.restore()
    x = np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    # The export is the checkpoint's generator with population BatchNorm statistics recomputed over
    # fixed training batches (train.precise_bn_batches): the restored trainer rebuilds it exactly,
    # and every trained weight is the checkpoint's own.
    exported = trainer.export_generator()
    assert "population BatchNorm statistics" in (tmp_path / "run" / "train.log").read_text()
    trained = {w.path: np.asarray(w) for w in trainer.generator.weights if "moving_" not in w.path}
    kept = {w.path: np.asarray(w) for w in exported.weights}
    assert trained and set(trained) <= set(kept)
    for path, value in trained.items():
        np.testing.assert_array_equal(kept[path], value, err_msg=path)
    np.save(tmp_path / "y.npy", np.asarray(exported(x, training=False)))
    script = (
        "import sys, numpy as np, keras\n"
        "m = keras.models.load_model(sys.argv[1], compile=False)\n"
        "assert not any(k.startswith('upsampler') for k in sys.modules)\n"
        "np.testing.assert_allclose(np.asarray(m(np.load(sys.argv[2]))), np.load(sys.argv[3]), atol=1e-5)\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "run" / "generator.keras"),
                             str(tmp_path / "x.npy"), str(tmp_path / "y.npy")], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


# ---- run-directory invariants (upsampler.training.rundir) through the trainer -----------------------------

def _second_processed_set(root: Path) -> Path:
    source = _synthetic_images(root / "other_images", 24, seed=7)
    out = root / "other"
    preprocess(source, out, hr_size=32, scale=4, test_fraction=0.25, seed=0, progress=False)
    return out


@pytest.mark.slow
def test_resuming_on_other_data_is_refused_naming_both_folders(smoke_data, tmp_path):
    run_dir = tmp_path / "run"
    common = ("train", "--profile", "smoke", "--run-dir", str(run_dir), "--epochs", "1")
    assert _cli(*common, "--data", str(smoke_data)).returncode == 0
    other = _second_processed_set(tmp_path)
    refused = _cli(*common[:-1], "2", "--data", str(other))
    assert refused.returncode == 2
    message = refused.stderr.strip()
    assert len(message.splitlines()) == 1 and str(smoke_data.resolve()) in message and str(other.resolve()) in message
    assert json.loads((run_dir / "config.json").read_text())["data_source"]["path"] == str(smoke_data.resolve())


def test_a_second_writer_on_one_run_directory_is_refused(smoke_data, tmp_path):
    from upsampler.training.rundir import RunDirectory

    holder = RunDirectory(tmp_path / "run")
    holder.lock()
    try:
        refused = _cli("train", "--profile", "smoke", "--data", str(smoke_data), "--run-dir", str(holder.path))
    finally:
        holder.unlock()
    assert refused.returncode == 2
    assert f"in use by pid {os.getpid()}" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert not (holder.path / "checkpoints").exists()


def test_the_mse_snapshot_and_a_stale_export_match_the_checkpoint(smoke_data, tmp_path):
    from upsampler.archs.srgan import load_generator
    from upsampler.training.rundir import RunDirectory

    config = get_profile("smoke").override(["train.pretrain_epochs=1", "train.epochs=2"])
    run_dir = tmp_path / "run"
    train(config, smoke_data, run_dir)
    run = RunDirectory(run_dir)
    steps = config.train.steps_per_epoch
    assert run.exports() == {"generator.keras": 3 * steps, "generator_pretrained.keras": steps}
    final = [np.asarray(w) for w in load_generator(run.generator_path).weights]
    snapshot = [np.asarray(w) for w in load_generator(run.snapshot_path).weights]
    assert max(float(np.abs(a - b).max()) for a, b in zip(final, snapshot)) > 1e-4  # the adversarial phase moved G

    # A kill between the checkpoint and the export: generator.keras is older than the checkpoint.
    run.generator_path.write_bytes(run.snapshot_path.read_bytes())
    run.exports_path.write_text(json.dumps({"generator.keras": steps, "generator_pretrained.keras": steps}))
    train(config, smoke_data, run_dir)  # finished: nothing to train, but the export is repaired
    repaired = [np.asarray(w) for w in load_generator(run.generator_path).weights]
    assert all(np.array_equal(a, b) for a, b in zip(final, repaired))
    assert "generator.keras re-exported from the checkpoint" in run.log_path.read_text()


def test_a_torn_loss_row_is_moved_aside_and_training_continues(smoke_data, tmp_path):
    config = get_profile("smoke").override(["train.epochs=1"])
    run_dir = tmp_path / "run"
    train(config, smoke_data, run_dir)
    with (run_dir / "loss.csv").open("a") as f:
        f.write("adversarial,2,6,1.38")  # a kill or a full disk in the middle of a row
    train(config.override(["train.epochs=2"]), smoke_data, run_dir)
    log = pd.read_csv(run_dir / "loss.csv")
    assert log["epoch"].tolist() == [1, 2] and log["d_loss"].notna().all()
    assert [p.read_text() for p in run_dir.glob("loss.csv.torn-*")] == ["adversarial,2,6,1.38"]
    assert "incomplete last row" in (run_dir / "train.log").read_text()


@pytest.mark.slow
def test_an_unreadable_latest_checkpoint_falls_back_to_the_one_before(smoke_data, tmp_path):
    config = get_profile("smoke").override(["train.epochs=2"])
    run_dir = tmp_path / "run"
    train(config, smoke_data, run_dir)
    latest = max((run_dir / "checkpoints").glob("ckpt-*.data-*"), key=lambda p: int(p.name.split("-")[1].split(".")[0]))
    latest.write_bytes(b"\0" * 64)  # a corrupt file
    result = train(config.override(["train.epochs=3"]), smoke_data, run_dir)
    assert result.epochs_done == 3
    text = (run_dir / "train.log").read_text()
    assert "is unreadable" in text and "resumed at pretrain epoch 0/0, adversarial epoch 1/3" in text
    assert pd.read_csv(run_dir / "loss.csv")["epoch"].tolist() == [1, 2, 3]


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(smoke_data, tmp_path, monkeypatch, capsys):
    import errno

    from upsampler.cli import main
    from upsampler.training.rundir import RunDirectory

    run_dir = tmp_path / "run"
    args = ["train", "--profile", "smoke", "--data", str(smoke_data), "--run-dir", str(run_dir)]
    assert main([*args, "--epochs", "1"]) == 0
    before = sorted(p.name for p in (run_dir / "checkpoints").iterdir())

    def full(self, step):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.checkpoint_dir / f"ckpt-{step}"))

    monkeypatch.setattr(RunDirectory, "save_checkpoint", full)
    capsys.readouterr()
    assert main([*args, "--epochs", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No space left on device" in err and "ckpt-" in err
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == before
    monkeypatch.undo()
    assert main([*args, "--epochs", "2"]) == 0  # space freed: the same command resumes
    assert pd.read_csv(run_dir / "loss.csv")["epoch"].tolist() == [1, 2]


@pytest.mark.slow
def test_chaos_ten_kills_at_random_moments_leave_the_run_exact(tmp_path):
    """scripts/chaos_kill.py: SIGKILL `upsampler train` 10 times at random moments (steps,
    checkpoint writes, exports, log appends, the phase boundary), resume after each; the final
    checkpoint, generator.keras, the MSE snapshot and loss.csv equal an uninterrupted run's."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "chaos_kill.py"
    done = subprocess.run([sys.executable, str(script), "--kills", "10", "--work", str(tmp_path)],
                          capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["ok"] and result["kills"] >= 10 and result["loss_rows_once"]
    assert max(result["generator.keras"], result["generator_pretrained.keras"], result["checkpoint"]) <= 1e-6
