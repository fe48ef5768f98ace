import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from convmixer_lib import plots
from convmixer_lib.choices import CLASS_NAMES
from convmixer_lib.model import build_convmixer


@pytest.fixture(scope="module")
def model():
    return build_convmixer(filters=24, depth=3, kernel_size=5, patch_size=2)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _image_panels(figure):
    return [ax for ax in figure.axes if ax.images and ax.get_label() != "<colorbar>"]


def test_patch_embeddings_one_rgb_panel_per_filter(model):
    figure = plots.plot_patch_embeddings(model, columns=8)
    panels = _image_panels(figure)
    assert len(panels) == 24 and len(figure.axes) == 24
    assert panels[0].images[0].get_array().shape == (2, 2, 3)
    assert "24 filters" in figure._suptitle.get_text()


def test_depthwise_kernels_one_panel_per_channel_and_a_colour_bar(model):
    figure = plots.plot_depthwise_kernels(model, block=2)
    assert len(_image_panels(figure)) == 24
    assert len(figure.axes) == 25
    assert _image_panels(figure)[0].images[0].get_array().shape == (5, 5)
    assert "block 2" in figure._suptitle.get_text()


def test_filter_grid_takes_any_number_of_filters():
    weights = np.random.default_rng(0).normal(size=(3, 3, 3, 10))
    assert len(plots.plot_filter_grid(weights, columns=4).axes) == 10
    with pytest.raises(ValueError, match="weights"):
        plots.plot_filter_grid(np.zeros((3, 3, 2, 4)))


def test_kernels_by_block_has_a_row_per_block(model):
    figure = plots.plot_depthwise_kernels_by_block(model, channels=6)
    assert len(figure.axes) == 3 * 6
    assert figure.axes[0].get_ylabel() == "block 1"


def test_history_has_loss_and_accuracy_panels():
    history = [{"epoch": e, "loss": 2 / e, "val_loss": 2.1 / e,
                "accuracy": e / 5, "val_accuracy": e / 6} for e in (1, 2, 3)]
    figure = plots.plot_history(history)
    assert len(figure.axes) == 2
    assert [ax.get_xlabel() for ax in figure.axes] == ["epoch", "epoch"]
    assert all(len(ax.lines) == 2 for ax in figure.axes)


def test_validation_curves_draw_a_labelled_line_per_run():
    # A narrow range, as in a real comparison: ticks must still be whole percents.
    runs = {"a": [{"epoch": e, "val_accuracy": a} for e, a in ((1, 0.70), (2, 0.80), (3, 0.88))],
            "b": [{"epoch": e, "val_accuracy": a} for e, a in ((2, 0.72), (3, 0.84), (4, 0.87))]}
    figure = plots.plot_validation_curves(runs)
    (ax,) = figure.axes
    assert [line.get_label() for line in ax.lines] == ["a", "b"]
    assert list(ax.get_xticks()) == [1, 2, 3, 4]
    assert ax.get_ylabel() == "validation accuracy" and ax.get_title()
    figure.canvas.draw()
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks and all(t.endswith("%") for t in ticks)
    values = [float(t.rstrip("%")) for t in ticks]
    assert all(abs(value * 100 - round(value * 100)) < 1e-9 for value in ax.get_yticks())
    assert len(set(values)) == len(values)  # no two ticks print alike


def test_validation_curves_refuse_no_runs():
    with pytest.raises(ValueError, match="at least one"):
        plots.plot_validation_curves({})


def test_confusion_matrix_labels_classes_by_name():
    confusion = np.arange(100).reshape(10, 10)
    figure = plots.plot_confusion_matrix(confusion)
    (ax,) = figure.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == list(CLASS_NAMES)
    assert len(ax.texts) == 100


def test_per_class_accuracy_has_a_bar_per_class():
    figure = plots.plot_per_class_accuracy(np.linspace(0.5, 0.95, 10))
    (ax,) = figure.axes
    assert len(ax.patches) == 10
    assert [t.get_text() for t in ax.get_yticklabels()] == list(CLASS_NAMES)


def test_predictions_title_names_predicted_and_true_class():
    images = np.zeros((5, 32, 32, 3), dtype=np.uint8)
    figure = plots.plot_predictions(images, [0, 1, 2, 3, 4], [0, 1, 2, 3, 9], columns=3)
    assert len(figure.axes) == 5
    assert figure.axes[4].get_title() == "truck\n(deer)"
    assert figure.axes[0].title.get_color() != figure.axes[4].title.get_color()


