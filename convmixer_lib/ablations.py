"""What matters in ConvMixer: one design choice changed at a time, on a budget.

Every configuration of a budget trains with the same recipe (`BUDGETS`) into a
run directory of its own under the sweep's folder, named after what it changes
(`kernel_size-9`, `residual-False`, `baseline-seed1`, ...). `run_sweep` skips
finished configurations and resumes an interrupted one, so the same command
continues a sweep wherever it stopped. The short budget trains every
configuration; the full budget retrains the baseline and the changes whose
short-budget verdict matters most for the paper's claims.
"""

import math
import os
import textwrap

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FixedLocator, NullFormatter, PercentFormatter
from matplotlib.transforms import Bbox

from .checks import check_list, check_positive_int
from .choices import BUDGETS, check_budget, check_names, configurations
from .flops import forward_flops
from .model import build_convmixer
from .recipes import train_recipe
from .records import read_json, run_state

# How the book names each factor, and the changes that are not "<factor> <value>".
FACTOR_NAMES = {"kernel_size": "kernel size", "patch_size": "patch size", "depth": "depth",
                "filters": "width", "residual": "residual connection",
                "activation": "activation", "batchnorm_first": "BatchNorm order"}
CHANGE_NAMES = {("residual", False): "no residual connection",
                ("activation", "relu"): "ReLU instead of GELU",
                ("batchnorm_first", True): "BatchNorm before the activation"}


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
    only = check_list("only", only)
    check_names(only, budget)
    runs = configurations(budget)
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
        `seed`, `parameters`, `flops` (forward floating-point operations per
        image, `flops.forward_flops`), `minutes` (training time, the epochs'
        seconds summed, / 60), `val_accuracy` (the best epoch's, with the averaged
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
            "flops": forward_flops(build_convmixer(**run["model"])),
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
        (True if outside the baseline runs' range, min to max), `time`,
        `size` and `work` (its minutes, parameters and forward operations per
        image over the baseline runs' means).
    """
    baseline, changes = baseline_and_changes(results)
    accuracies = [r["val_accuracy"] for r in baseline]
    mean = {key: np.mean([r[key] for r in baseline])
            for key in ("val_accuracy", "minutes", "parameters", "flops")}
    return [{"label": r["label"], "val_accuracy": r["val_accuracy"],
             "difference": r["val_accuracy"] - mean["val_accuracy"],
             "beyond_noise": not min(accuracies) <= r["val_accuracy"] <= max(accuracies),
             "time": r["minutes"] / mean["minutes"],
             "size": r["parameters"] / mean["parameters"],
             "work": r["flops"] / mean["flops"]} for r in changes]


def budget_images(budget, training_images=45_000):
    """Training images of one run at `budget` (a key of `BUDGETS`): its
    `train_size`, or all `training_images` of the split."""
    check_budget(budget)
    return BUDGETS[budget]["train_size"] or training_images


def budget_steps(budget, batch_size=128):
    """Optimizer steps of one run at `budget` (a key of `BUDGETS`), batches of `batch_size`."""
    check_positive_int("batch_size", batch_size)
    return BUDGETS[budget]["epochs"] * math.ceil(budget_images(budget) / batch_size)


def compare_budgets(short, full):
    """Each change trained at both budgets, measured against its budget's baseline.

    Args:
        short, full: `sweep_results()`'s dicts at the short and the full
            budget, each with at least one baseline run.

    Returns:
        A list of dicts, one per change finished at both budgets, in the full
        budget's order: `label`, `short` and `full` (each a dict of
        `val_accuracy`, `difference` from that budget's baseline mean and
        `beyond_noise`, as `against_baseline` gives them, and `error_ratio`:
        the change's validation errors, 1 - accuracy, over those of the
        baseline mean, a scale on which a difference does not shrink only
        because both climb towards 100%) and `verdict`:
        "within noise" (inside the full budget's baseline range), "holds"
        (outside both ranges, on the same side), "flips" (outside both, on
        opposite sides) or "emerges" (inside the short budget's range,
        outside the full budget's).
    """
    short_rows = {row["label"]: row for row in against_baseline(short)}
    rows = []
    for row in against_baseline(full):
        if row["label"] not in short_rows:
            continue
        before = short_rows[row["label"]]
        if not row["beyond_noise"]:
            verdict = "within noise"
        elif not before["beyond_noise"]:
            verdict = "emerges"
        else:
            verdict = "holds" if (row["difference"] > 0) == (before["difference"] > 0) else "flips"
        keep = ("val_accuracy", "difference", "beyond_noise")
        short_row, full_row = ({**{k: r[k] for k in keep}, "error_ratio": (
            (1 - r["val_accuracy"]) / (1 - r["val_accuracy"] + r["difference"]))}
            for r in (before, row))
        rows.append({"label": row["label"], "short": short_row, "full": full_row,
                     "verdict": verdict})
    return rows


# Chapter 7's figures.

def _baseline_band(ax, baseline):
    """Shade the baseline runs' range of validation accuracy across a panel."""
    accuracies = [r["val_accuracy"] for r in baseline]
    ax.axhspan(min(accuracies), max(accuracies), color="0.85", zorder=0,
               label=f"baseline, {len(accuracies)} seeds (range)")
    ax.axhline(np.mean(accuracies), color="0.5", lw=1, zorder=0)


def plot_ablations(results, title="One change at a time: validation accuracy"):
    """Validation accuracy of each change to the baseline, one panel per numeric
    factor (its values on the x axis, the baseline's seeds as a point at their
    mean with their range as an error bar) and one panel for the other
    changes; the baseline's range is shaded in every panel.

    Args:
        results: `ablations.sweep_results()`'s dicts (`factor` None for the
            baseline; `factor`, `value`, `factor_name`, `label`, `model`,
            `val_accuracy`).
    """
    baseline, changes = baseline_and_changes(results)
    numeric = list(dict.fromkeys(r["factor"] for r in changes if type(r["value"]) is int))
    others = [r for r in changes if r["factor"] not in numeric]
    panels = len(numeric) + bool(others)
    columns = min(panels, 3)
    figure, axes = plt.subplots(math.ceil(panels / columns), columns, sharey=True,
                                figsize=(3.0 * columns, 2.9 * math.ceil(panels / columns)),
                                squeeze=False)
    mean = np.mean([r["val_accuracy"] for r in baseline])
    spread = [[mean - min(r["val_accuracy"] for r in baseline)],
              [max(r["val_accuracy"] for r in baseline) - mean]]
    for ax, factor in zip(axes.flat, numeric):
        runs = sorted([r for r in changes if r["factor"] == factor]
                      + [{"value": baseline[0]["model"][factor], "val_accuracy": mean}],
                      key=lambda r: r["value"])
        _baseline_band(ax, baseline)
        ax.plot([r["value"] for r in runs], [r["val_accuracy"] for r in runs], "o-", color="C0")
        ax.errorbar([baseline[0]["model"][factor]], [mean], yerr=spread, fmt="s",
                    color="C1", capsize=4, label="baseline (mean)")
        ax.set_xticks([r["value"] for r in runs])
        name = next(r["factor_name"] for r in changes if r["factor"] == factor)
        ax.set_xlabel(f"{name} (baseline {baseline[0]['model'][factor]})")
        ax.set_title(name.capitalize())
    if others:
        ax = axes.flat[len(numeric)]
        _baseline_band(ax, baseline)
        labels = ["baseline"] + [r["label"] for r in others]
        ax.errorbar([0], [mean], yerr=spread, fmt="s", color="C1", capsize=4)
        ax.plot(range(1, len(labels)), [r["val_accuracy"] for r in others], "o", color="C0")
        ax.set_xticks(range(len(labels)), [textwrap.fill(label, 11) for label in labels],
                      fontsize=8)
        ax.set_xlim(-0.5, len(labels) - 0.5)
        ax.set_title("Other design choices")
    for ax in axes.flat[panels:]:
        ax.remove()
    for ax in axes[:, 0]:
        ax.set_ylabel("validation accuracy")
    for ax in axes.flat[:panels]:
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8, loc="lower right")
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_ablation_costs(results, title="What each change costs"):
    """Validation accuracy of every run against the operations of one image's
    forward pass (top, log scale) and its parameter count (bottom, log
    scale); each point is labelled with its change (`label`), the baseline's
    seeds are drawn as one shaded range. Both costs are the model's, computed
    from it: the same on any machine and with any implementation of its layers.

    Args:
        results: `ablations.sweep_results()`'s dicts (`factor` None for the
            baseline; `label`, `flops`, `parameters`, `val_accuracy`).
    """
    baseline, changes = baseline_and_changes(results)
    figure, panels = plt.subplots(2, 1, figsize=(8, 9), sharey=True)
    for ax, key in zip(panels, ("flops", "parameters")):
        _baseline_band(ax, baseline)
        ax.plot([r[key] for r in baseline], [r["val_accuracy"] for r in baseline], "s",
                color="C1", label="baseline runs")
        ax.plot([r[key] for r in changes], [r["val_accuracy"] for r in changes], "o", color="C0")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3)
    work, parameters = panels
    work.xaxis.set_major_locator(FixedLocator([5e7, 1e8, 2e8, 5e8, 1e9, 2e9]))
    work.xaxis.set_major_formatter(lambda value, _: f"{value / 1e9:g}")
    work.set_xlabel("forward pass, billions of floating-point operations per image")
    work.set_title("Accuracy against computation")
    parameters.xaxis.set_major_locator(FixedLocator([1e5, 2e5, 5e5, 1e6, 2e6, 5e6]))
    parameters.xaxis.set_major_formatter(
        lambda value, _: f"{value / 1e6:g}M" if value >= 1e6 else f"{value / 1e3:g}k")
    parameters.set_xlabel("parameters")
    parameters.set_title("Accuracy against parameters")
    for ax in panels:
        ax.set_ylabel("validation accuracy")
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
    work.legend(fontsize=8, loc="lower right")
    figure.suptitle(title)
    figure.tight_layout()
    for ax, key in zip(panels, ("flops", "parameters")):
        _label_points(ax, [(r[key], r["val_accuracy"]) for r in changes],
                      [r["label"] for r in changes])
    return figure


# Places tried for a point's label, as (x, y) offsets in points from the point
# and the label's horizontal alignment: beside it, above or below it, then
# beside it but one, two or three lines higher or lower.
_LABEL_PLACES = [(5, 0, "left"), (-5, 0, "right"), (0, 9, "center"), (0, -9, "center")] + [
    (side * 5, lines * 9, "left" if side > 0 else "right")
    for lines in (1, -1, 2, -2, 3, -3) for side in (1, -1)]


def _label_points(ax, points, labels, fontsize=8):
    """Write each label beside its point (data coordinates) in the first of
    `_LABEL_PLACES` where it stays inside `ax` and covers no marker, no legend
    and no label written before it; where no place is free, beside it on the
    right. Call it once the figure's layout is final: places are measured on
    the canvas.
    """
    renderer = ax.figure.canvas.get_renderer()
    pixels_per_point = ax.figure.dpi / 72
    taken = [ax.get_legend().get_window_extent(renderer)] if ax.get_legend() else []
    for line in ax.get_lines():
        if line.get_marker() in ("None", None, ""):
            continue
        radius = (line.get_markersize() / 2 + 1) * pixels_per_point
        for x, y in ax.transData.transform(line.get_xydata()):
            taken.append(Bbox([[x - radius, y - radius], [x + radius, y + radius]]))
    frame = ax.get_window_extent(renderer)
    for point, label in zip(points, labels):
        text = ax.annotate(label, point, xytext=(0, 0), textcoords="offset points",
                           fontsize=fontsize, va="center")
        # The first place comes again last: where it ends when none is free.
        for dx, dy, alignment in _LABEL_PLACES + _LABEL_PLACES[:1]:
            text.xyann = (dx, dy)
            text.set_horizontalalignment(alignment)
            box = text.get_window_extent(renderer)
            inside = frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
            if inside and not any(box.overlaps(other) for other in taken):
                break
        taken.append(box)


def plot_budgets(short, full, title="The verdicts at two budgets"):
    """Each change at the short and the full budget side by side, against its
    budget's baseline: in the left panel its validation accuracy minus the
    baseline mean (points), in the right one its validation errors over the
    baseline mean's (`compare_budgets`' `error_ratio`). At the left of each
    panel, the baseline seeds' range at each budget: the noise a change must
    leave to count.

    Args:
        short, full: `sweep_results()`'s dicts at the short and the full
            budget; only changes finished at both are drawn.
    """
    rows = compare_budgets(short, full)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    panels = ((axes[0], 0, lambda a, mean: 100 * (a - mean),
               "validation accuracy minus the\nbaseline's mean (points; higher is better)"),
              (axes[1], 1, lambda a, mean: (1 - a) / (1 - mean),
               "validation errors over the\nbaseline mean's (higher is worse)"))
    for ax, level, scale, ylabel in panels:
        ax.axhline(level, color="0.5", linewidth=0.8)
        for offset, results, budget, color in ((-0.12, short, "short", "C0"),
                                               (0.12, full, "full", "C1")):
            baseline, _ = baseline_and_changes(results)
            accuracies = [r["val_accuracy"] for r in baseline]
            mean = np.mean(accuracies)
            seeds = sorted(scale(a, mean) for a in accuracies)
            ax.errorbar([offset], [level], yerr=[[level - seeds[0]], [seeds[-1] - level]],
                        fmt="s", color=color, capsize=4)
            values = [scale(row[budget]["val_accuracy"], mean) for row in rows]
            label = (f"{budget_images(budget):,} images, {budget_steps(budget):,} steps "
                     f"(baseline: {len(baseline)} seeds)")
            ax.plot([i + 1 + offset for i in range(len(rows))], values, "o", color=color,
                    label=label)
        labels = ["baseline\n(seeds' range)"] + [textwrap.fill(row["label"], 14)
                                                  for row in rows]
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_xlim(-0.5, len(labels) - 0.5)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_title("In points")
    axes[1].set_title("In errors")
    figure.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=2,
                  fontsize=8)
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.07, 1, 1))
    return figure
