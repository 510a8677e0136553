"""Shared fixtures.

Tests that read ``../shared/data`` use the ``shared_data`` fixture: when the folder is
missing they are skipped on a developer's machine but *fail* under CI (``CI=true``), so a
green CI run means they really ran.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# As in the CLI and the notebooks, upsampler is imported before TensorFlow: it asks for oneDNN's CPU
# kernels (upsampler.utils.hardware.prefer_onednn). Then the variable is taken back, so that the processes
# the tests start see the environment a user's shell gives them and make that choice themselves.
_SHELL_CHOSE_KERNELS = "TF_ENABLE_ONEDNN_OPTS" in os.environ
from upsampler.utils import hardware  # noqa: E402

hardware.import_tensorflow_quietly()  # loads now, with those kernels

if not _SHELL_CHOSE_KERNELS:
    os.environ.pop(hardware.ONEDNN_ENV, None)

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


def processed_demo_set(root: Path, *, count: int, size: int, hr_size: int) -> Path:
    """``count`` crops of the built-in demo photos (:mod:`upsampler.data.demo`), ``size`` px, processed
    to ``hr_size`` px HR / ``hr_size // 4`` px LR under ``root/processed`` (a quarter held out)."""
    from upsampler.data.preprocess import preprocess
    from upsampler.data.demo import write_demo_datasets

    images = write_demo_datasets(root / "images", broad_count=count, narrow_count=3, size=size)["broad"]
    out = root / "processed"
    preprocess(images, out, hr_size=hr_size, scale=4, test_fraction=0.25, seed=0, progress=False)
    return out


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only ``../shared/data`` folder (faces/, general/, sr-benchmarks/, seed-logs/)."""
    return _require(SHARED_DATA)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` RGB pixels but holds none (an empty IDAT):
    a decompression bomb's header, a few dozen bytes long."""
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.fixture(scope="session")
def png_header_only():
    """``png_header_only(width, height) -> bytes``: a PNG header declaring a size, without pixels."""
    return _png_header_only
