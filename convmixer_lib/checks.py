"""Argument checks shared by the library, its command line and its benchmarks."""

import argparse


def check_positive_int(name, value):
    """Return `value` if it is an int >= 1 (not a bool), else raise ValueError
    naming `name`, the value and what was expected."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return value


def positive_int_argument(text):
    """`argparse` type: a command-line option that must be a positive integer."""
    try:
        return check_positive_int("value", int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}") from None
