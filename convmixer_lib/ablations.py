"""What matters in ConvMixer: one design choice changed at a time, on a budget.

Every configuration of a budget trains with the same recipe (`BUDGETS`) into a
run directory of its own under the sweep's folder, named after what it changes
(`kernel_size-9`, `residual-False`, `baseline-seed1`, ...). `run_sweep` skips
finished configurations and resumes an interrupted one, so the same command
continues a sweep wherever it stopped. The short budget trains every
configuration; the full budget retrains the baseline and the changes whose
short-budget verdict matters most for the paper's claims.
"""

import os

import numpy as np

from .model import build_convmixer
from .recipes import train_recipe
from .rundir import read_json, run_state

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
# How the book names each factor, and the changes that are not "<factor> <value>".
FACTOR_NAMES = {"kernel_size": "kernel size", "patch_size": "patch size", "depth": "depth",
                "filters": "width", "residual": "residual connection",
                "activation": "activation", "batchnorm_first": "BatchNorm order"}
CHANGE_NAMES = {("residual", False): "no residual connection",
                ("activation", "relu"): "ReLU instead of GELU",
                ("batchnorm_first", True): "BatchNorm before the activation"}
BASELINE_SEEDS = (42, 1, 2)
# The budgets, both the fast recipe's 4 epochs: "short" on the first 20,000
# training images, "full" on all 45,000 (None), 2.25 times the steps.
BUDGETS = {
    "short": {"recipe": "fast", "epochs": 4, "train_size": 20_000},
    "full": {"recipe": "fast", "epochs": 4, "train_size": None},
}
# The configurations the full budget retrains, in training order: the
# baseline's first two seeds, and the changes whose short-budget verdict goes
# against the paper (small kernels ahead of large ones, 8 blocks ahead of 12)
# or costs most (no residual connection).
FULL_BUDGET_RUNS = ("baseline-seed42", "kernel_size-9", "depth-12", "residual-False",
                    "kernel_size-3", "baseline-seed1")


def configurations(budget="short"):
    """Every configuration of the sweep at `budget`, in training order: the short
    budget's baseline seeds first, then one factor at a time; the full budget's
    as `FULL_BUDGET_RUNS` lists them.

    Returns:
        A list of dicts: `name` (the run directory's), `model` (the
        `build_convmixer` arguments), `seed`, `factor` (the argument changed,
        None for the baseline) and `value` (its value, None for the baseline).

    Raises:
        ValueError: if `budget` is not a key of `BUDGETS`.
    """
    if budget not in BUDGETS:
        raise ValueError(f"`budget` must be one of {tuple(BUDGETS)}, got {budget!r}.")
    runs = [{"name": f"baseline-seed{seed}", "model": dict(BASELINE), "seed": seed,
             "factor": None, "value": None} for seed in BASELINE_SEEDS]
    for factor, values in FACTORS.items():
        for value in values:
            runs.append({"name": f"{factor}-{value}", "model": {**BASELINE, factor: value},
                         "seed": BASELINE_SEEDS[0], "factor": factor, "value": value})
    if budget == "full":
        by_name = {run["name"]: run for run in runs}
        runs = [by_name[name] for name in FULL_BUDGET_RUNS]
    return runs


def parameter_count(model):
    """Trainable and non-trainable parameters of ConvMixer built with `model`'s arguments."""
    return build_convmixer(**model).count_params()


def run_sweep(folder, splits, only=None, budget="short", verbose="auto"):
    """Train every configuration of `budget` not yet finished into `folder/<name>`.

    Args:
        folder: the sweep's folder, e.g. `results/ablations` (one per budget).
        splits: `load_splits()`'s three splits.
        only: names of configurations to train (None: all), in sweep order.
        budget: a key of `BUDGETS`.
        verbose: Keras' progress output.

    Returns:
        The names of the configurations trained now.

    Raises:
        ValueError: if `only` names a configuration the sweep does not have.
    """
    runs = configurations(budget)
    names = [run["name"] for run in runs]
    unknown = set(only or ()) - set(names)
    if unknown:
        raise ValueError(f"no configurations named {sorted(unknown)}; the {budget} budget's "
                         f"sweep has {names}.")
    recipe = BUDGETS[budget]
    trained = []
    for run in runs:
        name, model, seed = run["name"], run["model"], run["seed"]
        run_dir = os.path.join(folder, name)
        if (only and name not in only) or run_state(run_dir) == "finished":
            continue
        print(f"{name}: training into {run_dir}")
        train_recipe(run_dir, splits, recipe["recipe"], model=model, seed=seed,
                     train_size=recipe["train_size"], epochs=recipe["epochs"],
                     details={"ablation": name, "parameters": parameter_count(model)},
                     verbose=verbose)
        trained.append(name)
    return trained


