"""The numeric precision of training, chosen by hardware (``train.precision``).

``auto`` (the default) resolves to the fastest policy the hardware runs natively:

* a GPU with bfloat16 units (compute capability 8.0 and newer: A100, L4, H100, RTX 30xx/40xx)
  -> ``mixed_bfloat16``; any other GPU -> ``mixed_float16`` (with dynamic loss scaling);
* a CPU with native bfloat16 arithmetic (AVX-512 BF16 or AMX, read from ``/proc/cpuinfo``)
  -> ``mixed_bfloat16``;
* anything else -> ``float32`` (bfloat16 without native support is emulated and slower).

Mixed policies compute in 16 bits and keep float32 variables, optimiser slots, BatchNorm
statistics, losses and the output layers (Keras' ``mixed_*`` policies; the generator's
``sr`` layer and D's ``logit`` are float32). ``tests/test_precision.py`` trains the same
short run in float32 and in ``mixed_bfloat16`` and checks that PSNR and the VGG16-HED
feature distance (``featdist_hed``) end within a stated tolerance, and that resume stays exact in ``mixed_bfloat16``.

A run resolves ``auto`` once, when it starts, and writes the result into ``config.json``
(``train.precision``), so resuming on other hardware keeps the precision it began with.
"""

from __future__ import annotations

from upsampler.utils import hardware

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")


def gpu_policy(compute_capability: tuple[int, int] | None) -> str:
    """The mixed policy for a GPU: bfloat16 from compute capability 8.0 (Ampere) on, else float16."""
    return "mixed_bfloat16" if compute_capability and tuple(compute_capability) >= (8, 0) else "mixed_float16"


def hardware_policy(*, gpu_capability: tuple[int, int] | None = None, on_gpu: bool = False,
                    cpu_bf16: bool | None = None) -> str:
    """The policy ``auto`` means on this hardware (see the module docstring)."""
    if on_gpu:
        return gpu_policy(gpu_capability)
    return "mixed_bfloat16" if (hardware.cpu_has_native_bf16() if cpu_bf16 is None else cpu_bf16) else "float32"


def resolve_precision(setting: str, *, on_gpu: bool | None = None, gpu_capability: tuple[int, int] | None = None,
                      cpu_bf16: bool | None = None) -> str:
    """The Keras dtype policy for ``train.precision`` = ``setting`` on this (or the given) hardware."""
    if setting in POLICIES:
        return setting
    if on_gpu is None:
        gpus = hardware.gpus()
        on_gpu, gpu_capability = bool(gpus), gpus[0]["compute_capability"] if gpus else None
    if setting == "mixed":  # configs written with `mixed_precision: true`
        return "mixed_float16" if on_gpu else "mixed_bfloat16"
    if setting == "auto":
        return hardware_policy(gpu_capability=gpu_capability, on_gpu=on_gpu, cpu_bf16=cpu_bf16)
    raise ValueError(f"precision must be auto, mixed or one of {POLICIES}, got {setting!r}")


def compute_dtype(policy: str) -> str:
    """The dtype the matmuls and convolutions of ``policy`` run in."""
    return {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}[policy]
