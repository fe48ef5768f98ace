"""The committed runs in results/: their files agree, and the weights of the
record (results/convmixer-256-8/), of the recipes' runs that keep them (the
fast, 3-epoch and long recipes, the 3-epoch setting chosen on a fresh seed,
the long recipe's first run and its tried changes, in results/recipes/) and of
the comparison's full-budget runs still reach their recorded test accuracy on
the real CIFAR-10 test set. The ablation sweep's records (results/ablations/)
agree with the sweep's configurations, and the comparison's
(results/comparison/) with its protocol."""

import pathlib
import re

import h5py
import numpy as np
import pytest

from convmixer_lib import choices, compare
from convmixer_lib.architectures import build_model, model_config
from convmixer_lib.choices import RECIPES as RECIPE_SETTINGS
from convmixer_lib.cli import ABLATION_FOLDERS
from convmixer_lib.fast import accelerate
from convmixer_lib.flops import forward_flops
from convmixer_lib.model import build_convmixer, convmixer_config
from convmixer_lib.recipes import (
    EXAMPLE_TEST_ACCURACY,
    FAST3_CHANGES,
    FAST3_RETRIED,
    FAST3_RETRIED_SEEDS,
    FAST3_SEEDS,
    LOCUSLAB_LOG,
    LONG_CHANGE_SEEDS,
    LONG_CHANGES,
    recipe_runs,
)
from convmixer_lib.records import ADDED_SETTINGS, read_json
from convmixer_lib.rundir import load_run_model
from convmixer_lib.training import evaluate, evaluate_plain_and_flips

RESULTS = pathlib.Path(__file__).resolve().parent.parent / "results"
RECORD = RESULTS / "convmixer-256-8"
# Every committed run: (learning-rate schedule, seed). metrics.json records the
# schedule since the option exists; the constant-rate run predates it.
RUNS = {
    "convmixer-256-8": ("cosine", 42),
    "convmixer-256-8-constant": ("constant", 42),
    "convmixer-256-8-seed1": ("cosine", 1),
}
RECIPES = RESULTS / "recipes"
FAST = RECIPES / "fast"
FAST3 = RECIPES / "fast3"
LONG = RECIPES / "long"
# The 3-epoch setting chosen on validation among the retried changes' runs with a
# fresh seed (chapter 4): that run keeps its weights.
FAST3_CHOSEN = RECIPES / "fast3-batch-64-without-augmentation-seed1"
NO_SHIFTS = RECIPES / "long-without-shifts"  # the long recipe's change tried on validation
# The long recipe's tried changes, then those of their runs with other seeds that exist.
LONG_TRIED_RUNS = [*(RECIPES / f"long-{name}" for name in LONG_CHANGES),
                   *(run_dir for name in LONG_CHANGES for seed in LONG_CHANGE_SEEDS
                     if (run_dir := RECIPES / f"long-{name}-seed{seed}").exists())]
# The long recipe's first run, with Keras' RandAugment layer (factor 0.1) and the
# raw weights' BatchNorm statistics: the settings it trained with.
FIRST_LONG = RECIPES / "long-keras-randaugment"
FIRST_LONG_SETTINGS = {**RECIPE_SETTINGS["long"], "augment": "randaugment", "bn_images": 0}
WEIGHTED_RUN_FILES = ["best.weights.h5", "config.json", "history.json", "metrics.json",
                      "run.json"]
ABLATIONS = {budget: RESULTS.parent / folder for budget, folder in ABLATION_FOLDERS.items()}
COMPARISON = RESULTS / "comparison"


def recorded_settings(run_dir):
    """run.json's settings and metrics.json, with the settings added since
    (`records.ADDED_SETTINGS`) filled in with the values the run trained with."""
    return ({**ADDED_SETTINGS, **read_json(run_dir / "run.json")["settings"]},
            {**ADDED_SETTINGS, **read_json(run_dir / "metrics.json")})


