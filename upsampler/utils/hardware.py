"""What this machine is: the CPU (``/proc/cpuinfo``) and the GPUs as TensorFlow sees them.

One place reads the hardware; :mod:`upsampler.training.precision` turns it into a dtype policy and
:mod:`upsampler.tools.measure` into the benchmark's device description.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
X86_MACHINES = ("x86_64", "amd64", "i386", "i686", "x86")


def prefer_onednn(environ: MutableMapping[str, str] | None = None, machine: str | None = None) -> bool:
    """Ask TensorFlow for its oneDNN CPU kernels on every x86 CPU; returns whether it asked.

    TensorFlow switches oneDNN on by itself only on CPUs with AVX-512 VNNI/BF16 or AMX. On an
    AVX2 CPU its fallback (Eigen) ran this project's training step 1.4x slower and its float32
    matmul 2x slower (``benchmarks/README.md``). The variable is read once, when TensorFlow
    loads, so this runs at ``import upsampler``; a value the user set (``0`` included) wins.
    """
    environ = os.environ if environ is None else environ
    machine = (platform.machine() if machine is None else machine).lower()
    if machine not in X86_MACHINES or ONEDNN_ENV in environ:
        return False
    environ[ONEDNN_ENV] = "1"
    return True


def import_tensorflow_quietly():
    """Import TensorFlow with its C++ start-up chatter (oneDNN, absl) kept out of a notebook's
    outputs and the CLI's one-line errors.

    Those lines go straight to file descriptor 2, below Python and ``TF_CPP_MIN_LOG_LEVEL``
    (absl's logging is not initialised yet); the descriptor is pointed at ``os.devnull`` for the
    import only. Errors still raise. Returns the module.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(null, 2)
        import tensorflow as tf
    finally:
        os.dup2(saved, 2)
        os.close(null)
        os.close(saved)
    return tf


def prepare_backend():
    """Import Keras' backend library before the first model is built: TensorFlow quietly
    (:func:`import_tensorflow_quietly`) when Keras runs on it, nothing else otherwise (JAX and
    PyTorch start silently). What the notebooks call first; returns the backend's name."""
    name = keras_backend_name()
    if name == "tensorflow":
        import_tensorflow_quietly()
    return name


def onednn_enabled() -> bool | None:
    """Whether the loaded TensorFlow runs its oneDNN CPU kernels (None before TensorFlow is imported,
    or where the build cannot say)."""
    if "tensorflow" not in sys.modules:
        return None
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return None
    return bool(_pywrap_util_port.IsMklEnabled())


def onednn_word(state: bool | None) -> str:
    """``on``, ``off`` or ``unknown``: how tables and logs print an :func:`onednn_enabled` value."""
    return {True: "on", False: "off"}.get(state, "unknown")


def cpuinfo_fields(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, str]:
    """``key: value`` lines of the first processor in ``cpuinfo`` (empty where there is no such file)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor's block ends at the first blank line
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's model name (``platform``'s answer where ``cpuinfo`` has none)."""
    return cpuinfo_fields(cpuinfo).get("model name") or platform.processor() or platform.machine()


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The feature flags of the first CPU in ``cpuinfo`` (x86 ``flags``, Arm ``Features``)."""
    fields = cpuinfo_fields(cpuinfo)
    return set((fields.get("flags") or fields.get("Features") or "").split())


def cpu_has_native_bf16(flags: set[str] | None = None) -> bool:
    """True where the CPU computes bfloat16 natively (AVX-512 BF16 or AMX)."""
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in CPU_BF16_FLAGS)


def gpus() -> list[dict[str, Any]]:
    """``name`` and ``compute_capability`` (tuple or None) of each GPU the Keras backend sees
    (TensorFlow's devices, or JAX's on the JAX backend)."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        found = []
        for device in jax.devices():
            if device.platform != "gpu":
                continue
            capability = getattr(device, "compute_capability", None)
            found.append({"name": getattr(device, "device_kind", str(device)),
                          "compute_capability": tuple(int(p) for p in str(capability).split(".")) if capability else None})
        return found
    import tensorflow as tf

    out = []
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            details = tf.config.experimental.get_device_details(gpu)
        except Exception:  # some builds have no details for a device
            details = {}
        capability = details.get("compute_capability")
        out.append({"name": details.get("device_name", gpu.name),
                    "compute_capability": tuple(capability) if capability else None})
    return out


def choose_keras_backend() -> str | None:
    """Where ``KERAS_BACKEND`` is unset and TensorFlow is not installed but JAX is (a GPU machine with
    JAX only), choose JAX before Keras loads. The user's setting always wins. Returns the choice made."""
    import importlib.util

    if os.environ.get("KERAS_BACKEND"):
        return None

    def installed(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a finder that refuses it: as good as not installed
            return False

    if not installed("tensorflow") and installed("jax"):
        os.environ["KERAS_BACKEND"] = "jax"
        return "jax"
    return None


def keras_backend_name() -> str:
    """The Keras backend that will load (or has loaded), without importing Keras."""
    if "keras" in sys.modules:
        return sys.modules["keras"].backend.backend()
    choose_keras_backend()
    return os.environ.get("KERAS_BACKEND", "tensorflow")
