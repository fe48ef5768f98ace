"""Argument checks shared by the library, its command line and its benchmarks.

Each check returns the value it was given or raises `ValueError` with one line
that names the argument, its value and the range expected; the `*_argument`
functions are the same checks as `argparse` types, so that the command line
refuses an option before any work starts.
"""

import argparse
import math
import numbers
import os

from .choices import SCHEDULES, rand_augment_magnitude

# Seeds of Keras, NumPy and TensorFlow: integers from 0 below 2**32.
SEED_LIMIT = 2**32


def check_positive_int(name, value):
    """Return `value` if it is an int >= 1 (not a bool), else raise ValueError
    naming `name`, the value and what was expected."""
    return check_int(name, value, 1)


def check_int(name, value, minimum, limit=None):
    """Return `value` if it is an int (not a bool) with `minimum` <= value (<
    `limit`, if given), else raise ValueError naming `name`, the value and the range."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum
            or (limit is not None and value >= limit)):
        raise ValueError(f"`{name}` must be {_integers(minimum, limit)}, got {value!r}.")
    return value


def _integers(minimum, limit):
    """The range of integers in words: 'a positive integer', 'an integer >= 0'."""
    if limit is not None:
        return f"an integer from {minimum} to {limit - 1}"
    return "a positive integer" if minimum == 1 else f"an integer >= {minimum}"


def _interval(low, high, low_open, high_open):
    """The range in words: '> 0', '>= 0', 'in [0, 1)'."""
    if high is None:
        return f"{'>' if low_open else '>='} {low:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def check_number(name, value, low, high=None, low_open=False, high_open=False):
    """Return `value` if it is a finite real number (not a bool) between `low`
    and `high` (None: no upper bound), each end excluded if `*_open`; else raise
    ValueError naming `name`, the value and the range."""
    inside = (isinstance(value, numbers.Real) and not isinstance(value, bool)
              and math.isfinite(value)
              and (value > low if low_open else value >= low)
              and (high is None or (value < high if high_open else value <= high)))
    if not inside:
        raise ValueError(f"`{name}` must be a finite number "
                         f"{_interval(low, high, low_open, high_open)}, got {value!r}.")
    return value


def check_list(name, value):
    """`value`, an iterable of items (names, paths), as a list; None stays
    None. Raise ValueError naming `name` if it is one string or path where a
    list is expected (a string would be read as its characters), or empty."""
    if value is None:
        return None
    if isinstance(value, (str, bytes, os.PathLike)):
        raise ValueError(f"`{name}` must be a list, got the single "
                         f"{'path' if isinstance(value, os.PathLike) else 'string'} "
                         f"{value!r}; pass [{value!r}].")
    items = list(value)
    if not items:
        raise ValueError(f"`{name}` must hold at least one item, got none.")
    return items


def check_patch_size(patch_size, image_size):
    """Return `patch_size` if it is a positive int that divides `image_size`
    (the side of square images, in pixels), else raise ValueError naming both
    and the sizes allowed."""
    check_positive_int("patch_size", patch_size)
    if image_size % patch_size:
        divisors = [d for d in range(1, image_size + 1) if image_size % d == 0]
        raise ValueError(f"`patch_size` must divide `image_size`={image_size}; got "
                         f"patch_size={patch_size}. Allowed values: {divisors}.")
    return patch_size


def check_bn_images(bn_images, ema):
    """Return `bn_images` if it is an int >= 0 that asks for a BatchNorm
    re-estimate (> 0) only where there are averaged weights (`ema` > 0), else
    raise ValueError naming both."""
    check_int("bn_images", bn_images, 0)
    if bn_images and not ema:
        raise ValueError(
            f"`bn_images`={bn_images} re-estimates the averaged weights' BatchNorm "
            f"statistics and needs `ema` > 0, got ema={ema:g}; set `bn_images` to 0 "
            "as well to train without averaged weights.")
    return bn_images


def check_warmup(warmup, schedule):
    """Return `warmup` if it is a share of the steps in [0, 1) that `schedule`
    can honour: a warm-up (> 0) needs the "cosine" schedule. Else raise
    ValueError naming both."""
    check_number("warmup", warmup, 0, 1, high_open=True)
    if warmup and schedule != "cosine":
        raise ValueError(f"`warmup`={warmup:g} needs `schedule`='cosine', got {schedule!r}; "
                         "set the warm-up to 0 for another schedule.")
    return warmup


def check_cifar10_path(path=None):
    """The CIFAR-10 copy to read: `path`, else the environment variable
    `CIFAR10_PATH`, else None (Keras' download).

    Raises:
        FileNotFoundError: naming the path, if one is given and does not exist.
    """
    source = "" if path is not None else " (from $CIFAR10_PATH)"
    path = (os.environ.get("CIFAR10_PATH") or None) if path is None else os.fspath(path)
    if path is not None and not os.path.exists(path):
        raise FileNotFoundError(
            f"CIFAR-10 not found at {path!r}{source}: expected the archive "
            "cifar-10-python.tar.gz or its extracted cifar-10-batches-py/ folder."
        )
    return path


def check_directory(name, path):
    """Return `path` if it can be a directory to write runs into (one that
    exists, or none yet), else raise ValueError naming `name` and the path."""
    if path is None or not os.fspath(path) or (os.path.exists(path)
                                               and not os.path.isdir(path)):
        got = ("None" if path is None else
               f"{'the file' if os.fspath(path) else 'an empty path'} {os.fspath(path)!r}")
        raise ValueError(f"`{name}` must be a directory (new or written by a run), got {got}.")
    return path


def check_image_path(path):
    """Return `path` if it names an existing file, else raise one line naming it.

    Raises:
        IsADirectoryError: if `path` is a directory.
        FileNotFoundError: if `path` does not exist.
        TypeError: if `path` is not a path (a str or `os.PathLike`).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"expected the path of an image file, got {path!r}.")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{os.fspath(path)!r} is a directory, expected an image file.")
    if not os.path.exists(path):
        raise FileNotFoundError(f"image {os.fspath(path)!r} not found.")
    return path


