"""Helpers for the chapters themselves: code shown from the library, and numbers
computed in a chapter pasted into its text.

`glue` names a value for MyST-NB (`{glue:text}`name`` in the text), so a
sentence quotes what the code computed, never a number typed by hand.
"""

import ast
import inspect
import textwrap


def show_source(function):
    """The source of `function` without its docstring, highlighted for a notebook."""
    from IPython.display import Code

    source = textwrap.dedent(inspect.getsource(function))
    lines = source.splitlines()
    body = ast.parse(source).body[0].body
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        docstring = body[0]
        lines = lines[: docstring.lineno - 1] + lines[docstring.end_lineno :]
    return Code("\n".join(lines), language="python")


def percent(fraction, digits=2):
    """A fraction as the book writes a percentage: 0.86271 -> '86.27%'."""
    return f"{100 * fraction:.{digits}f}%"


def points(difference, digits=2):
    """A difference of two fractions in percentage points: 0.0123 -> '1.23 points'."""
    return f"{100 * difference:.{digits}f} points"


def compare(difference, more, less, digits=2):
    """A signed difference of two fractions in words: (0.0123, "above", "below")
    -> '1.23 points above', (-0.0123, ...) -> '1.23 points below', so the
    direction is computed with the number."""
    return f"{points(abs(difference), digits)} {more if difference >= 0 else less}"


def check_claim(holds, claim):
    """Stop the chapter if its text says `claim` and the computation says otherwise.

    For statements in words that a number glued beside them does not carry
    ("5×5 is the best of the four", "below the baseline"): a changed record
    that makes one false fails the build, naming the sentence to rewrite.

    Raises:
        AssertionError: if `holds` is false.
    """
    if not holds:
        raise AssertionError(f"The text says {claim!r}, which the records no longer "
                             "support: rewrite that sentence.")


def glue(name, text):
    """Name `text` (a str, e.g. from `percent`) for the chapter's text.

    In the built book, `{glue:text}`name`` in a markdown cell shows `text`.
    Nothing is displayed in the notebook, and outside the book's build
    (Colab, where MyST-NB is not installed) nothing happens.

    Raises:
        TypeError: if `text` is not a str (format numbers first, so the book
            and the notebook show the same digits).
    """
    if not isinstance(text, str):
        raise TypeError(f"glue {name!r}: `text` must be a str, got {type(text).__name__}.")
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        return
    myst_glue(name, text, display=False)
