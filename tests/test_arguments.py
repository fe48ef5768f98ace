"""Every public function refuses an argument out of its range in one line that
names the argument, its value and the range, before it does any work."""

import os
import pathlib

import numpy as np
import pytest

from conftest import TINY
from convmixer_lib import ablations, checks, choices
from convmixer_lib.data import make_augmenter, make_dataset, split_validation
from convmixer_lib.model import build_convmixer
from convmixer_lib.plots import plot_images
from convmixer_lib.randaugment import rand_augment
from convmixer_lib.recipes import plot_smoothed_target, train_recipe
from convmixer_lib.training import (
    learning_rate_schedule,
    most_confident_mistakes,
    reestimate_batchnorm,
)

IMAGES = np.zeros((4, 32, 32, 3), "uint8")
LABELS = np.zeros(4, "int64")

CASES = {
    "negative peak rate": (lambda: learning_rate_schedule(-1, "constant", 10),
                           "`learning_rate` must be a finite number > 0, got -1."),
    "NaN peak rate": (lambda: learning_rate_schedule(float("nan"), "cosine", 10),
                      "`learning_rate` must be a finite number > 0, got nan."),
    "fractional steps": (lambda: learning_rate_schedule(1e-3, "cosine", 2.5),
                         "`total_steps` must be an integer >= 0, got 2.5."),
    "fractional warm-up steps": (lambda: learning_rate_schedule(1e-3, "cosine", 10, 1.5),
                                 "`warmup_steps` must be an integer >= 0, got 1.5."),
    "no images to re-estimate on": (
        lambda: reestimate_batchnorm(build_convmixer(**TINY), [], images=0),
        "`images` must be a positive integer, got 0."),
    "negative seed": (lambda: make_dataset(IMAGES, LABELS, training=True, seed=-1),
                      "`seed` must be an integer from 0 to 4294967295, got -1."),
    "seed beyond 2**32": (lambda: make_dataset(IMAGES, LABELS, training=True, seed=2**70),
                          f"`seed` must be an integer from 0 to 4294967295, got {2**70}."),
    "augmenter's seed": (lambda: make_augmenter(seed=2**32),
                         "`seed` must be an integer from 0 to 4294967295, got 4294967296."),
    "negative labels": (
        lambda: make_dataset(IMAGES, np.array([0, 1, 2, -1])),
        "`labels` must be whole numbers >= 0, got int64 values from -1 to 2."),
    "labels as fractions": (
        lambda: make_dataset(IMAGES, np.array([0, 0.5, 1, 1])),
        "`labels` must be whole numbers >= 0, got float64 values from 0.0 to 1.0."),
    "labels beyond the model's classes": (
        lambda: train_recipe("unused", ((IMAGES, np.array([0, 1, 2, 10])), (IMAGES, LABELS),
                                        (IMAGES, LABELS)), "fast", model=TINY),
        "`labels` must be class indices from 0 to 9, got int64 values from 0 to 10."),
    "validation size as a flag": (
        lambda: split_validation(IMAGES, LABELS, True),
        "`validation_size` must be between 1 and 3 (the number of training images less one), "
        "got True."),
    "validation size as a fraction": (
        lambda: split_validation(IMAGES, LABELS, 2.5),
        "`validation_size` must be between 1 and 3 (the number of training images less one), "
        "got 2.5."),
    "negative count of mistakes": (
        lambda: most_confident_mistakes([0, 1], [1, 0], [0.9, 0.8], count=-1),
        "`count` must be an integer >= 0, got -1."),
    "smoothing above 1": (lambda: plot_smoothed_target(0, 2),
                          "`smoothing` must be a finite number in [0, 1), got 2."),
    "label beyond the classes": (lambda: plot_smoothed_target(10, 0.1),
                                 "`label` must be an integer from 0 to 9, got 10."),
    "negative operations": (lambda: rand_augment(IMAGES[0], 9, num_ops=-1),
                            "`num_ops` must be an integer >= 0, got -1."),
    "batch of 0": (lambda: ablations.budget_steps("short", batch_size=0),
                   "`batch_size` must be a positive integer, got 0."),
    "unknown budget": (lambda: ablations.budget_images("bogus"),
                       "`budget` must be one of ('short', 'full'), got 'bogus'."),
    "no columns": (lambda: plot_images(IMAGES, columns=0),
                   "`columns` must be a positive integer, got 0."),
    "recipe with a negative rate": (
        lambda: choices.recipe_settings("fast", learning_rate=-1),
        "`learning_rate` must be a finite number > 0, got -1."),
    "recipe with no epochs": (lambda: choices.recipe_settings("fast", epochs=0),
                              "`epochs` must be a positive integer, got 0."),
    "recipe with an unknown schedule": (
        lambda: choices.recipe_settings("example", schedule="linear"),
        "`schedule` must be one of ('constant', 'cosine'), got 'linear'."),
    "one path for a list": (lambda: checks.check_list("paths", pathlib.Path("a.png")),
                            "`paths` must be a list, got the single path PosixPath('a.png'); "
                            "pass [PosixPath('a.png')]."),
    "an empty list": (lambda: ablations.run_sweep("unused", None, only=[]),
                      "`only` must hold at least one item, got none."),
}


@pytest.mark.parametrize("case", CASES)
def test_an_argument_out_of_range_is_refused_in_one_line(case):
    call, message = CASES[case]
    with pytest.raises(ValueError) as error:
        call()
    assert str(error.value) == message


def test_a_list_given_as_a_generator_is_read_once():
    assert checks.check_list("only", (name for name in ["vit", "resnet"])) == ["vit", "resnet"]
    assert checks.check_list("only", None) is None


def test_a_missing_cifar10_path_says_where_it_came_from(monkeypatch, tmp_path):
    monkeypatch.setenv("CIFAR10_PATH", str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match=r"absent' \(from \$CIFAR10_PATH\)"):
        checks.check_cifar10_path(None)
    with pytest.raises(FileNotFoundError) as error:
        checks.check_cifar10_path(tmp_path / "given")
    assert "CIFAR10_PATH" not in str(error.value)
    assert checks.check_cifar10_path(os.fspath(tmp_path)) == os.fspath(tmp_path)
