"""Loss logs: both formats, copied records, and the saturated-discriminator verdict."""

from __future__ import annotations

import argparse
import math
import re

import numpy as np
import pandas as pd
import pytest

from upsampler.study import plots
from upsampler.study.losslog import find_copied_records, format_ranges, read_loss_log
from upsampler.training.health import detect_saturation, saturated_bce_d_loss


# ---- helpers -------------------------------------------------------------------------------

def _csv(path, rows, columns=("phase", "epoch", "step", "d_loss", "g_loss", "content_loss",
                              "adversarial_loss", "d_real", "d_fake", "seconds")):
    lines = [",".join(columns)]
    for row in rows:
        lines.append(",".join("" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in row))
    path.write_text("\n".join(lines) + "\n")
    return path


def _frame(d_real, d_fake, d_loss=None, start=1):
    n = len(d_real)
    return pd.DataFrame({
        "phase": ["adversarial"] * n,
        "epoch": np.arange(start, start + n),
        "d_loss": np.full(n, 1.0) if d_loss is None else d_loss,
        "g_loss": np.linspace(0.1, 0.05, n),
        "content_loss": np.linspace(0.09, 0.04, n),
        "adversarial_loss": np.full(n, 2.0),
        "d_real": d_real,
        "d_fake": d_fake,
    })


def _original_lines(values):
    return "".join(
        f"EPOCH {e}\t\td_loss {d}\tgan_loss [{t}, {c}, {a}]\n" for e, d, t, c, a in values
    )


@pytest.fixture(scope="module")
def seed_logs(shared_data):
    folder = shared_data / "seed-logs"
    return read_loss_log(folder / "COCO_loss.txt"), read_loss_log(folder / "CelebA_loss.txt")


# ---- the original's seed logs --------------------------------------------------------------

def test_seed_logs_parse_with_values_from_the_file(seed_logs):
    coco, celeba = seed_logs
    for log in (coco, celeba):
        assert log.source_format == "original"
        assert len(log.frame) == 2500
        assert log.frame["epoch"].tolist() == list(range(1, 2501))
        assert log.frame["d_real"].isna().all() and log.frame["d_fake"].isna().all()
    first = coco.frame.iloc[0]
    assert first["epoch"] == 1
    assert first["d_loss"] == 7.968418598175049
    assert first["g_loss"] == pytest.approx(0.07464352)
    assert first["content_loss"] == pytest.approx(0.072894074)
    assert first["adversarial_loss"] == pytest.approx(1.7494463)
    # perceptual = content + 1e-3 * adversarial, as the original computed it
    assert first["g_loss"] == pytest.approx(first["content_loss"] + 1e-3 * first["adversarial_loss"], rel=1e-6)
    assert celeba.frame.iloc[0]["d_loss"] == 8.041971206665039
    last = celeba.frame.iloc[-1]
    assert (last["epoch"], last["adversarial_loss"]) == (2500, pytest.approx(1.5463039))


def test_seed_log_damaged_line_is_kept_and_reported(seed_logs):
    coco, celeba = seed_logs
    # COCO's line 2025 (the last record of a block copied between the files) lacks its ']'.
    assert [n for n, _ in coco.irregular_lines] == [2025]
    assert coco.frame.iloc[2024]["adversarial_loss"] == pytest.approx(1.4810169)
    assert celeba.irregular_lines == []


def test_seed_logs_are_flagged_saturated_with_quoted_evidence(seed_logs):
    for log in seed_logs:
        report = detect_saturation(log.frame)
        assert report.saturated
        assert report.method == "d_loss"
        assert report.epochs == (1, 2500)
        assert report.ongoing
        assert report.fraction == 1.0
        assert "d_loss mean 7.97" in report.evidence
        assert "std 0.10" in report.evidence
        assert "7.971" in report.evidence
        assert re.search(r"min 7\.5\d\d, max 8\.[23]\d\d", report.evidence)


def test_saturated_clipped_bce_value():
    # float32 clipping at 1 - 1e-7 gives the logit log(2**23 - 1); D's loss is the mean of the
    # real (labels ~0.9) and fake (~0.1) halves: z * 0.5.
    z = math.log(2**23 - 1)
    assert saturated_bce_d_loss() == pytest.approx(z * 0.5, rel=1e-6)
    assert saturated_bce_d_loss() == pytest.approx(7.971, abs=5e-4)
    # The generator's adversarial loss in the same state, z * (1 - 0.9), is what the logs show (~1.59).
    assert z * 0.1 == pytest.approx(1.594, abs=1e-3)
    assert saturated_bce_d_loss(1.0, 0.0) == pytest.approx(z * 0.5, rel=1e-6)


