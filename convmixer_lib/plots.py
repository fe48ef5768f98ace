"""Figures of the book: images, learned filters, training curves, test results.

Every function returns a `matplotlib.figure.Figure` with a title (over the
figure, or over each of its panels), labelled axes and class names rather than
indices, so a notebook can show it and a test can count its panels
(`len(figure.axes)`).
"""

import math

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator, PercentFormatter

from .checks import check_positive_int
from .choices import CLASS_NAMES
from .model import STEM_CONV, convmixer_config, depthwise_conv_name

# The marker of the n-th run in figures that draw several, so that a run keeps
# its marker (and colour, `C<n>`) from one figure to the next.
MARKERS = "os^Dv<>p*h"


def _grid(count, columns, panel_size):
    check_positive_int("columns", columns)
    rows = math.ceil(count / columns)
    columns = min(columns, count)
    figure, axes = plt.subplots(
        rows, columns, figsize=(columns * panel_size, rows * panel_size), squeeze=False
    )
    for ax in axes.flat[count:]:
        figure.delaxes(ax)
    for ax in axes.flat[:count]:
        ax.set_xticks([])
        ax.set_yticks([])
    return figure, axes.flat[:count]


def plot_images(images, titles=None, columns=8, title="Images"):
    """Show uint8 images `(n, h, w, 3)` in a grid, one panel each, with optional
    per-image `titles` (n strings) and a figure `title`."""
    images = np.asarray(images)
    figure, axes = _grid(len(images), columns, 1.4)
    for i, ax in enumerate(axes):
        ax.imshow(images[i].astype(np.uint8))
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_filter_grid(weights, columns=16, title="Filters"):
    """Show convolution filters, one panel per filter.

    Args:
        weights: kernel of shape `(height, width, channels, filters)`. With 3
            input channels each filter is shown as an RGB image after min-max
            scaling of all filters together (as in the Keras example). With 1
            channel each filter is shown on a diverging colour scale centred on
            0 (red positive, blue negative), shared by all filters, with a
            colour bar: one panel more than filters.
        columns: panels per row.
        title: the figure's title.
    """
    weights = np.asarray(weights)
    if weights.ndim != 4 or weights.shape[2] not in (1, 3):
        raise ValueError(
            "`weights` must have shape (height, width, 1 or 3, filters), "
            f"got {weights.shape}."
        )
    count = weights.shape[-1]
    figure, axes = _grid(count, columns, 0.5)
    if weights.shape[2] == 3:
        low, high = weights.min(), weights.max()
        scaled = (weights - low) / (high - low)
        for i, ax in enumerate(axes):
            ax.imshow(scaled[:, :, :, i])
    else:
        limit = np.abs(weights).max()
        for i, ax in enumerate(axes):
            image = ax.imshow(weights[:, :, 0, i], cmap="RdBu_r", vmin=-limit, vmax=limit)
        figure.colorbar(image, ax=list(axes), shrink=0.6, label="weight")
    if title:
        figure.suptitle(title)
    return figure


def plot_patch_embeddings(model, columns=16):
    """The stem's filters: one RGB image per patch-embedding filter."""
    kernel = model.get_layer(STEM_CONV).kernel.numpy()
    size, _, _, count = kernel.shape
    return plot_filter_grid(
        kernel,
        columns,
        f"Patch-embedding filters ({STEM_CONV}): {count} filters of {size}×{size}×3",
    )


def plot_depthwise_kernels(model, block, columns=16):
    """The depthwise kernels of block `block` (1-based), one panel per channel."""
    kernel = model.get_layer(depthwise_conv_name(block)).kernel.numpy()
    size, _, channels, _ = kernel.shape
    return plot_filter_grid(
        kernel.transpose(0, 1, 3, 2),
        columns,
        f"Depthwise kernels of block {block}: {channels} channels, {size}×{size}",
    )


