"""The Colab cell of every notebook: it detects Colab and installs the pinned versions."""

import json
import pathlib
import subprocess
import sys
import types

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _colab_cell(path):
    cells = json.loads(path.read_text())["cells"]
    return "".join(next(c for c in cells if c["cell_type"] == "code")["source"])


def _run(source, monkeypatch, in_colab):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda args, **kwargs: calls.append(args))
    if in_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    namespace = {}
    exec(compile(source, "colab cell", "exec"), namespace)
    return calls, namespace


def test_every_notebook_starts_with_the_same_colab_cell():
    assert len(NOTEBOOKS) == 4
    cells = {_colab_cell(path) for path in NOTEBOOKS}
    assert len(cells) == 1 and "google.colab" in cells.pop()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_colab_cell_does_nothing_outside_colab(path, monkeypatch):
    calls, _ = _run(_colab_cell(path), monkeypatch, in_colab=False)
    assert calls == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_colab_cell_installs_the_pinned_versions_from_the_repository(path, monkeypatch):
    calls, namespace = _run(_colab_cell(path), monkeypatch, in_colab=True)
    (args,) = calls
    assert args[:4] == [sys.executable, "-m", "pip", "install"]
    pins = dict(
        line.split("==")
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    for package in ("tensorflow", "keras"):
        assert f"{package}=={pins[package]}" in args
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert namespace["REPOSITORY"] == config["repository"]["url"]
    branch = config["repository"]["branch"]
    assert f"convmixer-lib @ git+{config['repository']['url']}@{branch}" in args
