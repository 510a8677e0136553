"""PSNR, SSIM, Y conversion and MATLAB-style imresize (NumPy only)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from upsampler.metrics.sr import imresize, mod_crop, psnr, rgb_to_y, shave, sr_metrics, ssim, round_to_uint8


def smooth_image(rng, h=64, w=48, channels=3):
    """A natural-ish test image: smoothed noise plus a gradient, uint8."""
    from scipy.ndimage import gaussian_filter

    x = gaussian_filter(rng.normal(size=(h, w, channels)), sigma=(3, 3, 0)) * 400 + 128
    x += np.linspace(-40, 40, w)[None, :, None]
    out = round_to_uint8(x)
    return out[..., 0] if channels == 1 else out


def test_rgb_to_y_matlab_coefficients_and_gray_passthrough():
    white, black = np.full((2, 2, 3), 255, np.uint8), np.zeros((2, 2, 3), np.uint8)
    np.testing.assert_allclose(rgb_to_y(white), 235.0)
    np.testing.assert_allclose(rgb_to_y(black), 16.0)
    red = np.zeros((1, 1, 3), np.uint8)
    red[..., 0] = 255
    assert rgb_to_y(red)[0, 0] == pytest.approx(16 + 65.481)
    gray = np.array([[0, 100], [200, 255]], np.uint8)
    np.testing.assert_array_equal(rgb_to_y(gray), gray.astype(np.float64))  # raw gray, not squeezed
    np.testing.assert_array_equal(rgb_to_y(gray[..., None]), gray.astype(np.float64))
    with pytest.raises(ValueError):
        rgb_to_y(np.zeros((2, 2, 4)))


def test_shave_and_mod_crop():
    img = np.zeros((30, 27, 3))
    assert shave(img, 4).shape == (22, 19, 3)
    assert shave(img, 0).shape == img.shape
    assert mod_crop(img, 4).shape == (28, 24, 3)
    with pytest.raises(ValueError):
        shave(img, 14)


def test_psnr_known_values():
    a = np.zeros((8, 8))
    assert psnr(a, a) == math.inf
    assert psnr(a, a + 10) == pytest.approx(10 * math.log10(255**2 / 100))
    b = a.copy()
    b[0, 0] = 16  # MSE = 256 / 64 = 4
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 4))
    assert psnr(a, a + 0.1, data_range=1.0) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="shape"):
        psnr(a, np.zeros((8, 9)))


def test_ssim_identity_and_matches_skimage():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    a = smooth_image(rng, channels=1).astype(np.float64)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    for b in (a + rng.normal(scale=8, size=a.shape), np.clip(a * 0.7 + 30, 0, 255), rng.uniform(0, 255, a.shape)):
        ref = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                    data_range=255)
        assert ssim(a, b) == pytest.approx(ref, abs=1e-9)
    assert ssim(a, 255 - a) < 0  # anti-correlated structure
    with pytest.raises(ValueError, match="window"):
        ssim(np.zeros((8, 8)), np.zeros((8, 8)))


@pytest.mark.parametrize("scale", [0.25, 0.5, 2, 4])
def test_imresize_constant_stays_constant_and_shape(scale):
    img = np.full((20, 13, 3), 77, np.uint8)
    out = imresize(img, scale)
    assert out.dtype == np.uint8
    assert out.shape == (math.ceil(20 * scale), math.ceil(13 * scale), 3)
    assert np.all(out == 77)
    np.testing.assert_allclose(imresize(img.astype(np.float64), scale), 77.0, atol=1e-9)


@pytest.mark.parametrize("scale", [0.25, 3])
def test_imresize_is_mirror_symmetric(scale):
    img = smooth_image(np.random.default_rng(1), 24, 20).astype(np.float64)
    out = imresize(img, scale)
    np.testing.assert_allclose(imresize(img[:, ::-1], scale), out[:, ::-1], atol=1e-9)
    np.testing.assert_allclose(imresize(img[::-1], scale), out[::-1], atol=1e-9)


def test_imresize_upscale_reproduces_linear_ramp_on_matlab_grid():
    # Keys' cubic (a = -0.5) reproduces linear functions; MATLAB maps output pixel x (1-based)
    # to input coordinate u = x / s + (1 - 1 / s) / 2. Away from the mirrored borders the ramp
    # f(i) = i must come out as exactly u.
    n, s = 16, 4
    ramp = np.tile(np.arange(1, n + 1, dtype=np.float64), (3, 1))
    out = imresize(ramp, output_shape=(3 * s, n * s))[1]
    x = np.arange(1, n * s + 1)
    u = x / s + 0.5 * (1 - 1 / s)
    interior = (u > 3) & (u < n - 2)
    np.testing.assert_allclose(out[interior], u[interior], atol=1e-12)


def test_imresize_integer_downscale_of_block_image_is_smooth_average():
    # A 4x4-block image downscaled by 4 with antialiasing: each output pixel is a weighted
    # average centred on its block, so a constant-block image returns the block values in the
    # interior of large uniform regions.
    blocks = np.kron(np.array([[10.0, 10, 200, 200]] * 4), np.ones((4, 4)))
    out = imresize(blocks, 0.25)
    assert out.shape == (4, 4)
    assert out[1, 0] == pytest.approx(10.0, abs=12) and out[1, 3] == pytest.approx(200.0, abs=12)
    assert np.all(np.diff(out[1]) >= -1e-9)  # monotone edge, no ringing reversal


def test_sr_metrics_rounds_and_shaves():
    rng = np.random.default_rng(2)
    hr = smooth_image(rng, 40, 40)
    p, s = sr_metrics(hr.astype(np.float64) + 0.3, hr, 4)  # rounds to the same uint8 image
    assert p == math.inf and s == pytest.approx(1.0)
    sr = hr.copy()
    sr[:4] = 0  # damage only inside the shaved border
    assert sr_metrics(sr, hr, 4)[0] == math.inf
    sr[10, 10] = 255 - sr[10, 10]
    p, s = sr_metrics(sr, hr, 4)
    assert 30 < p < math.inf and s < 1
