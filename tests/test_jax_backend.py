"""Keras on JAX: exact resume after SIGKILL, one step equal to TensorFlow's, wall-clock budgets,
population BatchNorm statistics. The JAX runs are subprocesses (this process runs TensorFlow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import require_module

tf = require_module("tensorflow")
require_module("jax")

from upsampler.data.preprocess import preprocess  # noqa: E402
from upsampler.data.images import save_png  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _images(folder: Path, count: int, size: int = 40, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(count):
        f, phase = rng.uniform(1, 4, 3), rng.uniform(0, 6.3, 3)
        img = np.stack([np.sin(f[c] * 6.3 * (xx + yy * c / 2) + phase[c]) for c in range(3)], -1) * 0.4 + 0.5
        save_png((np.clip(img, 0, 1) * 255).astype(np.uint8), folder / f"img_{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("jax")
    out = root / "processed"
    preprocess(_images(root / "images", 20), out, hr_size=32, scale=4, test_fraction=0.2, seed=0, progress=False)
    return out


def _jax_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu", **(env or {})}
    return subprocess.run([sys.executable, "-m", "upsampler.cli", *args], capture_output=True, text=True,
                          env=full_env, cwd=REPO, timeout=600)


def _final_checkpoint(run: Path) -> dict[str, np.ndarray]:
    latest = sorted((run / "checkpoints").glob("ckpt-*.npz"), key=lambda p: int(p.stem.split("-")[1]))[-1]
    with np.load(latest) as f:
        return {k: f[k] for k in f.files if k != "__record__" and "last_epoch_metrics" not in k}


RUN_ARGS = ("train", "--profile", "smoke", "--pretrain-epochs", "1", "--epochs", "2")  # 3 steps per epoch


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory) -> Path:
    """One JAX training run on one device, never interrupted: the reference of the kill/resume and
    the two-device tests (one run for both)."""
    run = tmp_path_factory.mktemp("jax_runs") / "whole"
    result = _jax_cli(*RUN_ARGS, "--data", str(data), "--run-dir", str(run))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "data parallel" not in (run / "train.log").read_text()
    return run


@pytest.mark.slow
def test_jax_run_killed_and_resumed_equals_an_uninterrupted_one(data, uninterrupted, tmp_path):
    args = [*RUN_ARGS, "--data", str(data), "--run-dir", str(tmp_path / "killed")]
    killed = _jax_cli(*args, env={"UPSAMPLER_FAULT_AT_STEP": "7"})
    assert killed.returncode == -9, killed.stderr[-2000:]  # SIGKILL at the first step of adversarial epoch 2
    resumed = _jax_cli(*args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed at pretrain epoch 1/1, adversarial epoch 1/2" in resumed.stdout

    a, b = _final_checkpoint(uninterrupted), _final_checkpoint(tmp_path / "killed")
    assert a.keys() == b.keys() and len(a) > 50
    assert max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in a) == 0.0
    columns = slice(0, 9)  # every loss column but the epoch's seconds
    rows = [(run / "loss.csv").read_text().splitlines() for run in (uninterrupted, tmp_path / "killed")]
    assert [r.split(",")[columns] for r in rows[0]] == [r.split(",")[columns] for r in rows[1]]
    assert len(rows[0]) == 1 + 1 + 2
    config = json.loads((tmp_path / "killed" / "config.json").read_text())
    assert config["provenance"]["backend"] == "jax" and config["provenance"].get("jax")
    exports = json.loads((tmp_path / "killed" / "exports.json").read_text())
    assert exports == {"generator.keras": 9, "generator_pretrained.keras": 3}


def _one_step_script(weights: Path, out: Path, batch: Path) -> str:
    return f"""
import numpy as np, keras
from upsampler.config import get_profile
from upsampler.training.trainer import SRGANTrainer
config = get_profile("smoke").override(["loss.label_std=0", "train.epsilon=1.0"])
b = np.load("{batch}")
trainer = SRGANTrainer(config, arrays=(b["lr"], b["hr"]))
steps = trainer.steps
w = np.load("{weights}")
for m, key in ((steps.generator, "g"), (steps.discriminator, "d")):
    m.set_weights([w[f"{{key}}{{i}}"] for i in range(len(m.get_weights()))])
