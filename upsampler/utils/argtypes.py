"""argparse types for every numeric option: the range is checked where the option is parsed.

``p.add_argument("--tile", type=integer(0), ...)`` refuses ``--tile -3`` with one line that names
the option and the allowed range (``argument --tile: must be an integer >= 0, got -3``) before
anything is loaded. ``tests/test_cli_options.py`` checks that no command has a numeric option
without one of these types.
"""

from __future__ import annotations

import argparse
import math
from typing import Callable


def _range_text(kind: str, low: float | None, high: float | None, low_open: bool) -> str:
    if low is not None and high is not None:
        return f"{kind} in {'(' if low_open else '['}{low:g}, {high:g}]"
    if low is not None:
        return f"{kind} {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{kind} <= {high:g}"
    return kind


def _bounded(kind: str, convert: Callable[[str], float], low, high, low_open: bool) -> Callable[[str], float]:
    """``convert``-ed text, refused with the range in words (``kind``) when outside it."""
    want = _range_text(kind, low, high, low_open)

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}") from None
        too_low = low is not None and (value <= low if low_open else value < low)
        not_finite = isinstance(value, float) and not math.isfinite(value)
        if not_finite or too_low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {want}, got {value if convert is int else text}")
        return value

    parse.__name__ = "integer" if convert is int else "number"  # argparse names the type in some messages
    parse.checked_range = (low, high)  # type: ignore[attr-defined]
    return parse


def integer(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An integer in ``[low, high]`` (either end may be open-ended with None)."""
    return _bounded("an integer", int, low, high, False)


def number(low: float | None = None, high: float | None = None, *, low_open: bool = False) -> Callable[[str], float]:
    """A finite number in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    return _bounded("a number", float, low, high, low_open)


def is_checked(type_: object) -> bool:
    """True for the types made here (the test of every command's options asks this)."""
    return hasattr(type_, "checked_range")
