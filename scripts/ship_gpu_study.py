#!/usr/bin/env python
"""Ship the GPU study: its generators into the package (the CPU-scale ones renamed ``*_cpu``),
each with a model card, and its evaluation into docs/study-gpu/.

    .venv/bin/python scripts/ship_gpu_study.py EVAL_DIR [--seed 1]

``EVAL_DIR`` is the output of ``upsampler evaluate`` on the 520 held-out faces of faces_2600 with
every run's generators, a model's seeds given under one name (``"Model A, SRGAN=..."``, MSE stage
as ``"Model A, MSE=..."``; see docs/study-gpu/README.md for the exact command). The shipped
generators are those of training seed ``--seed`` (the one seed with both stages exported for both
models); every number in a card is read from the run's own files (config.json, exports.json,
loss.csv, train.log) and the evaluation tables.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
from pathlib import Path

from ship_study import findings_table  # scripts/ is on the path when a script here runs
from upsampler.metrics.perceptual import FEATDIST_LABEL

ROOT = Path(__file__).resolve().parents[1]
PRETRAINED = ROOT / "upsampler" / "pretrained"
DOCS = ROOT / "docs" / "study-gpu"
RUNS = DOCS / "runs"
GENERATORS = ROOT / "generators" / "study-gpu"
ORIGINAL_IMAGE_STEPS = {"model_a": 2500 * 1600, "model_b": 2500 * 2000}
ROLES = {"model_a": ("Model A", "varied photos (the COCO role)",
                     "603 176x176 centre crops of train291 + general (the `study-cpu` stand-in for the original's "
                     "2,000 COCO images), sent as JPEG q95"),
         "model_b": ("Model B", "faces (the CelebA role)",
                     "2,079 CelebA aligned faces of 160 identities (the train side of faces_2600's identity split; "
                     "the original used 2,500)")}
STAGES = {"": ("generator.keras", "SRGAN", "after MSE pre-training and the adversarial phase"),
          "_mse": ("generator_pretrained.keras", "MSE", "after MSE pre-training only (SRResNet), before the "
                                                         "adversarial phase")}
CARD_METRICS = (("psnr", "PSNR on Y (dB)", 1.0), ("ssim", "SSIM on Y", 1.0),
                ("identity_distance", "identity distance (dlib embedding, lower is better)", 1.0),
                ("identity_top1", "identity top-1 retrieval", 1.0),
                ("featdist_hed", f"{FEATDIST_LABEL}, lower is better", 1.0),
                ("kid_face", "KID on face embeddings x10^3 (a mean-embedding shift; bootstrap spread)", 1e3),
                ("fd_hed", "Fréchet distance on VGG16-HED features, not an FID", 1.0))
DOC_FILES = ("metrics.csv", "metrics.md", "paired.csv", "pooled.csv", "pooled_paired.csv", "per_image_metrics.csv")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def run_facts(run: Path, stage: str) -> dict:
    """Steps, image-steps, minutes and the population-BN line of one run's exported generator."""
    config = json.loads((run / "config.json").read_text())
    exports = json.loads((run / "exports.json").read_text())
    t = config["train"]
    pre_step = exports["generator_pretrained.keras"]
    step = exports[STAGES[stage][0]]
    rows = _rows(run / "loss.csv")
    pre_epochs = pre_step // t["steps_per_epoch"]
    adv_epochs = (step - pre_step) // t["steps_per_epoch"]
    minutes = {"pretrain": sum(float(r["seconds"]) for r in rows if r["phase"] == "pretrain"
                               and int(r["epoch"]) <= pre_epochs) / 60,
               "adversarial": sum(float(r["seconds"]) for r in rows if r["phase"] == "adversarial"
                                  and int(r["epoch"]) <= adv_epochs) / 60}
    bn = [f"{stats}, re-estimated after the run on a CPU in float32 with `scripts/reexport_batchnorm.py`" if again else stats
          for again, stats in re.findall(rf"(re-)?exported generator at step {step} with "
                                         rf"(population BatchNorm statistics of .*?) \(stored", (run / "train.log").read_text())]
    return {"config": config, "step": step, "pre_step": pre_step, "pre_epochs": pre_epochs, "adv_epochs": adv_epochs,
            "pre_images": pre_step * t["batch_size"], "adv_images": (step - pre_step) * t["batch_size"],
            "minutes": minutes, "bn": bn[-1] if bn else "not recorded"}


