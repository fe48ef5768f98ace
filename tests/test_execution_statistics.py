"""The book's "Execution statistics" page is written from papermill's records."""

import pathlib
import subprocess
import sys

import nbformat

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "book" / "execution_statistics.py"


def _executed(path, title, seconds, exception=False):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_markdown_cell(f"(label)=\n# {title}\n\nText.")]
    notebook.metadata["papermill"] = {"start_time": "2026-12-01T22:00:05.123456",
                                      "duration": seconds, "exception": exception}
    nbformat.write(notebook, path)
    return str(path)


def _page(*paths):
    return subprocess.run([sys.executable, str(SCRIPT), *paths], capture_output=True,
                          text=True)


def test_each_chapter_gets_its_time_and_status_and_the_build_its_machine(tmp_path):
    result = _page(_executed(tmp_path / "a.ipynb", "1. Data", 12.4),
                   _executed(tmp_path / "b.ipynb", "2. Model", 30.0, exception=True))
    assert result.returncode == 0, result.stderr
    page = result.stdout
    assert "| 1. Data | 2026-12-01 22:00:05 | 12 | ran to the end |" in page
    assert "| 2. Model | 2026-12-01 22:00:05 | 30 | failed |" in page
    assert "| all chapters | | 42 | |" in page
    assert "keras 3." in page and "Python 3." in page and "cores" in page


def test_a_notebook_papermill_did_not_run_is_refused(tmp_path):
    path = tmp_path / "plain.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), path)
    result = _page(str(path))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (  # after TensorFlow's start-up log
        f"error: {str(path)!r} holds no papermill record: run it with papermill first.")