def test_seed_logs_copied_records(seed_logs):
    coco, celeba = seed_logs
    # No repeated epoch numbers in either file ...
    assert coco.duplicate_epochs == [] and celeba.duplicate_epochs == []
    # ... but CelebA's epoch 2400 repeats its epoch 2392 exactly,
    assert coco.repeated_records == []
    assert celeba.repeated_records == [(2400, 2392)]
    # ... and 349 epochs hold identical records in both files (STUDY.md's 349 copies).
    report = find_copied_records([coco, celeba])
    same = report.same_epoch_across_logs()
    assert len(same) == 349
    assert format_ranges(same) == "601-725, 1876-2025, 2251-2275, 2351-2399"
    assert report.n_copies == 350  # the 349 plus CelebA 2400
    assert report.other_copies() == [
        (("COCO_loss.txt", 2392), ("CelebA_loss.txt", 2392), ("CelebA_loss.txt", 2400))
    ]
    text = "\n".join(report.summary_lines())
    assert "349 epochs" in text and "CelebA_loss.txt epoch 2400" in text


# ---- synthetic logs ------------------------------------------------------------------------

def test_healthy_run_is_not_flagged():
    rng = np.random.default_rng(0)
    n = 60
    frame = _frame(0.7 + 0.05 * rng.standard_normal(n), 0.3 + 0.05 * rng.standard_normal(n),
                   d_loss=1.2 + 0.2 * rng.standard_normal(n))
    report = detect_saturation(frame)
    assert not report.saturated
    assert report.method == "probabilities"
    assert report.zones == ()
    assert "D(real) mean 0.70" in report.evidence and "D(fake) mean 0.30" in report.evidence


def test_saturated_loss_csv_is_flagged(tmp_path):
    rows = [("pretrain", e, 10 * e, None, 0.02, 0.02, None, None, None, 1.0) for e in (1, 2)]
    healthy = [(0.72, 0.31), (0.68, 0.35)]
    saturated = [(0.999, 0.998)] * 8
    for i, (r, f) in enumerate(healthy + saturated, start=1):
        rows.append(("adversarial", i, 100 + 10 * i, 8.1, 0.05, 0.04, 1.6, r, f, 2.0))
    path = _csv(tmp_path / "loss.csv", rows)
    log = read_loss_log(path)
    assert log.source_format == "csv"
    assert log.duplicate_epochs == []  # pretrain and adversarial epoch numbers are separate
    report = detect_saturation(log.frame, patience=3)
    assert report.saturated and report.method == "probabilities"
    assert report.epochs == (3, 10) and report.zones == ((3, 10),) and report.ongoing
    assert "8 consecutive epochs (3-10)" in report.evidence
    # A run directory is accepted too.
    assert len(read_loss_log(tmp_path).frame) == 12


def test_both_probabilities_near_zero_is_flagged():
    frame = _frame(np.full(5, 0.01), np.full(5, 0.02))
    report = detect_saturation(frame)
    assert report.saturated and "5 low" in report.evidence


def test_a_dominant_discriminator_is_not_saturation():
    frame = _frame(np.full(10, 0.99), np.full(10, 0.01))
    assert not detect_saturation(frame).saturated


def test_partial_frames_are_not_flagged():
    for n in (1, 2):
        frame = _frame(np.full(n, 0.999), np.full(n, 0.999))
        report = detect_saturation(frame, patience=3)
        assert not report.saturated and not report.ongoing
        assert f"over {n} epochs" in report.evidence
    original_like = pd.DataFrame({"epoch": [1, 2], "d_loss": [7.97, 7.95], "d_real": np.nan, "d_fake": np.nan})
    assert not detect_saturation(original_like, patience=3).saturated
    assert not detect_saturation(pd.DataFrame({"epoch": [], "d_loss": []})).saturated


def test_stretch_shorter_than_patience_is_not_flagged_and_gaps_break_stretches():
    probs = np.array([0.7, 0.999, 0.999, 0.7, 0.999, 0.999, 0.7])
    report = detect_saturation(_frame(probs, probs), patience=3)
    assert not report.saturated and "longest saturated stretch 2 epochs" in report.evidence
    frame = _frame(np.full(4, 0.999), np.full(4, 0.999))
    frame["epoch"] = [1, 2, 5, 6]
    assert not detect_saturation(frame, patience=3).saturated


def test_d_loss_method_on_a_healthy_original_format_log(tmp_path):
    rng = np.random.default_rng(1)
    values = [(e, 1.3 + 0.3 * rng.random(), 0.05, 0.049, 0.7) for e in range(1, 41)]
    path = tmp_path / "healthy_loss.txt"
    path.write_text(_original_lines(values))
    report = detect_saturation(read_loss_log(path).frame)
    assert report.method == "d_loss" and not report.saturated
    assert "0.0% within 0.5 of 7.971" in report.evidence


def test_repeated_epoch_numbers_are_reported(tmp_path):
    values = [(1, 7.9, 0.07, 0.069, 1.6), (2, 8.0, 0.06, 0.059, 1.5), (3, 7.95, 0.05, 0.049, 1.55),
              (2, 8.1, 0.065, 0.064, 1.4), (3, 7.95, 0.05, 0.049, 1.55), (4, 7.9, 0.07, 0.069, 1.6)]
    path = tmp_path / "spliced.txt"
    path.write_text(_original_lines(values))
    log = read_loss_log(path)
    assert log.duplicate_epochs == [2, 3]
    assert log.repeated_records == [(4, 1)]  # epoch 4 carries epoch 1's values
    assert log.has_copies
    text = "\n".join(log.summary_lines())
    assert "repeated epoch numbers (2): 2-3" in text and "epoch 4 = 1" in text


