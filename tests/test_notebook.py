"""The chapters' helpers, and the rule that the chapters' text quotes computed
numbers (glue) instead of typing them."""

import glob
import json
import pathlib
import re

import pytest

from convmixer_lib import plots
from convmixer_lib.notebook import check_claim, compare, glue, percent, points, show_source

ROOT = pathlib.Path(__file__).resolve().parents[1]
# A result typed into the text: a percentage, a ratio, a duration, a count of
# parameters, or a difference in percentage points, in digits; a ratio in words
# ("ten times"); a count of runs in words from ten up ("fifteen runs": "two
# runs" of a comparison are its design, not its result).
SMALL_NUMBER_WORDS = "two|three|four|five|six|seven|eight|nine"
LARGE_NUMBER_WORDS = ("ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen"
                      "|eighteen|nineteen|twenty")
TYPED_RESULT = re.compile(
    # decimals with a unit: 86.27%, 1.5 points, 2.2 times, 2.23×, 0.5 s
    r"(?<![\w`.])(?:\d+\.\d+\s?(?:%|points?\b|times\b|×(?!\s?\d)|s\b|seconds?\b|minutes?\b"
    r"|hours?\b)"
    # whole durations, percentages, ratios and parameter counts: 436 s, 10%,
    # 4×, 10 times, 602,890 parameters
    r"|\d[\d,]*\s?(?:s|seconds?|minutes?|hours?|times|parameters)\b|\d[\d,]*\s?(?:%|×(?!\s?\d)))"
    # ratios and counts in words: ten times, fifteen runs
    rf"|\b(?:{SMALL_NUMBER_WORDS}|{LARGE_NUMBER_WORDS})\stimes\b"
    rf"|\b(?:{LARGE_NUMBER_WORDS})\sruns\b", re.I)
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
    assert compare(0.0123, "above", "below") == "1.23 points above"
    assert compare(-0.0123, "above", "below") == "1.23 points below"
    check_claim(0.86 > 0.84, "above")
    with pytest.raises(AssertionError, match="The text says 'above', which the records"):
        check_claim(0.84 > 0.86, "above")
    with pytest.raises(TypeError, match="glue 'accuracy': `text` must be a str, got float"):
        glue("accuracy", 0.8627)


def test_the_typed_result_check_finds_typed_results_and_only_those():
    text = ("It reaches 86.27% after 436 s, 2.2 times faster, 1.5 points up, in 31\n"
            "minutes. A 5×5 kernel on 32×32 images, 10 classes, {glue:text}`fast_test` "
            "and `0.5 s` in code. Chance is 10%, 4× faster, ten times the rate, 10 times\n"
            "less, fifteen runs, 602,890 parameters, ConvMixer-256/8, 3 epochs, two runs.")
    assert typed_results(text) == ["86.27%", "436 s", "2.2 times", "1.5 points", "31\nminutes",
                                   "10%", "4×", "ten times", "10 times", "fifteen runs",
                                   "602,890 parameters"]


@pytest.mark.parametrize(
    "path", sorted(glob.glob(str(ROOT / "notebooks" / "*.ipynb"))) + [str(ROOT / "book" / "intro.md")],
    ids=lambda p: pathlib.Path(p).stem)
def test_no_chapter_types_a_result(path):
    path = pathlib.Path(path)
    if path.suffix == ".md":
        markdown = path.read_text()
    else:
        cells = json.loads(path.read_text())["cells"]
        markdown = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    assert typed_results(markdown) == []
