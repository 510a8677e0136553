"""The rendered results in docs/ are whole: every committed executed notebook ran to its end, and
none hides what the README shows (the original study's loss logs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
RENDERED = sorted(DOCS.rglob("*.ipynb"))


def problems(book: dict) -> list[str]:
    """What makes an executed notebook an incomplete record (empty when it is whole)."""
    found = []
    papermill = book.get("metadata", {}).get("papermill")
    if papermill is None:
        found.append("not executed by papermill (no papermill metadata)")
    elif papermill.get("exception"):
        found.append("papermill recorded an exception")
    for i, cell in enumerate(book.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        status = cell.get("metadata", {}).get("papermill", {}).get("status")
        if status not in (None, "completed"):
            found.append(f"cell {i} is {status}")
        if cell.get("execution_count") is None and "".join(cell.get("source", "")).strip():
            found.append(f"cell {i} never ran")
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                found.append(f"cell {i} failed: {output.get('ename')}")
    parameters = (papermill or {}).get("parameters", {})
    if "seed_logs" in parameters and not parameters["seed_logs"]:
        found.append("rendered without the original study's loss logs (seed_logs = [])")
    return found


def test_the_check_catches_an_interrupted_run_and_a_hidden_parameter():
    book = {"metadata": {"papermill": {"parameters": {"seed_logs": []}}},
            "cells": [{"cell_type": "code", "source": "x = 1", "execution_count": 1,
                       "metadata": {"papermill": {"status": "completed"}}, "outputs": []},
                      {"cell_type": "code", "source": "train()", "execution_count": None,
                       "metadata": {"papermill": {"status": "running"}}, "outputs": []},
                      {"cell_type": "code", "source": "plot()", "execution_count": 3,
                       "metadata": {"papermill": {"status": "completed"}},
                       "outputs": [{"output_type": "error", "ename": "KeyError"}]}]}
    assert problems(book) == ["cell 1 is running", "cell 1 never ran", "cell 2 failed: KeyError",
                              "rendered without the original study's loss logs (seed_logs = [])"]
    assert problems({"metadata": {"papermill": {"parameters": {"seed_logs": ["COCO_loss.txt"]}}}, "cells": []}) == []


def test_docs_hold_rendered_notebooks():
    assert RENDERED, "docs/ holds no rendered notebook"


@pytest.mark.parametrize("path", RENDERED, ids=[p.relative_to(DOCS).as_posix() for p in RENDERED])
def test_every_rendered_notebook_is_complete(path):
    assert problems(json.loads(path.read_text())) == [], path.relative_to(DOCS).as_posix()
    html = path.with_suffix(".html")
    assert html.is_file(), f"{html.name}: no HTML beside the notebook"


@pytest.mark.parametrize("study", ["study-gpu", "study-cpu"])
def test_the_readme_shows_each_studys_findings_table_as_its_tables_give_it(study):
    """Every row of docs/<study>/findings.md (written from the evaluation's tables by the ship
    scripts) is in the README word for word: no number there was typed by hand or left stale."""
    readme = (DOCS.parent / "README.md").read_text(encoding="utf-8")
    rows = [line for line in (DOCS / study / "findings.md").read_text(encoding="utf-8").splitlines()
            if line.startswith("| ") and not line.startswith("|---")]
    assert len(rows) >= 6, "findings.md holds no table"
    missing = [row for row in rows if row not in readme]
    assert not missing, f"README.md lacks {len(missing)} row(s) of docs/{study}/findings.md, e.g. {missing[0]}"
