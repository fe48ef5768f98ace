"""The GitHub Actions workflow that tests and publishes the book: valid, and
running the same commands as the README and CI."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"
# Installed beside this Python (the virtual environment), or anywhere on PATH.
ACTIONLINT = shutil.which(
    "actionlint", path=os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]))


def _runs(job):
    return [step["run"].strip() for step in job["steps"] if "run" in step]


def _uses(job):
    return [step["uses"].split("@")[0] for step in job["steps"] if "uses" in step]


@pytest.mark.skipif(ACTIONLINT is None,
                    reason="needs actionlint (requirements.txt installs it)")
def test_actionlint_accepts_the_workflow():
    result = subprocess.run([ACTIONLINT, "-no-color", str(WORKFLOW)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_workflow_runs_the_readmes_and_cis_commands():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    build = workflow["jobs"]["build"]
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [" ".join(line.split()[0:2]) for line in ci.splitlines()
                if line.startswith("make ")]
    assert _runs(build) == ["make test", "make book", "make check-book"]
    # CI installs first, then builds the book in the background beside the tests.
    assert commands == ["make install", "make book", "make test", "make check-book"]
    assert "make book > _build/book.log 2>&1 &" in ci.splitlines()
    for command in ("make book", "make test", "make check-book"):
        assert command in readme


def test_main_publishes_the_built_book_to_pages():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow[True]  # YAML reads the key `on` as True
    assert "pull_request" in triggers and triggers["push"]["branches"] == ["main"]
    build, deploy = workflow["jobs"]["build"], workflow["jobs"]["deploy"]
    upload = next(s for s in build["steps"] if s.get("uses", "").startswith(
        "actions/upload-pages-artifact@"))
    assert upload["with"]["path"] == "_build/html"
    assert "refs/heads/main" in upload["if"]
    assert _uses(deploy) == ["actions/deploy-pages"] and deploy["needs"] == "build"
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    setup = next(s for s in build["steps"] if s.get("uses", "").startswith(
        "actions/setup-python@"))
    assert setup["with"]["cache"] == "pip"