def test_every_run_in_results_is_listed():
    assert sorted(p.name for p in RESULTS.iterdir() if p.is_dir()) == sorted(
        [*RUNS, "recipes", *(folder.name for budget, folder in ABLATIONS.items()
                             if budget == "short" or folder.is_dir()),
         *(["comparison"] if COMPARISON.is_dir() else [])])
    if COMPARISON.is_dir():
        assert {re.sub(r"-seed\d+$", "", p.name) for p in COMPARISON.iterdir()} <= {
            "grid", *choices.MODELS}
    assert {p.name for p in RECIPES.iterdir() if p.is_dir()} <= {*recipe_runs(), FIRST_LONG.name}
    # Every configuration of the short budget's sweep has its record: chapter 7
    # reads them all; the full budget's records are among its configurations.
    sweep = {run["name"] for run in choices.configurations()}
    assert {p.name for p in ABLATIONS["short"].iterdir()} == sweep
    full = {run["name"] for run in choices.configurations("full")}
    if ABLATIONS["full"].is_dir():
        assert {p.name for p in ABLATIONS["full"].iterdir()} <= full


def test_the_step_profile_adds_up():
    profile = read_json(RESULTS / "step-profile.json")
    assert profile["model"] == "ConvMixer-256/8" and profile["batch_size"] == 128
    for seconds in profile["seconds_per_step"].values():
        parts = [v for k, v in seconds.items() if k != "step"]
        assert sum(parts) == pytest.approx(seconds["step"])
    keras_layers, library = profile["seconds_per_step"].values()
    assert library["step"] < keras_layers["step"]


@pytest.mark.parametrize("run", RUNS)
def test_the_run_is_complete_and_holds_no_training_state(run):
    names = sorted(p.name for p in (RESULTS / run).iterdir())
    assert names == ["best.weights.h5", "config.json", "history.json", "metrics.json"]
    with h5py.File(RESULTS / run / "best.weights.h5") as weights:
        assert "optimizer" not in weights


@pytest.mark.parametrize("run", RUNS)
def test_history_metrics_and_weights_agree(run):
    run_dir = RESULTS / run
    history, metrics = read_json(run_dir / "history.json"), read_json(run_dir / "metrics.json")
    config = read_json(run_dir / "config.json")
    assert metrics["epochs"] == len(history) == 10
    _assert_history_and_metrics_agree(history, metrics)
    assert metrics["model"] == config
    assert (metrics["train_images"], metrics["validation_images"], metrics["test_images"]) == (
        45_000, 5_000, 10_000)
    assert metrics["batch_size"] == 128
    assert (metrics["learning_rate"], metrics["weight_decay"]) == (1e-3, 1e-4)
    assert (metrics.get("schedule", "constant"), metrics["seed"]) == RUNS[run]
    assert metrics["command"].startswith("python -m convmixer_lib train")
    assert len(metrics["commit"]) == 40

    model = build_convmixer(**config)
    model.load_weights(run_dir / "best.weights.h5")  # refuses a mismatched file
    assert model.count_params() == 602_890


def test_recorded_weights_reach_the_recorded_test_accuracy(real_cifar10):
    metrics = read_json(RECORD / "metrics.json")
    _, (x_test, y_test) = real_cifar10
    assert len(x_test) == 10_000
    accuracy = evaluate(accelerate(load_run_model(RECORD)), x_test, y_test)["accuracy"]
    assert abs(accuracy - metrics["test_accuracy"]) <= 0.002


def test_the_record_reaches_the_examples_test_accuracy():
    assert read_json(RECORD / "metrics.json")["test_accuracy"] >= EXAMPLE_TEST_ACCURACY


def _assert_history_and_metrics_agree(history, metrics):
    """A run's history holds every epoch, its metrics the best of them (chosen
    on validation), the epochs' seconds and a confusion matrix of the test set."""
    assert [h["epoch"] for h in history] == list(range(1, metrics["epochs"] + 1))
    best = max(history, key=lambda h: h["val_accuracy"])
    assert (metrics["best_epoch"], metrics["best_val_accuracy"]) == (
        best["epoch"], best["val_accuracy"])
    assert metrics["seconds_per_epoch"] == [h["seconds"] for h in history]
    confusion = np.array(metrics["confusion_matrix"])
    assert confusion.sum() == metrics["test_images"]
    assert np.trace(confusion) / confusion.sum() == pytest.approx(metrics["test_accuracy"])


@pytest.mark.parametrize("run_dir", [run_dir for name in [*recipe_runs(), FIRST_LONG.name]
                                     if (run_dir := RECIPES / name).exists()],
                         ids=lambda p: p.name)
