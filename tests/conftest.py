"""Shared fixtures.

Tests that read ``../shared/data`` use the ``shared_data`` fixture: when the folder is
missing they are skipped on a developer's machine but *fail* under CI (``CI=true``), so a
green CI run means they really ran.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("UPSAMPLER_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def _require(path: Path) -> Path:
    if not path.exists():
        message = f"shared data not found at {path} (set UPSAMPLER_SHARED_DATA)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def require_module(name: str):
    """Import ``name``; when it cannot be imported, skip on a developer's machine but fail under
    CI (``CI=true``), so a broken TensorFlow install can never turn the suite green by skipping."""
    if os.environ.get("CI", "").lower() == "true":
        import importlib

        try:
            return importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - any import failure must fail the run
            pytest.fail(f"cannot import {name} under CI: {type(exc).__name__}: {exc}", pytrace=False)
    return pytest.importorskip(name)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only ``../shared/data`` folder (faces/, general/, sr-benchmarks/, seed-logs/)."""
    return _require(SHARED_DATA)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