steps.state = steps._read_models()
values = np.asarray(steps.adversarial_step(b["lr"], b["hr"], 1))
steps.sync_to_models()
np.savez("{out}", values=values, **{{f"g{{i}}": v for i, v in enumerate(steps.generator.get_weights())}},
         **{{f"d{{i}}": v for i, v in enumerate(steps.discriminator.get_weights())}})
"""


@pytest.mark.slow
def test_one_float32_step_agrees_on_tensorflow_and_jax(data, tmp_path):
    """One adversarial step (D then G) from the same weights and batch, float32, labels without
    noise (their random draws differ by backend). Adam's epsilon is 1.0 so the first update is
    about ``lr * g`` rather than ``lr * sign(g)``: round-off in a near-zero gradient cannot flip
    an update, and the weights may differ only by lr x the gradients' round-off."""
    from upsampler.config import get_profile
    from upsampler.data.processed import load_split
    from upsampler.training.trainer import SRGANTrainer

    lr_u8, hr_u8, _ = load_split(data, "train")
    lr_u8, hr_u8 = lr_u8[:4], hr_u8[:4]
    np.savez(tmp_path / "batch.npz", lr=lr_u8, hr=hr_u8)
    config = get_profile("smoke").override(["loss.label_std=0", "train.epsilon=1.0"])
    from upsampler.training.steps_tf import Speedups

    trainer = SRGANTrainer(config, arrays=(lr_u8, hr_u8), speedups=Speedups.none())
    g, d = trainer.generator, trainer.discriminator
    before = {**{f"g{i}": v for i, v in enumerate(g.get_weights())}, **{f"d{i}": v for i, v in enumerate(d.get_weights())}}
    np.savez(tmp_path / "weights.npz", **before)
    to_float = lambda x: tf.constant(x.astype(np.float32) / 127.5 - 1.0)  # noqa: E731 - the TF pipeline's conversion
    tf_values = trainer.steps.adversarial_step(to_float(lr_u8), to_float(hr_u8), tf.constant(1, tf.int64)).numpy()

    script = _one_step_script(tmp_path / "weights.npz", tmp_path / "jax.npz", tmp_path / "batch.npz")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    jax_out = np.load(tmp_path / "jax.npz")
    np.testing.assert_allclose(jax_out["values"], tf_values, rtol=2e-5, atol=1e-6)
    moved = 0.0
    for key, model in (("g", g), ("d", d)):
        for i, variable in enumerate(model.weights):
            name, value = f"{key}{i}", np.asarray(variable)
            if variable.trainable:  # Adam's update: lr x the gradients' round-off at most
                np.testing.assert_allclose(jax_out[name], value, rtol=0, atol=2e-7, err_msg=variable.path)
                moved = max(moved, float(np.max(np.abs(value - before[name]))))
            else:  # BatchNorm's moving statistics: batch moments, with float32 round-off relative to the
                # size of the summed activations (a channel whose mean cancels to ~0 keeps that absolute error)
                np.testing.assert_allclose(jax_out[name], value, rtol=0, atol=1e-5 * float(np.abs(value).max()),
                                           err_msg=variable.path)
    assert moved > 1e-6  # the step did move the weights, so agreement is not trivial


