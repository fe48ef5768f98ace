"""The ablation sweep: its configurations, their sizes, and a sweep that skips
finished runs (tiny models on a tiny archive)."""

import json
import pathlib

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.transforms import Bbox

from convmixer_lib import ablations, choices
from convmixer_lib.data import load_splits
from convmixer_lib.flops import forward_flops
from convmixer_lib.model import build_convmixer, convmixer_config

RESULTS = pathlib.Path(__file__).resolve().parent.parent / "results"


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_every_factor_of_the_design_is_varied_alone_around_the_baseline():
    runs = choices.configurations()
    names = [run["name"] for run in runs]
    assert len(set(names)) == len(names) == 15
    baseline = [run for run in runs if run["name"].startswith("baseline")]
    assert [run["seed"] for run in baseline] == [42, 1, 2]
    assert all(run["model"] == choices.BASELINE and run["factor"] is None
               and run["value"] is None for run in baseline)
    varied = {}
    for run in runs[3:]:
        changed = {k: v for k, v in run["model"].items() if choices.BASELINE.get(k) != v}
        assert changed == {run["factor"]: run["value"]} and run["seed"] == 42, run["name"]
        assert run["name"] == f"{run['factor']}-{run['value']}"
        assert run["factor"] in ablations.FACTOR_NAMES
        varied.setdefault(run["factor"], set()).add(run["value"])
    assert varied == {"kernel_size": {3, 7, 9}, "patch_size": {1, 4}, "depth": {4, 12},
                      "filters": {128, 384}, "residual": {False}, "activation": {"relu"},
                      "batchnorm_first": {True}}


def _count_by_hand(filters, depth, kernel_size, patch_size, **_):
    h = filters
    stem = 3 * patch_size**2 * h + h + 4 * h  # convolution, bias, BatchNorm (4 per channel)
    block = (kernel_size**2 * h + h + 4 * h) + (h * h + h + 4 * h)
    return stem + depth * block + h * 10 + 10


@pytest.mark.parametrize("model", [run["model"] for run in choices.configurations()],
                         ids=[run["name"] for run in choices.configurations()])
def test_parameter_count_of_every_configuration(model):
    assert ablations.parameter_count(model) == _count_by_hand(**model)
    rebuilt = build_convmixer(**convmixer_config(build_convmixer(**model)))
    assert convmixer_config(rebuilt) == convmixer_config(build_convmixer(**model))


def test_the_baseline_is_convmixer_256_8():
    assert ablations.parameter_count(choices.BASELINE) == 602_890


@pytest.fixture
def tiny_sweep(monkeypatch, small_archive):
    monkeypatch.setattr(choices, "BASELINE",
                        {"filters": 8, "depth": 1, "kernel_size": 3, "patch_size": 4})
    monkeypatch.setattr(choices, "FACTORS", {"kernel_size": [5], "residual": [False]})
    monkeypatch.setattr(choices, "BASELINE_SEEDS", (0,))
    budgets = {"short": {"recipe": "fast", "epochs": 1, "train_size": 64},
               "full": {"recipe": "fast", "epochs": 1, "train_size": None}}
    for module in (choices, ablations):  # configurations() reads choices', run_sweep ablations'
        monkeypatch.setattr(module, "BUDGETS", budgets)
    monkeypatch.setattr(choices, "FULL_BUDGET_RUNS", ("residual-False", "baseline-seed0"))
    path, _ = small_archive
    return load_splits(path)


def test_a_sweep_trains_each_configuration_once_and_records_what_it_changed(
        tiny_sweep, tmp_path):
    names = ["baseline-seed0", "kernel_size-5", "residual-False"]
    assert ablations.run_sweep(tmp_path, tiny_sweep, verbose=0) == names
    for run in choices.configurations():
        name, model = run["name"], run["model"]
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        assert metrics["ablation"] == name and metrics["recipe"] == "fast"
        assert metrics["model"] == convmixer_config(build_convmixer(**model))
        assert metrics["parameters"] == build_convmixer(**model).count_params()
        assert metrics["train_images"] == 64 and metrics["epochs"] == 1
        assert sum(metrics["seconds_per_epoch"]) > 0
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    assert ablations.run_sweep(tmp_path, tiny_sweep, verbose=0) == []  # all finished
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before


