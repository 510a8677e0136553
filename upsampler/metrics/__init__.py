"""Metrics: FID and KID (with named feature extractors), PSNR/SSIM as SR papers report them.

NumPy-level API, importable without TensorFlow (the extractors import it when they run)::

    from upsampler.metrics import activations, activation_statistics, frechet_distance, get_extractor

    ext = get_extractor("fid-inception")            # or "inception-imagenet", "inception-untrained"
    f_sr, f_hr = activations(sr_uint8, ext), activations(hr_paths, ext)
    fid = frechet_distance(*activation_statistics(f_sr), *activation_statistics(f_hr))
    result = distribution_metrics(f_sr, f_hr, ext)  # FID + interval, KID ± std, N, dim, extractor

Modules: :mod:`.features` (activations, statistics), :mod:`.fid` (FID, bootstrap, the FID + KID bundle, cached statistics), :mod:`.kid`, :mod:`.extractors`,
:mod:`.sr` (PSNR, SSIM, MATLAB imresize), :mod:`.srbench` (``upsampler sr-bench``),
:mod:`.evaluate` (the study's Bicubic vs Model A vs Model B evaluation; its tables, notes and figures:
:mod:`.report`), :mod:`.paired` (paired and
identity-level bootstrap intervals), :mod:`.faces` (dlib identity metrics), :mod:`.cli`.
"""

from upsampler.metrics.extractors import (
    DEFAULT_EXTRACTOR,
    EXTRACTORS,
    UNTRAINED_LABEL,
    ExtractorUnavailableError,
    FeatureExtractor,
    get_extractor,
)
from upsampler.metrics.features import activation_statistics, activations
from upsampler.metrics.fid import (
    DistributionMetrics,
    FrechetTerms,
    distribution_metrics,
    fid_bootstrap,
    fid_from_features,
    frechet_distance,
    frechet_terms,
    load_statistics,
    save_statistics,
)
from upsampler.metrics.kid import kernel_inception_distance, mmd2_unbiased
from upsampler.metrics.sr import imresize, mod_crop, psnr, rgb_to_y, shave, sr_metrics, ssim

__all__ = [
    "DEFAULT_EXTRACTOR",
    "EXTRACTORS",
    "UNTRAINED_LABEL",
    "ExtractorUnavailableError",
    "FeatureExtractor",
    "get_extractor",
    "DistributionMetrics",
    "FrechetTerms",
    "activation_statistics",
    "activations",
    "distribution_metrics",
    "fid_bootstrap",
    "fid_from_features",
    "frechet_distance",
    "frechet_terms",
    "kernel_inception_distance",
    "load_statistics",
    "mmd2_unbiased",
    "save_statistics",
    "imresize",
    "mod_crop",
    "psnr",
    "rgb_to_y",
    "shave",
    "sr_metrics",
    "ssim",
    "evaluate_study",
    "StudyResults",
    "run_sr_bench",
]


def __getattr__(name: str):
    # Heavier modules (pandas, matplotlib) load on first use.
    if name in ("evaluate_study", "StudyResults"):
        from upsampler.metrics import evaluate

        return getattr(evaluate, name)
    if name == "run_sr_bench":
        from upsampler.metrics.srbench import run_sr_bench

        return run_sr_bench
    raise AttributeError(f"module 'upsampler.metrics' has no attribute {name!r}")
