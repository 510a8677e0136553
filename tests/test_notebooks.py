"""The notebooks: structure (one parameters cell, no committed outputs), then the whole chain
executed with papermill at smoke size and re-validated with nbval.

The chain (module fixture, one kernel per notebook): tiny demo data -> 01 preprocess (coco,
celeba) -> 02 train (Model A with one MSE pre-training epoch, Model B) -> 03 continue (Model B,
one more epoch, on a copy of its run directory) -> 04 evaluate (untrained Inception at 75 px) -> 05 plot losses (+ a tiny
original-format log). Then ``pytest --nbval-lax`` re-runs every executed copy in fresh
kernels: everything resumes (preprocess finds its sets, training is finished) and the cells
marked ``# NBVAL_CHECK_OUTPUT`` must print exactly what they printed the first time.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_module

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = ["01_preprocess", "02_train", "03_continue", "04_evaluate", "05_plot_losses"]


def _load(name: str) -> dict:
    return json.loads((NOTEBOOK_DIR / f"{name}.ipynb").read_text())


def _code_cells(book: dict) -> list[dict]:
    return [c for c in book["cells"] if c["cell_type"] == "code"]


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


# ---- structure (fast) -------------------------------------------------------------------------

def test_the_five_notebooks_exist():
    assert sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")) == NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_exactly_one_parameters_cell_of_plain_assignments(name):
    book = _load(name)
    tagged = [c for c in book["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    cell = tagged[0]
    assert cell["cell_type"] == "code"
    assert _code_cells(book)[0] is cell, "the parameters cell is the first code cell"
    tree = ast.parse(_source(cell))
    assert tree.body and all(isinstance(node, (ast.Assign, ast.AnnAssign)) for node in tree.body), \
        "parameters are plain (optionally typed) assignments"
    for node in tree.body:  # values are literals: papermill can override them, nothing is derived here
        ast.literal_eval(node.value)
    names = {t.id for node in tree.body for t in (node.targets if isinstance(node, ast.Assign) else [node.target])}
    assert {"output_root", "study", "package_source"} <= names


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_without_outputs(name):
    book = _load(name)
    for cell in _code_cells(book):
        assert cell.get("outputs") == [], f"{name}: a cell has committed outputs"
        assert cell.get("execution_count") is None
    assert book["metadata"]["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_colab_setup_cell_and_explanations(name):
    book = _load(name)
    setup = _source(_code_cells(book)[1])
    assert '"google.colab" in sys.modules' in setup
    assert "drive.mount" in setup and "pip" in setup and "package_source" in setup
    assert sum(c["cell_type"] == "markdown" for c in book["cells"]) >= 4
    assert any("# NBVAL_CHECK_OUTPUT" in _source(c) for c in _code_cells(book))
    assert book["metadata"]["accelerator"] == "GPU"  # Colab opens a GPU runtime for it


# ---- the helpers behind the notebooks (fast) ----------------------------------------------------

def test_study_paths_layout(tmp_path):
    from upsampler.study.outputs import study_paths

    paths = study_paths(tmp_path, "demo")
    assert paths.data("coco") == tmp_path / "demo/data/coco"
    assert paths.run("model_b") == tmp_path / "demo/runs/model_b"
    for folder in (paths.figures, paths.tables, paths.notebooks):
        assert folder.is_dir() and folder.parent == tmp_path / "demo"
    with pytest.raises(ValueError):
        study_paths(tmp_path, "../elsewhere")


def test_labels(tmp_path):
    from upsampler.data.demo import write_demo_datasets
    from upsampler.study.outputs import join_notes, run_label

    assert run_label("paper", [tmp_path]) is None
    assert "SMOKE TEST" in run_label("smoke")
    assert "DEMO profile" in run_label("demo")
    demo = write_demo_datasets(tmp_path / "d", broad_count=12, narrow_count=3, size=16)
    label = run_label("paper", [demo["narrow"], None])
    assert label.startswith("DEMO: built-in demo data") and "not a result of the study" in label
    assert join_notes([None, "a", "b", "a"]) == "a | b"
    assert join_notes([None, ""]) is None


def test_groups_csv_found_for_demo_data_and_the_shared_faces(tmp_path):
    from upsampler.study.notebook import find_groups_csv

    (tmp_path / "faces").mkdir()
    assert find_groups_csv(tmp_path / "faces") is None
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta/faces_celeba_identity.csv").write_text("file,celeba_identity\n")
    assert find_groups_csv(tmp_path / "faces") == (tmp_path / "meta/faces_celeba_identity.csv", "celeba_identity")
    (tmp_path / "faces/groups.csv").write_text("file,group\n")
    assert find_groups_csv(tmp_path / "faces") == (tmp_path / "faces/groups.csv", "group")
    assert find_groups_csv(tmp_path / "images.zip") is None


def test_training_config_from_parameters():
    from upsampler.study.notebook import training_config

    config = training_config("smoke", epochs=5, pretrain_epochs=2, content_network="untrained",
                             overrides=["model.upsample=nearest"])
    assert (config.train.epochs, config.train.pretrain_epochs) == (5, 2)
    assert config.model.upsample == "nearest" and config.uses_untrained_features
    assert training_config("paper").train.epochs == 2500


def test_a_finished_evaluation_is_reused_only_for_the_same_inputs(tmp_path):
    import pandas as pd

    from upsampler.study.evaluation import EVALUATION_KEY_FILE, evaluation_key, reuse_evaluation

    test_dir, out = tmp_path / "test", tmp_path / "evaluation"
    (test_dir / "hr").mkdir(parents=True)
    (test_dir / "hr" / "a.png").write_bytes(b"image a")
    model = tmp_path / "generator.keras"
    model.write_bytes(b"weights v1")
    key = evaluation_key(test_dir, {"Model B": model}, n_boot=10)
    pd.DataFrame({"method": ["Bicubic", "Model B"], "psnr": [28.0, 20.0]}).to_csv(out.mkdir() or out / "metrics.csv",
                                                                                   index=False)
    for name in ("per_image_metrics.csv", "paired.csv"):
        pd.DataFrame({"method": ["Bicubic"], "x": [1.0]}).to_csv(out / name, index=False)
    (out / "metrics.md").write_text("table")
    for method in ("Bicubic", "Model_B"):
        (out / "sr" / method).mkdir(parents=True)
    assert reuse_evaluation(out, key, ["Model B"]) is None  # no key file: never evaluated to the end
    (out / EVALUATION_KEY_FILE).write_text(json.dumps(key))
    reused = reuse_evaluation(out, key, ["Model B"])
    assert reused is not None and reused.table["psnr"].tolist() == [28.0, 20.0]
    assert reuse_evaluation(out, evaluation_key(test_dir, {"Model B": model}, n_boot=20), ["Model B"]) is None
    model.write_bytes(b"weights v2")  # retrained: the evaluation is stale
    assert reuse_evaluation(out, evaluation_key(test_dir, {"Model B": model}, n_boot=10), ["Model B"]) is None
    model.write_bytes(b"weights v1")
    (test_dir / "hr" / "b.png").write_bytes(b"image b")  # another test set
    assert reuse_evaluation(out, evaluation_key(test_dir, {"Model B": model}, n_boot=10), ["Model B"]) is None


# ---- execution (slow) ---------------------------------------------------------------------------

ORIGINAL_LOG = "".join(
    f"EPOCH {e}\t\td_loss {7.97 + 0.01 * (e % 3):.6f}\tgan_loss [0.07{e}, 0.072{e}, 1.59{e}]\n" for e in range(1, 7)
)


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> dict:
    """Execute every notebook once (papermill), in the study's order; returns paths and params."""
    papermill = require_module("papermill")
    from upsampler.data.demo import write_demo_datasets

    root = tmp_path_factory.mktemp("nbchain")
    src = write_demo_datasets(root / "src", broad_count=24, narrow_count=24, size=32, seed=0)
    seed_log = root / "COCO_loss.txt"
    seed_log.write_text(ORIGINAL_LOG)
    out = root / "out"
    executed = root / "executed"
    executed.mkdir()
    common = {"output_root": str(out), "study": "smoke"}
    runs = [
        ("01_preprocess", "coco", {"dataset": "coco", "source": str(src["broad"]), "profile": "smoke"}),
        ("01_preprocess", "celeba", {"dataset": "celeba", "source": str(src["narrow"]), "profile": "smoke"}),
        ("02_train", "model_a", {"model": "model_a", "model_name": "Model A", "dataset": "coco", "profile": "smoke",
                                 "pretrain_epochs": 1, "progress": False}),
        ("02_train", "model_b", {"model": "model_b", "model_name": "Model B", "dataset": "celeba",
                                 "profile": "smoke", "progress": False}),
        ("02_train", "model_b_seed1", {"model": "model_b_seed1", "model_name": "Model B", "dataset": "celeba",
                                       "profile": "smoke", "progress": False, "overrides": ["train.seed=1"]}),
        # a copy of Model B's run (made below), so that re-running 02 (nbval) still finds 2 epochs there
        ("03_continue", "model_b", {"model": "model_b_continued", "epochs": 3, "progress": False}),
        ("04_evaluate", "", {"faces": False, "n_boot": 20, "grid_images": 2, "include_pretrained": True,
                             "model_b_run": [str(out / "smoke/runs/model_b"), str(out / "smoke/runs/model_b_seed1")]}),
        ("05_plot_losses", "", {"seed_logs": [str(seed_log)]}),
    ]
    env_backup = dict(os.environ)
    os.environ.update({"TF_CPP_MIN_LOG_LEVEL": "3", "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0"})
    paths = {}
    try:
        for notebook, suffix, params in runs:
            if notebook == "03_continue":
                shutil.copytree(out / "smoke/runs/model_b", out / "smoke/runs/model_b_continued")
            name = f"{notebook}_{suffix}" if suffix else notebook
            target = executed / f"{name}.ipynb"
            papermill.execute_notebook(
                str(NOTEBOOK_DIR / f"{notebook}.ipynb"), str(target), parameters={**common, **params},
                cwd=str(REPO), progress_bar=False, kernel_name="python3",
            )
            paths[name] = target
    finally:
        os.environ.clear()
        os.environ.update(env_backup)
    return {"root": root, "study": out / "smoke", "executed": paths}