def test_a_sweep_can_train_some_configurations_and_refuses_unknown_ones(tiny_sweep, tmp_path):
    assert ablations.run_sweep(tmp_path, tiny_sweep, only=["residual-False"],
                               verbose=0) == ["residual-False"]
    assert [p.name for p in tmp_path.iterdir()] == ["residual-False"]
    with pytest.raises(ValueError, match="no configurations named \\['kernel-9'\\]"):
        ablations.run_sweep(tmp_path, tiny_sweep, only=["kernel-9"])


def test_the_full_budget_retrains_its_configurations_on_every_training_image(
        tiny_sweep, tmp_path):
    assert ablations.run_sweep(tmp_path, tiny_sweep, budget="full", verbose=0) == [
        "residual-False", "baseline-seed0"]
    for name in ("residual-False", "baseline-seed0"):
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        assert metrics["train_images"] == len(tiny_sweep[0][0]) > 64, name
        assert metrics["epochs"] == 1 and metrics["ablation"] == name
    assert [r["name"] for r in ablations.sweep_results(tmp_path, budget="full")] == [
        "residual-False", "baseline-seed0"]
    with pytest.raises(ValueError, match="the full budget's sweep has"):
        ablations.run_sweep(tmp_path, tiny_sweep, only=["kernel_size-5"], budget="full")
    with pytest.raises(ValueError, match="`budget` must be one of"):
        choices.configurations("long")


def test_the_full_budget_retrains_the_changes_that_matter_with_two_baseline_seeds():
    runs = choices.configurations("full")
    assert [run["name"] for run in runs] == list(choices.FULL_BUDGET_RUNS)
    short = {run["name"]: run for run in choices.configurations()}
    assert all(run == short[run["name"]] for run in runs)
    assert {run["seed"] for run in runs if run["factor"] is None} == {42, 1}
    assert {(run["factor"], run["value"]) for run in runs if run["factor"]} == {
        ("kernel_size", 3), ("kernel_size", 9), ("depth", 12), ("residual", False)}
    short, full = choices.BUDGETS["short"], choices.BUDGETS["full"]
    assert {**short, "train_size": None} == full and short["train_size"] == 20_000


def test_sweep_results_name_each_finished_change_and_leave_out_unfinished_ones(
        tiny_sweep, tmp_path):
    ablations.run_sweep(tmp_path, tiny_sweep, verbose=0)
    (tmp_path / "kernel_size-5" / "metrics.json").unlink()  # as if interrupted
    results = ablations.sweep_results(tmp_path)
    assert [(r["name"], r["factor"], r["value"], r["factor_name"], r["label"])
            for r in results] == [
        ("baseline-seed0", None, None, None, "baseline"),
        ("residual-False", "residual", False, "residual connection",
         "no residual connection")]
    for r in results:
        metrics = json.loads((tmp_path / r["name"] / "metrics.json").read_text())
        history = json.loads((tmp_path / r["name"] / "history.json").read_text())
        assert r["val_accuracy"] == metrics["best_val_accuracy"]
        best = history[metrics["best_epoch"] - 1]
        assert best["epoch"] == metrics["best_epoch"]
        assert (r["raw_val_accuracy"], r["train_accuracy"]) == (
            best["raw_val_accuracy"], best["accuracy"])
        assert r["test_accuracy_flips"] == metrics["test_accuracy_flips"]
        assert r["minutes"] == pytest.approx(sum(metrics["seconds_per_epoch"]) / 60)
        assert r["parameters"] == build_convmixer(**r["model"]).count_params()
        assert r["flops"] == forward_flops(build_convmixer(**r["model"]))