def sweep_results(folder, budget="short"):
    """The finished configurations' results at `budget`, in sweep order; unfinished
    ones are left out.

    Returns:
        A list of dicts, one per finished configuration: `name` (its run
        directory's), `factor` (the `build_convmixer` argument it changes, None
        for the baseline), `value` (that argument's value), `factor_name` (the
        factor in words, None for the baseline), `label` (the change in words,
        "baseline" for the baseline), `model` (the build arguments),
        `seed`, `parameters`, `minutes` (training time, the epochs' seconds
        summed, / 60), `val_accuracy` (the best epoch's, with the averaged
        weights the run keeps; fraction correct), `val_accuracy_flips`,
        `raw_val_accuracy` (the best epoch's, with the raw weights),
        `train_accuracy` (the best epoch's running mean over the augmented
        training images, in training mode), `test_accuracy`,
        `test_accuracy_flips` and `processor` (the machine that trained it,
        in words).
    """
    results = []
    for run in configurations(budget):
        run_dir = os.path.join(folder, run["name"])
        if run_state(run_dir) != "finished":
            continue
        metrics = read_json(os.path.join(run_dir, "metrics.json"))
        best = read_json(os.path.join(run_dir, "history.json"))[metrics["best_epoch"] - 1]
        factor, value = run["factor"], run["value"]
        factor_name = FACTOR_NAMES[factor] if factor else None
        if factor is None:
            label = "baseline"
        else:
            label = CHANGE_NAMES.get((factor, value), f"{factor_name} {value}")
        results.append({
            **run, "factor_name": factor_name, "label": label,
            "parameters": metrics["parameters"],
            "minutes": sum(metrics["seconds_per_epoch"]) / 60,
            "val_accuracy": metrics["best_val_accuracy"],
            "val_accuracy_flips": metrics["best_val_accuracy_flips"],
            "raw_val_accuracy": best["raw_val_accuracy"],
            "train_accuracy": best["accuracy"],
            "test_accuracy": metrics["test_accuracy"],
            "test_accuracy_flips": metrics["test_accuracy_flips"],
            "processor": metrics["environment"]["processor"],
        })
    return results


def baseline_and_changes(results):
    """Split `sweep_results()`'s dicts into the baseline runs and the changes.

    Raises:
        ValueError: if `results` holds no baseline run (`factor` None).
    """
    baseline = [r for r in results if r["factor"] is None]
    if not baseline:
        raise ValueError("`results` must hold at least one baseline run (factor None).")
    return baseline, [r for r in results if r["factor"] is not None]


def against_baseline(results):
    """Each change measured against the baseline's seeds.

    Args:
        results: `sweep_results()`'s dicts, with at least one baseline run.

    Returns:
        A list of dicts, one per change in sweep order: `label`,
        `val_accuracy`, `difference` (its validation accuracy minus the
        baseline runs' mean, in fractions: 0.01 is one point), `beyond_noise`
        (True if outside the baseline runs' range, min to max), `time` and
        `size` (its minutes and parameters over the baseline runs' means).
    """
    baseline, changes = baseline_and_changes(results)
    accuracies = [r["val_accuracy"] for r in baseline]
    mean = {key: np.mean([r[key] for r in baseline])
            for key in ("val_accuracy", "minutes", "parameters")}
    return [{"label": r["label"], "val_accuracy": r["val_accuracy"],
             "difference": r["val_accuracy"] - mean["val_accuracy"],
             "beyond_noise": not min(accuracies) <= r["val_accuracy"] <= max(accuracies),
             "time": r["minutes"] / mean["minutes"],
             "size": r["parameters"] / mean["parameters"]} for r in changes]
