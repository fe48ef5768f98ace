"""The appendix's figure: where a training step's time goes, layer set by layer set."""

import matplotlib.pyplot as plt
import numpy as np


def plot_step_profile(seconds_per_step, title="Where a training step's time goes"):
    """Seconds per training step split into parts, one stacked horizontal bar per
    layer set: `seconds_per_step` maps a label (e.g. "Keras layers") to a dict
    with the whole `step` and its parts in seconds (as written by
    benchmarks/profile_step.py), parts in the order given. One panel."""
    labels = list(seconds_per_step)
    parts = [key for key in seconds_per_step[labels[0]] if key != "step"]
    figure, ax = plt.subplots(figsize=(8, 1.2 + 0.8 * len(labels)))
    left = np.zeros(len(labels))
    for part, color in zip(parts, plt.cm.tab10.colors):
        widths = np.array([max(seconds_per_step[label][part], 0.0) for label in labels])
        bars = ax.barh(labels, widths, left=left, color=color, label=part)
        ax.bar_label(bars, labels=[f"{w:.2f}" if w >= 0.08 else "" for w in widths],
                     label_type="center", fontsize=8, color="white")
        left += widths
    for y, label in enumerate(labels):
        ax.text(left[y] + 0.02, y, f"{seconds_per_step[label]['step']:.2f} s per step",
                va="center", fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, left.max() * 1.3)
    ax.set_xlabel("seconds per training step")
    ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35 - 0.05 * len(labels)),
              ncol=len(parts), fontsize=8, frameon=False)
    figure.tight_layout()
    return figure
