"""Training recipes: the example's, and faster ones built from Keras' own pieces.

A recipe is a dict of `run_experiment` settings plus the batch size and the
augmentation of `make_dataset`; `choices.RECIPES` holds them by name.
`train_recipe` (and `python -m convmixer_lib train --recipe NAME`) trains one;
any setting given beside it replaces that one.
"""

import keras
import matplotlib.pyplot as plt
import numpy as np

from .architectures import build_model
from .checks import SEED_LIMIT, check_int, check_number
from .choices import CLASS_NAMES, DEFAULT_SEED, recipe_settings
from .data import check_images, make_dataset
from .fast import accelerate
from .training import distribution, run_experiment

# Changes to the 3-epoch recipe tried on validation, by the name of their run
# directory `fast3-NAME`: twice the optimizer steps in the same epochs, no
# augmentation for a run too short to learn its images by heart, and the two
# together (each alone had led the recipe's own run on validation).
FAST3_CHANGES = {
    "batch-64": {"batch_size": 64},
    "without-augmentation": {"augment": "none"},
    "batch-64-without-augmentation": {"batch_size": 64, "augment": "none"},
    "peak-rate-0.02": {"learning_rate": 0.02},  # twice the peak, for a run that ends sooner
}
# The 3-epoch recipe trained again with these seeds, each into `fast3-seed<N>`:
# the noise of one run, beside which the changes above are chosen.
FAST3_SEEDS = (1, 2)
# The changes whose run scored above every seed of the recipe on validation,
# trained again with these seeds into `fast3-NAME-seed<N>`: their leads over one
# another were within that noise. (Twice the peak rate scored below every seed.)
FAST3_RETRIED = ("batch-64", "without-augmentation", "batch-64-without-augmentation")
FAST3_RETRIED_SEEDS = (1,)

# Single changes to the long recipe tried on validation, by the name of their
# run directory `long-NAME`: RandAugment then flips alone, without the shifts
# of up to 4 pixels, as locuslab trains.
LONG_CHANGES = {
    "without-shifts": {"augment": "randaugment-m12-flip"},
    # and with 4 times the optimizer steps: the fast recipe's batch and peak rate
    "without-shifts-batch-128": {"augment": "randaugment-m12-flip", "batch_size": 128,
                                 "learning_rate": 0.01},
}
# The changes above trained again with these seeds, into `long-NAME-seed<N>`:
# their leads over one another on validation were smaller than the seed noise
# measured after 3, 4 and 10 epochs. (They are compared with each other; the
# long recipe itself has one run.)
LONG_CHANGE_SEEDS = (1,)

# The fast recipe's leave-one-out runs: the change that removes each
# ingredient, by the name of its run directory `fast-without-NAME`.
LEAVE_ONE_OUT = {
    "warmup": {"warmup": 0.0},
    "peak-rate": {"learning_rate": 1e-3},  # the example's rate, with the warm-up
    "label-smoothing": {"label_smoothing": 0.0},
    "averaged-weights": {"ema": 0.0},
    "augmentation": {"augment": "none"},
}


def recipe_run_name(recipe, change=None, seed=DEFAULT_SEED):
    """The name (a str) of a run directory of `results/recipes/`: `recipe`'s
    run with the change named `change` and `seed`.

    `change` is a key of `FAST3_CHANGES` or `LONG_CHANGES`, "without-" and a key
    of `LEAVE_ONE_OUT`, or None for the recipe unchanged; a seed other than
    `DEFAULT_SEED` ends the name: `recipe_run_name("fast3", "batch-64", 1)` is
    "fast3-batch-64-seed1".
    """
    name = recipe if change is None else f"{recipe}-{change}"
    return name if seed == DEFAULT_SEED else f"{name}-seed{seed}"