def test_predictions_can_show_their_confidence():
    images = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    figure = plots.plot_predictions(images, [3, 5], [3, 3], confidences=[0.5, 0.974])
    assert figure.axes[1].get_title() == "cat 97%\n(dog)"


def test_images_grid_has_a_panel_per_image_under_its_own_title():
    images = np.stack([np.full((32, 32, 3), 20 * i, np.uint8) for i in range(12)])
    figure = plots.plot_images(images, titles=[str(i) for i in range(12)], columns=5)
    shown = [ax for ax in figure.axes if ax.images]
    assert len(shown) == 12
    for i, ax in enumerate(shown):
        assert ax.get_title() == str(i)
        assert (np.asarray(ax.images[0].get_array()) == 20 * i).all()
    assert figure._suptitle.get_text() == "Images"  # every figure has a title


def test_confusion_matrix_puts_true_classes_in_rows():
    confusion = np.zeros((10, 10), dtype=int)
    confusion[3, 5] = 7  # seven cats predicted as dogs
    confusion[5, 3] = 2
    figure = plots.plot_confusion_matrix(confusion)
    (ax,) = figure.axes
    np.testing.assert_array_equal(ax.images[0].get_array(), confusion)
    cell = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text()
            for t in ax.texts}  # (row, column): the count written there
    assert cell[(3, 5)] == "7" and cell[(5, 3)] == "2"
    assert ax.get_yticklabels()[3].get_text() == "cat" and ax.get_ylabel() == "true class"
    assert ax.get_xticklabels()[5].get_text() == "dog"


def test_saliency_has_the_image_and_each_map_in_every_row():
    images = np.zeros((3, 32, 32, 3), dtype=np.uint8)
    maps = {"block 1": np.random.default_rng(0).random((3, 16, 16)),
            "occlusion": np.random.default_rng(1).normal(size=(3, 15, 15))}
    figure = plots.plot_saliency(images, maps, ["cat", "dog", "ship"])
    assert len(figure.axes) == 9
    assert [ax.get_title() for ax in figure.axes[:3]] == ["image", "block 1", "occlusion"]
    assert [figure.axes[3 * r].get_ylabel() for r in range(3)] == ["cat", "dog", "ship"]
    assert figure.axes[2].images[1].get_cmap().name == "RdBu_r"  # signed: diverging
    assert figure._suptitle.get_text()


def test_accuracy_by_epoch_and_hour_keeps_each_runs_colour_and_skips_untimed_runs():
    timed = [{"epoch": e, "val_accuracy": a, "seconds": 1800}
             for e, a in ((1, 0.5), (2, 0.7))]
    figure = plots.plot_accuracy_by_epoch_and_hour(
        {"published": [{"epoch": 1, "val_accuracy": 0.4}], "ours": timed})
    by_epoch, by_hour = figure.axes
    assert [line.get_label() for line in by_epoch.lines] == ["published", "ours"]
    assert [line.get_label() for line in by_hour.lines] == ["ours"]
    assert by_hour.lines[0].get_color() == by_epoch.lines[1].get_color()
    np.testing.assert_allclose(by_hour.lines[0].get_xdata(), [0.5, 1.0])  # hours
    assert "hours" in by_hour.get_xlabel() and by_epoch.get_ylabel() == "validation accuracy"
    with pytest.raises(ValueError, match="at least one"):
        plots.plot_accuracy_by_epoch_and_hour({})
    # A published log that measured the test images says so on the axis.
    figure = plots.plot_accuracy_by_epoch_and_hour(
        {"published": [{"epoch": 1, "val_accuracy": 0.4}]}, ylabel="test accuracy")
    assert figure.axes[0].get_ylabel() == "test accuracy"


def test_learning_rates_draw_one_line_per_schedule():
    ax = plots.plot_learning_rates({"a": ([0, 1], [0.1, 0.1]), "b": ([0, 2], [0, 1])}).axes[0]
    assert [line.get_label() for line in ax.lines] == ["a", "b"]
    assert ax.get_ylabel() == "learning rate"


def test_the_shared_figures_import_no_training_code():
    code = ("import sys, convmixer_lib.plots; print(sorted(m for m in sys.modules "
            "if m.startswith('convmixer_lib.')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    loaded = set(eval(result.stdout.strip().splitlines()[-1]))
    assert not loaded & {"convmixer_lib.training", "convmixer_lib.rundir",
                         "convmixer_lib.ablations", "convmixer_lib.recipes"}, loaded
