"""Typed run configuration with named profiles.

A :class:`Config` is four dataclasses (data, model, loss, train). Three named profiles cover
the uses of the project:

* ``paper`` - the study as published: 44x44 -> 176x176, 16 residual blocks, batch 32,
  learning rate 1e-4, 2500 epochs, ImageNet VGG19 for the content loss (a GPU job).
* ``demo``  - minutes on a laptop CPU; small crops and a small network, MSE pre-training
  first so that super-resolution beats bicubic before the adversarial phase.
* ``smoke`` - seconds; for tests only.

Any field can be overridden with ``section.field=value`` strings (the command line's
``--set``) or the dedicated flags. The resolved config of every run is written as
``config.json`` beside its outputs and read back on resume.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

UNTRAINED = "untrained"
IMAGENET = "imagenet"
VGG19 = "vgg19"
VGG16_HED = "vgg16-hed"
CONTENT_NETWORKS = (VGG19, VGG16_HED, UNTRAINED)
UPDATE_ORDERS = ("d_then_g", "simultaneous")
DISC_HEADS = ("pooled", "flatten")
# "mixed": the device's mixed policy whatever its native support (mixed_float16 on a GPU,
# mixed_bfloat16 elsewhere); what configs written with `mixed_precision: true` asked for.
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16", "mixed")
JIT_COMPILE = ("auto", "on", "off")
STRATEGIES = ("default", "mirrored", "auto", "multiworker")

# How feature_scale is chosen for a network other than the paper's VGG19 (see docs/instruments.md):
# the paper scales VGG19 features by 1/12.75 "to obtain VGG losses of a scale that is comparable to
# the MSE loss". The same rule is applied to every other network and layer: the scale at which the
# content loss of bicubic upscales equals their pixel MSE (median over training images), computed by
# `upsampler.losses.srgan.calibrate_feature_scale`; a test recomputes the value below.
HED_BLOCK5_CONV3_SCALE = 1.0 / 32.1  # 200 CelebA faces, 96-px centre crops (0.0311)
HED_BLOCK2_CONV2_SCALE = 1.0 / 140.3  # the same faces and crops (0.00713)
FEATURE_SCALE_NOTE = "feature_scale calibrated so the content loss of bicubic upscales equals their pixel MSE"


@dataclass
class DataConfig:
    """How images become (LR, HR) training pairs."""

    hr_size: int = 176  # side of the HR crop, pixels
    scale: int = 4  # HR side / LR side; a power of two
    crop: str = "center"  # "center" (as the original) or "random" (seeded)
    test_fraction: float = 0.2
    split_seed: int = 0
    min_size: int | None = None  # smallest accepted image side; default hr_size
    flips: bool = False  # random horizontal flips in the training pipeline
    train_crop: int | None = None  # HR side of a random LR/HR-aligned crop drawn per image and step; None: whole image
    shuffle_buffer: int = 4096
    # Use only this many training images: a seeded subset of the processed train split, the same for every
    # training seed (chosen with split_seed, not train.seed; upsampler.data.processed.choose_train_images); None: all.
    train_images: int | None = None

    @property
    def train_hr_size(self) -> int:
        """Side of the HR images the networks train on (the discriminator's input size)."""
        return self.train_crop or self.hr_size

    @property
    def lr_size(self) -> int:
        return self.hr_size // self.scale


@dataclass
class ModelConfig:
    """Generator and discriminator shapes (the study's defaults)."""

    num_blocks: int = 16
    filters: int = 64
    upsample: str = "pixel_shuffle"  # "pixel_shuffle" + PReLU (paper) or "nearest" + LeakyReLU (original)
    bn_momentum: float = 0.5  # the original's Keras BatchNormalization momentum
    disc_filters: int = 64
    disc_dense_units: int = 1024
    disc_head: str = "pooled"  # "pooled" (global average pooling, ~5 M parameters) or "flatten" (the study's: 68 M at 176 px)
    bias_before_bn: bool = False  # biases on the convolutions that BatchNorm follows (no effect; the original had them)


@dataclass
class LossConfig:
    """Perceptual loss = content + adversarial_weight * adversarial."""

    content: str = "vgg"  # "vgg" (SRGAN) or "mse" (pixel loss only; SRResNet)
    content_network: str = VGG19  # "vgg19" (ImageNet), "vgg16-hed" (pretrained, offline) or "untrained" (tests only)
    content_layer: str = "block5_conv4"  # VGG19's VGG54; block5_conv3 is VGG16's analogue
    vgg_preprocessing: str = "paper"  # "paper": caffe preprocessing and features * feature_scale; "raw": the original's [-1, 1] input, unscaled
    feature_scale: float = 1.0 / 12.75  # the paper's for VGG19; see FEATURE_SCALE_NOTE for other networks
    adversarial_weight: float = 1e-3
    real_label_mean: float = 0.9
    fake_label_mean: float = 0.1
    label_std: float = 0.05


@dataclass
class TrainConfig:
    """Optimisation, schedule, checkpointing and health checks."""

    epochs: int = 2500  # total adversarial epochs to reach (resume continues to this)
    pretrain_epochs: int = 0  # generator-only pixel-MSE epochs before the adversarial phase
    batch_size: int = 32
    steps_per_epoch: int | None = None  # None: one pass over the training set
    learning_rate: float = 1e-4
    pretrain_learning_rate: float = 1e-4
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-8
    update_order: str = "d_then_g"  # "d_then_g" (the paper's: G's step sees the updated D) or "simultaneous"
    seed: int = 0
    deterministic: bool = True  # seeds + op determinism on GPU/XLA (CPU kernels need none); makes resume bit-exact
    jit_compile: str = "auto"  # "auto" (XLA on GPU), "on", "off"
    precision: str = "auto"  # auto (by hardware, upsampler.training.precision), float32, mixed_bfloat16, mixed_float16
    strategy: str = "default"  # tf.distribute: "default" (one device), "mirrored" (all GPUs), "auto", "multiworker" (TF_CONFIG)
    cache_hr_features: str = "auto"  # HR VGG features computed once per dataset: "auto" (when flips are off), "on", "off"
    checkpoint_every: int = 1  # epochs
    keep_checkpoints: int = 3
    sample_every: int = 10  # epochs
    num_samples: int = 4  # fixed test images rendered into samples/
    saturation_patience: int = 3  # epochs of a saturated D before the warning
    saturation_threshold: float = 0.05  # |D(real) - D(fake)| below this with both near 0 or 1
    progress: bool = True
    precise_bn_batches: int = 16  # training batches the exported generator's BatchNorm statistics are recomputed on (0: off)
    pretrain_budget_minutes: float | None = None  # wall-clock budget of MSE pre-training; it ends at the epoch that uses it up
    budget_minutes: float | None = None  # the same for the adversarial phase


@dataclass
class Config:
    profile: str = "paper"
    description: str = ""  # what the profile is and how it differs from the SRGAN paper
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    # ---- serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Config":
        known = {f.name for f in fields(cls)}
        # written beside the config by `train` (upsampler.training.rundir)
        raw = {k: v for k, v in raw.items() if k not in ("provenance", "data_source")}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown config sections: {sorted(unknown)}")
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in raw:
                continue
            if f.name in ("profile", "description"):
                kwargs[f.name] = raw[f.name]
                continue
            section_cls = type(getattr(cls(), f.name))
            section_known = {sf.name for sf in fields(section_cls)}
            section = dict(raw[f.name])
            if f.name == "loss" and "vgg_weights" in section:  # configs written before content_network
                old = section.pop("vgg_weights")
                section.setdefault("content_network", VGG19 if old == IMAGENET else old)
            if f.name == "train" and "update_order" not in section:
                section["update_order"] = "simultaneous"  # what runs before update_order existed did
            if f.name == "train" and "mixed_precision" in section:  # configs written before precision
                section.setdefault("precision", "mixed" if section.pop("mixed_precision") else "float32")
            if f.name == "model":  # configs written before these fields: the networks they trained
                section.setdefault("disc_head", "flatten")
                section.setdefault("bias_before_bn", True)
            raw = {**raw, f.name: section}
            bad = set(raw[f.name]) - section_known
            if bad:
                raise ValueError(f"unknown fields in config section '{f.name}': {sorted(bad)}")
            kwargs[f.name] = section_cls(**raw[f.name])
        return cls(**kwargs)

    @classmethod
    def from_json(cls, path: str | Path) -> "Config":
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from exc
        return cls.from_dict(raw)

    # ---- overrides -----------------------------------------------------------------
    def with_values(self, values: Mapping[str, Any]) -> "Config":
        """Return a copy with typed values set: ``{"train.epochs": 3, "loss.content_network":
        "vgg16-hed"}``; a value of None leaves the field as it is (an option not given). The
        one path from a command-line flag or a notebook parameter to the config; each value must
        have its field's type (an int where a float is declared is taken as that float)."""
        cfg = Config.from_dict(self.to_dict())
        for key, value in values.items():
            if value is None:
                continue
            section, field_name, declared = cfg._field(key)
            current = getattr(section, field_name)
            if isinstance(current, float) or "float" in declared:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
                value = float(value) if ok else value
            elif isinstance(current, bool) or declared == "bool":
                ok = isinstance(value, bool)
            elif isinstance(current, int) or "int" in declared:
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif isinstance(current, str) or "str" in declared:
                ok = isinstance(value, str)
            else:
                ok = True
            if not ok:
                raise ValueError(f"{key}: expected a value of type {declared}, got {value!r}")
            setattr(section, field_name, value)
        cfg.validate()
        return cfg

    def _field(self, key: str) -> tuple[Any, str, str]:
        """(section object, field name, declared type) of ``section.field``; ValueError naming it."""
        if "." not in key:
            raise ValueError(f"'{key}' is not of the form section.field")
        section_name, field_name = key.strip().split(".", 1)
        section = getattr(self, section_name, None)
        if section is None or not dataclasses.is_dataclass(section):
            raise ValueError(f"'{key}': no config section '{section_name}'")
        declared = {f.name: str(f.type) for f in fields(section)}
        if field_name not in declared:
            raise ValueError(f"'{key}': section '{section_name}' has no field '{field_name}'")
        return section, field_name, declared[field_name]

    def override(self, assignments: Iterable[str]) -> "Config":
        """Return a copy with ``section.field=value`` assignments applied.

        Values are parsed as JSON where possible (numbers, true/false, null), else taken as
        strings, then checked against the field's type. A field that may be None (``int | None``)
        takes ``null`` or ``None``, and otherwise a value of its type.
        """
        cfg = Config.from_dict(self.to_dict())
        for assignment in assignments:
            if "=" not in assignment or "." not in assignment.split("=", 1)[0]:
                raise ValueError(f"override '{assignment}' is not of the form section.field=value")
            key, value_text = assignment.split("=", 1)
            try:
                section, field_name, annotation = cfg._field(key)
            except ValueError as exc:
                raise ValueError(f"override '{assignment}': {str(exc).split(': ', 1)[-1]}") from None
            setattr(section, field_name, _parse_value(value_text, getattr(section, field_name), annotation))
        cfg.validate()
        return cfg

    def validate(self) -> None:
        d = self.data
        if d.scale < 2 or d.scale & (d.scale - 1):
            raise ValueError(f"data.scale must be a power of two >= 2, got {d.scale}")
        if d.hr_size % d.scale:
            raise ValueError(f"data.hr_size ({d.hr_size}) must be divisible by data.scale ({d.scale})")
        if d.crop not in ("center", "random"):
            raise ValueError(f"data.crop must be 'center' or 'random', got {d.crop!r}")
        if not 0.0 <= d.test_fraction < 1.0:
            raise ValueError(f"data.test_fraction must be in [0, 1), got {d.test_fraction}")
        if d.train_images is not None and (isinstance(d.train_images, bool) or not isinstance(d.train_images, int)
                                           or d.train_images < 1):
            raise ValueError(f"data.train_images must be a number of images >= 1 or null (all), got {d.train_images!r}")
        if self.model.upsample not in ("pixel_shuffle", "nearest"):
            raise ValueError(f"model.upsample must be 'pixel_shuffle' or 'nearest', got {self.model.upsample!r}")
        if self.loss.content not in ("vgg", "mse"):
            raise ValueError(f"loss.content must be 'vgg' or 'mse', got {self.loss.content!r}")
        if self.loss.vgg_preprocessing not in ("paper", "raw"):
            raise ValueError(f"loss.vgg_preprocessing must be 'paper' or 'raw', got {self.loss.vgg_preprocessing!r}")
        if self.loss.content_network not in CONTENT_NETWORKS:
            raise ValueError(f"loss.content_network must be one of {list(CONTENT_NETWORKS)}, got {self.loss.content_network!r}")
        if self.model.disc_head not in DISC_HEADS:
            raise ValueError(f"model.disc_head must be one of {list(DISC_HEADS)}, got {self.model.disc_head!r}")
        if self.train.precision not in PRECISIONS:
            raise ValueError(f"train.precision must be one of {list(PRECISIONS)}, got {self.train.precision!r}")
        if self.train.update_order not in UPDATE_ORDERS:
            raise ValueError(f"train.update_order must be one of {list(UPDATE_ORDERS)}, got {self.train.update_order!r}")
        if d.train_crop is not None:
            if d.train_crop > d.hr_size or d.train_crop % d.scale or d.train_crop % 16:
                raise ValueError(f"data.train_crop ({d.train_crop}) must be <= data.hr_size ({d.hr_size}) and a "
                                 f"multiple of data.scale and of 16 (the discriminator's four stride-2 blocks)")
        if self.train.jit_compile not in JIT_COMPILE:
            raise ValueError(f"train.jit_compile must be auto/on/off, got {self.train.jit_compile!r}")
        if self.train.strategy not in STRATEGIES:
            raise ValueError(f"train.strategy must be default/mirrored/auto/multiworker, got {self.train.strategy!r}")
        if self.train.cache_hr_features not in ("auto", "on", "off"):
            raise ValueError(f"train.cache_hr_features must be auto/on/off, got {self.train.cache_hr_features!r}")
        if self.train.batch_size < 1 or self.train.epochs < 0 or self.train.pretrain_epochs < 0:
            raise ValueError("train.batch_size must be >= 1 and epochs >= 0")
        if self.train.precise_bn_batches < 0:
            raise ValueError(f"train.precise_bn_batches must be >= 0, got {self.train.precise_bn_batches}")
        for name in ("pretrain_budget_minutes", "budget_minutes"):
            value = getattr(self.train, name)
            if value is not None and not value > 0:
                raise ValueError(f"train.{name} must be a positive number of minutes or null, got {value!r}")

    @property
    def uses_untrained_features(self) -> bool:
        return self.loss.content == "vgg" and self.loss.content_network == UNTRAINED

    def summary_lines(self) -> list[str]:
        """Human-readable one-liners, with the untrained-VGG warning when it applies."""
        d, m, l, t = self.data, self.model, self.loss, self.train
        lines = [
            f"profile={self.profile}  {d.lr_size}x{d.lr_size} -> {d.hr_size}x{d.hr_size} (x{d.scale}), crop={d.crop}"
            + (f", {d.train_images} training images (a subset chosen with split seed {d.split_seed})"
               if d.train_images is not None else ""),
            f"generator: {m.num_blocks} blocks x {m.filters} filters, upsample={m.upsample}; "
            f"discriminator base {m.disc_filters} filters, {m.disc_head} head, dense {m.disc_dense_units}",
            f"content loss: {l.content}"
            + (f" ({l.content_network} {l.content_layer}, preprocessing={l.vgg_preprocessing}, "
               f"feature scale {l.feature_scale:.4g})" if l.content == "vgg" else "")
            + f"; adversarial weight {l.adversarial_weight:g}",
            f"train: {t.pretrain_epochs} MSE pre-training + {t.epochs} adversarial epochs, batch {t.batch_size}, "
            f"lr {t.learning_rate:g}, update order {t.update_order}, seed {t.seed}, deterministic={t.deterministic}"
            + (f"; random {d.train_crop}-px HR training crops" if d.train_crop else ""),
        ]
        if self.description:
            lines.insert(0, f"profile {self.profile}: {self.description}")
        if self.uses_untrained_features:
            lines.append(UNTRAINED_VGG_WARNING)
        return lines


UNTRAINED_VGG_WARNING = (
    "WARNING: content loss uses an UNTRAINED VGG19 (random weights, offline fallback); "
    "results are not comparable with ImageNet-VGG SRGAN runs."
)


def _parse_value(text: str, current: Any, annotation: str = "") -> Any:
    """``text`` as a value of the field that holds ``current``, declared as ``annotation``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    if "None" in annotation:  # an optional field: null / None, else a value of its other type
        if value is None or text.strip() in ("None", "none"):
            return None
        if current is None:
            base = annotation.replace("| None", "").replace("None |", "").strip()
            current = {"int": 0, "float": 0.0, "bool": False, "str": ""}.get(base)
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ValueError(f"expected true/false, got {text!r}")
        return value
    if isinstance(current, int) and not isinstance(current, bool):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"expected an integer, got {text!r}")
        return value
    if isinstance(current, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected a number, got {text!r}")
        return float(value)
    if isinstance(current, str) and not isinstance(value, str):
        return text
    return value


# ---- profiles --------------------------------------------------------------------------

def paper() -> Config:
    """The study done the SRGAN paper's way (a GPU job)."""
    cfg = Config(profile="paper", description=(
        "the study's networks and data (44->176, batch 32, 2500 adversarial epochs) trained as the SRGAN paper: "
        "MSE pre-training of the generator (SRResNet) first, pixel shuffle, ImageNet VGG19 block5_conv4 with caffe "
        "preprocessing and features / 12.75, D updated before G in each step. Differs from the paper: 44->176 "
        "whole images instead of random 96-px crops, batch 32 (paper 16), epochs instead of 10^5 + 10^5 steps with "
        "a learning-rate drop, BN momentum 0.5, and D pools its last maps globally before Dense(1024) (5.2 M "
        "parameters instead of the Flatten's 68 M; model.disc_head=flatten restores it). Hard labels (1 for real, "
        "0 for fake) as the paper; the study's noisy labels N(0.9, 0.05) / N(0.1, 0.05) are loss.real_label_mean=0.9, "
        "loss.fake_label_mean=0.1, loss.label_std=0.05"))
    cfg.train.pretrain_epochs = 250
    cfg.loss.real_label_mean, cfg.loss.fake_label_mean, cfg.loss.label_std = 1.0, 0.0, 0.0
    return cfg


def original() -> Config:
    """The 2019 study's own choices, with its defects fixed (logits, separate optimisers)."""
    cfg = Config(profile="original", description=(
        "the 2019 study's choices: nearest-neighbour upsampling + LeakyReLU, VGG19 fed raw [-1, 1] images with "
        "unscaled features, no MSE pre-training, BN momentum 0.5, noisy labels on both sides, D then G; its "
        "defects are not reproduced (losses on logits, one Adam per network)"))
    cfg.model.upsample = "nearest"
    cfg.model.disc_head = "flatten"
    cfg.loss.vgg_preprocessing = "raw"
    cfg.loss.feature_scale = 1.0
    return cfg


def study_cpu() -> Config:
    """The study at a scale a 2-core CPU trains and scores in about 75 minutes: both models, three seeds
    (``run_all.sh --seeds 3``), both stages of every run scored on the first 4 test faces per identity."""
    cfg = Config(profile="study-cpu", description=(
        "a CPU-scale replication: the paper's networks (16 residual blocks, pixel shuffle, the study's "
        "discriminator) trained on random 96-px HR crops (24-px LR) as the SRGAN paper, batch 16, MSE pre-training "
        "then the adversarial phase, content loss on the pretrained offline VGG16-HED block5_conv3 (ImageNet VGG19 "
        "cannot be downloaded offline) with its calibrated feature scale; evaluated at the study's 44->176"))
    cfg.data = DataConfig(hr_size=176, scale=4, crop="center", flips=True, train_crop=96)
    # The networks exactly as the shipped Model A and B were trained (Flatten head, biases in front of BN).
    cfg.model = ModelConfig(bn_momentum=0.99, disc_head="flatten", bias_before_bn=True)
    cfg.loss = LossConfig(content_network=VGG16_HED, content_layer="block5_conv3", feature_scale=HED_BLOCK5_CONV3_SCALE)
    cfg.train = TrainConfig(
        epochs=2, pretrain_epochs=10, batch_size=16, steps_per_epoch=20, learning_rate=1e-4,
        pretrain_learning_rate=2e-4, jit_compile="off", sample_every=1, num_samples=4,
        precision="float32",  # as the shipped generators were trained, whatever the CPU
    )
    return cfg


def study_gpu() -> Config:
    """The study on one GPU against a wall-clock budget per phase (Keras on JAX or TensorFlow)."""
    cfg = Config(profile="study-gpu", description=(
        "the study on one GPU: the paper's generator (16 residual blocks, pixel shuffle) and discriminator (pooled "
        "head), random 96-px HR crops (24-px LR) with flips, batch 32, MSE pre-training then the adversarial phase, "
        "each until its wall-clock budget is used (train.pretrain_budget_minutes, train.budget_minutes; it stops at an "
        "epoch boundary), content loss on the pretrained offline VGG16-HED block5_conv3 with its calibrated feature "
        "scale, the study's noisy labels, BN momentum 0.9 and population BatchNorm statistics in every export; "
        "precision by hardware (bfloat16 on GPUs from Ampere on); evaluated at the study's 44->176"))
    cfg.data = DataConfig(hr_size=176, scale=4, crop="center", flips=True, train_crop=96)
    cfg.model = ModelConfig(bn_momentum=0.9)
    cfg.loss = LossConfig(content_network=VGG16_HED, content_layer="block5_conv3", feature_scale=HED_BLOCK5_CONV3_SCALE)
    cfg.train = TrainConfig(
        epochs=100_000, pretrain_epochs=100_000, batch_size=32, steps_per_epoch=200, learning_rate=1e-4,
        pretrain_learning_rate=1e-4, jit_compile="on", checkpoint_every=10, keep_checkpoints=2, sample_every=10,
        num_samples=4, precise_bn_batches=16, pretrain_budget_minutes=3.0, budget_minutes=3.0,
    )
    return cfg


def demo() -> Config:
    """Minutes on a 2-core CPU, with the pretrained offline VGG16-HED (block2_conv2) content loss."""
    cfg = Config(profile="demo")
    cfg.data = DataConfig(hr_size=64, scale=4, crop="center", flips=True)
    cfg.model = ModelConfig(num_blocks=4, filters=32, disc_filters=16, disc_dense_units=128)
    cfg.loss = LossConfig(content_network=VGG16_HED, content_layer="block2_conv2", feature_scale=HED_BLOCK2_CONV2_SCALE)
    cfg.train = TrainConfig(
        epochs=6, pretrain_epochs=30, batch_size=16, learning_rate=1e-4, pretrain_learning_rate=1e-3,
        sample_every=2, jit_compile="off", num_samples=4,
    )
    return cfg


def smoke() -> Config:
    """Seconds; for tests. Tiny shapes, untrained VGG chosen explicitly and labelled."""
    cfg = Config(profile="smoke")
    cfg.data = DataConfig(hr_size=32, scale=4, crop="center")
    cfg.model = ModelConfig(num_blocks=1, filters=8, disc_filters=8, disc_dense_units=16)
    cfg.loss = LossConfig(content_layer="block2_conv2", content_network=UNTRAINED)
    cfg.train = TrainConfig(
        epochs=2, pretrain_epochs=0, batch_size=4, steps_per_epoch=3, sample_every=1,
        num_samples=2, jit_compile="off", progress=False,
        precision="float32",  # the same numbers on every machine; tests/test_precision.py covers the others
    )
    return cfg


PROFILES = {"paper": paper, "original": original, "study-cpu": study_cpu, "study-gpu": study_gpu, "demo": demo,
            "smoke": smoke}


def get_profile(name: str) -> Config:
    try:
        return PROFILES[name]()
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None