def test_recipe_runs_agree_with_their_recipe_and_their_records(run_dir):
    history = read_json(run_dir / "history.json")
    settings, metrics = recorded_settings(run_dir)
    if run_dir != FIRST_LONG:
        changes = dict(recipe_runs()[run_dir.name])
        recipe, seed = changes.pop("recipe"), changes.pop("seed")
        expected = {**RECIPE_SETTINGS[recipe], **changes}
    else:
        recipe, seed, expected = "long", 42, FIRST_LONG_SETTINGS
    assert {key: settings[key] for key in expected} == expected
    assert metrics["recipe"] == recipe and metrics["seed"] == seed
    assert {key: metrics[key] for key in settings} == settings
    assert (metrics["train_images"], metrics["validation_images"], metrics["test_images"]) == (
        45_000, 5_000, 10_000)
    _assert_history_and_metrics_agree(history, metrics)
    assert [s["epochs"] for s in metrics["segments"]][-1][-1] == metrics["epochs"]


def test_the_fast_recipe_beats_the_examples_10_epochs_in_4():
    metrics = read_json(FAST / "metrics.json")
    assert metrics["epochs"] <= 4
    assert metrics["test_accuracy_flips"] >= EXAMPLE_TEST_ACCURACY
    assert sorted(p.name for p in FAST.iterdir()) == WEIGHTED_RUN_FILES


def test_the_fast_recipe_in_3_epochs_passes_the_examples_10_with_mirror_images():
    # On the images alone it falls short (chapter 4 says by how much).
    metrics = read_json(FAST3 / "metrics.json")
    assert metrics["epochs"] <= 3 and metrics["bn_images"] > 0
    assert metrics["test_accuracy_flips"] >= EXAMPLE_TEST_ACCURACY
    assert sorted(p.name for p in FAST3.iterdir()) == WEIGHTED_RUN_FILES
    history = read_json(FAST3 / "history.json")
    assert all({"stale_bn_val_accuracy", "bn_seconds"} <= h.keys() for h in history)


def test_the_retried_3_epoch_changes_are_those_above_every_seed_of_the_recipe():
    seed_runs = [FAST3, *(RECIPES / f"fast3-seed{seed}" for seed in FAST3_SEEDS)]
    best_seed = max(read_json(run / "metrics.json")["best_val_accuracy"] for run in seed_runs)
    above = [name for name in FAST3_CHANGES if read_json(
        RECIPES / f"fast3-{name}" / "metrics.json")["best_val_accuracy"] > best_seed]
    assert tuple(above) == FAST3_RETRIED


def test_the_3_epoch_setting_chosen_on_a_fresh_seed_passes_the_examples_10_epochs():
    seed, = FAST3_RETRIED_SEEDS
    fresh = {name: read_json(RECIPES / f"fast3-{name}-seed{seed}" / "metrics.json")
             for name in FAST3_RETRIED}
    fresh["recipe"] = read_json(RECIPES / f"fast3-seed{seed}" / "metrics.json")
    chosen = max(fresh, key=lambda name: fresh[name]["best_val_accuracy"])
    assert FAST3_CHOSEN == RECIPES / f"fast3-{chosen}-seed{seed}"
    for run_dir in (RECIPES / f"fast3-{chosen}", FAST3_CHOSEN):  # both seeds, images alone
        metrics = read_json(run_dir / "metrics.json")
        assert metrics["epochs"] <= 3 and metrics["bn_images"] > 0
        assert metrics["test_accuracy"] > EXAMPLE_TEST_ACCURACY, run_dir.name
    assert sorted(p.name for p in FAST3_CHOSEN.iterdir()) == WEIGHTED_RUN_FILES


def test_the_long_recipes_first_run_passes_91_percent_in_25_epochs():
    # With mirror images at test time, part of every recipe and chosen on
    # validation (best_val_accuracy_flips above best_val_accuracy).
    metrics = read_json(FIRST_LONG / "metrics.json")
    assert metrics["epochs"] <= 25
    assert metrics["best_val_accuracy_flips"] > metrics["best_val_accuracy"]
    assert metrics["test_accuracy_flips"] >= 0.91
    assert sorted(p.name for p in FIRST_LONG.iterdir()) == WEIGHTED_RUN_FILES


