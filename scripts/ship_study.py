#!/usr/bin/env python
"""Ship a finished study: generators into the package, rendered results into docs/.

    .venv/bin/python scripts/ship_study.py outputs/study-cpu [--docs docs/study-cpu]

Writes ``runs/model_{a,b}/generator.keras`` (and ``generator_pretrained.keras``) as plain-Keras
files (:func:`upsampler.archs.srgan.portable_generator`) to ``upsampler/pretrained/model_{a,b}[_mse]_cpu.keras``
with a model card each, and the executed
notebooks (ipynb + HTML), tables and figures to ``docs/<study>/``. Every number in a card is read
from the run's own files (config.json, loss.csv, train.log) and the evaluation tables.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
from pathlib import Path

from upsampler.utils import hardware
from upsampler.metrics.perceptual import FEATDIST_LABEL, SHARED_LAYER_NOTE

ROOT = Path(__file__).resolve().parents[1]
PRETRAINED = ROOT / "upsampler" / "pretrained"
SHIPPED_SUFFIX = "_cpu"  # the GPU study's generators ship without a suffix (scripts/ship_gpu_study.py)
ROLES = {"model_a": ("Model A", "coco", "varied photos (the COCO role)"),
         "model_b": ("Model B", "celeba", "faces (the CelebA role)")}
# The original study: 2,500 epochs over 1,600 COCO / 2,000 CelebA training images, no pre-training.
ORIGINAL_IMAGE_STEPS = {"model_a": 2500 * 1600, "model_b": 2500 * 2000}
DOC_FIGURES = ("evaluation_comparison_grid.png", "evaluation_paired_differences.png", "model_a_losses.png",
               "model_b_losses.png", "model_a_discriminator.png", "model_b_discriminator.png",
               "model_a_samples_latest.png", "model_b_samples_latest.png")
DOC_TABLES = ("evaluation_metrics.csv", "evaluation_metrics.md", "evaluation_paired.csv",
              "evaluation_per_image_metrics.csv", "evaluation_pooled.csv", "evaluation_pooled_paired.csv")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _phase_summary(run: Path, config: dict) -> dict[str, dict[str, float]]:
    t = config["train"]
    out = {}
    for phase in ("pretrain", "adversarial"):
        rows = [r for r in _rows(run / "loss.csv") if r["phase"] == phase]
        steps = len(rows) * (t["steps_per_epoch"] or 0)
        out[phase] = {"epochs": len(rows), "steps": steps, "image_steps": steps * t["batch_size"],
                      "seconds": sum(float(r["seconds"]) for r in rows)}
    return out


def _jpeg(data: bytes, max_width: int = 1400, quality: int = 82) -> bytes:
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB")
    if image.width > max_width:
        image = image.resize((max_width, round(image.height * max_width / image.width)), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality, optimize=True)
    return out.getvalue()


def compact_notebook(source: Path, target: Path) -> None:
    """An executed notebook with its PNG outputs re-encoded as JPEG (docs/ stays a few MB), and its HTML."""
    import base64

    import nbformat

    from upsampler.study.runner import to_html

    book = nbformat.read(str(source), as_version=4)
    for cell in book.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "image/png" in data:
                data["image/jpeg"] = base64.b64encode(_jpeg(base64.b64decode(data.pop("image/png")))).decode()
    nbformat.write(book, str(target))
    to_html(target)


def ship_generator(source: Path, target: Path) -> None:
    """The run's generator as a plain-Keras file (stock layers only; same weights and outputs)."""
    from upsampler.archs.srgan import load_generator, portable_generator

    portable_generator(load_generator(source)).save(target)


def _used(train_images: int | None, available: int) -> str:
    """'603 of the 2079' when data.train_images chose a subset, else '2079'."""
    return f"{train_images:,} (a seeded subset) of the {available:,}" if train_images and train_images < available \
        else f"{available:,}"