def _outputs_text(path: Path) -> str:
    book = json.loads(path.read_text())
    texts = []
    for cell in _code_cells(book):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                texts.append("ERROR " + output.get("ename", ""))
            texts.append("".join(output.get("text", "")))
            texts.append("".join(output.get("data", {}).get("text/plain", "")))
    return "\n".join(texts)


@pytest.mark.slow
def test_chain_executes_and_labels_every_output(chain):
    assert len(chain["executed"]) == 8
    for name, path in chain["executed"].items():
        text = _outputs_text(path)
        assert "ERROR" not in text, name
        if not name.startswith("05"):
            assert "SMOKE TEST" in text and "DEMO" in text, f"{name} does not say it is a demo/smoke run"
    train_a = _outputs_text(chain["executed"]["02_train_model_a"])
    assert "UNTRAINED VGG19" in train_a
    assert "the generator after 1 MSE pre-training epochs is kept as generator_pretrained.keras" in train_a
    assert "model_a: profile smoke, pre-training 1/1 epochs, adversarial 2/2 epochs" in train_a
    continued = _outputs_text(chain["executed"]["03_continue_model_b"])
    assert "adversarial 2/2" in continued and "adversarial 3/3" in continued
    assert "resumed at pretrain epoch 0/0, adversarial epoch 2/3" in continued
    original = _outputs_text(chain["executed"]["05_plot_losses"])
    assert "SATURATED" in original and "COCO_loss.txt: 6 records" in original


