"""The ``upsampler`` command line.

Each sub-command lives in the module that does its work; this file only wires them up.
A module named here provides ``configure_<command>_parser(parser)`` and
``run_<command>(args) -> int``. Modules are imported lazily so that ``upsampler --help`` and
the NumPy-only commands start without importing TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module, help)
COMMANDS: dict[str, tuple[str, str]] = {
    "preprocess": ("upsampler.data", "Crop a folder or .zip of images into a processed train/test set."),
    "train": ("upsampler.train", "Train an SRGAN (resumes from the run directory's latest checkpoint)."),
    "upscale": ("upsampler.inference", "Upscale images with a trained generator (tiled)."),
    "fid": ("upsampler.metrics.cli", "FID and KID between two image folders."),
    "sr_bench": ("upsampler.metrics.cli", "PSNR/SSIM of bicubic or a generator on a folder of HR images."),
    "evaluate": ("upsampler.metrics.cli", "Bicubic vs Model A vs Model B on a test set: FID, KID, PSNR, SSIM."),
    "losses": ("upsampler.losslog", "Plot a run's loss.csv or an original-format loss log; flag a saturated D."),
    "benchmark": ("upsampler.bench", "Throughput and useful GFLOP/s of training, inference and the pipeline."),
    "demo_data": ("upsampler.demo", "Write the built-in demo datasets (photos shipped inside installed packages)."),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (all of them when ``None``)."""
    parser = argparse.ArgumentParser(prog="upsampler", description="upsampler: " + __doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        cli_name = name.replace("_", "-")
        p = sub.add_parser(cli_name, help=help_text, description=help_text)
        if command is None or command == cli_name:
            module = importlib.import_module(module_name)
            getattr(module, f"configure_{name}_parser")(p)
        p.set_defaults(_module=module_name, _runner=f"run_{name}")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in {n.replace("_", "-") for n in COMMANDS} else ""
    parser = build_parser(command)
    args = parser.parse_args(argv)
    module = importlib.import_module(args._module)
    try:
        return int(getattr(module, args._runner)(args) or 0)
    except (FileNotFoundError, ValueError) as exc:
        # Bad input: a clear one-line message naming the file and the problem, no traceback.
        print(f"upsampler {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
