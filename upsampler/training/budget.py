"""Wall-clock budgets of the training phases (``train.pretrain_budget_minutes``,
``train.budget_minutes``), read from the seconds of the epochs in loss.csv, so a resumed run takes
the same decisions as the run it continues; and the time left in a phase.
"""

from __future__ import annotations

import math

import numpy as np

from upsampler.training.rundir import RunDirectory


def phase_budget(t, phase: str) -> float | None:
    return t.pretrain_budget_minutes if phase == "pretrain" else t.budget_minutes


def phase_seconds(run: RunDirectory, phase: str, done: int) -> list[float]:
    """The ``seconds`` of ``phase``'s first ``done`` epochs, from loss.csv."""
    return [float(row["seconds"]) for row in run.loss_rows()
            if row["phase"] == phase and int(row["epoch"]) <= done and row.get("seconds")]


def phase_budget_used(run: RunDirectory, t, phase: str, done: int, extra_seconds: float = 0.0) -> bool:
    """Whether ``phase``'s wall-clock budget is used up after its first ``done`` epochs (their
    ``seconds`` in loss.csv) plus ``extra_seconds``. Read from loss.csv, so a resumed run takes the
    same decision at the same epoch as the run it continues."""
    budget = phase_budget(t, phase)
    if budget is None:
        return False
    return sum(phase_seconds(run, phase, done)) + extra_seconds >= 60.0 * budget


def seconds_left(run: RunDirectory, t, phase: str, done: int, target: int) -> float:
    """Expected seconds until ``phase`` ends: the epochs left at the mean pace of the last few
    (at most the rest of the phase's wall-clock budget)."""
    spent = phase_seconds(run, phase, done)
    if not spent:
        return math.nan
    pace = float(np.mean(spent[-5:]))
    left = (target - done) * pace
    budget = phase_budget(t, phase)
    return left if budget is None else max(0.0, min(left, 60.0 * budget - sum(spent)))
