"""Generate notebooks/*.ipynb (committed without outputs). Run: .venv/bin/python scripts/make_notebooks.py

The notebooks are thin; edit their text here (or in Jupyter, then keep this file in step).
"""
import nbformat
from nbformat.v4 import new_notebook, new_markdown_cell, new_code_cell
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "notebooks"

COMMON_PARAMS = '''output_root = "outputs"  # Colab + Drive: e.g. "/content/drive/MyDrive/upsampler-outputs"
study = "study"  # everything goes to <output_root>/<study>/
package_source = "git+https://github.com/<owner>/upsampler.git"  # Colab only: repository URL, or a Drive checkout path'''

SETUP = '''# Colab only: mount Google Drive (when the outputs go there) and install the package.
# Elsewhere (papermill, run_all.sh, a local Jupyter) this cell does nothing but quieten TensorFlow.
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if "google.colab" in sys.modules:
    import subprocess

    if str(output_root).startswith("/content/drive") or str(package_source).startswith("/content/drive"):
        from google.colab import drive

        drive.mount("/content/drive")
    if os.path.isdir(str(package_source)):
        target = str(package_source)  # a checkout of the repository on the mounted Drive
    elif "<owner>" in str(package_source):
        raise ValueError("set package_source to the repository's URL (git+https://...) or a Drive checkout")
    else:
        target = package_source if str(package_source).startswith("git+") else f"git+{package_source}"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", target], check=True)
    import importlib

    importlib.invalidate_caches()'''

SETUP_MD = ("## Setup\n\nIn Google Colab the next cell mounts Drive (when `output_root` is under "
            "`/content/drive`) and installs `upsampler` from `package_source`; anywhere else it does nothing.")


def nb(cells):
    book = new_notebook()
    book.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    out = []
    for kind, text, *tags in cells:
        if kind == "md":
            out.append(new_markdown_cell(text))
        else:
            cell = new_code_cell(text)
            if tags:
                cell.metadata["tags"] = list(tags)
            out.append(cell)
    book.cells = out
    return book


def params(text):
    return ("code", text, "parameters")


books = {}

