"""The ``upscale`` command and the study's comparison figures (tiling: :mod:`upsampler.inference.tiles`).

**Figures.** The original's comparison figures are re-created with
:func:`upsampler.study.plots.panel_figure`; the "Bicubic" panel is a real Pillow bicubic upscale
(:func:`upsampler.data.images.bicubic_upscale`), not matplotlib display interpolation.

**Hostile inputs.** ``upsampler upscale`` reads every input's header before loading a model or
decoding a pixel, and stops with a one-line error when a file is not an image, or when its SR
output would exceed ``--max-output-pixels`` (default :data:`MAX_OUTPUT_PIXELS`, 8192 x 8192: at
x4 an LR input of 2048 x 2048, or an HR input of 8192 x 8192 with ``--input-is-hr``); a
20000 x 20000 photo (an 80000 x 80000 output) never gets decoded. Of an animated GIF or a
multi-page TIFF the first frame is upscaled, with a one-line note on stderr.

TensorFlow is imported only when a generator is loaded or run.

"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from upsampler.data.images import IMAGE_EXTENSIONS
from upsampler.inference.tiles import infer_scale, upscale_image
from upsampler.utils.argtypes import integer, number

if TYPE_CHECKING:  # pragma: no cover
    from upsampler.data.images import ImageHeader


#: Largest SR image ``upsampler upscale`` makes unless ``--max-output-pixels`` says otherwise:
#: 8192 x 8192 pixels (192 MiB as uint8 RGB).
MAX_OUTPUT_PIXELS = 8192 * 8192


# ---- figure kinds ------------------------------------------------------------------------------

@dataclass(frozen=True)
class FigureKind:
    """One kind of output: its panels, in order (``LR``, ``Bicubic``, ``A``, ``B``, ``HR``)."""

    name: str
    panels: tuple[str, ...]
    description: str

    @property
    def needs_hr(self) -> bool:
        return "HR" in self.panels

    @property
    def needs_b(self) -> bool:
        return "B" in self.panels


KINDS: dict[str, FigureKind] = {
    k.name: k
    for k in (
        FigureKind("sr", ("A",), "the SR image alone, full resolution (PNG); with --model-b also B's"),
        FigureKind("lr-sr-hr", ("LR", "A", "HR"), "LR | SR | HR"),
        FigureKind("lr-bicubic-sr-hr", ("LR", "Bicubic", "A", "HR"), "LR | Bicubic | SR | HR"),
        FigureKind("lr-a-b-hr", ("LR", "A", "B", "HR"), "LR | Model A | Model B | HR"),
        FigureKind("lr-bicubic-a-b-hr", ("LR", "Bicubic", "A", "B", "HR"), "LR | Bicubic | Model A | Model B | HR"),
        FigureKind("lr-bicubic-sr", ("LR", "Bicubic", "A"), "LR | Bicubic | SR (no ground truth)"),
        FigureKind("lr-bicubic-a-b", ("LR", "Bicubic", "A", "B"), "LR | Bicubic | Model A | Model B (no ground truth)"),
    )
}


def center_mod_crop(image: np.ndarray, scale: int) -> np.ndarray:
    """Centre-crop ``image`` so both sides are multiples of ``scale`` (drops < ``scale`` pixels).

    For figures; metric code uses :func:`upsampler.metrics.sr.mod_crop` (MATLAB's top-left modcrop).
    """
    from upsampler.data.images import center_crop

    h, w = image.shape[:2]
    hh, ww = h - h % scale, w - w % scale
    if hh < scale or ww < scale:
        raise ValueError(f"a {w}x{h} image is smaller than the scale factor {scale}")
    return image if (hh, ww) == (h, w) else center_crop(image, (hh, ww))


def make_lr(hr: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """``(hr_cropped, lr)``: mod-crop the HR image, then Pillow-bicubic downscale it by ``scale``
    (how the study made its LR inputs)."""
    from upsampler.data.images import bicubic_downscale

    hr = center_mod_crop(hr, scale)
    return hr, bicubic_downscale(hr, scale)


def render_kind(
    kind: FigureKind | str,
    *,
    lr: np.ndarray,
    sr_a: np.ndarray,
    scale: int,
    sr_b: np.ndarray | None = None,
    hr: np.ndarray | None = None,
    label_a: str = "SR",
    label_b: str = "Model B",
    out_dir: str | Path,
    stem: str,
    note: str | None = None,
    title: str | None = None,
    ext: str = "png",
    quality: int = 95,
) -> list[Path]:
    """Write one image's outputs for ``kind`` into ``out_dir``; returns the written paths.

    ``sr`` writes ``<stem>_sr.<ext>`` (and ``<stem>_sr_b.<ext>`` with a second model) at full
    resolution (an image with alpha as PNG when ``ext`` is jpg); the other kinds write one
    figure ``<stem>_<kind>.png``.
    """
    from upsampler.data.images import bicubic_upscale, save_image
    from upsampler.study.plots import close, panel_figure

    kind = KINDS[kind] if isinstance(kind, str) else kind
    out_dir = Path(out_dir)
    if kind.name == "sr":
        def suffix(image: np.ndarray) -> str:
            has_alpha = image.ndim == 3 and image.shape[-1] in (2, 4)
            return "png" if ext == "jpg" and has_alpha else ext

        pairs = [("sr", sr_a)] + ([("sr_b", sr_b)] if sr_b is not None else [])
        return [save_image(image, out_dir / f"{stem}_{part}.{suffix(image)}", quality=quality) for part, image in pairs]
    if kind.needs_hr and hr is None:
        raise ValueError(f"figure kind '{kind.name}' needs the HR image")
    if kind.needs_b and sr_b is None:
        raise ValueError(f"figure kind '{kind.name}' needs a second model (--model-b)")
    sources = {
        "LR": ("LR", lr),
        "Bicubic": ("Bicubic (Pillow)", bicubic_upscale(lr, scale) if "Bicubic" in kind.panels else None),
        "A": (label_a, sr_a),
        "B": (label_b, sr_b),
        "HR": ("HR", hr),
    }
    panels = [sources[name] for name in kind.panels]
    path = out_dir / f"{stem}_{kind.name}.png"
    fig = panel_figure(panels, path=path, title=title, note=note)
    close(fig)
    return [path]


# ---- command line ------------------------------------------------------------------------------

def configure_upscale_parser(p) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (or folders of images) to upscale")
    p.add_argument("--model", required=True, metavar="PATH|NAME",
                   help="generator .keras file, or a shipped generator: model_a (varied photos), model_b (faces), "
                        "model_a_mse, model_b_mse (their MSE stage: sharper and more faithful at this scale), and the CPU-scale "
                        "study's *_cpu (see `upsampler.pretrained`)")
    p.add_argument("--model-b", metavar="PATH|NAME", help="second generator (Model B) for the a-b kinds")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--kind", default="sr", choices=sorted(KINDS),
                   help="; ".join(f"{k.name}: {k.description}" for k in KINDS.values()) + " (default sr)")
    p.add_argument("--tile", type=integer(0), default=128, help="LR tile side in pixels; 0 = whole image at once (default 128)")
    p.add_argument("--overlap", type=integer(0), default=None,
                   help="LR pixels of context around each tile (default: the generator's receptive field, exact)")
    p.add_argument("--batch-size", type=integer(1), default=None,
                   help="tiles per generator call (default: as many as fit 4 x 160 x 160 LR pixels)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--input-is-lr", action="store_true",
                       help="the images are LR inputs (no HR panel); default for --kind sr and the no-HR kinds")
    group.add_argument("--input-is-hr", action="store_true",
                       help="the images are HR: mod-crop, bicubic-downscale to LR, then upscale; default for kinds "
                            "with an HR panel")
    p.add_argument("--max-output-pixels", type=integer(0), default=MAX_OUTPUT_PIXELS, metavar="N",
                   help="refuse an input whose SR output would have more than N pixels (8192 x 8192 by default), "
                        "before decoding it; 0 = no limit")
    p.add_argument("--outscale", type=number(0, 16, low_open=True), metavar="S",
                   help="final scale of the --kind sr files: the x4 result is resized (Lanczos) to S x the input "
                        "size, as Real-ESRGAN's --outscale (default: the model's own factor, no resize)")
    p.add_argument("--ext", choices=("png", "jpg", "webp", "auto"), default="png",
                   help="format of the --kind sr files; auto: the input's own (png, jpg or webp); an image with "
                        "alpha is written as PNG whatever this says; figures are always PNG (default png)")
    p.add_argument("--quality", type=integer(1, 100), default=95, help="JPEG / WebP quality (default 95)")
    p.add_argument("--label-a", help="panel label of --model (default: 'Model A (<name>)' or 'SR (<name>)')")
    p.add_argument("--label-b", help="panel label of --model-b (default: 'Model B (<name>)')")


def _model_name(path: Path) -> str:
    return path.parent.name if path.stem in ("generator", "model", "generator_pretrained") and path.parent.name \
        else path.stem


def expand_images(items: Sequence[str | Path]) -> list[Path]:
    """Image paths from files and folders (a folder contributes its image files, sorted).

    Raises:
        FileNotFoundError: a path does not exist, or a folder holds no images.
    """
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such image")
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise FileNotFoundError(f"{path}: folder holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
            paths.extend(found)
        else:
            paths.append(path)
    return paths


def output_size(header: "ImageHeader", scale: int, input_is_lr: bool) -> tuple[int, int]:
    """``(width, height)`` of the SR image made from an input of ``header``'s size: the input
    times ``scale``, or (an HR input) the input mod-cropped to multiples of ``scale``."""
    if input_is_lr:
        return header.width * scale, header.height * scale
    return header.width - header.width % scale, header.height - header.height % scale


def check_output_size(name: str, header: "ImageHeader", scale: int, input_is_lr: bool, max_pixels: int) -> None:
    """ValueError naming ``name`` when its SR output would exceed ``max_pixels`` (0: no limit)."""
    width, height = output_size(header, scale, input_is_lr)
    if max_pixels and width * height > max_pixels:
        raise ValueError(f"{name}: a {header.width}x{header.height} input gives a {width}x{height} output at x{scale} "
                         f"({width * height:,} pixels), over the limit of {max_pixels:,}; "
                         "raise it with --max-output-pixels (0 for none)")


def output_ext(ext: str, path: Path) -> str:
    """The suffix of an ``sr`` file: ``ext``, or with ``"auto"`` the input's own when it is one we write."""
    if ext != "auto":
        return ext
    own = path.suffix.lower().lstrip(".")
    return {"jpeg": "jpg"}.get(own, own) if own in ("png", "jpg", "jpeg", "webp") else "png"


SMALL_LR = 32  # an "HR" input whose LR side would be below this is probably an LR image already


def _upscale_settings(args) -> tuple["FigureKind", bool, int | None]:
    """(kind, input_is_lr, tile) from the arguments; ValueError for a combination that cannot work."""
    kind = KINDS[args.kind]
    input_is_lr = args.input_is_lr or (not args.input_is_hr and not kind.needs_hr)
    if input_is_lr and kind.needs_hr:
        raise ValueError(f"--kind {kind.name} shows the HR image, but --input-is-lr gives none; "
                         "use --kind sr, lr-bicubic-sr or lr-bicubic-a-b")
    if kind.needs_b and not args.model_b:
        raise ValueError(f"--kind {kind.name} compares two models: give --model-b")
    if args.model_b and not kind.needs_b and kind.name != "sr":
        raise ValueError(f"--kind {kind.name} shows one model; for two use lr-a-b-hr, lr-bicubic-a-b-hr or lr-bicubic-a-b")
    tile = None if args.tile in (None, 0) else args.tile
    if tile is not None and tile < 1:
        raise ValueError(f"--tile must be >= 1 (or 0 for whole images), got {args.tile}")
    if args.max_output_pixels < 0:
        raise ValueError(f"--max-output-pixels must be >= 0 (0 for no limit), got {args.max_output_pixels}")
    if kind.name != "sr" and (getattr(args, "outscale", None) is not None or getattr(args, "ext", "png") != "png"):
        raise ValueError(f"--outscale and --ext apply to --kind sr (full-resolution files); --kind {kind.name} "
                         "writes a PNG figure")
    return kind, input_is_lr, tile


def validate_upscale(args) -> tuple["FigureKind", bool, int | None, list[Path]]:
    """What can be checked before a deep-learning library loads (seconds): the options, that the
    inputs and generators exist, that the output folder can be made. Returns (kind, input_is_lr,
    tile, the input image paths)."""
    settings = _upscale_settings(args)
    images = expand_images(args.images)
    from upsampler.pretrained import resolve

    for name in filter(None, (args.model, args.model_b)):
        if not resolve(name).exists():
            raise FileNotFoundError(f"{resolve(name)}: no such generator file")
    out_dir = Path(args.out)
    existing = next(p for p in (out_dir, *out_dir.absolute().parents) if p.exists())  # made only when written to
    if not existing.is_dir():
        raise ValueError(f"{out_dir}: cannot create the output folder ({existing} is not a folder)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{out_dir}: cannot create the output folder ({existing} is not writable)")
    return (*settings, images)


def restore_mode(sr: np.ndarray, header: "ImageHeader", alpha: np.ndarray | None) -> np.ndarray:
    """The SR image in the input's own colour layout: a grey input gives a grey output (luma of
    the RGB result, ITU-R 601 as Pillow's "L"), and an input with transparency gets its alpha
    channel back, upscaled bicubically to the SR size."""
    from PIL import Image

    from upsampler.data.images import is_grey_mode

    out = np.asarray(Image.fromarray(sr).convert("L")) if is_grey_mode(header.mode) else sr
    if alpha is None:
        return out
    a = np.asarray(Image.fromarray(alpha).resize((sr.shape[1], sr.shape[0]), Image.BICUBIC), np.uint8)
    return np.dstack([out, a])


def run_upscale(args) -> int:
    from tqdm import tqdm

    from upsampler.data.images import load_alpha, load_rgb, read_header, readable_name, resize_to
    from upsampler.study.plots import note_for_run
    from upsampler.pretrained import resolve

    kind, input_is_lr, tile, paths = validate_upscale(args)
    failed: list[str] = []

    def fail(path: Path, exc: Exception) -> None:
        message = str(exc) if readable_name(path.name) in str(exc) else f"{readable_name(str(path))}: {exc}"
        tqdm.write(f"upsampler upscale: error: {message}", file=sys.stderr)
        failed.append(readable_name(str(path)))

    images = []
    for path in paths:
        try:
            images.append((path, read_header(path)))  # what is not an image is named here, before any work
        except (OSError, ValueError) as exc:
            fail(path, exc)
    model_paths = [resolve(args.model)] + ([resolve(args.model_b)] if args.model_b else [])
    from upsampler.archs.srgan import load_generator

    generators = [load_generator(path) for path in model_paths]
    scales = [infer_scale(g) for g in generators]
    if len(set(scales)) > 1:
        raise ValueError(f"the models upscale by different factors: {args.model} x{scales[0]}, {args.model_b} x{scales[1]}")
    scale = scales[0]
    accepted = []
    for path, header in images:
        try:
            check_output_size(readable_name(str(path)), header, scale, input_is_lr, args.max_output_pixels)
            accepted.append((path, header))
        except ValueError as exc:
            fail(path, exc)
    note = next((n for n in (note_for_run(p) for p in model_paths) if n), None)
    two = len(generators) == 2
    label_a = args.label_a or (f"Model A ({_model_name(model_paths[0])})" if two else f"SR ({_model_name(model_paths[0])})")
    label_b = args.label_b or (f"Model B ({_model_name(model_paths[1])})" if two else "Model B")

    out_dir = Path(args.out)
    written: list[Path] = []
    stems: dict[str, int] = {}
    done = 0
    for path, header in tqdm(accepted, desc="upscale", unit="image", disable=None):
        name = readable_name(path.name)
        try:
            if header.frames > 1:
                tqdm.write(f"note: {name}: {header.format} of {header.frames} frames; only the first is upscaled",
                           file=sys.stderr)
            image = load_rgb(path, max_pixels=header.pixels)  # the size just checked, should the file change
            if input_is_lr:
                hr, lr = None, image
            else:
                hr, lr = make_lr(image, scale)
                if min(lr.shape[:2]) < SMALL_LR:
                    tqdm.write(f"note: {name}: a {image.shape[1]}x{image.shape[0]} image taken as HR is shrunk x{scale} "
                               f"to a {lr.shape[1]}x{lr.shape[0]} LR input; if it is a low-resolution image already, "
                               "use --input-is-lr (kinds sr, lr-bicubic-sr, lr-bicubic-a-b)", file=sys.stderr)
            srs = [upscale_image(g, lr, scale=scale, tile=tile, overlap=args.overlap, batch_size=args.batch_size,
                                 progress=None) for g in generators]
            if kind.name == "sr" and input_is_lr:  # full-resolution files keep the input's grey / alpha
                alpha = load_alpha(path)
                srs = [restore_mode(sr, header, alpha) for sr in srs]
            if args.outscale is not None and kind.name == "sr":
                size = (max(1, round(lr.shape[1] * args.outscale)), max(1, round(lr.shape[0] * args.outscale)))
                srs = [resize_to(sr, *size) for sr in srs]
            out_dir.mkdir(parents=True, exist_ok=True)
            stem = path.stem
            stems[stem] = stems.get(stem, 0) + 1
            if stems[stem] > 1:
                stem = f"{stem}_{stems[stem]}"
            written += render_kind(
                kind, lr=lr, sr_a=srs[0], sr_b=srs[1] if two else None, hr=hr, scale=scale,
                label_a=label_a, label_b=label_b, out_dir=out_dir, stem=stem, note=note, title=name,
                ext=output_ext(args.ext, path), quality=args.quality,
            )
            done += 1
        except (OSError, ValueError) as exc:
            fail(path, exc)
    for path in written:
        print(readable_name(str(path)))
    where = readable_name(str(out_dir))
    print(f"{done} image(s), x{scale}, kind {kind.name}: {len(written)} file(s) in {where}")
    if note:
        print(note)
    if failed and done:
        print(f"upsampler upscale: {len(failed)} of {done + len(failed)} input(s) failed (named above); "
              "the others were written", file=sys.stderr)
        return 1
    return 2 if failed else 0
