"""The study runner: the notebooks, in order, through papermill, in the Python that runs this.

``./run_all.sh`` is a thin shim over ``python -m upsampler.study.runner``; ``upsampler study`` is the
same command. The plan - which notebook runs with which parameters - is data
(:func:`plan`), so tests and other tools read the same plan the runner executes::

    01_preprocess (coco) -> 01_preprocess (celeba) -> 02_train (Model A) -> 02_train (Model B)
    -> 04_evaluate -> 05_plot_losses

Every executed notebook is saved as ``OUT/<study>/notebooks/<name>.ipynb`` and ``.html``; one
that is about to be replaced is first moved to ``notebooks/history/``. The run stops at the
first failing notebook and names it; running again resumes (finished preprocessing and
training are found and skipped; nothing is deleted).

``--match-train-size`` trains both models on the same number of images, the size of the smaller
processed training split (``data.train_images``; the larger set is subsampled with its split seed).
The sizes exist only once the preprocessing notebooks have run, so those train steps carry a
*deferred* parameter that :func:`complete_step` fills in just before the step runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, MutableMapping, Sequence

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
from upsampler.utils.argtypes import integer  # noqa: E402
from upsampler.config import CONTENT_NETWORKS, PROFILES  # noqa: E402 - the choices are the config's own
from upsampler.study.outputs import seed_run_name  # noqa: E402
EXTRACTORS = ("none", "fid-inception", "inception-imagenet", "inception-untrained")
DEMO_LABEL = (
    "DEMO: everything under this folder comes from the built-in demo - small image sets cut from photos bundled "
    "with scikit-image and matplotlib (grey ground textures in the faces' role), and the '{profile}' profile. It "
    "demonstrates the pipeline; it is not a result of the study.\n"
)


@dataclass(frozen=True)
class Step:
    """One notebook execution: the notebook file, the name of its executed copy, its parameters."""

    notebook: str
    name: str
    parameters: dict[str, Any] = field(default_factory=dict)
    # What :func:`complete_step` adds just before the step runs, known only then:
    # "train_images" appends data.train_images=<the smaller training split> to the overrides.
    deferred: tuple[str, ...] = ()


@dataclass
class Options:
    """What the command line says, resolved (absolute paths, defaults of the demo or the study)."""

    profile: str
    coco: str
    celeba: str
    out: Path
    study: str
    demo: bool
    extractor: str
    coco_groups: str = "auto"
    celeba_groups: str = "auto"
    epochs: int | None = None
    pretrain_epochs: int | None = None
    content_network: str | None = None
    extractor_size: int | None = None
    limit: int | None = None
    seed_logs: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    seeds: int = 1
    match_train_size: bool = False
    faces_per_identity: int | None = None

    @property
    def root(self) -> Path:
        return self.out / self.study


def plan(options: Options) -> list[Step]:
    """The notebook executions of a study run, in order."""
    common = {"output_root": str(options.out), "study": options.study}
    prep = {**common, "profile": options.profile, "overrides": list(options.overrides)}
    if options.limit is not None:
        prep["limit"] = options.limit
    train = {**common, "profile": options.profile, "overrides": list(options.overrides), "progress": False}
    for key in ("epochs", "pretrain_epochs", "content_network"):
        if getattr(options, key) is not None:
            train[key] = getattr(options, key)
    deferred = (TRAIN_IMAGES,) if options.match_train_size else ()
    evaluate = {**common, "faces": not options.demo, "seeds": options.seeds}
    if options.faces_per_identity is not None:
        evaluate["faces_per_identity"] = options.faces_per_identity
    if options.extractor != "none":
        evaluate["extractor"] = options.extractor
    if options.extractor_size is not None:
        evaluate["input_size"] = options.extractor_size
    return [
        Step("01_preprocess.ipynb", "01_preprocess_coco",
             {**prep, "dataset": "coco", "source": options.coco, "groups_csv": options.coco_groups}),
        Step("01_preprocess.ipynb", "01_preprocess_celeba",
             {**prep, "dataset": "celeba", "source": options.celeba, "groups_csv": options.celeba_groups}),
        *[Step("02_train.ipynb", f"02_train_{run}", {**train, "model": run, "model_name": name, "dataset": dataset,
                                                      "overrides": [*train["overrides"], *seed_override(options, seed)]},
               deferred)
          for seed in range(options.seeds)
          for model, name, dataset in (("model_a", "Model A", "coco"), ("model_b", "Model B", "celeba"))
          for run in [seed_run_name(model, seed)]],
        Step("04_evaluate.ipynb", "04_evaluate", evaluate),
        Step("05_plot_losses.ipynb", "05_plot_losses", {**common, "seed_logs": list(options.seed_logs)}),
    ]


def seed_override(options: Options, seed: int) -> list[str]:
    """With --seeds N > 1 each run gets ``train.seed=<k>``; one seed leaves the overrides as given."""
    return [f"train.seed={seed}"] if options.seeds > 1 else []


TRAIN_IMAGES = "train_images"
TRAIN_IMAGES_OVERRIDE = "data.train_images"
TRAINED_SETS = (("Model A", "coco"), ("Model B", "celeba"))


def training_split_sizes(options: Options) -> dict[str, int]:
    """Images in the train split of each processed set of the study (its manifest), by dataset."""
    from upsampler.data.processed import split_names
    from upsampler.study.outputs import StudyPaths

    paths = StudyPaths(options.out, options.study)
    return {dataset: len(split_names(paths.data(dataset), "train")) for _, dataset in TRAINED_SETS}


def matched_train_size(options: Options) -> int:
    """``--match-train-size``: the size of the smaller processed training split; prints what it does."""
    sizes = training_split_sizes(options)
    size = min(sizes.values())
    (a, coco), (b, celeba) = TRAINED_SETS
    print(f"--match-train-size: {a} {sizes[coco]} and {b} {sizes[celeba]} training images -> both train on {size}",
          flush=True)
    return size


def complete_step(step: Step, options: Options, resolved: MutableMapping[str, Any] | None = None) -> Step:
    """``step`` with its deferred parameters filled in (call it just before the step runs).

    ``resolved`` keeps what was worked out for an earlier step, so that every train step of a
    study gets the same value and the line saying so is printed once.
    """
    if not step.deferred:
        return step
    resolved = {} if resolved is None else resolved
    parameters = dict(step.parameters)
    for key in step.deferred:
        if key != TRAIN_IMAGES:
            raise ValueError(f"step {step.name}: unknown deferred parameter {key!r}")
        if key not in resolved:
            resolved[key] = matched_train_size(options)
        parameters["overrides"] = [*parameters.get("overrides", []), f"{TRAIN_IMAGES_OVERRIDE}={resolved[key]}"]
    return Step(step.notebook, step.name, parameters)


# ---- command line ------------------------------------------------------------------------------

DESCRIPTION = """\
Run the study's notebooks in order with papermill, in this Python environment:
01_preprocess (COCO role) -> 01_preprocess (CelebA role) -> 02_train (Model A) -> 02_train (Model B)
-> 04_evaluate (Bicubic vs A vs B on the held-out faces) -> 05_plot_losses.

