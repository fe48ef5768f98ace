"""The chapters' helpers, and the rule that the chapters' text quotes computed
numbers (glue) instead of typing them."""

import glob
import json
import pathlib
import re

import pytest

from convmixer_lib import plots
from convmixer_lib.notebook import glue, percent, points, show_source

ROOT = pathlib.Path(__file__).resolve().parents[1]
# A result typed into the text: a percentage with decimals, or a decimal number
# of percentage points, times, seconds, minutes or hours, or a whole number of
# seconds, minutes or hours.
TYPED_RESULT = re.compile(
    r"(?<![\w`.])(?:\d+\.\d+\s?(?:%|points?\b|times\b|×(?!\s?\d)|s\b|seconds?\b|minutes?\b"
    r"|hours?\b)|\d[\d,]*\s?(?:s|seconds?|minutes?|hours?)\b)")
GLUE_ROLE = re.compile(r"\{glue(?::\w+)?\}`[^`]*`")


def typed_results(markdown):
    """The typed results in `markdown`, outside glue roles and code."""
    markdown = re.sub(r"```.*?```", "", markdown, flags=re.S)
    markdown = re.sub(r"`[^`]*`", "", GLUE_ROLE.sub("", markdown))
    return TYPED_RESULT.findall(markdown)


def test_show_source_drops_the_docstring_but_keeps_the_signature():
    code = show_source(plots.plot_history).data
    assert code.startswith("def plot_history(history):")
    docstring = plots.plot_history.__doc__
    assert not any(line.strip() in code for line in docstring.splitlines() if line.strip())
    assert "plot_history" in code and "tight_layout" in code


def test_numbers_are_written_as_the_book_writes_them():
    assert percent(0.86271) == "86.27%"
    assert percent(0.5, digits=0) == "50%"
    assert points(-0.0123) == "-1.23 points"
    with pytest.raises(TypeError, match="glue 'accuracy': `text` must be a str, got float"):
        glue("accuracy", 0.8627)


def test_the_typed_result_check_finds_typed_results_and_only_those():
    text = ("It reaches 86.27% after 436 s, 2.2 times faster, 1.5 points up, in 31\n"
            "minutes. A 5×5 kernel on 32×32 images, 10 classes, {glue:text}`fast_test` "
            "and `0.5 s` in code.")
    assert typed_results(text) == ["86.27%", "436 s", "2.2 times", "1.5 points", "31\nminutes"]


@pytest.mark.parametrize("path", sorted(glob.glob(str(ROOT / "notebooks" / "0*.ipynb"))),
                         ids=lambda p: pathlib.Path(p).stem)
def test_no_chapter_types_a_result(path):
    cells = json.loads(pathlib.Path(path).read_text())["cells"]
    markdown = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    assert typed_results(markdown) == []