@pytest.mark.slow
def test_wall_clock_budgets_end_each_phase_with_a_checkpoint_and_export(data, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--data", str(data), "--run-dir", str(run), "--profile", "smoke", "--pretrain-epochs", "50",
            "--epochs", "50", "--pretrain-minutes", "0.0001", "--minutes", "0.0001"]
    first = _jax_cli(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    log = (run / "train.log").read_text()
    assert "pretrain: wall-clock budget of 0.0001 min used after epoch 1" in log
    assert "adversarial: wall-clock budget of 0.0001 min used after epoch 1" in log
    assert json.loads((run / "exports.json").read_text()) == {"generator.keras": 6, "generator_pretrained.keras": 3}
    again = _jax_cli(*args)  # a rerun finds both budgets used: nothing more is trained
    assert again.returncode == 0, again.stderr[-2000:]
    assert "finished: 1 pre-training + 1 adversarial epochs, step 6" in again.stdout
    assert len((run / "loss.csv").read_text().splitlines()) == 3


def test_population_batchnorm_statistics_make_inference_match_training():
    """A generator whose BN moving averages lag (momentum 0.99, a few training-mode calls) computes
    something else in inference mode; after the recomputation over the batch itself, inference
    equals training mode up to float round-off."""
    import keras

    from upsampler.training.bn import recompute_batchnorm_statistics
    from upsampler.archs.srgan import build_generator

    keras.utils.set_random_seed(1)
    g = build_generator(num_blocks=2, filters=16, bn_momentum=0.99)
    x = np.random.default_rng(0).uniform(-1, 1, (16, 12, 12, 3)).astype(np.float32)
    for _ in range(3):
        g(x, training=True)
    trained = np.asarray(g(x, training=True))
    before = np.abs(np.asarray(g(x, training=False)) - trained).max()
    report = recompute_batchnorm_statistics(g, [x[:8], x[8:]])
    after = np.abs(np.asarray(g(x, training=False)) - trained).max()
    assert before > 0.05, before
    assert after < 1e-4, after
    assert report["layers"] == 5 and report["images"] == 16 and report["max_variance_ratio"] > 1.5


def _layer_by_layer_statistics(model, batches):
    """The definition, computed the slow way: one probe model per BN layer, its input over all
    batches in inference mode, the layers before it already updated (NumPy, float64)."""
    import keras

    from upsampler.training.bn import batchnorm_layers

    for layer in batchnorm_layers(model):
        probe = keras.Model(model.inputs, layer.input)
        x = np.concatenate([np.asarray(probe(b, training=False), np.float64) for b in batches])
        x = x.reshape(-1, x.shape[-1])
        layer.moving_mean.assign(x.mean(axis=0).astype(np.float32))
        layer.moving_variance.assign(x.var(axis=0).astype(np.float32))


def test_population_batchnorm_statistics_in_one_pass_equal_the_layer_by_layer_definition():
    import keras

    from upsampler.training.bn import batchnorm_layers, recompute_batchnorm_statistics
    from upsampler.archs.srgan import build_generator

    keras.utils.set_random_seed(2)
    g = build_generator(num_blocks=3, filters=16, bn_momentum=0.99)
    rng = np.random.default_rng(1)
    batches = [rng.uniform(-1, 1, (6, 10, 10, 3)).astype(np.float32) for _ in range(3)]
    for b in batches:
        g(b, training=True)
    reference = keras.models.clone_model(g)
    reference.set_weights(g.get_weights())
    _layer_by_layer_statistics(reference, batches)
    recompute_batchnorm_statistics(g, batches)
    for ours, ref in zip(batchnorm_layers(g), batchnorm_layers(reference)):
        np.testing.assert_allclose(np.asarray(ours.moving_mean), np.asarray(ref.moving_mean), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(np.asarray(ours.moving_variance), np.asarray(ref.moving_variance), rtol=1e-4,
                                   atol=1e-6)
    x = np.concatenate(batches)
    np.testing.assert_allclose(np.asarray(g(x, training=False)), np.asarray(reference(x, training=False)), atol=1e-4)


@pytest.mark.slow
def test_gpu_study_trains_every_model_and_packs_its_generators(tmp_path):
    """``upsampler gpu-study`` on the CPU with JAX: both models' runs end each phase by its budget,
    their exports carry population BN statistics, and each run's pack holds both generators and its logs."""
    import tarfile

    a, b = _images(tmp_path / "a", 8, size=36, seed=1), _images(tmp_path / "b", 8, size=36, seed=2)
    out = tmp_path / "study"
    result = _jax_cli("gpu-study", "--coco", str(a), "--celeba", str(b), "--test-fraction", "0", "--out", str(out),
                      "--seeds", "1", "--profile", "smoke", "--pretrain-minutes", "0.0001", "--minutes", "0.0001",
                      "--set", "train.pretrain_epochs=2", "--set", "train.precise_bn_batches=1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    for run in ("model_a_seed0", "model_b_seed0"):
        assert f"[gpu-study] {run} ended with exit code 0" in result.stdout
        config = json.loads((out / "runs" / run / "config.json").read_text())
        assert config["provenance"]["backend"] == "jax"
        assert "population BatchNorm statistics" in (out / "runs" / run / "train.log").read_text()
        with tarfile.open(out / "pack" / f"{run}.tar.gz") as tar:
            names = set(tar.getnames())
        assert {f"{run}/{n}" for n in ("generator.keras", "generator_pretrained.keras", "loss.csv", "config.json")} <= names


@pytest.mark.slow
def test_data_parallel_over_two_devices_matches_one_device(data, uninterrupted, tmp_path):
    """Two XLA host devices, each with half of every batch (BatchNorm over the global batch, the
    gradients all-reduced): the same weights as one device, up to the order of float32 sums."""
    two = _jax_cli(*RUN_ARGS, "--data", str(data), "--run-dir", str(tmp_path / "two"),
                   env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert two.returncode == 0, two.stderr[-2000:]
    assert "data parallel over 2 devices" in (tmp_path / "two" / "train.log").read_text()
    a, b = _final_checkpoint(uninterrupted), _final_checkpoint(tmp_path / "two")
    assert a.keys() == b.keys()
    for key in a:
        scale = max(1.0, float(np.abs(a[key]).max()))
        # Two devices sum BatchNorm moments and gradients in another order; nine GAN steps of Adam carry
        # that float32 round-off to ~1e-4 in a few elements (seen once: 1.15e-4 in 1 of 216 momenta).
        np.testing.assert_allclose(b[key], a[key], rtol=0, atol=3e-4 * scale, err_msg=key)


@pytest.mark.slow
def test_upscale_on_jax_never_loads_tensorflow_and_matches_it(tmp_path):
    """The shipped face generator upscales on JAX without importing TensorFlow, to the pixels
    TensorFlow gives up to float round-off (8-bit outputs: at most a level or two)."""
    from PIL import Image

    from upsampler import cli

    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(tmp_path / "lr.png")
    assert cli.main(["upscale", str(tmp_path / "lr.png"), "--model", "model_b_mse", "--out", str(tmp_path / "tf")]) == 0
    code = ("import sys; from upsampler.cli import main; "
            f"rc = main(['upscale', {str(tmp_path / 'lr.png')!r}, '--model', 'model_b_mse', '--out', "
            f"{str(tmp_path / 'jax')!r}]); print(rc, 'tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=REPO,
                            env={**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"})
    assert result.stdout.split()[-2:] == ["0", "False"], result.stdout + result.stderr[-2000:]
    a = np.asarray(Image.open(tmp_path / "tf" / "lr_sr.png"), np.int16)
    b = np.asarray(Image.open(tmp_path / "jax" / "lr_sr.png"), np.int16)
    assert a.shape == b.shape == (80, 96, 3) and np.abs(a - b).max() <= 2, np.abs(a - b).max()


NO_TENSORFLOW = """
import importlib.abc, sys
class _NoTensorFlow(importlib.abc.MetaPathFinder):  # as on a machine with no TensorFlow distribution
    def find_spec(self, name, path, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError(f"No module named {name!r} (blocked by the test)")
sys.meta_path.insert(0, _NoTensorFlow())
"""


@pytest.mark.slow
def test_the_whole_workflow_on_jax_without_any_tensorflow(tmp_path):
    """preprocess, train (MSE and adversarial epochs), evaluate (bicubic + the trained generator),
    upscale and the benchmark, in one process where importing TensorFlow fails; then the evaluation's numbers
    are those TensorFlow gives for the same generator."""
    import pandas as pd

    from upsampler import cli

    images = _images(tmp_path / "images", 20)
    steps = [
        ["preprocess", str(images), "--out", str(tmp_path / "data"), "--hr-size", "32", "--test-fraction", "0.3",
         "--quiet"],
        ["train", "--data", str(tmp_path / "data"), "--run-dir", str(tmp_path / "run"), "--profile", "smoke",
         "--pretrain-epochs", "1", "--epochs", "2"],
        ["evaluate", str(tmp_path / "data" / "test"), "--model", f"SR={tmp_path / 'run' / 'generator.keras'}",
         "--out", str(tmp_path / "eval_jax"), "--no-faces", "--no-piqe", "--n-boot", "20", "--grid-images", "2"],
        ["upscale", str(images / "img_000.png"), "--model", str(tmp_path / "run" / "generator.keras"),
         "--out", str(tmp_path / "up")],
        ["benchmark", "--profile", "smoke", "--steps", "1", "--warmup", "1", "--pipeline-seconds", "0.2",
         "--matmul-size", "256", "--inference-size", "24", "--tile", "16", "--output", str(tmp_path / "bench.json")],
    ]
    code = NO_TENSORFLOW + (
        "from upsampler.cli import main\n"
        f"for argv in {steps!r}:\n"
        "    rc = main(argv)\n"
        "    print('STEP', argv[0], rc, flush=True)\n"
        "    assert rc == 0, argv\n"
        "print('TENSORFLOW LOADED', 'tensorflow' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900, cwd=REPO,
                            env={**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
                                 "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert [line.split()[1:] for line in result.stdout.splitlines() if line.startswith("STEP ")] == [
        ["preprocess", "0"], ["train", "0"], ["evaluate", "0"], ["upscale", "0"], ["benchmark", "0"]]
    assert "TENSORFLOW LOADED False" in result.stdout
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert "jax" in json.dumps(config.get("provenance", config)).lower()
    assert (tmp_path / "up" / "img_000_sr.png").is_file()
    rows = pd.read_csv(tmp_path / "run" / "loss.csv")
    assert set(rows["phase"]) == {"pretrain", "adversarial"}
    bench = json.loads((tmp_path / "bench.json").read_text())  # the benchmark names its backend and measures on it
    assert bench["backend"] == "jax" and bench["backend_version"] and "tensorflow_version" not in bench
    for key in ("train_images_per_s", "pretrain_images_per_s", "useful_gflops", "matmul_jax_gflops",
                "inference_megapixels_per_s", "pipeline_images_per_s"):
        assert isinstance(bench[key], (int, float)) and bench[key] > 0, key
    assert bench["matmul_yardstick"] in ("jax", "numpy") and bench["inference_output_size"] == [96, 96]
    assert "TensorFlow" in bench["skipped"]["fid"]
    # the same evaluation here, on TensorFlow: the same numbers up to float round-off
    assert cli.main(steps[2][:-8] + ["--out", str(tmp_path / "eval_tf"), "--no-faces", "--no-piqe", "--n-boot", "20",
                                     "--grid-images", "2"]) == 0
    jax_rows, tf_rows = (pd.read_csv(tmp_path / name / "per_image_metrics.csv").sort_values(["method", "image"])
                         for name in ("eval_jax", "eval_tf"))
    assert len(jax_rows) == len(tf_rows) == 2 * 6  # bicubic and the generator on 6 test images
    for metric in ("psnr", "ssim", "featdist_hed"):
        np.testing.assert_allclose(jax_rows[metric].to_numpy(), tf_rows[metric].to_numpy(), rtol=2e-3, atol=1e-4,
                                   err_msg=metric)


@pytest.mark.slow
def test_the_notebooks_run_on_jax_where_tensorflow_is_missing(data, tmp_path):
    """02_train and 04_evaluate under papermill in a kernel that cannot import TensorFlow and was
    not told which backend to use: upsampler picks JAX by itself, trains and evaluates."""
    papermill = require_module("papermill")
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(NO_TENSORFLOW)
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env.update({"PYTHONPATH": os.pathsep.join([str(blocker), str(REPO)]), "JAX_PLATFORMS": "cpu",
                "TF_CPP_MIN_LOG_LEVEL": "3"})
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        run = tmp_path / "run"
        papermill.execute_notebook(str(REPO / "notebooks" / "02_train.ipynb"), str(tmp_path / "02.ipynb"),
                                   parameters={"data_dir": str(data), "run_dir": str(run), "profile": "smoke",
                                               "epochs": 1, "pretrain_epochs": 1, "progress": False},
                                   cwd=str(REPO), progress_bar=False, kernel_name="python3")
        papermill.execute_notebook(str(REPO / "notebooks" / "04_evaluate.ipynb"), str(tmp_path / "04.ipynb"),
                                   parameters={"output_root": str(tmp_path / "out"), "test_dir": str(data / "test"),
                                               "model_a_run": str(run), "model_b_run": str(run), "faces": False,
                                               "n_boot": 20, "grid_images": 2},
                                   cwd=str(REPO), progress_bar=False, kernel_name="python3")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert json.loads((run / "config.json").read_text())["provenance"]["backend"] == "jax"
    assert (tmp_path / "out" / "study" / "evaluation" / "metrics.csv").is_file()
    assert "on Keras' jax backend" in (tmp_path / "02.ipynb").read_text()  # the run's provenance line