With no --coco/--celeba it runs the BUILT-IN DEMO: small image sets cut from photos that ship inside
scikit-image and matplotlib ("broad" plays COCO; "narrow", grey ground-surface textures, plays CelebA),
the demo profile and the pretrained offline VGG16-HED content network. Every demo output says DEMO.
Running it again resumes; nothing is deleted."""

EPILOG = """\
examples:
  ./run_all.sh                                     # the built-in demo (about 30 minutes on 2 CPU cores)
  ./run_all.sh --profile study-cpu --coco DATA/train291:DATA/general --celeba DATA/faces_2600
  ./run_all.sh --profile paper --coco /data/COCO.zip --celeba /data/img_align_celeba \\
      --celeba-groups /data/identity_CelebA.txt --out /content/drive/MyDrive/upsampler-outputs"""


def _path_list(text: str) -> str:
    """One path, or several joined with ':'; each must exist."""
    parts = [p for p in text.split(os.pathsep) if p]
    for part in parts:
        if not Path(part).exists():
            raise argparse.ArgumentTypeError(f"{part}: no such file or folder")
    return os.pathsep.join(str(Path(p).resolve()) for p in parts)


def _existing(text: str) -> str:
    if not Path(text).exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file or folder")
    return str(Path(text).resolve())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run_all.sh", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    configure_study_parser(p)
    return p


def configure_study_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", choices=PROFILES,
                   help="config profile (default: demo for the built-in demo, else paper)")
    p.add_argument("--coco", type=_path_list, metavar="PATH",
                   help="Model A's images: a folder or .zip; several folders joined with ':'")
    p.add_argument("--celeba", type=_path_list, metavar="PATH",
                   help="Model B's images and the test set: a folder or .zip of faces")
    p.add_argument("--coco-groups", type=_existing, metavar="CSV", help="split the COCO set by group (CSV)")
    p.add_argument("--celeba-groups", type=_existing, metavar="FILE",
                   help="identity list for the faces: a CSV (file, celeba_identity) or CelebA's identity_CelebA.txt "
                        "(default: groups.csv or identity_CelebA.txt in or beside the folder, or "
                        "meta/<folder>_celeba_identity.csv beside it)")
    p.add_argument("--out", default="outputs", metavar="DIR", help="output root; results go to DIR/<study>/ "
                   "(default %(default)s)")
    p.add_argument("--study", metavar="NAME", help="study folder under --out (default: demo, else the profile)")
    p.add_argument("--epochs", type=integer(0), metavar="N", help="adversarial epochs per model (default: the profile's)")
    p.add_argument("--pretrain-epochs", type=integer(0), metavar="N", help="MSE pre-training epochs per model")
    p.add_argument("--content-network", choices=CONTENT_NETWORKS,
                   help="content-loss network (default: the profile's; untrained is for tests and labelled)")
    p.add_argument("--extractor", choices=EXTRACTORS,
                   help="Inception for FID (default: fid-inception for paper/original, else none)")
    p.add_argument("--extractor-size", type=integer(75), metavar="N", help="Inception input size (tests only; not an FID)")
    p.add_argument("--seeds", type=integer(1, 100), default=1, metavar="N",
                   help="train each model with N seeds (0..N-1; runs model_a, model_a_seed1, ...), evaluate every "
                        "run and report each model over its seeds (default 1)")
    p.add_argument("--faces-per-identity", type=integer(1), metavar="K",
                   help="evaluate the first K test faces of every identity (all identities kept; default: every face)")
    p.add_argument("--limit", type=integer(1), metavar="N", help="use at most N images of each dataset")
    p.add_argument("--seed-log", action="append", default=[], type=_existing, metavar="PATH",
                   help="also plot one of the original study's loss logs (repeatable)")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.FIELD=VALUE",
                   help="config override for both models (repeatable)")
    p.add_argument("--match-train-size", action="store_true",
                   help="train both models on as many images as the smaller processed training split has "
                        "(data.train_images; the larger set is subsampled with its split seed), so that the "
                        "comparison is not one of training-set sizes")


def resolve(args: argparse.Namespace) -> Options:
    """Defaults that depend on the demo/real choice; raises ValueError for inconsistent options."""
    if bool(args.coco) != bool(args.celeba):
        raise ValueError("give both --coco and --celeba (or neither, for the built-in demo)")
    for name in ("epochs", "pretrain_epochs", "limit", "extractor_size"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
    if args.seeds > 1 and any(o.strip().startswith("train.seed=") for o in args.overrides):
        raise ValueError("--seeds N sets each run's train.seed (0..N-1); leave out --set train.seed")
    match_train_size = getattr(args, "match_train_size", False)
    if match_train_size and any(o.split("=", 1)[0].strip() == TRAIN_IMAGES_OVERRIDE for o in args.overrides):
        raise ValueError(f"--match-train-size sets {TRAIN_IMAGES_OVERRIDE} of both models (to the smaller training "
                         f"split); leave out --set {TRAIN_IMAGES_OVERRIDE}=..., or --match-train-size")
    demo = not args.coco
    profile = args.profile or ("demo" if demo else "paper")
    if demo and profile == "paper":
        raise ValueError("the built-in demo images are too small for the paper profile (176 px); give --coco and --celeba")
    extractor = args.extractor or ("fid-inception" if profile in ("paper", "original") and not demo else "none")
    out = Path(args.out).resolve()
    study = args.study or ("demo" if demo else profile)
    return Options(
        profile=profile, coco=args.coco or "", celeba=args.celeba or "", out=out, study=study, demo=demo,
        extractor=extractor, coco_groups=args.coco_groups or "auto", celeba_groups=args.celeba_groups or "auto",
        epochs=args.epochs, pretrain_epochs=args.pretrain_epochs, content_network=args.content_network,
        extractor_size=args.extractor_size, limit=args.limit, seed_logs=list(args.seed_log),
        overrides=list(args.overrides), seeds=args.seeds, match_train_size=match_train_size,
        faces_per_identity=getattr(args, "faces_per_identity", None),
    )


# ---- execution ---------------------------------------------------------------------------------

def prepare_demo(options: Options) -> Options:
    """Write the demo images (once) and the DEMO label; point --coco/--celeba at them."""
    from upsampler.config import get_profile
    from upsampler.data.demo import write_demo_datasets

    folder = options.root / "demo-data"
    if (folder / "broad" / "README.txt").is_file() and (folder / "narrow" / "README.txt").is_file():
        print(f"run_all: demo data already in {folder}")
    else:
        write_demo_datasets(folder, size=max(64, get_profile(options.profile).data.hr_size))
    (options.root / "LABEL.txt").write_text(DEMO_LABEL.format(profile=options.profile))
    options.coco, options.celeba = str(folder / "broad"), str(folder / "narrow")
    return options


def _keep_earlier(path: Path, history: Path) -> None:
    if path.exists():
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(path.stat().st_mtime))
        history.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), str(history / f"{path.stem}.{stamp}{path.suffix}"))


def to_html(executed: Path) -> Path:
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(str(executed), as_version=4))
    html = executed.with_suffix(".html")
    html.write_text(body, encoding="utf-8")
    return html


def execute(step: Step, notebooks_dir: Path) -> Path:
    """Run one notebook with papermill; its executed copy (and HTML) go to ``notebooks_dir``."""
    import papermill

    executed = notebooks_dir / f"{step.name}.ipynb"
    for old in (executed, executed.with_suffix(".html")):
        _keep_earlier(old, notebooks_dir / "history")
    start = time.monotonic()
    print(f"run_all: === {step.name} ({step.notebook}) ===", flush=True)
    try:
        papermill.execute_notebook(str(NOTEBOOKS / step.notebook), str(executed), parameters=step.parameters,
                                   cwd=str(REPO), progress_bar=False, kernel_name="python3",
                                   stdout_file=sys.stdout, stderr_file=sys.stderr)  # each line as the cell prints it
    except Exception:
        if executed.exists():
            try:
                to_html(executed)
            except Exception:  # noqa: BLE001 - the failure below is what matters
                pass
        raise
    html = to_html(executed)
    print(f"run_all: --- {step.name} done in {time.monotonic() - start:.0f} s -> {executed}, {html}", flush=True)
    return executed


def run(options: Options) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("MPLBACKEND", "Agg")
    notebooks_dir = options.root / "notebooks"
    notebooks_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    print(f"run_all: profile {options.profile}, study {options.root}" + (" (BUILT-IN DEMO)" if options.demo else ""))
    if options.demo:
        prepare_demo(options)
    resolved: dict[str, Any] = {}
    for step in plan(options):
        try:
            execute(complete_step(step, options, resolved), notebooks_dir)
        except Exception as exc:  # papermill raises PapermillExecutionError with the cell's error
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            print(f"run_all: FAILED at notebook {step.name} (notebooks/{step.notebook}): {first}", file=sys.stderr)
            print(f"run_all: the executed copy with the error is {notebooks_dir / step.name}.ipynb (and .html); "
                  "fix the cause and run again to resume.", file=sys.stderr)
            return 1
    print(f"run_all: finished in {time.monotonic() - start:.0f} s. Results in {options.root}:")
    print("  tables/evaluation_metrics.md, tables/evaluation_paired.csv, figures/, runs/model_a, runs/model_b, "
          "notebooks/*.html")
    table = options.root / "tables" / "evaluation_metrics.md"
    if table.is_file():
        text = table.read_text()
        print(text[text.find("## Per method"):text.find("## Paired")] if "## Per method" in text else text)
    if options.demo:
        print("run_all: this was the BUILT-IN DEMO: its outputs demonstrate the pipeline, they are not results of the study.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        options = resolve(args)
    except ValueError as exc:
        parser.error(str(exc))
    return run(options)


def run_study(args: argparse.Namespace) -> int:
    """``upsampler study``: the same as ``./run_all.sh`` in the current environment."""
    return run(resolve(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

