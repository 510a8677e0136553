"""run_all.sh (a shim over upsampler.study.runner): its help, argument checks, where it runs, a smoke-size
run on the shared data, resume, failure; the plan as data."""

from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "run_all.sh"
NOTEBOOK_RUNS = ["01_preprocess_coco", "01_preprocess_celeba", "02_train_model_a", "02_train_model_b",
                 "04_evaluate", "05_plot_losses"]


def _run(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([str(SCRIPT), *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


def test_help_describes_every_option():
    result = _run("--help", timeout=120)
    assert result.returncode == 0, result.stderr
    for option in ("--profile", "--coco", "--celeba", "--out", "--epochs", "--pretrain-epochs", "--content-network",
                   "--extractor", "--limit", "--celeba-groups", "--set", "--seeds", "--match-train-size", "BUILT-IN DEMO", "study-cpu", "examples:"):
        assert option in result.stdout, option


@pytest.mark.parametrize(
    "args, message",
    [
        (["--profile", "huge"], "argument --profile: invalid choice"),
        (["--coco", str(REPO)], "give both --coco and --celeba"),
        (["--coco", "/nonexistent/a", "--celeba", "/nonexistent/b"], "no such file"),
        (["--epochs", "many"], "argument --epochs: must be an integer >= 0"),
        (["--content-network=random"], "argument --content-network: invalid choice"),
        (["--frobnicate", "1"], "unrecognized arguments"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(args, message):
    result = _run(*args, timeout=120)
    assert result.returncode == 2
    assert message in result.stderr


def test_runs_in_the_active_environment_when_it_has_tensorflow():
    import sys

    # --seeds 0 is refused after the environment is chosen and before any work: exit code 2
    env = {**os.environ, "UPSAMPLER_PYTHON": sys.executable}
    result = subprocess.run([str(SCRIPT), "--seeds", "0"], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env=env)
    assert result.returncode == 2 and "(the active environment)" in result.stderr, result.stderr
    env = {**os.environ, "UPSAMPLER_PYTHON": sys.executable, "UPSAMPLER_USE_VENV": "1"}
    result = subprocess.run([str(SCRIPT), "--seeds", "0"], cwd=REPO, capture_output=True, text=True, timeout=600,
                            env=env)
    assert result.returncode == 2 and ".venv" in result.stderr, result.stderr
    # help needs no environment: it is printed by whatever Python is there, choosing none
    result = subprocess.run([str(SCRIPT), "--help"], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "UPSAMPLER_PYTHON": sys.executable})
    assert result.returncode == 0 and "usage: run_all.sh" in result.stdout and "run_all: using" not in result.stderr


def test_the_plan_is_data():
    from upsampler.study.runner import build_parser, plan, resolve

    options = resolve(build_parser().parse_args(["--profile", "smoke", "--coco", str(REPO), "--celeba", str(REPO),
                                                 "--out", "/tmp/x", "--epochs", "3"]))
    steps = plan(options)
    assert [s.name for s in steps] == NOTEBOOK_RUNS
    assert all((REPO / "notebooks" / s.notebook).is_file() for s in steps)
    train_b = steps[3].parameters
    assert train_b["model"] == "model_b" and train_b["dataset"] == "celeba" and train_b["epochs"] == 3
    assert steps[4].parameters["faces"] is True and "extractor" not in steps[4].parameters
    demo = resolve(build_parser().parse_args([]))
    assert demo.demo and demo.profile == "demo" and plan(demo)[4].parameters["faces"] is False


def test_seeds_train_every_model_once_per_seed_and_evaluate_them_together():
    from upsampler.study.runner import build_parser, plan, resolve

    base = ["--profile", "smoke", "--coco", str(REPO), "--celeba", str(REPO), "--out", "/tmp/x"]
    steps = plan(resolve(build_parser().parse_args([*base, "--seeds", "3", "--set", "train.batch_size=2"])))
    train = [s for s in steps if s.notebook == "02_train.ipynb"]
    assert [s.parameters["model"] for s in train] == ["model_a", "model_b", "model_a_seed1", "model_b_seed1",
                                                      "model_a_seed2", "model_b_seed2"]
    assert [s.parameters["overrides"] for s in train[:3]] == [
        ["train.batch_size=2", "train.seed=0"], ["train.batch_size=2", "train.seed=0"],
        ["train.batch_size=2", "train.seed=1"]]
    assert len({s.name for s in steps}) == len(steps)  # every executed notebook keeps its own copy
    assert [s for s in steps if s.notebook == "04_evaluate.ipynb"][0].parameters["seeds"] == 3
    one = plan(resolve(build_parser().parse_args(base)))
    assert [s.name for s in one] == NOTEBOOK_RUNS and one[2].parameters["overrides"] == []
    with pytest.raises(ValueError, match="leave out --set train.seed"):
        resolve(build_parser().parse_args([*base, "--seeds", "2", "--set", "train.seed=4"]))


def _listing(root: Path) -> dict[str, float]:
    return {p.relative_to(root).as_posix(): p.stat().st_mtime for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_smoke_run_on_shared_data_then_resume(shared_data, tmp_path):
    out = tmp_path / "out"
    args = ["--profile", "smoke", "--coco", str(shared_data / "general"), "--celeba", str(shared_data / "faces"),
            "--out", str(out), "--limit", "32"]
    first = _run(*args)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    study = out / "smoke"
    for name in NOTEBOOK_RUNS:
        assert (study / "notebooks" / f"{name}.ipynb").is_file(), name
        html = study / "notebooks" / f"{name}.html"
        assert html.is_file() and "<html" in html.read_text()[:2000].lower(), name
    for model in ("model_a", "model_b"):
        assert (study / "runs" / model / "generator.keras").is_file()
        assert (study / "runs" / model / "loss.csv").is_file()
    with (study / "tables" / "evaluation_metrics.csv").open(newline="") as handle:
        methods = [row["method"] for row in csv.DictReader(handle)]
    assert methods == ["Bicubic", "Model A", "Model B"]
    markdown = (study / "tables" / "evaluation_metrics.md").read_text()
    assert "| Bicubic |" in markdown and "| Model A |" in markdown and "| Model B |" in markdown
    assert "SMOKE TEST" in markdown
    figures = {p.name for p in (study / "figures").glob("*.png")}
    with (study / "tables" / "evaluation_paired.csv").open(newline="") as handle:
        assert {row["metric"] for row in csv.DictReader(handle)} >= {"identity_distance", "featdist_hed", "kid_face"}
    assert {"evaluation_paired_differences.png", "evaluation_comparison_grid.png", "model_a_losses.png",
            "model_b_discriminator.png", "coco_pairs.png", "celeba_pairs.png"} <= figures
    # the faces were split by CelebA identity (found automatically beside ../shared/data/faces)
    assert "split by group" in (study / "notebooks" / "01_preprocess_celeba.ipynb").read_text()
    assert "(MSE pre-trained)" not in markdown  # smoke: no pre-training, no snapshot

    before = _listing(out)
    loss_rows = {m: (study / "runs" / m / "loss.csv").read_text() for m in ("model_a", "model_b")}
    second = _run(*args)
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    after = _listing(out)
    assert set(before) <= set(after), f"files lost: {sorted(set(before) - set(after))[:5]}"
    for model in ("model_a", "model_b"):
        loss = f"smoke/runs/{model}/loss.csv"
        assert after[loss] == before[loss], "a finished run's loss log was rewritten"
        assert (study / "runs" / model / "loss.csv").read_text() == loss_rows[model]
    assert "already done" in (study / "notebooks" / "01_preprocess_coco.ipynb").read_text()
    assert "resumed at" in (study / "notebooks" / "02_train_model_a.ipynb").read_text()
    # the first run's executed notebooks were kept, not overwritten
    history = [p.name for p in (study / "notebooks" / "history").iterdir()]
    assert len(history) == 2 * len(NOTEBOOK_RUNS)


@pytest.mark.slow
def test_stops_at_the_first_failing_notebook_and_names_it(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image\n")
    result = _run("--profile", "smoke", "--coco", str(empty), "--celeba", str(empty), "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "FAILED at notebook 01_preprocess_coco" in result.stderr
    notebooks = tmp_path / "out" / "smoke" / "notebooks"
    assert (notebooks / "01_preprocess_coco.ipynb").is_file()
    assert not (notebooks / "01_preprocess_celeba.ipynb").exists()


def test_notebook_output_reaches_the_terminal_while_the_cell_runs(tmp_path):
    """The cell prints a line, then waits until this test has read that line from the runner's
    stdout (a file appears); output held back until the cell ends would leave it waiting, and fail."""
    import sys

    import nbformat

    go = tmp_path / "go"
    book = nbformat.v4.new_notebook()
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    book.cells = [nbformat.v4.new_code_cell(
        "import os, time\nprint('epoch 1 done', flush=True)\nend = time.time() + 120\n"
        f"while not os.path.exists({str(go)!r}):\n    assert time.time() < end, 'the runner held the line back'\n"
        "    time.sleep(0.2)\nprint('epoch 2 done', flush=True)")]
    nbformat.write(book, tmp_path / "live.ipynb")
    (tmp_path / "executed").mkdir()
    code = ("import sys; from pathlib import Path; from upsampler.study import runner; "
            f"runner.NOTEBOOKS = Path({str(tmp_path)!r}); "
            f"runner.execute(runner.Step('live.ipynb', 'live', {{}}), Path({str(tmp_path / 'executed')!r}))")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line.strip())
        if line.strip() == "epoch 1 done":
            go.touch()
    assert proc.wait(timeout=300) == 0, seen
    assert seen.index("epoch 1 done") < seen.index("epoch 2 done"), seen
