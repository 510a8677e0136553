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

from upsampler.utils.hardware import import_tensorflow_quietly, keras_backend_name

# Modules whose commands never load TensorFlow (the study runs it in the notebooks' kernels).
WITHOUT_TENSORFLOW = ("upsampler.study.plots", "upsampler.data.demo", "upsampler.study.runner")

# command -> (module, help)
COMMANDS: dict[str, tuple[str, str]] = {
    "preprocess": ("upsampler.data.preprocess", "Crop a folder or .zip of images into a processed train/test set."),
    "train": ("upsampler.training.train", "Train an SRGAN (resumes from the run directory's latest checkpoint)."),
    "upscale": ("upsampler.inference.upscale", "Upscale images with a trained generator (tiled)."),
    "fid": ("upsampler.metrics.cli", "FID and KID between two image folders."),
    "sr_bench": ("upsampler.metrics.cli", "PSNR/SSIM of bicubic or a generator on a folder of HR images."),
    "evaluate": ("upsampler.metrics.cli", "Bicubic vs generators on a test set: PSNR, SSIM, VGG16-HED feature "
                                          "distance, face identity, KID, paired 95%% intervals (FID where the Inception loads)."),
    "losses": ("upsampler.study.plots", "Plot a run's loss.csv or an original-format loss log; flag a saturated D."),
    "benchmark": ("upsampler.tools.bench", "Throughput and useful GFLOP/s of training, inference and the pipeline."),
    "gpu_study": ("upsampler.study.gpu", "Train Model A and B (MSE and adversarial stages, several seeds) on one GPU "
                                         "against a wall-clock budget, then pack generators and logs."),
    "study": ("upsampler.study.runner", "Run the whole study through its notebooks (what ./run_all.sh runs)."),
    "demo_data": ("upsampler.data.demo", "Write the built-in demo datasets (photos shipped inside installed packages)."),
}


DESCRIPTION = """\
upsampler: 4x super-resolution with SRGAN, as a reproducible study - does an SRGAN trained on faces
beat one trained on varied photos, and bicubic upsampling, on held-out faces?"""

EPILOG = """\
examples:
  upsampler upscale photo.jpg --model model_b --out up/            # a shipped face model
  upsampler upscale face.png --model model_a --model-b model_b --kind lr-bicubic-a-b-hr --out fig/
  upsampler preprocess faces/ --groups identity_CelebA.txt --out data/faces
  upsampler train --data data/faces --run-dir runs/b --profile study-cpu
  upsampler evaluate data/faces/test --model "Model A=model_a" --model "Model B=runs/b/generator.keras" --out eval/
  upsampler sr-bench --method bicubic --scale 4 Set5/

`upsampler COMMAND --help` shows each command's options and defaults."""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" only where the help does not already say its default and X means something."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (all of them when ``None``)."""
    from upsampler import __version__

    parser = argparse.ArgumentParser(prog="upsampler", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"upsampler {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        cli_name = name.replace("_", "-")
        p = sub.add_parser(cli_name, help=help_text, description=help_text.replace("%%", "%"),
                           formatter_class=_HelpFormatter)
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
        validate = getattr(module, args._runner.replace("run_", "validate_", 1), None)
        if validate is not None:
            validate(args)  # bad arguments are told in a second, before TensorFlow loads
        if args._module not in WITHOUT_TENSORFLOW and keras_backend_name() == "tensorflow":
            import_tensorflow_quietly()  # before the command: its errors stay one line
        return int(getattr(module, args._runner)(args) or 0)
    except (FileNotFoundError, ValueError) as exc:
        # Bad input: a clear one-line message naming the file and the problem, no traceback.
        print(f"upsampler {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