def recipe_runs():
    """The runs of `results/recipes/` that `make recipe-runs` trains, in order:
    the fast recipe and its leave-one-out runs; the 3-epoch recipe, its changes,
    its other seeds and the retried changes' other seeds; the long recipe, its
    changes and their other seeds. The long recipe's first run,
    `long-keras-randaugment`, is not listed: the recipe has changed since, and
    that run's two old settings are given by hand (see the README).

    Returns:
        A dict from run directory name to the options of `train_recipe` (and of
        `python -m convmixer_lib train`) that train it: `recipe`, `seed` and the
        recipe settings the run changes.
    """
    first = DEFAULT_SEED
    runs = [("fast", None, {}, first)]
    runs += [("fast", f"without-{name}", change, first) for name, change in LEAVE_ONE_OUT.items()]
    runs += [("fast3", None, {}, first)]
    runs += [("fast3", name, change, first) for name, change in FAST3_CHANGES.items()]
    runs += [("fast3", None, {}, seed) for seed in FAST3_SEEDS]
    runs += [("fast3", name, FAST3_CHANGES[name], seed)
             for name in FAST3_RETRIED for seed in FAST3_RETRIED_SEEDS]
    runs += [("long", None, {}, first)]
    runs += [("long", name, change, first) for name, change in LONG_CHANGES.items()]
    runs += [("long", name, change, seed)
             for name, change in LONG_CHANGES.items() for seed in LONG_CHANGE_SEEDS]
    return {recipe_run_name(recipe, name, seed): {"recipe": recipe, "seed": seed, **change}
            for recipe, name, change, seed in runs}


def train_recipe(run_dir, splits, recipe="example", model=None, seed=DEFAULT_SEED,
                 train_size=None, accelerated=True, devices=None, test=True, details=None,
                 overwrite=False, verbose="auto", **changes):
    """Train ConvMixer on CIFAR-10 with recipe `recipe` into `run_dir`.

    Args:
        run_dir: the run directory (see `run_experiment`: it resumes an
            unfinished run with the same settings, refuses a finished one).
        splits: `(x_train, y_train), (x_val, y_val), (x_test, y_test)`, as
            `load_splits` returns them.
        recipe: a name in `RECIPES`; `changes` replace its settings.
        model: `build_convmixer` arguments (None: ConvMixer-256/8), or any
            `architectures.build_model` configuration.
        seed: seeds Keras, the shuffle and the augmentation.
        train_size: train on the first `train_size` training images (None: all).
        accelerated: train the model as `fast.accelerate` returns it: the same
            model, a faster training step on a CPU (unchanged elsewhere).
        devices: as for `distribution`; on several, BatchNorm is synchronized.
        test: evaluate the kept weights on the test split at the end; False
            leaves the test images unseen (a run that chooses a setting).
        details, overwrite, verbose: as for `run_experiment`.

    Returns:
        The dict written to `metrics.json`, with every recipe setting, the
        recipe's name and the number of images of each split.
    """
    settings = recipe_settings(recipe, **changes)
    check_int("seed", seed, 0, SEED_LIMIT)
    (x_train, y_train), val, test_split = splits
    if train_size is not None:
        check_int("train_size", train_size, 1, len(x_train) + 1)
    keras.utils.set_random_seed(seed)
    x_train, y_train = x_train[:train_size], y_train[:train_size]
    batch_size, augment = settings.pop("batch_size"), settings.pop("augment")
    strategy = distribution(devices)  # one device unless asked, or several GPUs
    with strategy.scope():
        built = build_model(model or {},
                            synchronized_batchnorm=strategy.num_replicas_in_sync > 1)
        for images, labels in ((x_train, y_train), val, *([test_split] if test else [])):
            check_images(images, labels, num_classes=built.output_shape[-1])
        _, metrics = run_experiment(
            accelerate(built) if accelerated else built,
            make_dataset(x_train, y_train, batch_size, training=True, seed=seed,
                         augment=augment),
            make_dataset(*val, batch_size),
            test_split if test else None,
            run_dir,
            **settings,
            seed=seed,
            settings={
                "recipe": recipe,
                "train_images": len(x_train),
                "validation_images": len(val[0]),
                "test_images": len(test_split[0]) if test else 0,
                "batch_size": batch_size,
                "augment": augment,
            },
            details=details,
            overwrite=overwrite,
            verbose=verbose,
        )
    return metrics