# ---------------------------------------------------------------------------------------------
books["01_preprocess.ipynb"] = nb([
    ("md", """# 1. Preprocess a dataset

The study trains two identical SRGANs: **Model A** on COCO (varied content) and **Model B** on CelebA
(faces). This notebook turns one dataset - a folder or a `.zip` of photos - into the processed set the
trainer reads:

* **HR**: the centre `hr_size` x `hr_size` crop of each photo (176 px in the `paper` profile, as in the
  original; no resize first);
* **LR**: Pillow's antialiased bicubic downscale of the HR crop by 4 (44 px);
* a seeded **train/test split** that depends only on the sorted file names (and, when a groups CSV is
  given, keeps every group - a CelebA identity, a demo tile - on one side, so nobody is in both);
* `rejected.csv`: every file left out (too small, truncated, not an image, duplicate) and why.

Run it once per dataset (`dataset = "coco"`, then `"celeba"`). Running it again with the same
parameters is a no-op: it finds the finished set and reuses it."""),
    params(COMMON_PARAMS + '''
dataset = "celeba"  # "coco" (Model A's training set) or "celeba" (Model B's, and the test set)
source = "../shared/data/faces"  # a folder (searched recursively) or a .zip of images
profile = "paper"  # paper | demo | smoke: sets the crop size and the split
overrides = []  # config overrides, strings of the form section.field=value
limit = None  # stop after this many accepted images (sorted path order); None: all
groups_csv = "auto"  # CSV file -> group for a group split; "auto": groups.csv of demo data or the faces' identity CSV
group_column = None  # the CSV's group column; None: "group" or "celeba_identity"
n_show = 4  # HR/LR pairs to show'''),
    ("md", SETUP_MD),
    ("code", SETUP),
    ("md", "Derived values: the output folder of this dataset and the labels that apply (demo data, demo or "
           "smoke profile)."),
    ("code", '''from upsampler import notebook as nb

paths = nb.study_paths(output_root, study)
out_dir = paths.data(dataset)
label = nb.run_label(profile, [source])
nb.banner([label])
print(f"{dataset}: {source} -> {out_dir} (profile {profile})")'''),
    ("md", "## Crop, downscale and split\n\nAlready done? Then this only reads the summary of the finished set."),
    ("code", '''summary = nb.preprocess_dataset(
    source, out_dir, profile=profile, overrides=overrides, limit=limit, groups_csv=groups_csv,
    group_column=group_column, progress=False,
)
print(summary)
_ = nb.write_label(out_dir, [label])'''),
    ("md", "The processed set, in numbers (the same on every run):"),
    ("code", '''# NBVAL_CHECK_OUTPUT
counts = nb.split_counts(out_dir)
print(f"{dataset}: {summary.n_accepted} images accepted (train {counts['train']}, test {counts['test']}), "
      f"{summary.n_rejected} rejected, of {summary.n_candidates} image files examined")
print(f"HR {summary.parameters['hr_size']} px, LR {summary.parameters['lr_size']} px")'''),
    ("md", """## A few HR/LR pairs

Each row: the LR input (shown as blocky pixels: it is never smoothed for display), its real Pillow
bicubic upscale, and the HR crop. (The original's "bicubic" panel was matplotlib's display
interpolation; here it is the actual baseline every model is compared with.)"""),
    ("code", '''_ = nb.show(
    nb.pairs_figure(out_dir, n_show, title=f"{dataset}: test pairs (LR | bicubic | HR)", note=label),
    paths.figures / f"{dataset}_pairs.png",
)'''),
    ("md", "## Rejected files\n\nEvery file that was left out, and why (also in `rejected.csv` of the processed set)."),
    ("code", '''rejected = nb.rejected_table(summary)
print(f"{len(rejected)} rejected file(s)", dict(rejected["kind"].value_counts()) if len(rejected) else "")
if label:
    rejected.insert(0, "label", label)
rejected.to_csv(paths.tables / f"{dataset}_rejected.csv", index=False)
nb.show_table(rejected)'''),
])

