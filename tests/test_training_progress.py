"""Training you can watch: under papermill (``--log-output``, progress bars off, as run_all.sh runs
the notebooks) each epoch's line arrives as that epoch ends, not all at once when training returns."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EPOCH_LINE = re.compile(r"adversarial epoch (\d+)/(\d+): .*d_real=.*d_fake=.*seconds=.*img/s")


@pytest.mark.slow
def test_epoch_lines_arrive_as_the_epochs_end_under_papermill(tmp_path):
    from upsampler.data.demo import write_demo_datasets
    from upsampler.study.notebook import preprocess_dataset

    source = write_demo_datasets(tmp_path / "src", broad_count=24, narrow_count=8, size=32, seed=0)["broad"]
    preprocess_dataset(source, tmp_path / "data", profile="smoke", progress=False)
    epochs = 5
    command = [sys.executable, "-m", "papermill", str(REPO / "notebooks" / "02_train.ipynb"),
               str(tmp_path / "executed.ipynb"), "--log-output", "--no-progress-bar", "--cwd", str(REPO),
               "-p", "data_dir", str(tmp_path / "data"), "-p", "run_dir", str(tmp_path / "run"),
               "-p", "profile", "smoke", "-p", "epochs", str(epochs), "-p", "progress", "False",
               "-y", "overrides: [train.steps_per_epoch=12]"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    arrivals: dict[int, float] = {}
    lines = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        for line in proc.stdout:
            lines.append(line)
            match = EPOCH_LINE.search(line)
            if match:
                arrivals.setdefault(int(match.group(1)), time.monotonic())
        assert proc.wait(timeout=600) == 0, "".join(lines[-40:])
    assert sorted(arrivals) == list(range(1, epochs + 1)), "".join(lines[-40:])
    with open(tmp_path / "run" / "loss.csv") as handle:
        seconds = [float(row["seconds"]) for row in csv.DictReader(handle) if row["phase"] == "adversarial"]
    # epochs 2..5 took sum(seconds[1:]) between the first line and the last; lines printed only when
    # training returned would arrive within milliseconds of each other
    spread = arrivals[epochs] - arrivals[1]
    assert spread >= 0.5 * sum(seconds[1:]), (spread, seconds)
    assert all(arrivals[k] < arrivals[k + 1] for k in range(1, epochs))