def plot_smoothed_target(label, smoothing, class_names=CLASS_NAMES):
    """The cross-entropy's target for an image of class index `label`: one-hot,
    and with label smoothing `smoothing` (`1 - smoothing + smoothing / classes`
    on the true class, `smoothing / classes` elsewhere). One panel."""
    classes = len(class_names)
    check_int("label", label, 0, classes)
    check_number("smoothing", smoothing, 0, 1, high_open=True)
    one_hot = np.eye(classes)[label]
    smoothed = one_hot * (1 - smoothing) + smoothing / classes
    figure, ax = plt.subplots(figsize=(8, 3.2))
    positions = np.arange(classes)
    ax.bar(positions - 0.2, one_hot, 0.4, label="one-hot target")
    bars = ax.bar(positions + 0.2, smoothed, 0.4, label=f"label smoothing {smoothing:g}")
    ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_xticks(positions, class_names, rotation=30, ha="right")
    ax.set_ylabel("target probability")
    ax.set_ylim(0, 1.1)
    ax.set_title(f"The target for an image of a {class_names[label]}")
    ax.legend()
    figure.tight_layout()
    return figure


def leave_one_out(full, without):
    """Rows of a leave-one-out table: the full recipe, then each ingredient removed.

    Args:
        full: the full recipe's metrics.json, as a dict.
        without: maps a run's name (e.g. "without warm-up") to the metrics.json
            of the run without that ingredient.

    Returns:
        A list of dicts, one per run: `run` ("full recipe", then the names
        of `without`), `val`, `val_flips`,
        `test`, `test_flips` (accuracies in percent: the best epoch's
        validation accuracy and the test accuracy, each without and with
        mirror images) and `change` (validation accuracy with mirror images
        against the full recipe's, in percentage points; 0 for the full recipe).
    """
    def row(name, metrics):
        return {
            "run": name,
            "val": 100 * metrics["best_val_accuracy"],
            "val_flips": 100 * metrics["best_val_accuracy_flips"],
            "test": 100 * metrics["test_accuracy"],
            "test_flips": 100 * metrics["test_accuracy_flips"],
            "change": 100 * (metrics["best_val_accuracy_flips"]
                             - full["best_val_accuracy_flips"]),
        }
    return [row("full recipe", full)] + [row(name, metrics) for name, metrics in without.items()]


# Published results to compare with, as fractions correct.
# The Keras example's test accuracy, as printed on keras.io
# (keras.io/examples/vision/convmixer/, "Test accuracy: 83.69%").
EXAMPLE_TEST_ACCURACY = 0.8369
# airbench94's target: "94% on CIFAR-10 in 3.29 Seconds on a Single GPU"
# (Jordan, 2024, arXiv:2404.00498), a fast-training project with its own network.
AIRBENCH_TEST_ACCURACY = 0.94

# Published logs to compare with, in history.json's form (fraction correct).
# The Keras example's training accuracy (Keras' running mean over each epoch's
# batches) and validation accuracy per epoch, as printed on keras.io (one GPU).
EXAMPLE_LOG = [
    {"epoch": epoch, "accuracy": train, "val_accuracy": val}
    for epoch, (train, val) in enumerate(zip(
        [0.4594, 0.6996, 0.7823, 0.8264, 0.8605, 0.8788, 0.8972, 0.9087, 0.9176, 0.9336],
        [0.1536, 0.7240, 0.7800, 0.8074, 0.7996, 0.8072, 0.8226, 0.8310, 0.8458, 0.8316]),
        start=1)
]

# locuslab/convmixer-cifar10's README log of ConvMixer-256/8 over 25 epochs (one
# GPU). It prints test accuracy after every epoch; it has no validation split.
LOCUSLAB_LOG = [
    {"epoch": epoch, "test_accuracy": accuracy}
    for epoch, accuracy in enumerate(
        [0.5418, 0.6157, 0.7069, 0.7708, 0.7344, 0.7655, 0.8328, 0.7655, 0.8138, 0.7891,
         0.8387, 0.8312, 0.8563, 0.8700, 0.8527, 0.8907, 0.9019, 0.9068, 0.9139, 0.9240,
         0.9238, 0.9248, 0.9253, 0.9255, 0.9260],
        start=1)
]


if __name__ == "__main__":
    # `make recipe-runs` reads a line per run: its directory's name, then the
    # options of `python -m convmixer_lib train` that train it.
    for name, options in recipe_runs().items():
        print(name, *(f"--{key.replace('_', '-')}={value}" for key, value in options.items()))