def test_malformed_original_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad_loss.txt"
    path.write_text(_original_lines([(1, 7.9, 0.07, 0.069, 1.6), (2, 8.0, 0.06, 0.059, 1.5)])
                    + "EPOCH 3\t\td_loss oops\tgan_loss [0.1, 0.1, 1.0]\n")
    with pytest.raises(ValueError, match=r"bad_loss\.txt: line 3: malformed"):
        read_loss_log(path)


def test_malformed_csv_value_names_file_and_line(tmp_path):
    rows = [("adversarial", 1, 10, 1.0, 0.1, 0.1, 1.0, 0.7, 0.3, 1.0),
            ("adversarial", 2, 20, "x1.2", 0.1, 0.1, 1.0, 0.7, 0.3, 1.0)]
    path = _csv(tmp_path / "loss.csv", rows)
    with pytest.raises(ValueError, match=r"loss\.csv: line 3: bad value 'x1.2' in column 'd_loss'"):
        read_loss_log(path)


def test_unknown_format_and_missing_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    with pytest.raises(ValueError, match=r"notes\.txt: line 1: unrecognised"):
        read_loss_log(path)
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        read_loss_log(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_loss_log(tmp_path / "nope.csv")


def test_format_ranges():
    assert format_ranges([1, 2, 3, 7, 9, 10]) == "1-3, 7, 9-10"
    assert format_ranges([]) == "none"


# ---- command line ----------------------------------------------------------------------------

def _run_cli(argv):
    parser = argparse.ArgumentParser()
    plots.configure_losses_parser(parser)
    return plots.run_losses(parser.parse_args(argv))


def test_losses_cli_on_the_seed_logs(seed_logs, tmp_path, capsys):
    coco, celeba = seed_logs
    out = tmp_path / "figs" / "losses.png"
    assert _run_cli([str(coco.path), str(celeba.path), "--out", str(out), "--zoom", "1500", "1750"]) == 0
    text = capsys.readouterr().out
    assert text.count("SATURATED") == 2
    assert "d_loss mean 7.970" in text and "d_loss mean 7.972" in text
    assert "349 epochs hold identical records" in text
    assert out.stat().st_size > 10_000
    assert (out.parent / "losses_discriminator_COCO_loss.png").stat().st_size > 10_000
    assert (out.parent / "losses_discriminator_CelebA_loss.png").stat().st_size > 10_000


def test_losses_cli_healthy_csv_and_untrained_note(tmp_path, capsys):
    from upsampler.config import UNTRAINED_VGG_WARNING, smoke

    run = tmp_path / "run"
    run.mkdir()
    smoke().to_json(run / "config.json")
    rows = [("adversarial", e, 10 * e, 1.2, 0.05, 0.04, 0.9, 0.7, 0.3, 1.0) for e in range(1, 6)]
    _csv(run / "loss.csv", rows)
    assert plots.note_for_logs([read_loss_log(run / "loss.csv")]) == UNTRAINED_VGG_WARNING
    assert _run_cli([str(run / "loss.csv"), "--out", str(tmp_path / "l.png"), "--no-zoom"]) == 0
    text = capsys.readouterr().out
    assert "not saturated" in text and UNTRAINED_VGG_WARNING in text
    assert (tmp_path / "l.png").stat().st_size > 5_000


def test_losses_cli_via_main_reports_bad_input(tmp_path, capsys, monkeypatch):
    from upsampler import cli

    # Only this command's module is imported (others of the table may be absent in isolation).
    monkeypatch.setattr(cli, "COMMANDS", {k: v for k, v in cli.COMMANDS.items() if k == "losses"})
    assert cli.main(["losses", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "x.png")]) == 2
    assert "missing.txt" in capsys.readouterr().err


def test_detect_collapse_flags_d_at_one_half_only():
    import pandas as pd

    from upsampler.training.health import collapse_line, detect_collapse

    healthy = pd.DataFrame({"epoch": range(1, 7), "d_real": [0.8] * 6, "d_fake": [0.2] * 6})
    stuck = pd.DataFrame({"epoch": range(1, 7), "d_real": [0.8, 0.52, 0.5, 0.49, 0.51, 0.8],
                          "d_fake": [0.2, 0.48, 0.5, 0.51, 0.47, 0.2]})
    assert not detect_collapse(healthy).saturated
    report = detect_collapse(stuck, patience=3)
    assert report.saturated and report.epochs == (2, 5) and collapse_line(report).startswith("COLLAPSED")
    assert not detect_collapse(stuck, patience=5).saturated
    saturated = pd.DataFrame({"epoch": range(1, 5), "d_real": [1.0] * 4, "d_fake": [1.0] * 4})
    assert not detect_collapse(saturated).saturated
