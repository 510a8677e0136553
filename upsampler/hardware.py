"""What this machine is: the CPU (``/proc/cpuinfo``) and the GPUs as TensorFlow sees them.

One place reads the hardware; :mod:`upsampler.precision` turns it into a dtype policy and
:mod:`upsampler.bench` into the benchmark's device description.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


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
    """``name`` and ``compute_capability`` (tuple or None) of each GPU TensorFlow sees."""
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
