"""What matters in ConvMixer: one design choice changed at a time, on a budget.

Every configuration trains with the same recipe and budget (`SWEEP`) into a
run directory of its own under the sweep's folder, named after what it changes
(`kernel_size-9`, `residual-False`, `baseline-seed1`, ...). `run_sweep` skips
finished configurations and resumes an interrupted one, so the same command
continues a sweep wherever it stopped.
"""

import os

from .model import build_convmixer
from .recipes import train_recipe
from .rundir import run_state

BASELINE = {"filters": 256, "depth": 8, "kernel_size": 5, "patch_size": 2}
# One factor at a time around the baseline; the baseline's own value is not repeated.
FACTORS = {
    "kernel_size": [3, 7, 9],
    "patch_size": [1, 4],
    "depth": [4, 12],
    "filters": [128, 384],
    "residual": [False],
    "activation": ["relu"],
    "batchnorm_first": [True],
}
BASELINE_SEEDS = (42, 1, 2)
# The budget: the fast recipe's 4 epochs on the first 20,000 training images.
SWEEP = {"recipe": "fast", "epochs": 4, "train_size": 20_000}


def configurations():
    """Every configuration of the sweep, baseline seeds first.

    Returns:
        A list of `(name, model, seed)`: the run directory's name, the
        `build_convmixer` arguments and the seed.
    """
    runs = [(f"baseline-seed{seed}", dict(BASELINE), seed) for seed in BASELINE_SEEDS]
    for factor, values in FACTORS.items():
        for value in values:
            runs.append((f"{factor}-{value}", {**BASELINE, factor: value}, BASELINE_SEEDS[0]))
    return runs


def parameter_count(model):
    """Trainable and non-trainable parameters of ConvMixer built with `model`'s arguments."""
    return build_convmixer(**model).count_params()


def run_sweep(folder, splits, only=None, verbose="auto"):
    """Train every configuration not yet finished into `folder/<name>`.

    Args:
        folder: the sweep's folder, e.g. `results/ablations`.
        splits: `load_splits()`'s three splits.
        only: names of configurations to train (None: all), in sweep order.
        verbose: Keras' progress output.

    Returns:
        The names of the configurations trained now.

    Raises:
        ValueError: if `only` names a configuration the sweep does not have.
    """
    runs = configurations()
    unknown = set(only or ()) - {name for name, _, _ in runs}
    if unknown:
        raise ValueError(f"no configurations named {sorted(unknown)}; the sweep has "
                         f"{[name for name, _, _ in runs]}.")
    trained = []
    for name, model, seed in runs:
        run_dir = os.path.join(folder, name)
        if (only and name not in only) or run_state(run_dir) == "finished":
            continue
        print(f"{name}: training into {run_dir}")
        train_recipe(run_dir, splits, SWEEP["recipe"], model=model, seed=seed,
                     train_size=SWEEP["train_size"], epochs=SWEEP["epochs"],
                     details={"ablation": name, "parameters": parameter_count(model)},
                     verbose=verbose)
        trained.append(name)
    return trained