@pytest.mark.slow
def test_chain_writes_the_study_layout(chain):
    import pandas as pd

    study = chain["study"]
    for folder in ("data/coco/train/hr", "data/celeba/test/lr", "runs/model_a", "runs/model_b", "figures", "tables"):
        assert (study / folder).is_dir(), folder
    assert (study / "runs/model_a/generator_pretrained.keras").is_file()
    assert not (study / "runs/model_b/generator_pretrained.keras").exists()  # smoke: no pre-training
    assert "DEMO" in (study / "runs/model_a/LABEL.txt").read_text()
    table = pd.read_csv(study / "tables/evaluation_metrics.csv")
    assert list(table["method"]) == ["Bicubic", "Model A", "Model A (MSE pre-trained)", "Model B #1", "Model B #2"]
    pooled = pd.read_csv(study / "tables/evaluation_pooled.csv").set_index(["model", "metric"])
    psnr = table.set_index("method")["psnr"]
    assert pooled.loc[("Model B", "psnr"), "n_seeds"] == 2
    assert pooled.loc[("Model B", "psnr"), "value"] == pytest.approx(psnr[["Model B #1", "Model B #2"]].mean(), abs=1e-4)
    assert pooled.loc[("Model A", "psnr"), "n_seeds"] == 1
    for column in ("n", "psnr", "psnr_low", "psnr_high", "ssim", "featdist_hed", "featdist_hed_low", "kid_hed",
                   "fd_hed", "split", "label", "provenance"):
        assert table[column].notna().all(), column
    assert "fid" not in table.columns and "identity_distance" not in table.columns  # no FID asked; not faces
    assert table["label"].str.contains("DEMO").all() and table["provenance"].str.contains("tensorflow").all()
    paired = pd.read_csv(study / "tables/evaluation_paired.csv")
    assert list(paired.columns[:7]) == ["metric", "method_a", "method_b", "difference", "ci_low", "ci_high", "n"]
    assert ("Model B #1", "Model A") in set(zip(paired["method_a"], paired["method_b"]))
    markdown = (study / "tables/evaluation_metrics.md").read_text()
    assert "DEMO" in markdown and "UNTRAINED" in markdown and "| Model B #2 |" in markdown
    assert "## Per model over its training seeds" in markdown and "| Model B | 2 |" in markdown
    assert "VGG16-HED feature distance (unweighted, LPIPS structure; not LPIPS)" in markdown
    assert "Paired differences" in markdown
    figures = {p.name for p in (study / "figures").glob("*.png")}
    for expected in ("coco_pairs.png", "celeba_pairs.png", "model_a_losses.png", "model_a_discriminator.png",
                     "model_b_samples_latest.png", "evaluation_paired_differences.png", "evaluation_comparison_grid.png",
                     "model_b_all_losses.png", "original_COCO_loss_losses.png"):
        assert expected in figures, expected
    assert (study / "tables/coco_rejected.csv").is_file()


@pytest.mark.slow
def test_executed_notebooks_pass_nbval(chain):
    """Re-run every executed copy in a fresh kernel; checked cells must print the same."""
    require_module("nbval")
    paths = [str(p) for p in chain["executed"].values()]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-cell-timeout=600", "-p", "no:cacheprovider", "-q",
         "-o", "addopts=", *paths],
        cwd=chain["root"], env=env, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