def _cell(row: dict, key: str, scale: float) -> str:
    if not row.get(key):
        return ""
    v, lo, hi = (float(row[k]) * scale if row.get(k) else float("nan") for k in (key, f"{key}_low", f"{key}_high"))
    return f"{v:.4g} [{lo:.4g}, {hi:.4g}]" if lo == lo else f"{v:.4g}"


def model_card(name: str, stage: str, seed: int, metrics: dict, pooled: dict) -> str:
    label, role, data = ROLES[name]
    file, stage_name, stage_text = STAGES[stage]
    facts = run_facts(RUNS / f"{name}_seed{seed}", stage)
    c, prov = facts["config"], facts["config"]["provenance"]
    t, loss, m = c["train"], c["loss"], c["model"]
    total = facts["pre_images"] + facts["adv_images"]
    lines = [
        f"# {name}{stage}: {label} ({stage_name}), trained on {role} on one GPU",
        "",
        f"SRGAN generator (SRResNet, {m['num_blocks']} residual blocks, {m['filters']} filters, pixel shuffle), x4: "
        f"any LR size, trained at {c['data']['train_crop']}-px HR crops, evaluated at 44->176. Weights {stage_text}. "
        f"Training seed {seed} of the study's first GPU run (`docs/study-gpu/`).",
        "",
        "| | |",
        "|---|---|",
        f"| profile | `{c['profile']}` (`upsampler.config.study_gpu`), via `upsampler gpu-study` |",
        f"| training data | {data} |",
        "| held out | 520 test faces of 40 identities, never seen in training (they stayed off the training machine) |",
        f"| content network | `{loss['content_network']}` `{loss['content_layer']}`, feature scale "
        f"{loss['feature_scale']:.4g} (pretrained offline VGG16-HED instead of ImageNet VGG19) |",
        f"| MSE pre-training | {facts['pre_epochs']} epochs x {t['steps_per_epoch']} steps x batch {t['batch_size']} = "
        f"{facts['pre_images']:,} image-steps, lr {t['pretrain_learning_rate']:g}, {facts['minutes']['pretrain']:.1f} min |",
    ]
    if not stage:
        lines.append(f"| adversarial phase | {facts['adv_epochs']} epochs = {facts['adv_images']:,} image-steps, lr "
                     f"{t['learning_rate']:g}, D then G, adversarial weight {loss['adversarial_weight']:g}, "
                     f"{facts['minutes']['adversarial']:.1f} min |")
    lines += [
        f"| BatchNorm | {facts['bn']} (recomputed before export; momentum {m['bn_momentum']:g} in training) |",
        f"| compared with the original | the original trained {ORIGINAL_IMAGE_STEPS[name]:,} adversarial image-steps "
        f"(2,500 epochs, no pre-training); this generator {total:,} image-steps in all "
        f"({100 * total / ORIGINAL_IMAGE_STEPS[name]:.1f}%), {facts['adv_images']:,} of them adversarial |",
        f"| machine | {', '.join(prov.get('gpus') or ['?'])} (shared with the run's other 3 training processes); "
        f"Keras {prov.get('keras', '?')} on JAX {prov.get('jax', '?')}, `{t['precision']}` |",
        f"| code | upsampler {prov.get('upsampler', '?')}; the run records commit {prov.get('commit', '?')} (the JAX "
        "engine, then uncommitted, was committed next as 8304c49c063a) |",
    ]
    method = f"{label}, {stage_name}"
    row = metrics.get(method) or metrics.get(f"{method} #{seed + 1}") or {}
    lines += ["", "## Metrics on the 520 held-out faces (44->176)", "",
              "95% intervals resample identities, then faces within them. \"this generator\": seed "
              f"{seed}; \"{label} ({stage_name}), all seeds\": the mean over the run's seeds with an interval "
              "that also resamples seeds.", "",
              f"| metric | this generator | {label} ({stage_name}), all seeds | bicubic |", "|---|---|---|---|"]
    for key, title, scale in CARD_METRICS:
        p = pooled.get((method, key))
        pooled_text = ""
        if p:
            pooled_text = (f"{float(p['value']) * scale:.4g} [{float(p['ci_low']) * scale:.4g}, "
                           f"{float(p['ci_high']) * scale:.4g}] ({p['n_seeds']} seed{'' if p['n_seeds'] == '1' else 's'})")
        if row.get(key) or pooled_text:
            lines.append(f"| {title} | {_cell(row, key, scale)} | {pooled_text} | {_cell(metrics['Bicubic'], key, scale)} |")
    lines += ["", "Every comparison, with paired intervals: `docs/study-gpu/evaluation_metrics.md`.", "",
              f"Load it with `upsampler.load_generator(\"{name}{stage}\")` or "
              f"`upsampler upscale photo.jpg --model {name}{stage} --out up/`. Research use: trained on images with "
              "research-use licences (CelebA; BSDS, Yang91, Sun-Hays, COCO)."]
    return "\n".join(lines) + "\n"


