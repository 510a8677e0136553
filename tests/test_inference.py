"""Tiled upscaling equals whole-image upscaling; figure kinds; the ``upscale`` command."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from PIL import Image

from upsampler.inference import upscale as inference
from upsampler.inference.tiles import infer_scale, receptive_field_radius, tile_starts, upscale_image
from upsampler.inference.upscale import KINDS, make_lr, render_kind


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _image(h, w, seed=0):
    """A smooth-ish test picture (gradients + noise), uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / max(w - 1, 1), y * 255 / max(h - 1, 1), (x + y) % 64 * 4], -1)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def tiny():
    import keras

    from upsampler.archs.srgan import build_generator

    keras.utils.set_random_seed(0)
    return build_generator(num_blocks=2, filters=16)


@pytest.fixture(scope="module")
def tiny_path(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "g.keras"
    tiny.save(path)
    return path


# ---- geometry -------------------------------------------------------------------------------

def test_receptive_field_and_scale(tiny):
    from upsampler.archs.srgan import build_generator

    assert receptive_field_radius(tiny) == 12  # 4 + 2*2*1 + 1 + 1 + 0.5 + 1 = 11.5 -> 12
    study = build_generator()  # 16 blocks, 64 filters: the default overlap of the study's model
    assert receptive_field_radius(study) == 40
    assert receptive_field_radius(build_generator(upsample="nearest", num_blocks=16, filters=8)) == 40
    assert infer_scale(tiny) == 4
    assert infer_scale(build_generator(scale=2, num_blocks=1, filters=8)) == 2


def test_tile_starts_cover_the_image_with_full_tiles():
    assert tile_starts(100, 32) == [0, 32, 64, 68]
    assert tile_starts(96, 32) == [0, 32, 64]
    assert tile_starts(20, 32) == [0]
    for length, tile in [(37, 16), (53, 16), (129, 128)]:
        starts = tile_starts(length, tile)
        covered = np.zeros(length, bool)
        for s in starts:
            assert 0 <= s and s + tile <= length
            covered[s : s + tile] = True
        assert covered.all()


# ---- tiled == whole --------------------------------------------------------------------------

def test_tiled_output_matches_whole_image(tiny):
    lr = _image(100, 75)
    whole = upscale_image(tiny, lr, scale=4, tile=None)
    assert whole.shape == (400, 300, 3) and whole.dtype == np.uint8
    tiled = upscale_image(tiny, lr, scale=4, tile=32)  # default overlap = receptive field (12)
    assert psnr(whole, tiled) >= 50.0
    assert np.abs(whole.astype(int) - tiled).max() <= 1
    # the same pixels that `upsampler evaluate` scores: the plain G(x), border included
    from upsampler.metrics.evaluate import run_generator

    plain = run_generator(tiny, lr[None])[0]
    assert np.array_equal(plain, whole)
    assert np.abs(plain.astype(int) - tiled).max() <= 1 and np.mean(plain != tiled) < 1e-3
    tiled16 = upscale_image(tiny, lr, scale=4, tile=32, overlap=16, batch_size=3)
    assert psnr(whole, tiled16) >= 50.0
    # Too little context is measurably worse: the overlap really matters.
    tiled2 = upscale_image(tiny, lr, scale=4, tile=32, overlap=2)
    assert psnr(whole, tiled2) < psnr(whole, tiled)


def test_upscale_cli_and_evaluate_give_the_same_pixels(tiny_path, tmp_path):
    """`upsampler upscale` on a 44x44 image writes exactly the SR image that `evaluate` scores."""
    from upsampler import cli
    from upsampler.data.images import load_rgb, save_png
    from upsampler.metrics.evaluate import run_generator
    from upsampler.archs.srgan import load_generator

    lr = _image(44, 44, seed=3)
    save_png(lr, tmp_path / "face.png")
    assert cli.main(["upscale", str(tmp_path / "face.png"), "--model", str(tiny_path), "--out",
                     str(tmp_path / "up")]) == 0
    written = load_rgb(next((tmp_path / "up").glob("*.png")))
    np.testing.assert_array_equal(written, run_generator(load_generator(tiny_path), lr[None])[0])


def test_odd_sizes_and_tile_larger_than_image(tiny):
    lr = _image(37, 53, seed=1)
    out = upscale_image(tiny, lr, tile=16, batch_size=2)  # scale inferred
    assert out.shape == (148, 212, 3)
    whole = upscale_image(tiny, lr, tile=None)
    big_tile = upscale_image(tiny, lr, tile=512)
    assert psnr(out, whole) >= 50.0
    assert np.array_equal(big_tile, whole)
    strip = upscale_image(tiny, _image(5, 40, seed=2), tile=16)
    assert strip.shape == (20, 160, 3)


def test_upscale_image_rejects_bad_input(tiny):
    with pytest.raises(ValueError, match="uint8"):
        upscale_image(tiny, np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="tile"):
        upscale_image(tiny, _image(8, 8), tile=0)
    with pytest.raises(ValueError, match="expected"):
        upscale_image(tiny, _image(8, 8), scale=2)


# ---- figures ----------------------------------------------------------------------------------

def test_make_lr_mod_crops_then_downscales():
    hr = _image(179, 181)
    hr_c, lr = make_lr(hr, 4)
    assert hr_c.shape == (176, 180, 3) and lr.shape == (44, 45, 3)
    with pytest.raises(ValueError, match="smaller than the scale"):
        make_lr(_image(3, 10), 4)


def test_every_kind_writes_its_files(tmp_path):
    from upsampler.data.images import bicubic_upscale

    lr = _image(11, 13)
    hr = _image(44, 52, seed=3)
    sr = bicubic_upscale(lr, 4)
    for name, kind in KINDS.items():
        paths = render_kind(kind, lr=lr, sr_a=sr, sr_b=sr if kind.needs_b or name == "sr" else None,
                            hr=hr if kind.needs_hr else None, scale=4, out_dir=tmp_path, stem="img", note="n")
        assert paths and all(p.exists() and p.stat().st_size > 0 for p in paths)
        if name == "sr":
            assert [p.name for p in paths] == ["img_sr.png", "img_sr_b.png"]
            assert np.array_equal(np.asarray(Image.open(paths[0])), sr)
        else:
            assert [p.name for p in paths] == [f"img_{name}.png"]
    with pytest.raises(ValueError, match="--model-b"):
        render_kind("lr-bicubic-a-b-hr", lr=lr, sr_a=sr, hr=hr, scale=4, out_dir=tmp_path, stem="x")
    with pytest.raises(ValueError, match="HR"):
        render_kind("lr-sr-hr", lr=lr, sr_a=sr, scale=4, out_dir=tmp_path, stem="x")


def test_bicubic_panel_is_a_real_bicubic_upscale(monkeypatch, tmp_path):
    from upsampler.study import plots
    from upsampler.data.images import bicubic_upscale

    captured = {}
    real_panel_figure = plots.panel_figure

    def fake_panel_figure(panels, path=None, title=None, note=None):
        captured["panels"] = panels
        return real_panel_figure(panels, path=path, title=title, note=note)

    monkeypatch.setattr(plots, "panel_figure", fake_panel_figure)
    lr = _image(11, 11)
    render_kind("lr-bicubic-sr-hr", lr=lr, sr_a=_image(44, 44), hr=_image(44, 44), scale=4,
                out_dir=tmp_path, stem="b")
    labels = [label for label, _ in captured["panels"]]
    assert labels[0] == "LR" and labels[1].startswith("Bicubic")
    assert np.array_equal(captured["panels"][1][1], bicubic_upscale(lr, 4))
    assert captured["panels"][0][1].shape == (11, 11, 3)  # the LR panel stays LR-sized (drawn blocky)


# ---- command line ------------------------------------------------------------------------------

def _cli(argv):
    parser = argparse.ArgumentParser()
    inference.configure_upscale_parser(parser)
    return inference.run_upscale(parser.parse_args(argv))


@pytest.fixture()
def hr_images(tmp_path):
    paths = []
    for i, (h, w) in enumerate([(64, 64), (50, 70)]):
        path = tmp_path / "in" / f"photo{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(_image(h, w, seed=i)).save(path)
        paths.append(path)
    return paths


def test_cli_end_to_end(tiny_path, hr_images, tmp_path, capsys):
    out = tmp_path / "out"
    assert _cli([*map(str, hr_images), "--model", str(tiny_path), "--model-b", str(tiny_path), "--out", str(out),
                 "--kind", "lr-bicubic-a-b-hr", "--tile", "8"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["photo0_lr-bicubic-a-b-hr.png", "photo1_lr-bicubic-a-b-hr.png"]
    assert "x4, kind lr-bicubic-a-b-hr" in capsys.readouterr().out
    # sr: inputs are LR by default; the SR PNG is 4x the input at full resolution.
    assert _cli([str(hr_images[1]), "--model", str(tiny_path), "--out", str(out), "--tile", "16"]) == 0
    sr = np.asarray(Image.open(out / "photo1_sr.png"))
    assert sr.shape == (200, 280, 3)
    # sr with --input-is-hr: mod-crop and downscale first -> same size as the HR (mod 4).
    assert _cli([str(hr_images[1]), "--model", str(tiny_path), "--out", str(out / "hr"), "--input-is-hr"]) == 0
    assert np.asarray(Image.open(out / "hr" / "photo1_sr.png")).shape == (48, 68, 3)
    # a folder of images works too
    assert _cli([str(hr_images[0].parent), "--model", str(tiny_path), "--out", str(out / "f"),
                 "--kind", "lr-sr-hr"]) == 0
    assert len(list((out / "f").glob("*_lr-sr-hr.png"))) == 2


def test_cli_on_a_real_face(tiny_path, shared_data, tmp_path):
    face = sorted((shared_data / "faces").glob("*.jpg"))[0]
    assert _cli([str(face), "--model", str(tiny_path), "--out", str(tmp_path), "--kind", "lr-bicubic-sr-hr"]) == 0
    assert (tmp_path / f"{face.stem}_lr-bicubic-sr-hr.png").stat().st_size > 10_000


def test_cli_errors_name_the_problem(tiny_path, hr_images, tmp_path):
    missing_image = tmp_path / "nope.png"
    with pytest.raises(FileNotFoundError, match="nope.png"):
        _cli([str(missing_image), "--model", str(tiny_path), "--out", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="missing_model.keras"):
        _cli([str(hr_images[0]), "--model", str(tmp_path / "missing_model.keras"), "--out", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="missing_b.keras"):
        _cli([str(hr_images[0]), "--model", str(tiny_path), "--model-b", str(tmp_path / "missing_b.keras"),
              "--kind", "lr-a-b-hr", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--model-b"):
        _cli([str(hr_images[0]), "--model", str(tiny_path), "--out", str(tmp_path), "--kind", "lr-bicubic-a-b-hr"])
    with pytest.raises(ValueError, match="--input-is-lr"):
        _cli([str(hr_images[0]), "--model", str(tiny_path), "--out", str(tmp_path), "--kind", "lr-sr-hr",
              "--input-is-lr"])
    with pytest.raises(ValueError, match="one model"):
        _cli([str(hr_images[0]), "--model", str(tiny_path), "--model-b", str(tiny_path), "--out", str(tmp_path),
              "--kind", "lr-sr-hr"])
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="bad.keras"):
        _cli([str(hr_images[0]), "--model", str(bad), "--out", str(tmp_path)])


def test_cli_via_main_exit_code(tiny_path, hr_images, tmp_path, capsys, monkeypatch):
    from upsampler import cli

    # Only this command's module is imported (others of the table may be absent in isolation).
    monkeypatch.setattr(cli, "COMMANDS", {k: v for k, v in cli.COMMANDS.items() if k == "upscale"})
    assert cli.main(["upscale", str(tmp_path / "gone.png"), "--model", str(tiny_path), "--out", str(tmp_path)]) == 2
    assert "gone.png" in capsys.readouterr().err
    assert cli.main(["upscale", str(hr_images[0]), "--model", str(tiny_path), "--out", str(tmp_path / "o"),
                     "--kind", "lr-bicubic-sr-hr"]) == 0
    assert (tmp_path / "o" / "photo0_lr-bicubic-sr-hr.png").exists()


# ---- hostile inputs (docs/hostile_inputs.md) ---------------------------------------------------

def test_cli_refuses_a_huge_photo_before_decoding_it(tiny_path, tmp_path, png_header_only, capsys, monkeypatch):
    from PIL import ImageFile

    from upsampler import cli

    monkeypatch.setattr(cli, "COMMANDS", {k: v for k, v in cli.COMMANDS.items() if k == "upscale"})
    decoded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.size) or real_load(self))
    (tmp_path / "huge.png").write_bytes(png_header_only(20000, 20000))  # headers only: a few dozen bytes
    (tmp_path / "big.png").write_bytes(png_header_only(3000, 2000))
    out = tmp_path / "out"

    def upscale(name, *options):
        code = cli.main(["upscale", str(tmp_path / name), "--model", str(tiny_path), "--out", str(out), *options])
        err = capsys.readouterr().err
        assert err.startswith("upsampler upscale: error: ") and err.count("\n") == 1
        return code, err

    code, err = upscale("huge.png")
    assert code == 2 and "huge.png: too large (Image size (400000000 pixels)" in err
    code, err = upscale("big.png")
    assert code == 2 and ("big.png: a 3000x2000 input gives a 12000x8000 output at x4 (96,000,000 pixels), "
                          "over the limit of 67,108,864; raise it with --max-output-pixels") in err
    assert decoded == [] and not out.exists()  # refused from the headers: nothing decoded, nothing written
    # As an HR input the same file gives a 3000x2000 output, within the limit: it is decoded (and has no pixels).
    code, err = upscale("big.png", "--input-is-hr")
    assert code == 2 and "big.png: truncated" in err and decoded == [(3000, 2000)]


def test_cli_upscales_the_first_frame_of_an_animation_and_says_so(tiny_path, tmp_path, capsys):
    from upsampler.data.images import load_rgb
    from upsampler.metrics.evaluate import run_generator
    from upsampler.archs.srgan import load_generator

    frames = [Image.fromarray(_image(12, 10, seed=seed)) for seed in (1, 2, 3)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    first = load_rgb(path)
    with Image.open(path) as gif:
        gif.seek(1)
        assert not np.array_equal(np.asarray(gif.convert("RGB")), first)
    assert _cli([str(path), "--model", str(tiny_path), "--out", str(tmp_path / "out")]) == 0
    assert "note: anim.gif: GIF of 3 frames; only the first is upscaled" in capsys.readouterr().err
    written = np.asarray(Image.open(tmp_path / "out" / "anim_sr.png"))
    np.testing.assert_array_equal(written, run_generator(load_generator(tiny_path), first[None])[0])


def test_the_original_studys_nearest_upsampling_generator_upscales():
    from upsampler.archs.srgan import build_generator

    nearest = build_generator(num_blocks=1, filters=8, upsample="nearest")
    lr = _image(20, 30, seed=4)
    out = upscale_image(nearest, lr, tile=16)
    assert out.shape == (80, 120, 3)
    assert np.array_equal(upscale_image(nearest, lr, tile=None), upscale_image(nearest, lr, tile=64))


# ---- what people expect of an upscaler ---------------------------------------------------------

def test_cli_keeps_grey_and_alpha_of_the_input(tiny_path, tmp_path):
    grey = Image.fromarray(_image(12, 10)[..., 0])  # L
    rgba = Image.fromarray(np.dstack([_image(12, 10, seed=1), np.tile(np.linspace(0, 255, 10, dtype=np.uint8), (12, 1))]))
    grey.save(tmp_path / "grey.png")
    rgba.save(tmp_path / "rgba.png")
    assert _cli([str(tmp_path / "grey.png"), str(tmp_path / "rgba.png"), "--model", str(tiny_path), "--out",
                 str(tmp_path / "out")]) == 0
    g = Image.open(tmp_path / "out" / "grey_sr.png")
    assert g.mode == "L" and g.size == (40, 48)
    a = Image.open(tmp_path / "out" / "rgba_sr.png")
    assert a.mode == "RGBA" and a.size == (40, 48)
    alpha = np.asarray(a)[..., 3].astype(int)
    assert alpha[:, 0].max() < 20 and alpha[:, -1].min() > 235  # the input's left-to-right ramp, upscaled
    assert (np.diff(alpha.mean(axis=0)) >= 0).all()


def test_cli_writes_the_good_images_of_a_folder_and_names_the_bad_one(tiny_path, hr_images, tmp_path, capsys,
                                                                      monkeypatch):
    from upsampler import cli

    monkeypatch.setattr(cli, "COMMANDS", {k: v for k, v in cli.COMMANDS.items() if k == "upscale"})
    folder = hr_images[0].parent
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    assert cli.main(["upscale", str(folder), "--model", str(tiny_path), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "upsampler upscale: error: " in err and "broken.png" in err and "1 of 3 input(s) failed" in err
    assert sorted(p.name for p in out.iterdir()) == ["photo0_sr.png", "photo1_sr.png"]


def test_cli_says_when_an_hr_input_is_probably_lr_already(tiny_path, tmp_path, capsys):
    Image.fromarray(_image(44, 44)).save(tmp_path / "small.png")
    assert _cli([str(tmp_path / "small.png"), "--model", str(tiny_path), "--out", str(tmp_path / "o"),
                 "--kind", "lr-bicubic-sr-hr"]) == 0
    err = capsys.readouterr().err
    assert "small.png: a 44x44 image taken as HR is shrunk x4 to a 11x11 LR input" in err and "--input-is-lr" in err


def test_cli_refuses_an_unwritable_output_folder_in_one_line(tiny_path, hr_images, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match=r"file/out: cannot create the output folder \(.*file is not a folder\)"):
        _cli([str(hr_images[0]), "--model", str(tiny_path), "--out", str(blocker / "out")])


def test_bad_arguments_are_refused_before_tensorflow_loads(tmp_path):
    import subprocess
    import sys

    code = ("import sys; from upsampler.cli import main; "
            f"rc = main(['upscale', {str(tmp_path / 'gone.png')!r}, '--model', 'model_b', '--out', 'o']); "
            "print(rc, 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.stdout.split() == ["2", "False", "False"], result.stdout + result.stderr
    assert "gone.png: no such image" in result.stderr


def test_help_states_each_default_once():
    from upsampler.cli import build_parser

    parser = build_parser("upscale")
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["upscale"]
    text = sub.format_help()
    assert "(default 128)" in text and "(default: 128)" not in text and "(default: None)" not in text
    assert "8192 x 8192 by default" in text and "(default: 67108864)" not in text
    evaluate = build_parser("evaluate")
    sub = next(a for a in evaluate._actions if isinstance(a, argparse._SubParsersAction)).choices["evaluate"]
    assert "95% intervals" in sub.format_help() and "95%%" not in sub.format_help()


def test_cli_outscale_ext_and_quality(tiny_path, tmp_path):
    image = _image(12, 10)
    Image.fromarray(image).save(tmp_path / "photo.jpg", quality=98)
    rgba = np.dstack([_image(12, 10, seed=2), np.full((12, 10), 128, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "clear.png")
    out = tmp_path / "out"
    assert _cli([str(tmp_path / "photo.jpg"), str(tmp_path / "clear.png"), "--model", str(tiny_path), "--out",
                 str(out), "--outscale", "2", "--ext", "jpg", "--quality", "90"]) == 0
    photo = Image.open(out / "photo_sr.jpg")
    assert photo.format == "JPEG" and photo.size == (20, 24)  # 2 x the input, not 4 x
    clear = Image.open(out / "clear_sr.png")  # JPEG has no alpha: written as PNG, alpha kept
    assert clear.mode == "RGBA" and clear.size == (20, 24)
    assert np.abs(np.asarray(clear)[..., 3].astype(int) - 128).max() <= 1
    # the Lanczos resize of the x4 result, not another computation: compare with the x4 file resized
    assert _cli([str(tmp_path / "photo.jpg"), "--model", str(tiny_path), "--out", str(tmp_path / "x4")]) == 0
    x4 = Image.open(tmp_path / "x4" / "photo_sr.png")
    assert x4.size == (40, 48)
    assert _cli([str(tmp_path / "photo.jpg"), "--model", str(tiny_path), "--out", str(tmp_path / "x2"),
                 "--outscale", "2", "--ext", "auto"]) == 0
    expected = np.asarray(x4.resize((20, 24), Image.Resampling.LANCZOS)).astype(int)
    assert np.abs(np.asarray(Image.open(tmp_path / "x2" / "photo_sr.jpg").convert("RGB")).astype(int)
                  - expected).mean() < 6  # JPEG at quality 95 on top of the same resize
    with pytest.raises(ValueError, match="--outscale and --ext apply to --kind sr"):
        _cli([str(tmp_path / "photo.jpg"), "--model", str(tiny_path), "--out", str(tmp_path / "f"),
              "--kind", "lr-bicubic-sr", "--outscale", "2"])
