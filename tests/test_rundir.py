"""The run directory's invariants without TensorFlow: torn loss.csv tails, the lock, the data
set's identity, the config check on resume, the export records, a non-chief worker's view."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from upsampler.config import get_profile
from upsampler.training.rundir import (
    LOSS_COLUMNS, RunDirectory, RunDirectoryBusy, append_loss_row, data_source, read_loss_rows, split_torn_tail,
)

HEADER = ",".join(LOSS_COLUMNS) + "\n"
ROW1 = "pretrain,1,2,,0.5,0.5,,,,1.0\n"
ROW2 = "adversarial,1,4,1.3,0.1,0.09,0.7,0.6,0.4,2.0\n"


@pytest.mark.parametrize("text, complete", [
    (HEADER + ROW1 + ROW2, HEADER + ROW1 + ROW2),  # whole
    (HEADER + ROW1 + ROW2[:17], HEADER + ROW1),  # a row cut mid-write (no newline)
    (HEADER + ROW1 + "adversarial,2,6\n", HEADER + ROW1),  # too few fields
    (HEADER + ROW1 + "adversarial,2,6,1,1,1,1,1,1,1" + ROW2, HEADER + ROW1),  # two rows glued together
    (HEADER[:20], ""),  # the header itself torn
    (HEADER, HEADER),
])
def test_split_torn_tail(text, complete):
    head, tail = split_torn_tail(text)
    assert head == complete and head + tail == text
    crlf = text.replace("\n", "\r\n")  # what the csv module writes
    head, tail = split_torn_tail(crlf)
    assert head == complete.replace("\n", "\r\n") and head + tail == crlf


def test_a_torn_last_row_is_moved_aside_and_the_log_stays_readable(tmp_path):
    run = RunDirectory(tmp_path / "run")
    append_loss_row(run.loss_path, dict(zip(LOSS_COLUMNS, ROW1.strip().split(","))))
    with run.loss_path.open("a") as f:
        f.write(ROW2[:21])  # a kill or a full disk in the middle of the next row
    note = run.repair_loss_log()
    assert note and "incomplete last row" in note
    assert run.loss_path.read_text().replace("\r\n", "\n") == HEADER + ROW1
    torn = list(run.path.glob("loss.csv.torn-*"))
    assert len(torn) == 1 and torn[0].read_text() == ROW2[:21]
    assert run.repair_loss_log() is None  # whole now
    assert run.append_row_once(dict(zip(LOSS_COLUMNS, ROW2.strip().split(","))))
    assert [r["phase"] for r in read_loss_rows(run.loss_path)] == ["pretrain", "adversarial"]
    assert not run.append_row_once(dict(zip(LOSS_COLUMNS, ROW2.strip().split(","))))  # once only


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    first, second = RunDirectory(tmp_path / "run"), RunDirectory(tmp_path / "run")
    first.lock()
    try:
        with pytest.raises(RunDirectoryBusy, match=r"in use by pid \d+ on .* since"):
            second.lock()
    finally:
        first.unlock()
    second.lock()  # released: the next writer gets it
    second.unlock()


def _fake_checkpoint(run: RunDirectory) -> None:
    run.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    (run.checkpoint_dir / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\n')


def _processed(folder: Path, rows: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "manifest.csv").write_text("name,split\n" + rows)
    return folder


def test_resuming_on_other_data_is_refused_naming_both_folders(tmp_path):
    first = _processed(tmp_path / "faces", "a,train\nb,test\n")
    other = _processed(tmp_path / "photos", "c,train\nd,test\n")
    run = RunDirectory(tmp_path / "run")
    run.write_config(get_profile("smoke"), {"line": "test"}, data_source(first))
    assert run.check_data(other) == []  # no checkpoint yet: a new run may use any data
    _fake_checkpoint(run)
    with pytest.raises(ValueError) as info:
        run.check_data(other)
    assert str(first.resolve()) in str(info.value) and str(other.resolve()) in str(info.value)
    assert run.check_data(first) == []
    moved = tmp_path / "moved"
    first.rename(moved)
    notes = run.check_data(moved)
    assert notes and "moved" in notes[0]


def test_resuming_on_other_cpu_kernels_is_noted(tmp_path):
    run = RunDirectory(tmp_path / "run")
    run.write_config(get_profile("smoke"), {"line": "test", "onednn": True})
    assert run.check_cpu_kernels({"onednn": False}) == []  # no checkpoint yet: nothing to continue
    _fake_checkpoint(run)
    assert run.check_cpu_kernels({"onednn": True}) == []
    assert run.check_cpu_kernels({"onednn": None}) == []  # TensorFlow not loaded: nothing to compare
    notes = run.check_cpu_kernels({"onednn": False})
    assert len(notes) == 1 and "oneDNN's" in notes[0] and "Eigen's" in notes[0] and "TF_ENABLE_ONEDNN_OPTS=1" in notes[0]


def test_config_changes_on_resume(tmp_path):
    run = RunDirectory(tmp_path / "run")
    config = get_profile("smoke")
    run.write_config(config, {"line": "test"})
    changed_model = config.override(["model.filters=4"])
    assert run.resolve_config(changed_model) == (changed_model, [])  # no checkpoint: a new run
    _fake_checkpoint(run)
    with pytest.raises(ValueError, match="model.filters"):
        run.resolve_config(changed_model)
    resolved, warnings = run.resolve_config(config.override(["train.jit_compile=on", "train.epochs=9"]))
    assert resolved.train.epochs == 9
    assert len(warnings) == 1 and "not bit-exact" in warnings[0] and "train.jit_compile" in warnings[0]


def test_a_new_run_moves_a_previous_attempts_rows_aside(tmp_path):
    run = RunDirectory(tmp_path / "run")
    append_loss_row(run.loss_path, dict(zip(LOSS_COLUMNS, ROW1.strip().split(","))))
    notes = run.start_fresh()
    assert notes and not run.loss_path.exists() and list(run.path.glob("loss.csv.before-*"))
    append_loss_row(run.loss_path, dict(zip(LOSS_COLUMNS, ROW1.strip().split(","))))
    _fake_checkpoint(run)
    assert run.start_fresh() == [] and run.loss_path.exists()  # with a checkpoint the rows stand


def test_export_records_say_which_step_a_file_holds(tmp_path):
    class Model:
        def save(self, path):
            Path(path).write_text("weights")

    run = RunDirectory(tmp_path / "run")
    assert not run.is_current(run.generator_path, 5)
    run.export_generator(Model(), 5)
    run.export_generator(Model(), 3, run.snapshot_path)
    assert run.is_current(run.generator_path, 5) and not run.is_current(run.generator_path, 6)
    assert json.loads(run.exports_path.read_text()) == {"generator.keras": 5, "generator_pretrained.keras": 3}
    assert not list(run.path.glob("*.tmp*"))
    run.generator_path.unlink()
    assert not run.is_current(run.generator_path, 5)


def test_a_non_chief_worker_reads_the_run_directory_and_writes_nothing(tmp_path):
    class Model:
        def save(self, path):
            Path(path).write_text("weights")

    chief = RunDirectory(tmp_path / "run")
    chief.lock()
    chief.write_config(get_profile("smoke"), {"line": "test"})
    chief.append_row_once({"phase": "pretrain", "epoch": 1, "step": 2})
    chief.log("written by the chief", echo=False)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in chief.path.iterdir())

    worker = RunDirectory(tmp_path / "run", worker="worker-1")
    assert chief.writer and not worker.writer
    worker.lock()  # a no-op (a second flock on the folder would raise RunDirectoryBusy)
    assert worker.start_fresh() == [] and worker.repair_loss_log() is None
    worker.write_config(get_profile("demo"), {"line": "other"})
    assert worker.append_row_once({"phase": "adversarial", "epoch": 1, "step": 4}) is False
    assert worker.export_generator(Model(), 4) is None
    assert worker.save_samples("adversarial", 1, None) is None
    worker.log("only echoed", echo=False)
    assert worker.has_row("pretrain", 1)  # it reads the chief's files
    assert sorted((p.name, p.stat().st_mtime_ns) for p in chief.path.iterdir()) == before
    chief.unlock()
    assert not RunDirectory(tmp_path / "elsewhere", worker="worker-1").path.exists()  # not even created