def test_the_long_recipe_improves_on_its_first_run():
    # It does not reach locuslab's 92.6% (chapter 4 says by how much).
    metrics = read_json(LONG / "metrics.json")
    first = read_json(FIRST_LONG / "metrics.json")
    assert metrics["best_val_accuracy_flips"] > metrics["best_val_accuracy"]
    for key in ("best_val_accuracy", "test_accuracy", "test_accuracy_flips"):
        assert metrics[key] > first[key], key
    assert sorted(p.name for p in LONG.iterdir()) == WEIGHTED_RUN_FILES
    history = read_json(LONG / "history.json")
    assert all({"raw_val_accuracy", "stale_bn_val_accuracy", "bn_seconds"} <= h.keys()
               for h in history)  # chapter 4 draws and compares all three


def test_the_long_runs_without_shifts_lead_on_validation():
    # Chapter 4 prefers them to the long run on validation (by leads within the
    # seed noise, so the recipe itself is unchanged): with mirror images the run
    # at batches of 512, on the images alone the one in batches of 128.
    small_batch = read_json(RECIPES / "long-without-shifts-batch-128" / "metrics.json")
    assert sorted(p.name for p in (RECIPES / "long-without-shifts-batch-128").iterdir()) == (
        WEIGHTED_RUN_FILES)
    metrics, long = read_json(NO_SHIFTS / "metrics.json"), read_json(LONG / "metrics.json")
    assert metrics["best_val_accuracy"] > long["best_val_accuracy"]
    assert metrics["best_val_accuracy_flips"] > metrics["best_val_accuracy"]
    assert metrics["test_accuracy_flips"] >= LOCUSLAB_LOG[-1]["test_accuracy"]
    assert sorted(p.name for p in NO_SHIFTS.iterdir()) == WEIGHTED_RUN_FILES
    assert small_batch["best_val_accuracy"] > metrics["best_val_accuracy"]
    assert small_batch["best_val_accuracy_flips"] < metrics["best_val_accuracy_flips"]
    history = read_json(NO_SHIFTS / "history.json")
    assert all({"raw_val_accuracy", "stale_bn_val_accuracy", "bn_seconds"} <= h.keys()
               for h in history)


@pytest.mark.parametrize("run_dir", [FAST, FAST3, FAST3_CHOSEN, LONG, FIRST_LONG,
                                     *LONG_TRIED_RUNS],
                         ids=lambda p: p.name)
def test_recipe_weights_reach_the_recorded_test_accuracy(run_dir, real_cifar10):
    assert_test_accuracies(accelerate(load_run_model(run_dir)), run_dir, real_cifar10)


def assert_test_accuracies(model, run_dir, cifar10):
    """`model` scores the test accuracies of `run_dir`'s metrics.json, on the
    images alone and with mirror images, within 0.2 points (20 images). The
    test images are predicted once and their mirror images once."""
    metrics = read_json(run_dir / "metrics.json")
    _, (x_test, y_test) = cifar10
    assert len(x_test) == metrics["test_images"] == 10_000
    for results, key in zip(evaluate_plain_and_flips(model, x_test, y_test),
                            ("test_accuracy", "test_accuracy_flips"), strict=True):
        assert abs(results["accuracy"] - metrics[key]) <= 0.002, key


def _ablation_runs():
    return [(budget, run) for budget, folder in ABLATIONS.items() if folder.is_dir()
            for run in choices.configurations(budget) if (folder / run["name"]).is_dir()]


@pytest.mark.parametrize("budget, run", _ablation_runs(),
                         ids=lambda value: value if isinstance(value, str) else value["name"])
def test_ablation_records_agree_with_the_sweep_and_themselves(budget, run):
    run_dir = ABLATIONS[budget] / run["name"]
    # Records only: the weights stay out of the book (.gitignore), and a
    # finished run leaves no lock or backup behind.
    files = {p.name for p in run_dir.iterdir()} - {"best.weights.h5"}
    assert files == {"config.json", "history.json", "metrics.json", "run.json"}
    history = read_json(run_dir / "history.json")
    settings, metrics = recorded_settings(run_dir)
    sweep = choices.BUDGETS[budget]
    assert {key: settings[key] for key in RECIPE_SETTINGS[sweep["recipe"]]} == {
        **RECIPE_SETTINGS[sweep["recipe"]], "epochs": sweep["epochs"]}
    assert {key: metrics[key] for key in settings} == settings
    assert (metrics["recipe"], metrics["train_images"], metrics["validation_images"],
            metrics["test_images"]) == (sweep["recipe"], sweep["train_size"] or 45_000,
                                        5_000, 10_000)
    assert (metrics["ablation"], metrics["seed"]) == (run["name"], run["seed"])
    model = build_convmixer(**run["model"])
    assert metrics["model"] == read_json(run_dir / "config.json") == convmixer_config(model)
    assert metrics["parameters"] == model.count_params()
    _assert_history_and_metrics_agree(history, metrics)