# ---------------------------------------------------------------------------------------------
books["02_train.ipynb"] = nb([
    ("md", """# 2. Train an SRGAN

One notebook, run twice: **Model A** on the processed COCO set and **Model B** on the processed CelebA
set (`run_all.sh` does both). The generator is SRResNet (16 residual blocks in the `paper` profile); the
discriminator is the study's VGG-style network. Unlike the original:

* losses are computed on logits and G and D have **separate optimisers**, so the discriminator really
  trains (the original's sat at D = 1.0 for 2500 epochs and passed no gradient);
* training can start with **MSE pre-training** of the generator (SRResNet), as the SRGAN paper does;
* it **resumes** from the run directory's latest checkpoint, exactly, and never deletes or truncates
  anything; `loss.csv` gets one row per epoch and phase;
* every epoch is checked for a **saturated discriminator**, which is reported.

The generator after MSE pre-training is kept as `generator_pretrained.keras`, so the evaluation can show
what the adversarial phase changed."""),
    params(COMMON_PARAMS + '''
model = "model_a"  # run name: the run directory is <output_root>/<study>/runs/<model>
model_name = "Model A"  # display name in titles and tables
dataset = "coco"  # processed set <output_root>/<study>/data/<dataset>
data_dir = None  # a processed set elsewhere (overrides dataset)
run_dir = None  # a run directory elsewhere (overrides model)
profile = "paper"  # paper | demo | smoke
epochs = None  # adversarial epochs to reach in total (None: the profile's)
pretrain_epochs = None  # MSE pre-training epochs (None: the profile's)
vgg_weights = None  # "imagenet" | "untrained" (labelled offline fallback); None: the profile's
overrides = []  # any config field as section.field=value, such as model.upsample=nearest
progress = True  # progress bars (run_all.sh turns them off; epoch lines are printed either way)
zoom = None  # first and last epoch of the zoomed loss panel; None: 1500-1750, or the last quarter of the run'''),
    ("md", SETUP_MD),
    ("code", SETUP),
    ("md", "Derived values: folders, the resolved configuration and its labels."),
    ("code", '''from upsampler import notebook as nb
from upsampler.config import UNTRAINED_VGG_WARNING

nb.import_tensorflow_quietly()
paths = nb.study_paths(output_root, study)
data_dir = data_dir or paths.data(dataset)
run_dir = run_dir or paths.run(model)
config = nb.training_config(
    profile, epochs=epochs, pretrain_epochs=pretrain_epochs, vgg_weights=vgg_weights,
    overrides=[*overrides, f"train.progress={str(bool(progress)).lower()}"],
)
notes = [nb.run_label(profile, [data_dir]), UNTRAINED_VGG_WARNING if config.uses_untrained_features else None]
nb.banner(notes)
print(f"{model_name}: {data_dir} -> {run_dir}")
print("\\n".join(config.summary_lines()))'''),
    ("md", """## Train (or resume)

An existing run directory is resumed from its latest checkpoint; a finished one returns at once. Only
schedule fields (epochs, sampling, checkpoint cadence) may differ from the saved `config.json`."""),
    ("code", '''result = nb.train_model(config, data_dir, run_dir)
_ = nb.write_label(run_dir, notes)'''),
    ("code", '''# NBVAL_CHECK_OUTPUT
print(nb.run_status(run_dir))'''),
    ("md", """## Loss curves

Perceptual loss (G's total), content loss and adversarial loss x its weight (1e-3), over all adversarial
epochs and in a zoomed window; then the discriminator's loss and its mean D(real) / D(fake) per epoch,
with saturated stretches shaded red. Figures go to `figures/`."""),
    ("code", '''loss_figures = nb.loss_figures(run_dir, paths.figures, name=model, title=f"{model_name} ({dataset})", zoom=zoom,
                              notes=notes)'''),
    ("md", "## Latest samples\n\nA fixed set of test images, rendered by the trainer every few epochs: bicubic | SR | HR."),
    ("code", '''_ = nb.samples_figure(run_dir, paths.figures, name=model, title=f"{model_name} ({dataset})", notes=notes)'''),
])

# ---------------------------------------------------------------------------------------------
books["03_continue.ipynb"] = nb([
    ("md", """# 3. Continue a run

Resumes any run directory from its latest checkpoint for more epochs. The configuration is read from the
run's own `config.json` (only the number of epochs changes), the loss log is appended to, and nothing is
deleted - the original's "continue" notebooks deleted the Drive checkpoint folder and truncated the loss
log at every resume."""),
    params(COMMON_PARAMS + '''
model = "model_a"  # run name under <output_root>/<study>/runs/
model_name = None  # display name (None: the run name)
run_dir = None  # any run directory (overrides model)
data_dir = None  # its processed set (None: the one it was trained on, from data_dir.txt)
extra_epochs = 10  # adversarial epochs to add ...
epochs = None  # ... or the total to reach (overrides extra_epochs)
progress = True
zoom = None  # first and last epoch of the zoomed loss panel'''),
    ("md", SETUP_MD),
    ("code", SETUP),
    ("md", "Derived values: the run, its saved configuration and the new target."),
    ("code", '''from upsampler import notebook as nb
from upsampler.config import UNTRAINED_VGG_WARNING

nb.import_tensorflow_quietly()
paths = nb.study_paths(output_root, study)
run_dir = nb.Path(run_dir or paths.run(model))
model_name = model_name or run_dir.name
data_dir = data_dir or nb.data_dir_of_run(run_dir)
if data_dir is None:
    raise ValueError(f"{run_dir}: no data_dir.txt; give data_dir")
print(nb.run_status(run_dir))
target = int(epochs) if epochs is not None else nb.epochs_done(run_dir)["adversarial"] + int(extra_epochs)
config = nb.training_config(config_json=run_dir / "config.json", epochs=target,
                            overrides=[f"train.progress={str(bool(progress)).lower()}"])
notes = nb.run_notes(run_dir)
nb.banner(notes)
print(f"{model_name}: continue to {target} adversarial epochs on {data_dir}")'''),
    ("md", "## Continue training"),
    ("code", '''result = nb.train_model(config, data_dir, run_dir)'''),
    ("code", '''# NBVAL_CHECK_OUTPUT
print(nb.run_status(run_dir))'''),
    ("md", "## Loss curves and samples, all epochs so far"),
    ("code", '''_ = nb.loss_figures(run_dir, paths.figures, name=f"{run_dir.name}_continued", title=model_name, zoom=zoom,
                   notes=notes)
_ = nb.samples_figure(run_dir, paths.figures, name=f"{run_dir.name}_continued", title=model_name, notes=notes)'''),
])