def model_card(name: str, variant: str, study: Path, metrics: dict[str, dict[str, str]]) -> str:
    label, dataset, role = ROLES[name]
    run = study / "runs" / name
    config = json.loads((run / "config.json").read_text())
    prov = config.get("provenance", {})
    data = json.loads((study / "data" / dataset / "preprocess.json").read_text())
    faces = json.loads((study / "data" / "celeba" / "preprocess.json").read_text())
    phases = _phase_summary(run, config)
    d, loss = config["data"], config["loss"]
    method = label if variant == "" else f"{label} (MSE pre-trained)"
    row = metrics.get(method) or metrics.get(f"{method} #1", {})  # #1: the first seed's run, the one shipped
    sources = data["parameters"]["source"].split(":")
    source_names = ", ".join(Path(s).name for s in sources)
    total = phases["pretrain"]["image_steps"] + phases["adversarial"]["image_steps"]
    lines = [
        f"# {name}{variant}{SHIPPED_SUFFIX}: the CPU-scale study's {method}, trained on {role}",
        "",
        f"SRGAN generator (SRResNet, {config['model']['num_blocks']} residual blocks, {config['model']['filters']} "
        f"filters, pixel shuffle), x{d['scale']}: any LR size, trained at {d['train_crop'] or d['hr_size']}-px HR crops, "
        f"evaluated at {d['lr_size'] if 'lr_size' in d else d['hr_size'] // d['scale']}->{d['hr_size']}. "
        + ("Weights after MSE pre-training only (SRResNet), before the adversarial phase." if variant else
           "Weights after MSE pre-training and the adversarial phase."),
        "",
        "| | |",
        "|---|---|",
        f"| profile | `{config['profile']}` (`upsampler.config.study_cpu`) |",
        f"| training data | {_used(d.get('train_images'), data['counts']['train'])} {d['hr_size']}x{d['hr_size']} "
        f"centre crops of {source_names} "
        f"({'stands in for the original 2,000 COCO images' if name == 'model_a' else 'CelebA aligned faces, the original used 2,500'}) |",
        f"| held out | {faces['counts']['test']} test faces; {faces.get('split', 'split unknown')} |",
        f"| content network | `{loss['content_network']}` `{loss['content_layer']}`, feature scale {loss['feature_scale']:.4g} "
        "(pretrained offline VGG16-HED instead of ImageNet VGG19) |",
        f"| MSE pre-training | {phases['pretrain']['epochs']} epochs x {config['train']['steps_per_epoch']} steps x batch "
        f"{config['train']['batch_size']} = {phases['pretrain']['image_steps']:,} image-steps, "
        f"lr {config['train']['pretrain_learning_rate']:g}, {phases['pretrain']['seconds'] / 60:.1f} min |",
    ]
    if not variant:
        lines.append(
            f"| adversarial phase | {phases['adversarial']['epochs']} epochs = {phases['adversarial']['image_steps']:,} "
            f"image-steps, lr {config['train']['learning_rate']:g}, D then G, adversarial weight "
            f"{loss['adversarial_weight']:g}, {phases['adversarial']['seconds'] / 60:.1f} min |")
    lines += [
        f"| compared with the original | the original trained {ORIGINAL_IMAGE_STEPS[name]:,} adversarial image-steps "
        f"(2,500 epochs); this run {total:,} in all ({100 * total / ORIGINAL_IMAGE_STEPS[name]:.2f}%) |",
        f"| machine | {prov.get('machine', 'unknown')}, {hardware.cpu_model()} ({os.cpu_count()} cores); TensorFlow {prov.get('tensorflow', '?')}, "
        f"Keras {prov.get('keras', '?')}, float32 |",
        f"| code | upsampler {prov.get('upsampler', '?')}, commit {prov.get('commit', '?')} |",
    ]
    if row:
        lines += ["", f"## Metrics of this run on {row['n']} of the {faces['counts']['test']} held-out faces "
                  "(44->176; 95% intervals resampling identities, then faces)", "",
                  "| metric | value |", "|---|---|"]
        for key, title in (("identity_distance", "identity distance (dlib embedding, lower is better)"),
                           ("identity_top1", "identity top-1 retrieval among the test identities"),
                           ("featdist_hed", f"{FEATDIST_LABEL}, lower is better"),
                           ("psnr", "PSNR on Y (dB)"), ("ssim", "SSIM on Y"),
                           ("kid_face", "KID on face embeddings x10^3 (bootstrap spread at N)")):
            if key in row and row[key]:
                scale = 1e3 if key.startswith("kid") else 1.0
                v, lo, hi = (float(row[k]) * scale for k in (key, f"{key}_low", f"{key}_high"))
                lines.append(f"| {title} | {v:.4g} [{lo:.4g}, {hi:.4g}] |")
        lines += ["", "This is the first of the model's training seeds (seed 0). Each model over all its seeds, and the "
                  "paired comparisons: `docs/study-cpu/findings.md`, `docs/study-cpu/evaluation_pooled_paired.csv` and "
                  "the README."]
    lines += ["", "Load it with `upsampler.load_generator(\"" + name + variant + SHIPPED_SUFFIX + "\")` or "
              f"`upsampler upscale photo.jpg --model {name}{variant}{SHIPPED_SUFFIX} --out up/`. Research use: trained on images with "
              "research-use licences (CelebA; BSDS, Yang91, Sun-Hays, COCO)."]
    return "\n".join(lines) + "\n"


FINDINGS = (("psnr", "PSNR on Y (dB), higher is better", 1.0, 2), ("ssim", "SSIM on Y, higher is better", 1.0, 3),
            ("identity_distance", "Identity distance (dlib face embedding), lower is better", 1.0, 3),
            ("identity_top1", "Identity top-1 retrieval, higher is better", 1.0, 3),
            ("featdist_hed", f"{FEATDIST_LABEL}, lower is better", 1.0, 3),
            ("kid_face", "KID on face embeddings x10^3, lower is better", 1e3, 3),
            ("fd_hed", "Fréchet distance on VGG16-HED features (not an FID), lower is better", 1.0, 0))
