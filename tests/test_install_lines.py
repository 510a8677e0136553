"""Every documented install line resolves to at most one TensorFlow distribution.

``pip install --dry-run --report`` resolves each line's requirement set against the package index
(nothing is installed); the report lists every distribution it would install. Two TensorFlow
distributions (say tensorflow-cpu beside tensorflow, pulled in by tf-keras) would overwrite each
other's files in one environment."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TENSORFLOWS = {"tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel", "tensorflow-macos",
               "tensorflow-aarch64", "intel-tensorflow", "tf-nightly", "tf-nightly-cpu"}


def documented_extras() -> set[str]:
    """The extras of every install line the project documents or runs."""
    found: set[str] = set()
    readme = (REPO / "README.md").read_text()
    found.update(re.findall(r'"\.\[([\w,]+)\]"', readme))  # pip install -e ".[cpu]", ".[gpu]" ...
    found.update(re.findall(r"`\.\[([\w,]+)\]`", readme))
    found.update(re.findall(r"-e \.\[([\w,]+)\]", (REPO / "environment.yml").read_text()))
    found.update(re.findall(r'ensure_venv.sh "([\w,]+)"', (REPO / "run_tests.sh").read_text()))
    found.update(re.findall(r"upsampler\[([\w,]+)\] @", (REPO / "notebooks" / "01_preprocess.ipynb").read_text()))
    return {",".join(sorted(extras.split(","))) for extras in found}


def requirements(extras: str) -> list[str]:
    """upsampler[extras]'s requirements, read from pyproject.toml (what pip would resolve for it;
    giving them directly spares building the project's metadata once per line)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    out = list(project["dependencies"])
    for extra in extras.split(","):
        out += project["optional-dependencies"][extra]
    return out


def _resolve(extras: str, folder: Path) -> list[str]:
    stem = folder / extras.replace(",", "_")
    stem.with_suffix(".txt").write_text("\n".join(requirements(extras)) + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--disable-pip-version-check",
         "--report", str(stem.with_suffix(".json")), "-r", str(stem.with_suffix(".txt"))],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"[{extras}]: {result.stderr[-2000:]}"
    report = json.loads(stem.with_suffix(".json").read_text())
    return [item["metadata"]["name"].lower().replace("_", "-") for item in report["install"]]


@pytest.mark.slow
def test_every_documented_install_line_holds_one_tensorflow_at_most(tmp_path):
    extras = sorted(documented_extras())
    # the lines the README, environment.yml, the test command and Colab's setup cell use
    assert {"cpu", "gpu", "jax", "gpu,instruments,notebooks", "cpu,instruments,notebooks,test",
            "data,instruments,notebooks"} <= set(extras), extras
    with ThreadPoolExecutor(max_workers=len(extras)) as pool:  # they wait on the index, not the CPU
        resolved = dict(zip(extras, pool.map(lambda e: _resolve(e, tmp_path), extras)))
    for line, names in resolved.items():
        assert {"keras", "numpy", "pillow"} <= set(names), line  # a real resolution, not an empty report
        tensorflows = sorted(TENSORFLOWS & set(names))
        assert len(tensorflows) <= 1, f"[{line}] installs {tensorflows}"
    assert TENSORFLOWS & set(resolved["cpu"]) == {"tensorflow-cpu"}
    assert not TENSORFLOWS & set(resolved["jax"]) and not TENSORFLOWS & set(resolved["data,instruments,notebooks"])