# ---------------------------------------------------------------------------------------------
books["04_evaluate.ipynb"] = nb([
    ("md", """# 4. Evaluate: Bicubic vs Model A vs Model B on the CelebA test set

The study's question: on faces, does the model trained on faces (B) beat the one trained on varied
content (A), and both beat bicubic upsampling? Every method upscales the same LR test images and is
scored against the HR images:

* **FID** (with a 95% bootstrap interval over images) and **KID** (mean ± std over subsets), all with one
  named feature extractor: the reference TF-GAN FID Inception (`fid-inception`) for numbers comparable
  with published FID; `inception-imagenet` (Keras weights, not comparable); or, offline only,
  `inception-untrained` (random weights: **not an FID**, and labelled so everywhere);
* **PSNR** and **SSIM** on the Y channel with a 4-pixel border shaved, as SR papers report them, with 95%
  t-intervals over images.

FID on a few hundred images is biased upwards; compare methods only at equal N (the table records N and
the feature dimension). Tables go to `tables/` (CSV + Markdown), figures to `figures/`."""),
    params(COMMON_PARAMS + '''
test_dir = None  # a processed test split (hr/ + lr/); None: <output_root>/<study>/data/celeba/test
model_a_run = None  # None: <output_root>/<study>/runs/model_a
model_b_run = None  # None: <output_root>/<study>/runs/model_b
extractor = "fid-inception"  # fid-inception | inception-imagenet | inception-untrained (offline, not an FID)
input_size = None  # extractor input size; None: 299 (smaller only for tests: then not an FID)
n_boot = 200  # bootstrap resamples for the FID interval
kid_subsets = 100  # KID subsets
grid_images = 6  # rows of the comparison grid
include_pretrained = True  # also evaluate each model's generator after MSE pre-training, when kept'''),
    ("md", SETUP_MD),
    ("code", SETUP),
    ("md", "Derived values: the test split, the two runs and the labels that apply."),
    ("code", '''from upsampler import notebook as nb

nb.import_tensorflow_quietly()
paths = nb.study_paths(output_root, study)
test_dir = nb.Path(test_dir or paths.data("celeba") / "test")
runs = {"Model A": model_a_run or paths.run("model_a"), "Model B": model_b_run or paths.run("model_b")}
for name, run in runs.items():
    print(f"{name}: {run}")
    print("  " + nb.run_status(run))
print(f"test set: {test_dir}; extractor {extractor}" + (f" at {input_size}px" if input_size else ""))'''),
    ("md", """## Metrics

The table has one row per method: FID [interval], KID ± std, PSNR [interval], SSIM [interval], N, and the
extractor's name and label. The full table (every number and bound) is in
`tables/evaluation_metrics.csv`; `tables/evaluation_metrics.md` is the readable version."""),
    ("code", '''results = nb.evaluate(
    test_dir, runs, paths, extractor=extractor, input_size=input_size, n_boot=n_boot, kid_subsets=kid_subsets,
    grid_images=grid_images, include_pretrained=include_pretrained,
)'''),
    ("md", "PSNR and SSIM per method (deterministic; rounded):"),
    ("code", '''# NBVAL_CHECK_OUTPUT
print("\\n".join(nb.psnr_lines(results.table)))'''),
    ("md", "The Markdown table as saved:"),
    ("code", '''from IPython.display import Markdown, display

display(Markdown((paths.tables / "evaluation_metrics.md").read_text()))'''),
])

