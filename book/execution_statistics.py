"""Write the book's "Execution statistics" page from the notebooks papermill ran.

papermill records in every notebook it executes when it ran, for how long and
whether it failed (`metadata.papermill`). This script turns those records,
and the versions and machine of the build, into a page of the book.
Usage: python book/execution_statistics.py NOTEBOOK... > book/execution.md
"""

import sys
from importlib.metadata import version

import nbformat

from convmixer_lib.rundir import environment

PACKAGES = ("tensorflow", "keras", "numpy", "matplotlib", "papermill", "jupyter-book")


def chapter_title(notebook):
    """The first heading of the notebook's first markdown cell."""
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return "(untitled)"


def statistics_page(paths):
    """The page's markdown: one table row per notebook, then the build's machine."""
    rows, total = [], 0.0
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        run = notebook.metadata.get("papermill", {})
        if "duration" not in run:
            raise ValueError(f"{path!r} holds no papermill record: run it with papermill first.")
        status = "failed" if run.get("exception") else "ran to the end"
        total += run["duration"]
        rows.append(f"| {chapter_title(notebook)} | {run['start_time'][:19].replace('T', ' ')} "
                    f"| {run['duration']:.0f} | {status} |")
    machine = environment()
    versions = ", ".join(f"{name} {version(name)}" for name in PACKAGES)
    return "\n".join([
        "(execution)=",
        "# Execution statistics",
        "",
        "How the chapters ran when these pages were built: each notebook executed",
        "by papermill, one after another, on the machine below. Chapters that show",
        "a committed run read its record; only chapter 3 trains, briefly.",
        "",
        "| chapter | started (UTC) | seconds | status |",
        "|---|---|---|---|",
        *rows,
        f"| all chapters | | {total:.0f} | |",
        "",
        f"Machine: {machine['processor']} ({machine['vector_extensions']}), "
        f"{machine['cpu_count']} cores, "
        f"{'GPUs: ' + ', '.join(machine['gpus']) if machine['gpus'] else 'no GPU'}.",
        f"Python {machine['python']}, {versions}.",
        "",
    ])


if __name__ == "__main__":
    try:
        sys.stdout.write(statistics_page(sys.argv[1:]))
    except ValueError as error:
        sys.exit(f"error: {error}")
