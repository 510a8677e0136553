"""Command-line front ends: ``upsampler fid``, ``upsampler sr-bench``, ``upsampler evaluate``.

Each command has ``configure_<command>_parser(parser)`` and ``run_<command>(args) -> int``
(see :mod:`upsampler.cli`). Bad inputs and unavailable extractors raise ``ValueError`` /
``FileNotFoundError``, which the dispatcher prints as one line (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from upsampler.utils.argtypes import integer
from upsampler.metrics.extractors import DEFAULT_EXTRACTOR, EXTRACTORS

_EXTRACTOR_HELP = (
    "feature extractor: fid-inception (reference TF-GAN FID network; set UPSAMPLER_FID_INCEPTION to a local "
    "copy), inception-imagenet (Keras ImageNet InceptionV3; not comparable with published FID), "
    "inception-untrained (random weights, offline smoke tests only: not an FID). Default: %(default)s"
)


def _add_extractor_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--extractor", choices=sorted(EXTRACTORS), default=DEFAULT_EXTRACTOR, help=_EXTRACTOR_HELP)
    parser.add_argument("--input-size", type=integer(75), default=None,
                        help="extractor input size in px (default 299). Testing only: other sizes are not FID")
    parser.add_argument("--batch-size", type=integer(1), default=16, help="images per forward pass (default %(default)s)")
    parser.add_argument("--n-boot", type=integer(0), default=200,
                        help="bootstrap resamples for the FID interval; 0 = none (default %(default)s)")
    parser.add_argument("--kid-subsets", type=integer(0), default=100, help="KID subsets; 0 = no KID (default %(default)s)")
    parser.add_argument("--seed", type=integer(0), default=0, help="seed of the bootstrap and KID subsets")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--progress", action="store_true", help="show a progress bar on stderr")


def _to_json(obj: Any) -> str:
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if hasattr(v, "item"):  # numpy scalars
            return clean(v.item())
        return v

    return json.dumps(clean(obj))


def _get_extractor(name: str, input_size: int | None):
    from upsampler.metrics.extractors import ExtractorUnavailableError, get_extractor

    try:
        return get_extractor(name, input_size=input_size)
    except ExtractorUnavailableError as exc:
        raise ValueError(str(exc)) from exc


# ---- fid ------------------------------------------------------------------------------------------

def configure_fid_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir1", metavar="DIR1", help="folder of images, or a .npz of cached statistics")
    parser.add_argument("dir2", metavar="DIR2", help="folder of images, or a .npz of cached statistics")
    _add_extractor_args(parser)
    parser.add_argument("--kid-subset-size", type=integer(2), default=None,
                        help="images per KID subset (default min(1000, N // 2))")
    parser.add_argument("--save-stats1", metavar="NPZ", help="cache DIR1's statistics (and features) here")
    parser.add_argument("--save-stats2", metavar="NPZ", help="cache DIR2's statistics (and features) here")


def _features_or_stats(source: str, args: argparse.Namespace, state: dict[str, Any]) -> dict[str, Any]:
    """{'features': (N, D) or None, 'mu', 'sigma', 'n'} for a folder or a cached .npz."""
    from upsampler.metrics.features import activation_statistics, activations
    from upsampler.metrics.fid import load_statistics
    from upsampler.metrics.srbench import list_images

    path = Path(source)
    if path.suffix == ".npz":
        stats = load_statistics(path)
        size = args.input_size or 299
        if stats["extractor"] != args.extractor or stats["input_size"] != size:
            raise ValueError(f"{path}: statistics were computed with extractor {stats['extractor']!r} at "
                             f"{stats['input_size']}px, not {args.extractor!r} at {size}px")
        return stats
    files = list_images(path)
    if "extractor" not in state:
        state["extractor"] = _get_extractor(args.extractor, args.input_size)
    feats = activations(files, state["extractor"], batch_size=args.batch_size, progress=args.progress)
    mu, sigma = activation_statistics(feats)
    return {"features": feats, "mu": mu, "sigma": sigma, "n": feats.shape[0]}


def run_fid(args: argparse.Namespace) -> int:
    from upsampler.metrics.extractors import extractor_info
    from upsampler.metrics.fid import DistributionMetrics, distribution_metrics, frechet_distance, save_statistics

    state: dict[str, Any] = {}
    a = _features_or_stats(args.dir1, args, state)
    b = _features_or_stats(args.dir2, args, state)
    ext = state.get("extractor", args.extractor)
    for src, data, target in ((args.dir1, a, args.save_stats1), (args.dir2, b, args.save_stats2)):
        if target:
            if data.get("features") is None and Path(src).suffix == ".npz":
                raise ValueError(f"--save-stats: {src} is already a statistics file")
            save_statistics(target, data["mu"], data["sigma"], data["n"], ext, features=data.get("features"))
    if a.get("features") is not None and b.get("features") is not None:
        result = distribution_metrics(a["features"], b["features"], ext, n_boot=args.n_boot,
                                      kid_subsets=args.kid_subsets, kid_subset_size=args.kid_subset_size,
                                      seed=args.seed)
    else:
        label, comparable, _ = extractor_info(args.extractor)
        if args.input_size not in (None, 299):
            comparable = False
        fid = frechet_distance(a["mu"], a["sigma"], b["mu"], b["sigma"])
        nan = float("nan")
        result = DistributionMetrics(fid, nan, nan, nan, nan, int(a["n"]), int(b["n"]), int(a["mu"].shape[0]),
                                     args.extractor, bool(comparable), getattr(ext, "label", label))
    if args.json:
        print(_to_json({**result.to_dict(), "dir1": args.dir1, "dir2": args.dir2}))
    else:
        print(f"DIR1: {args.dir1}\nDIR2: {args.dir2}")
        print("\n".join(result.summary_lines()))
    return 0


# ---- sr-bench -----------------------------------------------------------------------------------------

def configure_sr_bench_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR", help="folder of HR images (e.g. Set5)")
    parser.add_argument("--method", default="bicubic",
                        help="'bicubic' (MATLAB-style imresize) or the path of a saved generator .keras")
    parser.add_argument("--scale", type=integer(2), default=4, help="upscaling factor (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run_sr_bench(args: argparse.Namespace) -> int:
    from upsampler.metrics.srbench import run_sr_bench as bench

    result = bench(args.dir, args.method, args.scale)
    print(_to_json(result.to_dict()) if args.json else result.table())
    return 0


# ---- evaluate -------------------------------------------------------------------------------------------

def _parse_model(text: str) -> tuple[str, str]:
    if "=" in text:
        name, path = text.split("=", 1)
        name, path = name.strip(), path.strip()
    else:
        path = text.strip()
        name = Path(path).stem
    if not name or not path:
        raise ValueError(f"--model {text!r}: expected NAME=PATH")
    return name, path


def configure_evaluate_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("test_dir", metavar="TEST_DIR", help="processed split folder with hr/ and lr/ (e.g. DATA/test)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                        help='a generator to evaluate: NAME=PATH to a .keras file or a shipped generator, e.g. '
                             '--model "Model A=model_a" --model "Model B=runs/b/generator.keras" (repeatable; a NAME given several times is one model trained with several seeds, scored per run and pooled over its runs)')
    parser.add_argument("--out", required=True, help="output folder for metrics.csv, paired.csv, metrics.md, figures")
    parser.add_argument("--extractor", default="none",
                        choices=["none", "fid-inception", "inception-imagenet", "inception-untrained"],
                        help="Inception for FID/KID (default %(default)s: no FID; untrained features never enter the "
                             "table, they go to untrained_features.csv)")
    parser.add_argument("--input-size", type=integer(75), help="Inception input size (default 299; other sizes are not FID)")
    parser.add_argument("--no-faces", action="store_true", help="not faces: skip identity_distance and kid_face")
    parser.add_argument("--no-perceptual", action="store_true", help="skip featdist_hed, kid_hed and fd_hed")
    parser.add_argument("--no-piqe", action="store_true", help="skip the no-reference PIQE score")
    parser.add_argument("--n-boot", type=integer(0), default=1000,
                        help="bootstrap resamples; 0 = no intervals (default %(default)s). With identities recorded "
                             "for the test split, identities are resampled, then faces within them")
    parser.add_argument("--seed", type=integer(0), default=0, help="bootstrap seed (default %(default)s)")
    parser.add_argument("--per-identity", type=integer(1), default=None, metavar="K",
                        help="score only the first K faces of every identity (by file name; all identities kept), "
                             "for a quicker evaluation (default: every face)")
    parser.add_argument("--batch-size", type=integer(1), default=16, help="images per batch (default %(default)s)")
    parser.add_argument("--grid-images", type=integer(0), default=4, help="rows of the comparison figure (default %(default)s)")
    parser.add_argument("--save-sr", action="store_true", help="also save every method's SR images under OUT/sr/")
    parser.add_argument("--progress", action="store_true", help="progress bars on stderr")
    parser.add_argument("--json", action="store_true", help="print the tables as JSON")


def run_evaluate(args: argparse.Namespace) -> int:
    from upsampler.pretrained import resolve
    from upsampler.metrics.evaluate import evaluate_study

    models: dict[str, list[str]] = {}  # a name given several times: one generator per training seed
    for text in args.model:
        name, path = _parse_model(text)
        resolved = resolve(path)
        if not resolved.exists():
            raise FileNotFoundError(f"{path}: no such generator file (--model {text!r})")
        if str(resolved) in models.get(name, []):
            raise ValueError(f"--model: {path} is given twice for {name!r}")
        models.setdefault(name, []).append(str(resolved))
    extractor = None if args.extractor == "none" else _get_extractor(args.extractor, args.input_size)
    results = evaluate_study(args.test_dir, models, args.out, faces=not args.no_faces, extractor=extractor,
                             perceptual=not args.no_perceptual, no_reference=not args.no_piqe, n_boot=args.n_boot,
                             seed=args.seed, grid_images=args.grid_images, batch_size=args.batch_size,
                             input_size=args.input_size, save_sr=args.save_sr, progress=args.progress,
                             per_identity=args.per_identity)
    if args.json:
        print(_to_json({"table": results.table.to_dict(orient="records"),
                        "paired": results.paired.to_dict(orient="records"),
                        "files": {"metrics_csv": str(results.metrics_csv), "paired_csv": str(results.paired_csv),
                                  "per_image_csv": str(results.per_image_csv), "markdown": str(results.markdown),
                                  **{k: str(v) for k, v in results.figures.items()}}}))
    else:
        print(results.markdown.read_text())
        print(f"wrote {results.out_dir}", file=sys.stderr)
    return 0