# ---------------------------------------------------------------------------------------------
books["05_plot_losses.ipynb"] = nb([
    ("md", """# 5. Loss curves

For each run: the three curves of the original's figure - perceptual loss (G's total), content loss, and
adversarial loss x its weight (1e-3) - over all epochs and in a zoomed window (the original zoomed into
epochs 1500-1750; shorter runs show their last quarter), and the discriminator's health: `d_loss` and the
mean D(real) / D(fake) per epoch, with saturated stretches shaded and reported.

Optionally the original study's own loss logs (`seed_logs`, e.g. `../shared/data/seed-logs/COCO_loss.txt`)
are drawn the same way: their `d_loss` sits at ~7.97 for all 2500 epochs - a discriminator that outputs
1.0 for every image under Keras' clipped cross-entropy - and the two files share 349 identical records
(copied by hand when the logs were spliced after resumes)."""),
    params(COMMON_PARAMS + '''
run_dirs = None  # run directories; None: <output_root>/<study>/runs/model_a and model_b (those that exist)
names = None  # display names, one per run directory; None: "Model A", "Model B" (or the folder names)
seed_logs = []  # the original's loss logs, such as ../shared/data/seed-logs/COCO_loss.txt
zoom = None  # first and last epoch of the zoomed panel; None: 1500-1750 clipped to the run, or its last quarter'''),
    ("md", SETUP_MD),
    ("code", SETUP),
    ("md", "Derived values: the runs to plot."),
    ("code", '''from upsampler import notebook as nb

paths = nb.study_paths(output_root, study)
if run_dirs is None:
    run_dirs = [paths.run(m) for m in ("model_a", "model_b") if (paths.run(m) / "loss.csv").exists()]
    names = names or [nb.MODELS[nb.Path(r).name][0] for r in run_dirs]
run_dirs = [nb.Path(r) for r in run_dirs]
names = names or [r.name for r in run_dirs]
if len(names) != len(run_dirs):
    raise ValueError(f"{len(names)} names for {len(run_dirs)} run directories")
for run in run_dirs:
    print(run)
print(f"{len(seed_logs)} seed log(s)")'''),
    ("code", '''# NBVAL_CHECK_OUTPUT
for run in run_dirs:
    print(nb.run_status(run))'''),
    ("md", "## Our runs"),
    ("code", '''for run, name in zip(run_dirs, names):
    notes = nb.run_notes(run)
    nb.banner(notes)
    nb.loss_figures(run, paths.figures, name=f"{run.name}_all", title=name, zoom=zoom, notes=notes)'''),
    ("md", """## The original study's logs (optional)

Drawn with the same code. These logs hold only the *last batch's* losses of each epoch and no D
probabilities, so saturation is judged from `d_loss` against the clipped-BCE value of a D that outputs
1.0 everywhere."""),
    ("code", '''if seed_logs:
    for log in seed_logs:
        nb.loss_figures(log, paths.figures, name=f"original_{nb.Path(log).stem}",
                        title=f"original study: {nb.Path(log).name}", zoom=zoom,
                        notes=["The original study's own loss log (2019), for comparison"])
    for line in nb.copied_records_lines(seed_logs):
        print(line)
else:
    print("no seed logs given")'''),
])

for name, book in books.items():
    nbformat.validate(book)
    for index, cell in enumerate(book.cells):  # stable ids: regenerating gives no diff
        cell.id = f"{Path(name).stem[:2]}-{index:02d}"
    nbformat.write(book, OUT / name)
    print("wrote", OUT / name)