COLUMNS = ("Bicubic", "Model A, MSE", "Model B, MSE", "Model A, SRGAN", "Model B, SRGAN")
PAIRS = (("Model B, MSE", "Model A, MSE"), ("Model B, SRGAN", "Model A, SRGAN"), ("Model B, MSE", "Bicubic"))


def rename_cpu_generators() -> None:
    """model_a.keras -> model_a_cpu.keras (and _mse, and the cards), once."""
    for name in ("model_a", "model_b", "model_a_mse", "model_b_mse"):
        old, new = PRETRAINED / f"{name}.keras", PRETRAINED / f"{name}_cpu.keras"
        if new.exists() or not old.exists():
            continue
        shutil.move(old, new)
        card = (PRETRAINED / f"{name}.md").read_text()
        card = card.replace(f"# {name}: ", f"# {name}_cpu: the CPU-scale study's ", 1).replace(f'load_generator("{name}")',
                                                                        f'load_generator("{name}_cpu")')
        card = card.replace(f"--model {name} ", f"--model {name}_cpu ")
        (PRETRAINED / f"{name}_cpu.md").write_text(card)
        (PRETRAINED / f"{name}.md").unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("evaluation", type=Path, help="the output folder of `upsampler evaluate`")
    parser.add_argument("--seed", type=int, default=1, help="training seed of the shipped generators")
    args = parser.parse_args()
    metrics = {r["method"]: r for r in _rows(args.evaluation / "metrics.csv")}
    pooled = {(r["model"], r["metric"]): r for r in _rows(args.evaluation / "pooled.csv")}
    rename_cpu_generators()
    for name in ROLES:
        for stage, (file, _, _) in STAGES.items():
            source = GENERATORS / f"{name}_seed{args.seed}" / file
            target = PRETRAINED / f"{name}{stage}.keras"
            shutil.copyfile(source, target)
            (PRETRAINED / f"{name}{stage}.md").write_text(model_card(name, stage, args.seed, metrics, pooled))
            print(f"{target} ({target.stat().st_size / 2**20:.1f} MiB) <- {source.relative_to(ROOT)}")
    for name in DOC_FILES:
        shutil.copyfile(args.evaluation / name, DOCS / f"evaluation_{name}")
    from PIL import Image

    for name in ("comparison_grid", "paired_differences"):
        image = Image.open(args.evaluation / f"{name}.png").convert("RGB")
        if image.width > 1800:
            image = image.resize((1800, round(image.height * 1800 / image.width)), Image.Resampling.LANCZOS)
        image.save(DOCS / f"evaluation_{name}.jpg", quality=85, optimize=True)
    (DOCS / "findings.md").write_text(findings_table(args.evaluation / "pooled.csv", args.evaluation / "pooled_paired.csv",
                                                     COLUMNS, PAIRS))
    print(f"tables and figures -> {DOCS.relative_to(ROOT)}; the README's table: {DOCS.relative_to(ROOT)}/findings.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
