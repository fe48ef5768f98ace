"""Show progress bars in executed notebooks as Jupyter shows them: final state only.

Keras redraws its progress bar with carriage returns and backspaces. Jupyter
displays only the last state of each line, but the saved notebook keeps every
redraw, which the HTML book would print one under another. This merges each
cell's consecutive stream outputs and keeps, on every line, the text after the
last carriage return. Usage: python book/collapse_progress.py NOTEBOOK...
"""

import sys

import nbformat


def collapse(text):
    lines = text.replace("\b", "").split("\n")
    return "\n".join(line.rsplit("\r", 1)[-1] for line in lines)


def collapse_notebook(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        merged = []
        for output in cell.get("outputs", []):
            previous = merged[-1] if merged else None
            if (output.output_type == "stream" and previous is not None
                    and previous.output_type == "stream" and previous.name == output.name):
                previous.text += output.text
            else:
                merged.append(output)
        for output in merged:
            if output.output_type == "stream":
                output.text = collapse(output.text)
        if "outputs" in cell:
            cell.outputs = merged
    nbformat.write(notebook, path)


if __name__ == "__main__":
    for path in sys.argv[1:]:
        collapse_notebook(path)