def check_recipe(settings):
    """Return a recipe's `settings` (a dict with the keys of `choices.RECIPES`'
    recipes) if every value is in its range and they agree with each other,
    else raise ValueError naming the first one that is not."""
    check_positive_int("epochs", settings["epochs"])
    check_positive_int("batch_size", settings["batch_size"])
    check_number("learning_rate", settings["learning_rate"], 0, low_open=True)
    check_number("weight_decay", settings["weight_decay"], 0)
    if settings["schedule"] not in SCHEDULES:
        raise ValueError(f"`schedule` must be one of {SCHEDULES}, got {settings['schedule']!r}.")
    check_warmup(settings["warmup"], settings["schedule"])
    check_number("label_smoothing", settings["label_smoothing"], 0, 1, high_open=True)
    check_number("ema", settings["ema"], 0, 1, high_open=True)
    check_bn_images(settings["bn_images"], settings["ema"])
    rand_augment_magnitude(settings["augment"])
    return settings


def number_argument(low, high=None, low_open=False, high_open=False):
    """`argparse` type: a number in the range `check_number` takes."""
    def parse(text):
        try:
            return check_number("value", float(text), low, high, low_open, high_open)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a finite number {_interval(low, high, low_open, high_open)}, "
                f"got {text}") from None
    return parse


def int_argument(minimum, limit=None):
    """`argparse` type: an integer in the range `check_int` takes."""
    def parse(text):
        try:
            return check_int("value", int(text), minimum, limit)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {_integers(minimum, limit)}, got {text}") from None
    return parse


positive_int_argument = int_argument(1)


def patch_size_argument(text):
    """argparse type of a --patch-size option: a side that divides CIFAR-10's 32 pixels."""
    try:
        return check_patch_size(int(text), 32)
    except ValueError as error:
        message = str(error) if text.strip().lstrip("-").isdigit() else (
            f"expected a divisor of 32, got {text}")
        raise argparse.ArgumentTypeError(message) from None


def augmentation_argument(text):
    """argparse type of an --augment option: a name `make_dataset` accepts."""
    try:
        rand_augment_magnitude(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text
