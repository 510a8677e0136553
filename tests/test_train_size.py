"""data.train_images (a seeded subset of the training split) and the runner's --match-train-size."""

from __future__ import annotations

import csv
import json
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from upsampler.data import pipeline
from upsampler.config import Config, get_profile
from upsampler.data.preprocess import preprocess
from upsampler.data.processed import MANIFEST_COLUMNS, choose_train_images, split_names, train_image_names
from upsampler.training.rundir import resolve_run_config

HR = 32
N_IMAGES = 20  # 15 in the train split, 5 in the test split


@pytest.fixture(scope="module")
def processed(tmp_path_factory) -> Path:
    """A tiny processed set: distinct noise images, 32 px HR / 8 px LR."""
    root = tmp_path_factory.mktemp("train_size")
    source = root / "images"
    source.mkdir()
    for i in range(N_IMAGES):
        pixels = np.random.default_rng(zlib.crc32(f"{i}".encode())).integers(0, 256, (40, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(source / f"img_{i:02d}.png")
    out = root / "processed"
    preprocess(source, out, hr_size=HR, scale=4, test_fraction=0.25, seed=0, progress=False)
    return out


def _smoke(*overrides: str) -> Config:
    return get_profile("smoke").override(list(overrides))


# ---- the subset -----------------------------------------------------------------------------

def test_the_subset_is_seeded_by_the_split_seed_sized_and_a_strict_subset(processed: Path) -> None:
    train = split_names(processed, "train")
    assert len(train) == 15
    chosen = train_image_names(processed, _smoke("data.train_images=6").data)
    assert len(chosen) == len(set(chosen)) == 6 and set(chosen) < set(train)
    assert chosen == [name for name in train if name in chosen]  # in manifest order
    # the same for every training seed, and again on a second call
    for seed in (1, 7):
        assert train_image_names(processed, _smoke("data.train_images=6", f"train.seed={seed}").data) == chosen
    assert train_image_names(processed, _smoke("data.train_images=6").data) == chosen
    # the split seed chooses it (another seed, another subset), and the order of the names does not
    others = {tuple(choose_train_images(train, 6, split_seed=s)) for s in range(1, 6)}
    assert any(set(o) != set(chosen) for o in others)
    assert set(choose_train_images(list(reversed(train)), 6, split_seed=0)) == set(chosen)
    # None and "all of them" are the whole split, in manifest order
    assert train_image_names(processed, _smoke().data) == train
    assert choose_train_images(train, len(train), split_seed=3) == train


def test_too_many_is_refused_naming_the_folder_count_and_field(processed: Path) -> None:
    with pytest.raises(ValueError, match=r"data\.train_images=16: .*processed has only 15 training images"):
        train_image_names(processed, _smoke("data.train_images=16").data)
    with pytest.raises(ValueError, match="data.train_images must be"):
        choose_train_images(["a"], 0, split_seed=0)


def test_the_override_takes_a_count_and_none() -> None:
    cfg = _smoke("data.train_images=600")
    assert cfg.data.train_images == 600
    assert cfg.override(["data.train_images=None"]).data.train_images is None
    assert cfg.override(["data.train_images=null"]).data.train_images is None
    assert Config.from_dict(json.loads(cfg.to_json())).data.train_images == 600
    for bad, message in (("0", "data.train_images must be"), ("many", "expected an integer"), ("2.5", "integer")):
        with pytest.raises(ValueError, match=message):
            get_profile("smoke").override([f"data.train_images={bad}"])
    assert "6 training images" in "\n".join(_smoke("data.train_images=6").summary_lines())
    assert "training images" not in "\n".join(_smoke().summary_lines())


# ---- the pipeline draws only from the subset ------------------------------------------------------

def test_the_training_batches_come_only_from_the_chosen_images(processed: Path) -> None:
    from upsampler.training.feed import load_training_arrays as training_arrays

    config = _smoke("data.train_images=8")  # batch 4: two batches an epoch
    chosen = train_image_names(processed, config.data)
    chosen_hr = {np.asarray(Image.open(processed / "train" / "hr" / f"{n}.png")).tobytes() for n in chosen}
    train_lr, train_hr, sample_lr, sample_hr = training_arrays(config, processed)
    assert len(train_hr) == 8 and {img.tobytes() for img in train_hr} == chosen_hr
    assert len(sample_hr) == config.train.num_samples  # the samples still come from the test split
    seen = set()
    for epoch in (1, 2, 3):
        for lr_batch, hr_batch in pipeline.train_batches(train_lr, train_hr, batch_size=config.train.batch_size,
                                                     seed=config.train.seed, epoch=epoch):
            seen |= {img.tobytes() for img in hr_batch}
    assert seen == chosen_hr
    # asking for every image is exactly the run without data.train_images
    everything = training_arrays(_smoke("data.train_images=15"), processed)
    for a, b in zip(everything, training_arrays(_smoke(), processed)):
        np.testing.assert_array_equal(a, b)


def test_the_trainer_feeds_only_the_subset_and_refuses_too_many_before_writing(processed: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    from upsampler.training.train import train
    from upsampler.training.trainer import SRGANTrainer

    config = _smoke("data.train_images=8")
    chosen = train_image_names(processed, config.data)
    chosen_hr = {np.asarray(Image.open(processed / "train" / "hr" / f"{n}.png")).tobytes() for n in chosen}
    trainer = SRGANTrainer(config, processed)
    seen = {img.tobytes() for _lr, hr in trainer.feed.array_batches(1) for img in hr}
    assert seen <= chosen_hr and len(trainer.feed.train_hr) == 8
    with pytest.raises(ValueError, match=r"data\.train_images=99: .* has only 15 training images"):
        train(_smoke("data.train_images=99"), processed, tmp_path / "run")
    assert not (tmp_path / "run" / "config.json").exists()


# ---- resume -------------------------------------------------------------------------------------

def test_resuming_with_another_train_images_is_refused(tmp_path: Path) -> None:
    saved = _smoke("data.train_images=8", "train.precision=float32")
    saved.to_json(tmp_path / "config.json")
    config, warnings = resolve_run_config(_smoke("data.train_images=8", "train.epochs=5"), tmp_path)
    assert config.data.train_images == 8 and warnings == []
    for other in ("data.train_images=6", "data.train_images=null"):
        with pytest.raises(ValueError, match=r"data\.train_images: saved 8, requested"):
            resolve_run_config(_smoke(other), tmp_path)
    # a run saved before the field existed trained on every image: the same as null, not as a count
    raw = json.loads(saved.to_json())
    del raw["data"]["train_images"]
    (tmp_path / "config.json").write_text(json.dumps(raw))
    resolve_run_config(_smoke(), tmp_path)
    with pytest.raises(ValueError, match=r"data\.train_images: saved None, requested 8"):
        resolve_run_config(_smoke("data.train_images=8"), tmp_path)


def test_a_smoke_run_refuses_to_resume_on_another_subset(processed: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    from upsampler.training.train import train

    config = _smoke("train.epochs=1", "data.train_images=8", "train.precise_bn_batches=0")  # about 8 s on 2 cores
    train(config, processed, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["data"]["train_images"] == 8
    assert "training images: 8 of the 15" in (tmp_path / "run" / "train.log").read_text()
    with pytest.raises(ValueError, match=r"data\.train_images: saved 8, requested 12"):
        train(config.override(["data.train_images=12"]), processed, tmp_path / "run")


# ---- the study runner -------------------------------------------------------------------------

def _fake_processed_set(folder: Path, n_train: int, n_test: int = 2) -> None:
    folder.mkdir(parents=True)
    with (folder / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        for i in range(n_train + n_test):
            writer.writerow({"name": f"im{i}", "split": "train" if i < n_train else "test"})


def _options(tmp_path: Path, *extra: str):
    from upsampler.study.runner import build_parser, resolve

    repo = Path(__file__).resolve().parents[1]
    return resolve(build_parser().parse_args(["--profile", "smoke", "--coco", str(repo), "--celeba", str(repo),
                                              "--out", str(tmp_path), *extra]))


def test_match_train_size_gives_both_models_the_smaller_count(tmp_path: Path, capsys) -> None:
    from upsampler.study.notebook import training_config
    from upsampler.study.runner import complete_step, plan

    options = _options(tmp_path, "--match-train-size", "--seeds", "2", "--set", "train.epochs=1")
    steps = plan(options)  # before preprocessing: the count is not known yet
    trains = [s for s in steps if s.notebook == "02_train.ipynb"]
    assert len(trains) == 4 and all(s.deferred == ("train_images",) for s in trains)
    assert all(not s.deferred for s in steps if s.notebook != "02_train.ipynb")
    with pytest.raises(FileNotFoundError, match="smoke/data/coco"):
        complete_step(trains[0], options)
    _fake_processed_set(tmp_path / "smoke" / "data" / "coco", 11)
    _fake_processed_set(tmp_path / "smoke" / "data" / "celeba", 7)
    capsys.readouterr()
    resolved: dict = {}
    completed = [complete_step(s, options, resolved) for s in steps]
    out = capsys.readouterr().out
    assert out.count("--match-train-size") == 1
    assert "--match-train-size: Model A 11 and Model B 7 training images -> both train on 7" in out
    for step in completed:
        if step.notebook != "02_train.ipynb":
            assert step in steps  # untouched
            continue
        overrides = step.parameters["overrides"]
        assert overrides[0] == "train.epochs=1" and overrides[-1] == "data.train_images=7"
        assert sum(o.startswith("train.seed=") for o in overrides) == 1  # --seeds still applies
        config = training_config("smoke", overrides=overrides)
        assert config.data.train_images == 7
    assert {s.parameters["model"] for s in completed if s.notebook == "02_train.ipynb"} == {
        "model_a", "model_b", "model_a_seed1", "model_b_seed1"}


def test_without_the_flag_nothing_is_deferred(tmp_path: Path) -> None:
    from upsampler.study.runner import complete_step, plan

    steps = plan(_options(tmp_path))
    assert all(not s.deferred for s in steps)
    assert [complete_step(s, _options(tmp_path)) for s in steps] == steps
    assert not any("train_images" in o for s in steps for o in s.parameters.get("overrides", []))


def test_match_train_size_with_a_set_train_images_is_refused(tmp_path: Path) -> None:
    from upsampler.study import runner

    with pytest.raises(ValueError, match="--match-train-size sets data.train_images"):
        _options(tmp_path, "--match-train-size", "--set", "data.train_images=100")
    with pytest.raises(SystemExit) as exit_info:
        runner.main(["--match-train-size", "--set", "data.train_images = 5", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    _options(tmp_path, "--set", "data.train_images=100")  # either alone is fine
