"""Every notebook: its Colab cell (in Colab it clones the book and installs the
pinned versions), and its closing exercises."""

import json
import os
import pathlib
import subprocess
import sys
import types

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _first_code_cell(path):
    cells = json.loads(path.read_text())["cells"]
    return next(c for c in cells if c["cell_type"] == "code")


def _colab_cell(path):
    return "".join(_first_code_cell(path)["source"])


def _run(source, monkeypatch, in_colab):
    calls, directories = [], []
    monkeypatch.setattr(subprocess, "run", lambda args, **kwargs: calls.append(args))
    monkeypatch.setattr(os, "chdir", directories.append)
    if in_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    namespace = {}
    exec(compile(source, "colab cell", "exec"), namespace)
    return calls, directories, namespace


def test_every_notebook_starts_with_the_same_colab_cell():
    assert len(NOTEBOOKS) == 10  # eight chapters and two appendices
    cells = {_colab_cell(path) for path in NOTEBOOKS}
    assert len(cells) == 1 and "google.colab" in cells.pop()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_colab_cell_is_left_out_of_the_rendered_book(path):
    assert "remove-cell" in _first_code_cell(path)["metadata"].get("tags", [])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_colab_cell_does_nothing_outside_colab(path, monkeypatch):
    calls, directories, _ = _run(_colab_cell(path), monkeypatch, in_colab=False)
    assert calls == [] and directories == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_colab_cell_clones_the_book_and_installs_the_pinned_versions(path, monkeypatch):
    calls, directories, namespace = _run(_colab_cell(path), monkeypatch, in_colab=True)
    clone, install = calls
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    checkout = namespace["CHECKOUT"]
    assert namespace["REPOSITORY"] == config["repository"]["url"]
    assert clone[:2] == ["git", "clone"]
    assert clone[-2:] == [config["repository"]["url"], checkout]
    assert clone[clone.index("--branch") + 1] == config["repository"]["branch"]

    assert install[:4] == [sys.executable, "-m", "pip", "install"]
    assert install[-1] == checkout
    pins = dict(
        line.split("==")
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    for package in ("tensorflow", "keras"):
        assert f"{package}=={pins[package]}" in install
    # The notebooks then find ../results/ as they do in a local checkout.
    assert directories == [os.path.join(checkout, "notebooks")]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_chapter_ends_with_exercises(path):
    cells = json.loads(path.read_text())["cells"]
    headings = ["".join(c["source"]).splitlines()[0] for c in cells
                if c["cell_type"] == "markdown"]
    assert headings[-1] == "## Exercises"
    exercises = "".join(next(c for c in reversed(cells) if c["cell_type"] == "markdown")["source"])
    assert 3 <= sum(line[:3] in {f"{n}. " for n in range(1, 7)}
                    for line in exercises.splitlines()) <= 6
    solutions = [c for c in cells if "hide-cell" in c["metadata"].get("tags", [])]
    assert solutions and all(c["cell_type"] == "code" for c in solutions)
