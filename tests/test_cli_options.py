"""Every numeric option of every command is range-checked where it is parsed (upsampler.utils.argtypes)."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import pytest

from upsampler.utils import argtypes
from upsampler.cli import COMMANDS, build_parser


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_numeric_option_has_a_checked_type():
    subparsers = _subparsers()
    assert set(subparsers) == {name.replace("_", "-") for name in COMMANDS}
    numeric, unchecked = [], []
    for command, sub in subparsers.items():
        for action in sub._actions:
            if action.type in (int, float) or argtypes.is_checked(action.type):
                numeric.append(f"{command} {action.option_strings}")
            if action.type in (int, float):
                unchecked.append(f"upsampler {command} {'/'.join(action.option_strings)}")
            if isinstance(action.default, (int, float)) and not isinstance(action.default, bool) \
                    and action.option_strings and action.type is None and action.nargs != 0:
                unchecked.append(f"upsampler {command} {'/'.join(action.option_strings)} (numeric default, no type)")
    assert not unchecked, "numeric options without a range check: " + ", ".join(unchecked)
    assert len(numeric) > 40  # the walk really saw the options


@pytest.mark.parametrize(("factory", "good", "bad"), [
    (argtypes.integer(0), {"0": 0, "17": 17}, ["-1", "1.5", "x", ""]),
    (argtypes.integer(1, 100), {"1": 1, "100": 100}, ["0", "101"]),
    (argtypes.number(0, 1), {"0": 0.0, "1": 1.0, "0.25": 0.25}, ["-0.1", "1.01", "nan", "inf"]),
    (argtypes.number(0, low_open=True), {"1e-3": 1e-3}, ["0", "-2"]),
])
def test_types_accept_their_range_and_refuse_the_rest(factory, good, bad):
    for text, value in good.items():
        assert factory(text) == value
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError, match="must be"):
            factory(text)


@pytest.mark.parametrize("argv", [
    ["upscale", "x.png", "--model", "model_b", "--out", "o", "--tile", "-3"],
    ["evaluate", "d", "--model", "A=m", "--out", "o", "--n-boot", "-5"],
    ["preprocess", "src", "--out", "o", "--test-fraction", "1.5"],
    ["study", "--demo", "--seeds", "0"],
    ["train", "--data", "d", "--run-dir", "r", "--batch-size", "0"],
])
def test_a_bad_number_is_one_line_naming_the_option_before_any_import(argv):
    option = argv[-2]
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "upsampler.cli", *argv], capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - started
    assert result.returncode == 2
    error = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(error) == 1 and f"argument {option}" in error[0] and "must be" in error[0], result.stderr
    assert "Traceback" not in result.stderr
    assert elapsed < 20  # argparse exits before TensorFlow or Keras is imported (about 1 s; generous for CI)