MSE = " (MSE pre-trained)"
COLUMNS = ("Bicubic", f"Model A{MSE}", f"Model B{MSE}", "Model A", "Model B")
PAIRS = ((f"Model B{MSE}", f"Model A{MSE}"), ("Model B", "Model A"), (f"Model B{MSE}", "Bicubic"), ("Model B", "Bicubic"))


def _short(method: str) -> str:
    """'Model A (MSE pre-trained)' -> 'A, MSE'; 'Model A' (the adversarial stage) -> 'A, SRGAN'."""
    if method == "Bicubic":
        return method
    short = method.replace("Model ", "").replace(MSE, ", MSE")
    return short if "," in short else f"{short}, SRGAN"


def findings_table(pooled_csv: Path, pooled_paired_csv: Path, columns=COLUMNS, pairs=PAIRS) -> str:
    """The README's table: each model's mean over its seeds (their number in brackets), and paired
    differences with 95% intervals that resample seeds, identities and faces."""
    pooled = {(r["model"], r["metric"]): r for r in _rows(pooled_csv)}
    paired = {(r["metric"], r["model_a"], r["model_b"]): r for r in _rows(pooled_paired_csv)}
    seeds = {m: pooled[(m, "psnr")]["n_seeds"] for m in columns}
    head = ["metric", *[f"{_short(m)} ({seeds[m]})" if m != "Bicubic" else m for m in columns],
            *[f"{_short(a)} - {_short(b)} [95% CI]" for a, b in pairs]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, title, scale, digits in FINDINGS:
        if (columns[0], key) not in pooled:
            continue
        cells = [f"{float(pooled[(m, key)]['value']) * scale:.{digits}f}" for m in columns]
        cells += [difference_cell(paired[(key, a, b)], scale, digits) for a, b in pairs]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    lines += ["", f"VGG16-HED rows: {SHARED_LAYER_NOTE}."]
    return "\n".join(lines) + "\n"


def difference_cell(row: dict[str, str], scale: float, digits: int) -> str:
    """A paired difference with its interval, bold when the interval excludes 0."""
    d, lo, hi = (float(row[k]) * scale for k in ("difference", "ci_low", "ci_high"))
    bold = "" if lo <= 0 <= hi else "**"
    return f"{bold}{d:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]{bold}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", type=Path, help="a finished study folder, e.g. outputs/study-cpu")
    parser.add_argument("--docs", type=Path, help="docs folder (default docs/<study name>)")
    args = parser.parse_args()
    study = args.study.resolve()
    docs = (args.docs or ROOT / "docs" / study.name).resolve()
    metrics = {r["method"]: r for r in _rows(study / "tables" / "evaluation_metrics.csv")}
    for name in ROLES:
        run = study / "runs" / name
        for variant, source in (("", "generator.keras"), ("_mse", "generator_pretrained.keras")):
            if not (run / source).is_file():
                continue
            target = PRETRAINED / f"{name}{variant}{SHIPPED_SUFFIX}.keras"
            ship_generator(run / source, target)
            (PRETRAINED / f"{name}{variant}{SHIPPED_SUFFIX}.md").write_text(model_card(name, variant, study, metrics))
            print(f"{target} ({target.stat().st_size / 2**20:.1f} MiB)")
    docs.mkdir(parents=True, exist_ok=True)
    for name in DOC_TABLES:
        if (study / "tables" / name).is_file():
            shutil.copy2(study / "tables" / name, docs / name)
    for name in DOC_FIGURES:
        if (study / "figures" / name).is_file():
            (docs / name).with_suffix(".jpg").write_bytes(_jpeg((study / "figures" / name).read_bytes()))
    notebooks = docs / "notebooks"
    notebooks.mkdir(exist_ok=True)
    for path in sorted((study / "notebooks").glob("*.ipynb")):
        compact_notebook(path, notebooks / path.name)
    manifest = study / "data" / "celeba" / "manifest.csv"
    test_rows = [{k: r[k] for k in ("name", "source", "sha256", "group")} for r in _rows(manifest) if r["split"] == "test"]
    with (docs / "test_split.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["name", "source", "sha256", "group"])
        writer.writeheader()
        writer.writerows(test_rows)
    (docs / "findings.md").write_text(findings_table(docs / "evaluation_pooled.csv", docs / "evaluation_pooled_paired.csv"))
    print((docs / "findings.md").read_text())
    size = sum(p.stat().st_size for p in docs.rglob("*") if p.is_file())
    print(f"{docs}: {size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
