"""Generators trained by this project's studies, shipped inside the package.

``model_a`` (trained on varied photos, the COCO role) and ``model_b`` (trained on faces, the
CelebA role) of the study's first GPU run (profile ``study-gpu``, training seed 1), and their
generators after MSE pre-training (``model_a_mse``, ``model_b_mse``: the sharper, more faithful
upscalers at this scale); the CPU-scale study's four as ``model_a_cpu``, ``model_b_cpu``,
``model_a_mse_cpu``, ``model_b_mse_cpu``. Each has a model card (``<name>.md``): data,
identities held out, steps, wall time, machine, content network and metrics.

    from upsampler.pretrained import path_of, names
    path_of("model_b")   # .../upsampler/pretrained/model_b.keras
"""

from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).resolve().parent
SUFFIX = ".keras"


def names() -> list[str]:
    """The shipped generators, by name."""
    return sorted(p.stem for p in FOLDER.glob(f"*{SUFFIX}"))


def path_of(name: str) -> Path:
    """The file of a shipped generator (``model_a``, ``model_b``, ...)."""
    path = FOLDER / f"{name}{SUFFIX}"
    if not path.is_file():
        raise FileNotFoundError(f"no shipped generator named {name!r}; shipped: {names() or 'none'}")
    return path


def card_of(name: str) -> str:
    """The model card (Markdown) of a shipped generator."""
    card = FOLDER / f"{name}.md"
    if not card.is_file():
        raise FileNotFoundError(f"no model card for {name!r} ({card})")
    return card.read_text()


def resolve(name_or_path: str | Path) -> Path:
    """A generator file: an existing path as given, else a shipped generator's name."""
    path = Path(name_or_path)
    if path.exists() or path.suffix or "/" in str(name_or_path):
        return path
    return path_of(str(name_or_path))