def _result(label, factor, val_accuracy, minutes, parameters, flops=100):
    return {"label": label, "factor": factor, "val_accuracy": val_accuracy,
            "minutes": minutes, "parameters": parameters, "flops": flops}


def test_each_change_is_measured_against_the_baseline_seeds_mean_and_range():
    results = [_result("baseline", None, 0.74, 10.0, 600),
               _result("baseline", None, 0.76, 14.0, 600),
               _result("kernel size 9", "kernel_size", 0.755, 24.0, 900, flops=130),
               _result("patch size 4", "patch_size", 0.70, 3.0, 300)]
    rows = ablations.against_baseline(results)
    assert [r["label"] for r in rows] == ["kernel size 9", "patch size 4"]
    kernel, patch = rows
    assert kernel["difference"] == pytest.approx(0.005) and not kernel["beyond_noise"]
    assert patch["difference"] == pytest.approx(-0.05) and patch["beyond_noise"]
    assert (kernel["time"], kernel["size"]) == (pytest.approx(2.0), pytest.approx(1.5))
    assert (patch["time"], patch["size"]) == (pytest.approx(0.25), pytest.approx(0.5))
    assert (kernel["work"], patch["work"]) == (pytest.approx(1.3), pytest.approx(1.0))
    with pytest.raises(ValueError, match="baseline"):
        ablations.against_baseline(results[2:])


def _ablation_results():
    def run(factor, value, accuracy, label, minutes=10.0, parameters=600_000, flops=3e8):
        model = {"filters": 256, "depth": 8, "kernel_size": 5, "patch_size": 2}
        if factor:
            model[factor] = value
        factor_name = {"kernel_size": "kernel size"}.get(factor, factor)
        return {"factor": factor, "value": value, "factor_name": factor_name,
                "label": label, "model": model,
                "val_accuracy": accuracy, "minutes": minutes, "parameters": parameters,
                "flops": flops}
    return [run(None, None, 0.80, "baseline"), run(None, None, 0.82, "baseline"),
            run("kernel_size", 9, 0.83, "kernel size 9"),
            run("kernel_size", 3, 0.79, "kernel size 3"),
            run("depth", 4, 0.75, "depth 4", minutes=5.0, parameters=300_000, flops=1.5e8),
            run("residual", False, 0.70, "no residual connection")]


def test_ablations_draw_a_panel_per_numeric_factor_and_one_for_the_rest():
    figure = ablations.plot_ablations(_ablation_results())
    assert [ax.get_title() for ax in figure.axes] == [
        "Kernel size", "Depth", "Other design choices"]
    kernel, depth, others = figure.axes
    line = next(line for line in kernel.get_lines() if line.get_marker() == "o")
    assert list(line.get_xdata()) == [3, 5, 9]
    assert list(line.get_ydata()) == pytest.approx([0.79, 0.81, 0.83])
    assert kernel.get_xlabel() == "kernel size (baseline 5)"
    assert [t.get_text() for t in others.get_xticklabels()] == [
        "baseline", "no residual\nconnection"]
    assert kernel.get_ylabel() == "validation accuracy"
    assert "baseline, 2 seeds (range)" in [t.get_text() for t in kernel.get_legend().texts]
    with pytest.raises(ValueError, match="baseline"):
        ablations.plot_ablations(_ablation_results()[2:])


def test_ablation_costs_put_every_change_against_its_operations_and_parameters():
    figure = ablations.plot_ablation_costs(_ablation_results())
    work, parameters = figure.axes
    assert work.get_xlabel().startswith("forward pass, billions of floating-point operations")
    assert work.get_xscale() == parameters.get_xscale() == "log"
    depth4 = next(line for line in work.get_lines() if line.get_marker() == "o")
    assert (1.5e8, 0.75) in [tuple(point) for point in depth4.get_xydata()]
    assert sorted(t.get_text() for t in work.texts) == [
        "depth 4", "kernel size 3", "kernel size 9", "no residual connection"]
    with pytest.raises(ValueError, match="baseline"):
        ablations.plot_ablation_costs(_ablation_results()[2:])