def plot_depthwise_kernels_by_block(model, channels=16):
    """The first `channels` depthwise kernels of every block: one row per block,
    each row on its own symmetric colour scale (weights grow or shrink with depth)."""
    depth = convmixer_config(model)["depth"]
    figure, axes = plt.subplots(
        depth, channels, figsize=(channels * 0.55, depth * 0.6), squeeze=False
    )
    for row in range(depth):
        kernel = model.get_layer(depthwise_conv_name(row + 1)).kernel.numpy()[:, :, :, 0]
        limit = np.abs(kernel[:, :, :channels]).max()
        for column in range(channels):
            ax = axes[row, column]
            ax.imshow(kernel[:, :, column], cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == depth - 1:
                ax.set_xlabel(str(column), fontsize=7)
        axes[row, 0].set_ylabel(f"block {row + 1}", rotation=0, ha="right", va="center")
    figure.supxlabel("channel")
    figure.suptitle(f"Depthwise kernels of channels 0–{channels - 1}, block by block")
    return figure


def plot_history(history):
    """Training curves from `history.json` records (a list of per-epoch dicts
    with `loss`, `val_loss`, `accuracy`, `val_accuracy`): two panels."""
    epochs = [h["epoch"] for h in history]
    figure, (loss_ax, accuracy_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric, label in ((loss_ax, "loss", "cross-entropy loss"),
                              (accuracy_ax, "accuracy", "accuracy")):
        ax.plot(epochs, [h[metric] for h in history], "o-", label="training")
        ax.plot(epochs, [h[f"val_{metric}"] for h in history], "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(f"{label.capitalize()} per epoch")
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
        ax.legend()
    figure.tight_layout()
    return figure


def plot_validation_curves(runs, title="Validation accuracy per epoch"):
    """Validation accuracy per epoch of several runs, one line each, on a percent
    axis: `runs` maps a legend label to that run's per-epoch records (dicts with
    `epoch` and `val_accuracy` in 0–1, as in `history.json`). One panel."""
    if not runs:
        raise ValueError("`runs` must map at least one label to a history, got none.")
    figure, ax = plt.subplots(figsize=(7.5, 4.2))
    epochs = set()
    for (label, history), marker in zip(runs.items(), MARKERS):
        x = [h["epoch"] for h in history]
        ax.plot(x, [h["val_accuracy"] for h in history], f"{marker}-", label=label)
        epochs.update(x)
    ax.set_xticks(sorted(epochs))
    _accuracy_per_epoch_axes(ax, title)
    ax.legend()
    figure.tight_layout()
    return figure


def _accuracy_per_epoch_axes(ax, title, ylabel="validation accuracy"):
    """Label a panel of accuracy (0–1, validation unless `ylabel` says otherwise)
    against epochs; ticks at whole percents (steps of 1, 2 or 5 points or more)."""
    ax.yaxis.set_major_locator(MaxNLocator(steps=[1, 2, 5, 10]))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)


def plot_accuracy_by_epoch_and_hour(runs, title="Validation accuracy",
                                    ylabel="validation accuracy"):
    """Validation accuracy of several runs against epochs (left) and against
    hours of training (right, cumulative `seconds` of the records; runs whose
    records lack `seconds`, such as a published log, appear on the left only).

    Args:
        runs: maps a legend label to per-epoch records (dicts with `epoch`,
            `val_accuracy` in 0–1 and, for the right panel, `seconds`).
        ylabel: the left panel's axis label, to name another split where a
            published log measured one (locuslab's log holds test accuracy).
    """
    if not runs:
        raise ValueError("`runs` must map at least one label to a history, got none.")
    figure, (by_epoch, by_hour) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for index, ((label, history), marker) in enumerate(zip(runs.items(), MARKERS)):
        style = {"marker": marker, "color": f"C{index}", "label": label}  # same in both
        accuracy = [h["val_accuracy"] for h in history]
        by_epoch.plot([h["epoch"] for h in history], accuracy, **style)
        if all("seconds" in h for h in history):
            hours = np.cumsum([h["seconds"] for h in history]) / 3600
            by_hour.plot(hours, accuracy, **style)
    by_epoch.xaxis.set_major_locator(MaxNLocator(integer=True))
    _accuracy_per_epoch_axes(by_epoch, f"{title} per epoch", ylabel)
    by_hour.set_xlabel("hours of training (2 CPU cores)")
    by_hour.set_title(f"{title} per hour of training")
    by_hour.grid(alpha=0.3)
    by_epoch.legend(fontsize="small")
    figure.tight_layout()
    return figure


def plot_learning_rates(schedules, title="Learning rate during training"):
    """Learning-rate curves, one line each: `schedules` maps a legend label to
    `(epochs, rates)`, two equal-length sequences (fractional epochs, rates)."""
    figure, ax = plt.subplots(figsize=(7.5, 3.8))
    for label, (epochs, rates) in schedules.items():
        ax.plot(epochs, rates, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    figure.tight_layout()
    return figure


def plot_confusion_matrix(confusion, class_names=CLASS_NAMES, title="Confusion matrix"):
    """A confusion matrix (rows true class, columns predicted class, counts)
    with every count written in its cell: one panel."""
    confusion = np.asarray(confusion)
    figure, ax = plt.subplots(figsize=(7.5, 6.5))
    ax.imshow(confusion, cmap="Blues")
    threshold = confusion.max() / 2
    for (row, column), count in np.ndenumerate(confusion):
        color = "white" if count > threshold else "black"
        ax.text(column, row, str(count), ha="center", va="center", fontsize=8, color=color)
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    figure.tight_layout()
    return figure


def plot_per_class_accuracy(per_class_accuracy, class_names=CLASS_NAMES, title=None):
    """Accuracy of each class as horizontal bars, in percent: one panel."""
    percent = 100 * np.asarray(per_class_accuracy)
    figure, ax = plt.subplots(figsize=(6.5, 4))
    bars = ax.barh(class_names, percent, color="tab:blue")
    ax.bar_label(bars, fmt="%.1f%%", padding=3, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 110)
    ax.set_xlabel("test accuracy (%)")
    ax.set_title(title or "Accuracy per class")
    figure.tight_layout()
    return figure


def plot_predictions(images, labels, predictions, class_names=CLASS_NAMES,
                     columns=8, title="Predictions on test images", confidences=None):
    """Images titled "predicted (true)" class names, green when right and red
    when wrong: one panel per image. With `confidences` (the probability of
    each prediction, 0–1) the predicted class shows it as a percentage."""
    labels = np.asarray(labels).reshape(-1)
    if confidences is None:
        confidences = [None] * len(images)
    figure, axes = _grid(len(images), columns, 1.5)
    for ax, image, label, predicted, confidence in zip(
        axes, images, labels, predictions, confidences
    ):
        ax.imshow(np.asarray(image).astype(np.uint8))
        shown = class_names[predicted]
        if confidence is not None:
            shown += f" {confidence:.0%}"
        ax.set_title(
            f"{shown}\n({class_names[label]})",
            fontsize=8,
            color="tab:green" if predicted == label else "tab:red",
        )
    figure.suptitle(f"{title}: predicted (true)")
    figure.tight_layout()
    return figure


def plot_saliency(images, maps, row_titles, title="Where the model looks"):
    """Each image beside its saliency maps: one row per image, one column per map.

    Args:
        images: uint8 array `(n, h, w, 3)`.
        maps: dict mapping a column title (e.g. "block 8") to an array
            `(n, gh, gw)` of maps in 0–1 (or any real values for a diverging
            map: negative ones are shown in blue), drawn over the image
            stretched to its size.
        row_titles: n strings, shown left of each row (e.g. the prediction).
        title: the figure's title.
    """
    images = np.asarray(images)
    n, height, width, _ = images.shape
    columns = 1 + len(maps)
    figure, axes = plt.subplots(n, columns, figsize=(1.6 * columns + 1.2, 1.6 * n),
                                squeeze=False)
    for row in range(n):
        axes[row, 0].imshow(images[row])
        axes[row, 0].set_ylabel(row_titles[row], fontsize=8, rotation=0, ha="right",
                                va="center")
        for column, (label, values) in enumerate(maps.items(), start=1):
            values = np.asarray(values)[row]
            limit = max(np.abs(values).max(), 1e-12)
            signed = values.min() < 0
            axes[row, column].imshow(images[row], alpha=0.45)
            axes[row, column].imshow(
                values, cmap="RdBu_r" if signed else "inferno", alpha=0.6,
                vmin=-limit if signed else 0, vmax=limit, interpolation="bilinear",
                extent=(-0.5, width - 0.5, height - 0.5, -0.5))  # stretched over the image
            if row == 0:
                axes[row, column].set_title(label, fontsize=9)
    axes[0, 0].set_title("image", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    figure.suptitle(title)
    figure.tight_layout()
    return figure
