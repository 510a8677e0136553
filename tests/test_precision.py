"""Precision by hardware: the choice, its record in config.json, the quality guard, exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import processed_demo_set, require_module

tf = require_module("tensorflow")

from upsampler.utils import hardware  # noqa: E402
from upsampler.training import precision
from upsampler.config import Config, get_profile  # noqa: E402
from upsampler.training.precision import gpu_policy, hardware_policy, resolve_precision  # noqa: E402

# The quality guard's tolerance: the same short training in float32 and in mixed_bfloat16 ends
# within these on the held-out images (means over the test split).
PSNR_TOLERANCE_DB = 0.3
FEATDIST_TOLERANCE = 0.02


def test_auto_is_bf16_where_the_hardware_has_it_else_float32_or_float16():
    assert hardware_policy(on_gpu=False, cpu_bf16=True) == "mixed_bfloat16"
    assert hardware_policy(on_gpu=False, cpu_bf16=False) == "float32"
    assert gpu_policy((9, 0)) == gpu_policy((8, 0)) == "mixed_bfloat16"  # H100, A100
    assert gpu_policy((7, 5)) == gpu_policy(None) == "mixed_float16"  # T4, unknown
    assert resolve_precision("auto", on_gpu=True, gpu_capability=(8, 6)) == "mixed_bfloat16"
    assert resolve_precision("auto", on_gpu=False, cpu_bf16=False) == "float32"
    assert resolve_precision("mixed", on_gpu=False) == "mixed_bfloat16"  # what mixed_precision: true meant
    assert resolve_precision("mixed", on_gpu=True) == "mixed_float16"
    for explicit in precision.POLICIES:
        assert resolve_precision(explicit, on_gpu=True, gpu_capability=(9, 0)) == explicit
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("float8")


def test_configs_written_before_precision_keep_what_they_asked_for():
    raw = get_profile("smoke").to_dict()
    del raw["train"]["precision"]
    for old, new in ((True, "mixed"), (False, "float32")):
        raw["train"]["mixed_precision"] = old
        assert Config.from_dict(json.loads(json.dumps(raw))).train.precision == new
    assert get_profile("paper").train.precision == "auto"
    with pytest.raises(ValueError, match="train.precision"):
        get_profile("smoke").override(["train.precision=half"])


# ---- training in a 16-bit policy ---------------------------------------------------------------

GUARD_SETTINGS = [
    "data.hr_size=48",
    "model.num_blocks=2", "model.filters=16", "model.disc_filters=8", "model.disc_dense_units=32",
    "train.batch_size=8", "train.steps_per_epoch=5", "train.pretrain_epochs=12", "train.epochs=2",
    "train.pretrain_learning_rate=1e-3", "train.sample_every=100", "train.progress=false",
]


@pytest.fixture(scope="module")
def photo_data(tmp_path_factory) -> Path:
    """Crops of the built-in demo photos (upsampler.data.demo), processed to 48 px HR / 12 px LR."""
    return processed_demo_set(tmp_path_factory.mktemp("precision"), count=48, size=48, hr_size=48)


def _guard_config(policy: str, *extra: str):
    return get_profile("smoke").override([*GUARD_SETTINGS, f"train.precision={policy}", *extra])


def _held_out_scores(generator_file: Path, data_dir: Path) -> dict[str, float]:
    from upsampler.metrics.evaluate import read_split_folder, run_generator
    from upsampler.metrics.perceptual import HedFeatures, feature_distance
    from upsampler.metrics.sr import psnr
    from upsampler.archs.srgan import load_generator

    _names, hr, lr, _scale = read_split_folder(data_dir / "test")
    sr = run_generator(load_generator(generator_file), lr)
    hed = HedFeatures()
    reference = hed(hr)
    return {
        "psnr": float(np.mean([psnr(a, b) for a, b in zip(sr, hr)])),
        "featdist_hed": float(np.mean(feature_distance(hed(sr), reference))),
    }


@pytest.mark.slow
def test_quality_guard_bf16_training_ends_where_float32_does(photo_data, tmp_path):
    """The same short training (MSE pre-training, then adversarial) in float32 and in
    mixed_bfloat16, from the same seed and batches: held-out PSNR and VGG16-HED feature distance end
    within PSNR_TOLERANCE_DB and FEATDIST_TOLERANCE, and the precision is in config.json."""
    from upsampler.training.train import train

    scores = {}
    for policy in ("float32", "mixed_bfloat16"):
        run_dir = tmp_path / policy
        train(_guard_config(policy), photo_data, run_dir)
        saved = json.loads((run_dir / "config.json").read_text())
        assert saved["train"]["precision"] == policy
        assert f"precision {policy}" in (run_dir / "train.log").read_text()
        for stage, name in (("mse", "generator_pretrained.keras"), ("final", "generator.keras")):
            scores[policy, stage] = _held_out_scores(run_dir / name, photo_data)
    print("quality guard:", {f"{p} {s}": v for (p, s), v in scores.items()})
    for stage in ("mse", "final"):
        f32, bf16 = scores["float32", stage], scores["mixed_bfloat16", stage]
        assert abs(bf16["psnr"] - f32["psnr"]) <= PSNR_TOLERANCE_DB, (stage, scores)
        assert abs(bf16["featdist_hed"] - f32["featdist_hed"]) <= FEATDIST_TOLERANCE, (stage, scores)
    # Worth comparing: both runs moved far from where they started (an untrained generator).
    start = _held_out_scores(_initial_generator(_guard_config("float32"), tmp_path / "initial.keras"), photo_data)
    for policy in ("float32", "mixed_bfloat16"):
        assert scores[policy, "mse"]["psnr"] > start["psnr"] + 3.0, (start, scores)


def _initial_generator(config, path: Path) -> Path:
    """The generator a run of ``config`` starts from, saved as a plain-Keras file."""
    from upsampler.archs.srgan import portable_generator
    from upsampler.training.steps_tf import SRGANSteps

    portable_generator(SRGANSteps(config).generator).save(path)
    return path


@pytest.mark.slow
def test_auto_precision_is_recorded_and_a_resume_in_bf16_is_exact(photo_data, tmp_path, monkeypatch):
    """``auto`` on a CPU with native bf16 trains in mixed_bfloat16 and writes that into
    config.json; resuming on a machine without bf16 keeps it; 1 + 1 epochs == 2 epochs, exactly."""
    from upsampler.archs.srgan import load_generator
    from upsampler.training.train import train

    short = ["train.pretrain_epochs=1", "train.steps_per_epoch=3"]
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda flags=None: True)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(_guard_config("auto", *short), photo_data, straight)
    train(_guard_config("auto", *short, "train.epochs=1"), photo_data, resumed)
    for run_dir in (straight, resumed):
        assert json.loads((run_dir / "config.json").read_text())["train"]["precision"] == "mixed_bfloat16"
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda flags=None: False)  # "another machine"
    result = train(_guard_config("auto", *short), photo_data, resumed)
    assert json.loads((resumed / "config.json").read_text())["train"]["precision"] == "mixed_bfloat16"
    assert "precision mixed_bfloat16" in str(result)

    a = load_generator(straight / "generator.keras").get_weights()
    b = load_generator(resumed / "generator.keras").get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    log_a, log_b = pd.read_csv(straight / "loss.csv"), pd.read_csv(resumed / "loss.csv")
    assert log_b["epoch"].tolist() == log_a["epoch"].tolist()
    np.testing.assert_array_equal(log_a["g_loss"].to_numpy(), log_b["g_loss"].to_numpy())