def test_ablation_costs_labels_cover_no_marker_legend_or_other_label():
    # The committed sweep, as chapter 7 draws it: five changes keep the
    # baseline's 602,890 parameters, so their points share one column.
    results = ablations.sweep_results(RESULTS / "ablations")
    figure = ablations.plot_ablation_costs(results)
    renderer = figure.canvas.get_renderer()
    radius = plt.rcParams["lines.markersize"] / 2 * figure.dpi / 72
    for ax in figure.axes:
        labels = [t.get_window_extent(renderer) for t in ax.texts]
        assert len(labels) == len(results) - 3
        frame = ax.get_window_extent(renderer)
        assert all(frame.contains(b.x0, b.y0) and frame.contains(b.x1, b.y1) for b in labels)
        points = np.concatenate([ax.transData.transform(line.get_xydata())
                                 for line in ax.get_lines() if line.get_marker() != "None"])
        assert len(points) == len(results)
        taken = [Bbox([[x - radius, y - radius], [x + radius, y + radius]]) for x, y in points]
        if ax.get_legend():
            taken.append(ax.get_legend().get_window_extent(renderer))
        for text, box in zip(ax.texts, labels):
            assert not any(box.overlaps(other) for other in taken), text.get_text()
            taken.append(box)


def test_the_budgets_steps():
    assert ablations.budget_steps("short") == 4 * 157 == 628
    assert ablations.budget_steps("full") == 4 * 352 == 1408


def test_each_verdict_is_read_against_its_own_budgets_seeds():
    short = [_result("baseline", None, 0.74, 10, 600), _result("baseline", None, 0.76, 10, 600),
             _result("kernel size 9", "kernel_size", 0.70, 10, 600),
             _result("depth 12", "depth", 0.70, 10, 600),
             _result("depth 4", "depth", 0.745, 10, 600),
             _result("no residual connection", "residual", 0.68, 10, 600),
             _result("width 128", "filters", 0.60, 10, 600)]
    full = [_result("baseline", None, 0.85, 20, 600), _result("baseline", None, 0.86, 20, 600),
            _result("kernel size 9", "kernel_size", 0.87, 20, 600),  # below, then above
            _result("depth 12", "depth", 0.855, 20, 600),  # below, then inside
            _result("depth 4", "depth", 0.80, 20, 600),  # inside, then below
            _result("no residual connection", "residual", 0.80, 20, 600)]  # below twice
    rows = ablations.compare_budgets(short, full)
    assert [(r["label"], r["verdict"]) for r in rows] == [
        ("kernel size 9", "flips"), ("depth 12", "within noise"), ("depth 4", "emerges"),
        ("no residual connection", "holds")]
    kernel = rows[0]
    assert kernel["short"]["difference"] == pytest.approx(-0.05)
    assert kernel["full"]["difference"] == pytest.approx(0.015)
    # Errors over the baseline mean's: 30% against 25%, then 13% against 14.5%.
    assert kernel["short"]["error_ratio"] == pytest.approx(0.30 / 0.25)
    assert kernel["full"]["error_ratio"] == pytest.approx(0.13 / 0.145)
    figure = ablations.plot_budgets(short, full)
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()][1:] == [
        "kernel size 9", "depth 12", "depth 4", "no residual\nconnection"]
    changes = [line for line in ax.get_lines() if line.get_marker() == "o"]
    assert [line.get_label() for line in changes] == [
        "20,000 images, 628 steps (baseline: 2 seeds)",
        "45,000 images, 1,408 steps (baseline: 2 seeds)"]
    assert list(changes[1].get_ydata()) == pytest.approx([1.5, 0.0, -5.5, -5.5])
    errors = [line for line in figure.axes[1].get_lines() if line.get_marker() == "o"]
    assert list(errors[1].get_ydata()) == pytest.approx(
        [0.13 / 0.145, 0.145 / 0.145, 0.20 / 0.145, 0.20 / 0.145])
