"""The hardware as read from /proc/cpuinfo (a written file stands in for the machine's)."""

from __future__ import annotations

import pytest

from upsampler.utils import hardware

CPUINFO = ("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: Some CPU 9000\n"
           "flags\t\t: fpu sse avx2 avx512f avx512_bf16\n\n"
           "processor\t: 1\nmodel name\t: Another CPU\nflags\t\t: fpu\n")


def test_the_first_processor_s_model_and_flags_are_read(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(CPUINFO)
    assert hardware.cpu_model(info) == "Some CPU 9000"
    assert hardware.cpu_flags(info) == {"fpu", "sse", "avx2", "avx512f", "avx512_bf16"}


def test_arm_features_count_as_flags_and_a_missing_file_gives_nothing(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd bf16\n\n")
    assert hardware.cpu_flags(info) == {"fp", "asimd", "bf16"}
    assert hardware.cpu_flags(tmp_path / "missing") == set()
    assert hardware.cpuinfo_fields(tmp_path / "missing") == {}
    assert hardware.cpu_model(tmp_path / "missing")  # falls back to platform's answer, never empty


def test_native_bf16_means_avx512_bf16_or_amx():
    assert hardware.cpu_has_native_bf16({"avx512_bf16"}) and hardware.cpu_has_native_bf16({"amx_bf16", "avx2"})
    assert not hardware.cpu_has_native_bf16({"avx2", "avx512f"})  # AVX-512 alone emulates bf16


def test_onednn_is_asked_for_on_x86_only_and_a_user_s_choice_wins():
    env: dict[str, str] = {}
    assert hardware.prefer_onednn(env, "x86_64") and env == {hardware.ONEDNN_ENV: "1"}
    env = {hardware.ONEDNN_ENV: "0"}
    assert not hardware.prefer_onednn(env, "AMD64") and env == {hardware.ONEDNN_ENV: "0"}
    env = {}
    assert not hardware.prefer_onednn(env, "aarch64") and env == {}


@pytest.mark.slow
def test_importing_upsampler_first_gives_tensorflow_its_onednn_kernels_and_the_run_records_it():
    import os
    import platform
    import subprocess
    import sys

    if platform.machine().lower() not in hardware.X86_MACHINES:
        return  # elsewhere the package leaves TensorFlow's choice alone (tested above)
    code = ("import json, upsampler, tensorflow; from upsampler.utils import hardware, provenance; "
            "print(json.dumps([hardware.onednn_enabled(), provenance.provenance().get('onednn')]))")
    env = {k: v for k, v in os.environ.items() if k != hardware.ONEDNN_ENV}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    chosen = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert chosen.stdout.split()[-2:] == ["[true,", "true]"]
    env[hardware.ONEDNN_ENV] = "0"  # the user's "off" is kept, and recorded
    kept = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert kept.stdout.split()[-2:] == ["[false,", "false]"]
