"""The hardware as read from /proc/cpuinfo (a written file stands in for the machine's)."""

from __future__ import annotations

from upsampler import hardware

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