def _comparison_runs():
    grid = sorted((COMPARISON / "grid").iterdir()) if (COMPARISON / "grid").is_dir() else []
    return grid + sorted(p for p in COMPARISON.iterdir() if p.name != "grid")


@pytest.mark.parametrize("run_dir", _comparison_runs(), ids=lambda path: path.name)
def test_comparison_records_follow_the_protocol(run_dir):
    grid = run_dir.parent.name == "grid"
    files = {p.name for p in run_dir.iterdir()} - {"best.weights.h5"}
    assert files == {"config.json", "history.json", "metrics.json", "run.json"}
    settings, metrics = recorded_settings(run_dir)
    name, budget = metrics["comparison"], metrics["budget"]
    assert budget == ("short" if grid else "full")
    assert run_dir.name == (compare.grid_run_name(name, metrics["learning_rate"]) if grid
                            else compare.full_run_name(name, metrics["seed"]))
    assert metrics["learning_rate"] in choices.RATES
    # The fast recipe at the budget, with BatchNorm statistics re-estimated.
    sweep = choices.BUDGETS[budget]
    expected = {**RECIPE_SETTINGS[sweep["recipe"]], "epochs": sweep["epochs"],
                "bn_images": compare.BN_IMAGES, "learning_rate": metrics["learning_rate"]}
    assert {key: settings[key] for key in expected} == expected
    assert {key: metrics[key] for key in settings} == settings
    assert metrics["recipe"] == sweep["recipe"]
    assert metrics["seed"] == compare.SEED or not grid  # a second seed: full budget only
    # Grid runs never see the test images; the full-budget run is tested once.
    assert (metrics["train_images"], metrics["validation_images"], metrics["test_images"]) == (
        sweep["train_size"] or 45_000, 5_000, 0 if grid else 10_000)
    model = build_model(choices.MODELS[name])
    assert metrics["model"] == read_json(run_dir / "config.json") == model_config(model)
    assert (metrics["parameters"], metrics["flops"]) == (model.count_params(),
                                                         forward_flops(model))
    history = read_json(run_dir / "history.json")
    if grid:
        assert [h["epoch"] for h in history] == list(range(1, metrics["epochs"] + 1))
        assert metrics["best_val_accuracy"] == max(h["val_accuracy"] for h in history)
        assert "test_accuracy" not in metrics
    else:  # at the rate its grid chose, whatever the seed
        assert metrics["learning_rate"] == compare.chosen_rate(
            compare.grid_results(COMPARISON, name))
        _assert_history_and_metrics_agree(history, metrics)


@pytest.mark.parametrize("run_dir", [p for p in _comparison_runs() if p.parent == COMPARISON],
                         ids=lambda path: path.name)
def test_comparison_weights_reach_the_recorded_test_accuracy(run_dir, real_cifar10):
    loaded = load_run_model(run_dir)
    assert model_config(loaded) == read_json(run_dir / "config.json")
    assert_test_accuracies(accelerate(loaded), run_dir, real_cifar10)


def test_the_readmes_table_of_records_matches_the_records():
    readme = (RESULTS.parent / "README.md").read_text()
    rows = re.findall(r"^\| `results/([\w/-]+)/` \| [^|]+ \| (\d+) \| ([\d.]+)% \| ([\d.]+%|–) \|$",
                      readme, re.M)
    assert len(rows) >= 5
    for run, epochs, test, flips in rows:
        metrics = read_json(RESULTS / run / "metrics.json")
        assert int(epochs) == metrics["epochs"], run
        assert test == f"{100 * metrics['test_accuracy']:.2f}", run
        expected = metrics.get("test_accuracy_flips")
        assert flips == ("–" if expected is None else f"{100 * expected:.2f}%"), run
