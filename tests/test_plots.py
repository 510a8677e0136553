"""Figures: files are written, zoom windows clip, LR panels stay blocky, notes show."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from upsampler.study import plots
from upsampler.config import UNTRAINED_VGG_WARNING, paper, smoke

NOTE = "NOTE: trained with an untrained VGG19 (test)"


def _losses(n=200, start=1, d_real=None, d_fake=None):
    epochs = np.arange(start, start + n)
    return pd.DataFrame({
        "epoch": epochs,
        "d_loss": 1.2 + 0.1 * np.sin(epochs),
        "g_loss": 0.05 + 1.0 / epochs,
        "content_loss": 0.04 + 1.0 / epochs,
        "adversarial_loss": np.full(n, 1.6),
        "d_real": np.full(n, 0.7) if d_real is None else d_real,
        "d_fake": np.full(n, 0.3) if d_fake is None else d_fake,
    })


def _png_ok(path):
    assert path.exists() and path.stat().st_size > 2_000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_zoom_window_clipping():
    assert plots.zoom_window(np.arange(1, 2501), (1500, 1750)) == (1500, 1750)
    assert plots.zoom_window(np.arange(1, 1601), (1500, 1750)) == (1500, 1600)  # clipped at the end
    assert plots.zoom_window(np.arange(1600, 2001), (1500, 1750)) == (1600, 1750)  # clipped at the start
    # A run shorter than the window's start: the last ~25% of its epochs.
    assert plots.zoom_window(np.arange(1, 101), (1500, 1750)) == (75, 100)
    assert plots.zoom_window(np.arange(1, 9), (1500, 1750)) == (6, 8)
    assert plots.zoom_window(np.arange(1, 101), None) is None
    assert plots.zoom_window(np.array([1]), (1500, 1750)) is None


def test_plot_losses_writes_png_and_zooms(tmp_path):
    path = tmp_path / "sub" / "losses.png"
    fig = plots.plot_losses(_losses(100), title="demo run", path=path)
    _png_ok(path)
    full, zoom = fig.axes
    assert zoom.get_xlim() == (75.0, 100.0)
    assert {line.get_label() for line in full.get_lines()} == {"perceptual (G total)", "content", "adversarial x 0.001"}
    # adversarial x weight: the curve is the loss times the weight
    adv = next(line for line in full.get_lines() if line.get_label().startswith("adversarial"))
    assert np.allclose(adv.get_ydata(), 1.6e-3)
    assert "demo run" in plots.figure_texts(fig)
    one = plots.plot_losses(_losses(100), title="t", zoom=None, adversarial_weight=1e-2)
    assert len(one.axes) == 1
    assert np.allclose(next(l for l in one.axes[0].get_lines() if "adversarial" in l.get_label()).get_ydata(), 1.6e-2)


def test_plot_losses_leaves_out_pretraining_rows():
    frame = _losses(10)
    pre = _losses(5).assign(phase="pretrain", d_loss=np.nan, d_real=np.nan, d_fake=np.nan)
    frame = pd.concat([pre, frame.assign(phase="adversarial")], ignore_index=True)
    fig = plots.plot_losses(frame, title="t", zoom=None)
    assert len(fig.axes[0].get_lines()[0].get_xdata()) == 10


def test_plot_loss_logs_one_row_per_log(tmp_path):
    fig = plots.plot_loss_logs([("a", _losses(50)), ("b", _losses(80))], path=tmp_path / "two.png")
    _png_ok(tmp_path / "two.png")
    assert len(fig.axes) == 4


def test_plot_discriminator_shades_saturation(tmp_path):
    n = 20
    d_real = np.where(np.arange(n) >= 10, 0.999, 0.7)
    d_fake = np.where(np.arange(n) >= 10, 0.998, 0.3)
    path = tmp_path / "d.png"
    fig = plots.plot_discriminator(_losses(n, d_real=d_real, d_fake=d_fake), title="D", path=path)
    _png_ok(path)
    ax_loss, ax_prob = fig.axes
    assert len(ax_prob.patches) == 1  # one shaded stretch
    x0 = ax_prob.patches[0].get_x()
    assert x0 == pytest.approx(10.5)  # epochs 11..20
    assert any("SATURATED" in t for t in plots.figure_texts(fig))
    healthy = plots.plot_discriminator(_losses(n), title="D")
    assert len(healthy.axes[1].patches) == 0
    assert not any("SATURATED" in t for t in plots.figure_texts(healthy))


def test_plot_discriminator_without_probabilities(tmp_path):
    frame = _losses(10).drop(columns=["d_real", "d_fake"]).assign(d_loss=7.97)
    fig = plots.plot_discriminator(frame, title="orig", path=tmp_path / "o.png")
    texts = plots.figure_texts(fig)
    assert any("no D(real)/D(fake)" in t for t in texts)
    assert any("clipped BCE (7.971)" in t for t in texts)


def test_panel_figure_lr_is_nearest_and_panels_share_size(tmp_path):
    lr, big = _image(44, 44), _image(176, 176, 1)
    path = tmp_path / "panels.png"
    fig = plots.panel_figure([("LR", lr), ("Bicubic", big), ("SR", big), ("HR", big)], path=path, title="x")
    _png_ok(path)
    images = [ax.images[0] for ax in fig.axes]
    assert images[0].get_interpolation() == "nearest"
    assert all(im.get_interpolation() in ("nearest", "antialiased") for im in images)
    assert all(im.get_interpolation() != "bicubic" for im in images)
    fig.canvas.draw()
    sizes = {tuple(np.round(ax.get_window_extent().size, 1)) for ax in fig.axes}
    assert len(sizes) == 1
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "LR\n44x44" and titles[3] == "HR\n176x176"


def test_large_panels_are_shrunk_with_antialiasing():
    fig = plots.panel_figure([("LR", _image(40, 40)), ("SR", _image(1200, 1200))])
    assert [ax.images[0].get_interpolation() for ax in fig.axes] == ["nearest", "antialiased"]


def test_grid_figure_rows(tmp_path):
    rows = [[("LR", _image(11, 11)), ("SR", _image(44, 44))], [("LR", _image(11, 11))]]
    fig = plots.grid_figure(rows, path=tmp_path / "g.png", title="grid")
    _png_ok(tmp_path / "g.png")
    assert len(fig.axes) == 4
    assert sum(1 for ax in fig.axes if ax.images) == 3


def test_panel_errors():
    with pytest.raises(ValueError, match="uint8"):
        plots.panel_figure([("SR", np.zeros((4, 4, 3), np.float32))])
    with pytest.raises(ValueError, match="at least one"):
        plots.grid_figure([[]])


def test_note_appears_on_every_figure(tmp_path):
    frame = _losses(30)
    figures = [
        plots.plot_losses(frame, title="t", note=NOTE),
        plots.plot_loss_logs([("a", frame)], note=NOTE),
        plots.plot_discriminator(frame, title="t", note=NOTE),
        plots.panel_figure([("LR", _image(8, 8))], note=NOTE),
        plots.grid_figure([[("LR", _image(8, 8))]], note=NOTE),
    ]
    for fig in figures:  # long notes are wrapped onto several lines
        assert any(NOTE in " ".join(t.split()) for t in plots.figure_texts(fig))
    plain = plots.plot_losses(frame, title="t")
    assert not any(NOTE in t for t in plots.figure_texts(plain))


def test_note_helpers(tmp_path):
    assert plots.note_for_config(smoke()) == UNTRAINED_VGG_WARNING
    assert plots.note_for_config(paper()) is None
    assert plots.note_for_config(smoke().to_dict()) == UNTRAINED_VGG_WARNING
    assert plots.note_for_config(None) is None
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    smoke().to_json(run / "config.json")
    assert plots.note_for_run(run) == UNTRAINED_VGG_WARNING
    assert plots.note_for_run(run / "generator.keras") == UNTRAINED_VGG_WARNING
    assert plots.note_for_run(run / "checkpoints" / "g.keras") == UNTRAINED_VGG_WARNING
    assert plots.note_for_run(tmp_path / "elsewhere.keras") is None
