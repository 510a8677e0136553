#!/usr/bin/env python3
"""Write the repository's address from pyproject.toml into the notebooks and the README.

pyproject.toml's ``[project.urls] Repository`` is the one place that holds it. This writes each
notebook's "Open in Colab" badge and its ``package_source`` default (what the Colab setup cell
installs) and the README's badge table from it. A fork runs, once:

    python scripts/set_repository.py https://github.com/YOU/upsampler

(which also rewrites pyproject.toml); with no argument it only re-writes the notebooks and the
README from pyproject.toml. ``tests/test_colab.py`` checks they agree.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = REPO / "pyproject.toml"
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
README = REPO / "README.md"
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
BEGIN, END = "<!-- colab badges: scripts/set_repository.py -->", "<!-- end colab badges -->"


def repository_url() -> str:
    return tomllib.loads(PYPROJECT.read_text())["project"]["urls"]["Repository"].rstrip("/")


def github_path(url: str) -> str:
    match = re.fullmatch(r"https://github\.com/([\w.-]+/[\w.-]+?)(\.git)?", url)
    if not match:
        raise ValueError(f"{url}: expected https://github.com/OWNER/NAME (Colab opens notebooks from GitHub)")
    return match.group(1)


def colab_url(url: str, notebook: str, branch: str = "main") -> str:
    return f"https://colab.research.google.com/github/{github_path(url)}/blob/{branch}/notebooks/{notebook}"


def badge(url: str, notebook: str) -> str:
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab_url(url, notebook)})"


def package_source(url: str) -> str:
    return f"git+{url}.git"


def notebook_title(book: dict) -> str:
    return "".join(book["cells"][0]["source"]).splitlines()[0].lstrip("# ").strip()


def update_notebook(path: Path, url: str) -> bool:
    book = json.loads(path.read_text())
    intro = book["cells"][0]
    lines = "".join(intro["source"]).split("\n")
    lines[2] = badge(url, path.name)  # line 0: the title, 1: blank, 2: the badge
    intro["source"] = _as_source("\n".join(lines))
    params = next(c for c in book["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    text = re.sub(r'^package_source = "[^"]*"', f'package_source = "{package_source(url)}"', "".join(params["source"]),
                  count=1, flags=re.M)
    params["source"] = _as_source(text)
    new = json.dumps(book, indent=1, ensure_ascii=False) + "\n"
    changed = new != path.read_text()
    path.write_text(new)
    return changed


def _as_source(text: str) -> list[str]:
    lines = text.split("\n")
    return [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])


def readme_badges(url: str) -> str:
    rows = [f"| {notebook_title(json.loads(p.read_text()))} | {badge(url, p.name)} |" for p in NOTEBOOKS]
    return "\n".join([BEGIN, "| notebook | |", "|---|---|", *rows, END])


def update_readme(url: str) -> bool:
    text = README.read_text()
    if BEGIN not in text:
        raise ValueError(f"{README}: no '{BEGIN}' line to put the badges after")
    new = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: readme_badges(url), text, count=1, flags=re.S)
    README.write_text(new)
    return new != text


def main(argv: list[str]) -> int:
    if argv:
        url = argv[0].rstrip("/").removesuffix(".git")
        github_path(url)
        text = PYPROJECT.read_text()
        PYPROJECT.write_text(re.sub(r'^Repository = "[^"]*"', f'Repository = "{url}"', text, count=1, flags=re.M))
    url = repository_url()
    changed = [p.name for p in NOTEBOOKS if update_notebook(p, url)] + (["README.md"] if update_readme(url) else [])
    print(f"{url}: " + (", ".join(changed) + " updated" if changed else "everything already agrees"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
