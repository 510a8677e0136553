"""Config profiles, overrides and JSON round trip."""

from __future__ import annotations

import pytest

from upsampler.config import UNTRAINED_VGG_WARNING, Config, get_profile


def test_paper_profile_is_the_study():
    cfg = get_profile("paper")
    assert (cfg.data.lr_size, cfg.data.hr_size, cfg.data.scale) == (44, 176, 4)
    assert cfg.model.num_blocks == 16 and cfg.model.filters == 64
    assert cfg.train.batch_size == 32 and cfg.train.learning_rate == 1e-4 and cfg.train.epochs == 2500
    assert cfg.loss.content_network == "vgg19" and cfg.loss.content_layer == "block5_conv4"
    assert cfg.train.pretrain_epochs > 0 and cfg.train.update_order == "d_then_g"  # the SRGAN paper's way
    assert "Differs from the paper" in cfg.description
    assert cfg.loss.adversarial_weight == 1e-3
    assert not cfg.uses_untrained_features


@pytest.mark.parametrize("name", ["paper", "original", "study-cpu", "demo", "smoke"])
def test_profiles_validate_and_round_trip_through_json(name, tmp_path):
    cfg = get_profile(name)
    cfg.validate()
    path = tmp_path / "config.json"
    cfg.to_json(path)
    assert Config.from_json(path) == cfg


def test_smoke_profile_labels_its_untrained_vgg():
    cfg = get_profile("smoke")
    assert cfg.uses_untrained_features
    assert UNTRAINED_VGG_WARNING in cfg.summary_lines()


def test_overrides_parse_types_and_reject_unknown_fields():
    cfg = get_profile("paper").override(["train.epochs=3", "model.upsample=nearest", "train.deterministic=false",
                                         "loss.adversarial_weight=0.01", "train.steps_per_epoch=null"])
    assert cfg.train.epochs == 3 and cfg.model.upsample == "nearest" and cfg.train.deterministic is False
    assert cfg.loss.adversarial_weight == 0.01 and cfg.train.steps_per_epoch is None
    with pytest.raises(ValueError, match="no field 'nonsense'"):
        cfg.override(["train.nonsense=1"])
    with pytest.raises(ValueError, match="no config section"):
        cfg.override(["bogus.epochs=1"])
    with pytest.raises(ValueError, match="integer"):
        cfg.override(["train.epochs=many"])
    with pytest.raises(ValueError, match="power of two"):
        cfg.override(["data.scale=3"])


def test_unknown_profile_and_bad_json_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        get_profile("huge")
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="config.json"):
        Config.from_json(bad)


def test_original_profile_holds_the_2019_choices():
    cfg = get_profile("original")
    assert cfg.model.upsample == "nearest" and cfg.loss.vgg_preprocessing == "raw" and cfg.loss.feature_scale == 1.0
    assert cfg.train.pretrain_epochs == 0 and cfg.model.bn_momentum == 0.5
    assert cfg.loss.real_label_mean == 0.9 and cfg.loss.fake_label_mean == 0.1 and cfg.loss.label_std > 0


def test_paper_profile_uses_hard_labels_and_every_export_gets_population_batchnorm_statistics():
    paper = get_profile("paper")
    assert (paper.loss.real_label_mean, paper.loss.fake_label_mean, paper.loss.label_std) == (1.0, 0.0, 0.0)
    assert "Hard labels" in paper.description
    assert all(get_profile(name).train.precise_bn_batches > 0 for name in ("paper", "original", "study-cpu", "study-gpu",
                                                                          "demo", "smoke"))


def test_study_cpu_profile_uses_the_offline_pretrained_network_and_random_crops():
    cfg = get_profile("study-cpu")
    assert cfg.loss.content_network == "vgg16-hed" and cfg.loss.content_layer == "block5_conv3"
    assert cfg.data.train_crop == 96 and cfg.data.train_hr_size == 96 and cfg.data.hr_size == 176
    assert cfg.model.num_blocks == 16 and cfg.model.upsample == "pixel_shuffle"
    assert cfg.train.pretrain_epochs > 0 and cfg.train.epochs > 0
    assert not cfg.uses_untrained_features


def test_old_configs_with_vgg_weights_still_load():
    raw = get_profile("smoke").to_dict()
    raw["loss"].pop("content_network")
    raw["loss"]["vgg_weights"] = "imagenet"
    raw["train"].pop("update_order")
    cfg = Config.from_dict(raw)
    assert cfg.loss.content_network == "vgg19" and cfg.train.update_order == "simultaneous"


@pytest.mark.parametrize("assignment, message", [
    ("loss.content_network=resnet", "loss.content_network must be one of"),
    ("train.update_order=g_first", "train.update_order must be one of"),
    ("data.train_crop=90", "data.train_crop"),
])
def test_new_fields_are_validated(assignment, message):
    with pytest.raises(ValueError, match=message):
        get_profile("study-cpu").override([assignment])


def test_typed_values_are_the_one_path_from_options_to_the_config():
    from upsampler.config import Config, get_profile

    base = get_profile("smoke")
    cfg = base.with_values({"train.epochs": 7, "train.budget_minutes": 2, "loss.content_network": "vgg16-hed",
                            "train.progress": True, "train.batch_size": None})
    assert (cfg.train.epochs, cfg.train.budget_minutes, cfg.loss.content_network) == (7, 2.0, "vgg16-hed")
    assert isinstance(cfg.train.budget_minutes, float) and cfg.train.batch_size == base.train.batch_size  # None: unset
    assert base.train.epochs == get_profile("smoke").train.epochs  # a copy; the original is untouched
    for values, message in (({"train.epochs": "7"}, "train.epochs: expected a value of type int"),
                            ({"train.epochs": True}, "train.epochs: expected"),
                            ({"train.nope": 1}, "section 'train' has no field 'nope'"),
                            ({"loss.content_network": "resnet"}, "loss.content_network must be one of")):
        with pytest.raises(ValueError, match=message):
            base.with_values(values)
    # the command line reaches the config through it, and its choices are the config's own
    from upsampler.cli import build_parser
    from upsampler.config import CONTENT_NETWORKS, STRATEGIES
    from upsampler.training.train import config_from_args

    args = build_parser("train").parse_args(["train", "--data", "d", "--run-dir", "r", "--profile", "smoke",
                                              "--epochs", "4", "--minutes", "1.5", "--set", "train.epochs=5"])
    cfg = config_from_args(args)
    assert (cfg.train.epochs, cfg.train.budget_minutes) == (5, 1.5)  # --set comes last
    train_parser = next(a for a in build_parser("train")._actions if a.dest == "command").choices["train"]
    choices = {a.dest: a.choices for a in train_parser._actions if a.choices}
    assert tuple(choices["content_network"]) == CONTENT_NETWORKS and tuple(choices["strategy"]) == STRATEGIES
    assert isinstance(Config.from_dict(cfg.to_dict()), Config)
