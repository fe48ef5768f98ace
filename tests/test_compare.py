"""The comparison's protocol: the rate chosen on validation alone, grid runs
that never see the test images, full-budget runs tested once, records that
agree (tiny models on a tiny archive)."""

import json
import os
import pathlib
import shutil

import pytest

from test_architectures import TINY_MODELS
from convmixer_lib import choices, compare, plots
from convmixer_lib.choices import RECIPES
from convmixer_lib.data import load_splits
from convmixer_lib.training import TrainingDiverged


@pytest.mark.parametrize("tried, expected", [
    ({}, [0.001, 0.003, 0.01]),
    ({0.001: 0.5}, [0.003, 0.01]),
    ({0.001: 0.5, 0.003: 0.7, 0.01: 0.6}, []),  # best inside: chosen
    ({0.001: 0.5, 0.003: 0.6, 0.01: 0.7}, [0.03]),  # best at the top: one beyond
    ({0.001: 0.7, 0.003: 0.6, 0.01: 0.5}, [0.0003]),  # best at the bottom
    ({0.0003: 0.8, 0.001: 0.7, 0.003: 0.6, 0.01: 0.5}, []),  # the lowest rate of RATES
    ({0.001: 0.5, 0.003: 0.6, 0.01: 0.7, 0.03: 0.8, 0.1: 0.9}, []),  # the highest
    ({0.001: 0.5, 0.003: 0.6, 0.01: 0.7, 0.03: 0.65}, []),
])
def test_the_grid_grows_past_its_best_rate_only_while_that_is_at_an_end(tried, expected):
    assert compare.rates_to_try(tried) == expected


def test_ties_go_to_the_lower_rate():
    assert compare.chosen_rate({0.01: 0.7, 0.001: 0.7, 0.003: 0.6}) == 0.001


def test_a_diverging_grid_run_counts_as_the_worst_rate_and_is_not_trained_again(
        monkeypatch, tmp_path, capsys):
    # A stand-in for training: writes what a finished grid run records, and
    # diverges at 0.03, as a rate too high for the model would.
    accuracy = {0.001: 0.5, 0.003: 0.6, 0.01: 0.7, 0.03: None}
    trained = []

    def train(run_dir, splits, model, budget, rate, test, verbose, seed=compare.SEED):
        trained.append((budget, rate))
        os.makedirs(run_dir, exist_ok=True)
        if budget == "full":
            metrics = {"learning_rate": rate}
        elif accuracy[rate] is None:
            (pathlib.Path(run_dir) / "history.json").write_text("[]")
            raise TrainingDiverged("training diverged: ... (--overwrite, overwrite=True).",
                                   "the loss became nan at epoch 1, step 3")
        else:
            short = compare.BUDGETS["short"]
            metrics = {"recipe": short["recipe"], "epochs": short["epochs"],
                       "train_images": short["train_size"], "seed": compare.SEED,
                       "learning_rate": rate, "bn_images": compare.BN_IMAGES,
                       "best_val_accuracy": accuracy[rate]}
        (pathlib.Path(run_dir) / "metrics.json").write_text(json.dumps(metrics))

    monkeypatch.setattr(compare, "_train", train)
    assert compare.run_comparison(tmp_path, None, only=["vit"]) == {"vit": 0.01}
    assert trained == [("short", 0.001), ("short", 0.003), ("short", 0.01), ("short", 0.03),
                       ("full", 0.01)]
    assert capsys.readouterr().out == ("vit-lr0.03 diverged (the loss became nan at epoch 1, "
                                       "step 3): the rate counts as the worst\n")
    assert compare.grid_results(tmp_path, "vit") == {0.001: 0.5, 0.003: 0.6, 0.01: 0.7,
                                                     0.03: 0.0}
    trained.clear()
    assert compare.run_comparison(tmp_path, None, only=["vit"]) == {"vit": 0.01}
    assert trained == []


def test_every_model_starts_from_the_same_rates():
    assert set(choices.FIRST_RATES) < set(choices.RATES)
    assert set(choices.MODELS) == set(compare.MODEL_NAMES) == {
        "convmixer", "resnet", "vit", "mlp_mixer"}
    assert choices.MODELS["convmixer"] == choices.BASELINE


def test_describe_models_counts_each_models_own_parameters_and_flops():
    rows = {row["model"]: row for row in compare.describe_models()}
    assert rows["convmixer"]["parameters"] == 602_890
    assert rows["convmixer"]["flops"] == 296_227_840
    assert len({row["parameters"] for row in rows.values()}) == 4
    assert len({row["flops"] for row in rows.values()}) == 4
    assert [(rows[m]["input"], rows[m]["blocks"], rows[m]["width"]) for m in rows] == [
        ("2×2 patches", 8, "256"), ("pixels", 21, "16–32–64"),
        ("2×2 patches", 4, "128"), ("2×2 patches", 4, "128")]


# The comparison shrunk to two tiny models, three rates and one epoch.
TINY_COMPARISON = {
    "MODELS": {k: TINY_MODELS[k] for k in ("vit", "resnet")},
    "RATES": (0.001, 0.01, 0.1),
    "FIRST_RATES": (0.001, 0.01),
    "BUDGETS": {"short": {"recipe": "fast", "epochs": 1, "train_size": 64},
                "full": {"recipe": "fast", "epochs": 1, "train_size": None}},
}


def shrink_comparison(monkeypatch):
    for name, value in TINY_COMPARISON.items():
        monkeypatch.setattr(compare, name, value)


@pytest.fixture(scope="module")
def trained_tiny_comparison(small_archive, tmp_path_factory):
    """The tiny comparison, trained once for this module: (folder, splits, chosen)."""
    folder = tmp_path_factory.mktemp("comparison")
    splits = load_splits(small_archive[0])
    with pytest.MonkeyPatch.context() as monkeypatch:
        shrink_comparison(monkeypatch)
        return folder, splits, compare.run_comparison(folder, splits, verbose=0)


@pytest.fixture
def tiny_comparison(trained_tiny_comparison, monkeypatch, tmp_path):
    """A copy of the trained tiny comparison in `tmp_path`, the comparison still
    shrunk: (splits, chosen)."""
    folder, splits, chosen = trained_tiny_comparison
    shutil.copytree(folder, tmp_path, dirs_exist_ok=True)
    shrink_comparison(monkeypatch)
    return splits, chosen


def test_a_comparison_chooses_on_validation_and_tests_only_the_chosen_run(
        tiny_comparison, tmp_path):
    splits, chosen = tiny_comparison
    assert set(chosen) == {"vit", "resnet"}
    for model, rate in chosen.items():
        grid = compare.grid_results(tmp_path, model)
        assert compare.rates_to_try(grid) == [] and rate == max(grid, key=grid.get)
        for tried in grid:
            run_dir = tmp_path / "grid" / compare.grid_run_name(model, tried)
            metrics = json.loads((run_dir / "metrics.json").read_text())
            assert not [key for key in metrics if key.startswith("test_")
                        and key != "test_images"], "a grid run saw the test images"
            assert metrics["test_images"] == 0 and metrics["train_images"] == 64
            assert metrics["learning_rate"] == tried and metrics["comparison"] == model
        metrics = json.loads((tmp_path / model / "metrics.json").read_text())
        assert metrics["learning_rate"] == rate and metrics["budget"] == "full"
        assert metrics["train_images"] == len(splits[0][0]) and metrics["test_images"] == len(
            splits[2][0])
        assert 0 <= metrics["test_accuracy"] <= 1
        assert metrics["model"]["architecture"] == model
    # One recipe for all: every setting but the model and the rate is the same.
    recipes = [{key: value for key, value in json.loads(
        (tmp_path / model / "metrics.json").read_text()).items()
        if (key in RECIPES["fast"] or key in ("seed", "train_images", "recipe"))
        and key != "learning_rate"} for model in chosen]
    assert recipes[0] == recipes[1] and recipes[0]["seed"] == compare.SEED
    assert recipes[0]["bn_images"] == compare.BN_IMAGES  # BatchNorm statistics of their own


def test_a_finished_comparison_trains_nothing_more_and_reads_back(tiny_comparison, tmp_path):
    splits, chosen = tiny_comparison
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    assert compare.run_comparison(tmp_path, splits, verbose=0) == chosen
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before
    results = {r["model"]: r for r in compare.comparison_results(tmp_path)}
    for model, rate in chosen.items():
        r = results[model]
        assert r["rate"] == rate and r["metrics"]["learning_rate"] == rate
        assert r["at_edge"] == (rate in (0.001, 0.1))  # the tiny grid's ends
        assert r["minutes"] == pytest.approx(sum(r["metrics"]["seconds_per_epoch"]) / 60)
        assert len(r["history"]) == 1
    figure = compare.plot_comparison(list(results.values()))
    minutes, flops, parameters = figure.axes
    for ax, key in [(minutes, "minutes"), (flops, "flops"), (parameters, "parameters")]:
        points = {line.get_label(): line.get_xydata()[0] for line in ax.get_lines()}
        assert set(points) == {results[m]["name"] for m in chosen}
        for model in chosen:
            x, y = points[results[model]["name"]]
            scale = {"minutes": 1, "flops": 1e6, "parameters": 1e3}[key]
            assert x == pytest.approx(results[model][key] / scale)
            assert y == results[model]["metrics"]["test_accuracy"]
    ordered = compare.comparison_results(tmp_path)
    (line,) = compare.plot_comparison([{**ordered[0], "metrics": None}, ordered[1]]).axes[0].get_lines()
    assert (line.get_marker(), line.get_color()) == (plots.MARKERS[1], "C1")  # its own, as before
    unfinished = [{**r, "metrics": None} for r in results.values()]
    with pytest.raises(ValueError, match="no full-budget run has finished"):
        compare.plot_comparison(unfinished)
    with pytest.raises(ValueError, match="no models named \\['vgg'\\]"):
        compare.run_comparison(tmp_path, splits, only=["vgg"])


def test_a_second_seed_trains_the_full_budget_run_again_and_nothing_else(tiny_comparison,
                                                                         tmp_path):
    splits, chosen = tiny_comparison
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    assert compare.run_comparison(tmp_path, splits, only=["vit"], seed=7, verbose=0) == {
        "vit": chosen["vit"]}
    assert {p: p.stat().st_mtime_ns for p in before} == before  # the grid and seed 42 untouched
    new = {p.relative_to(tmp_path).parts[0] for p in set(tmp_path.rglob("*")) - set(before)}
    assert new == {compare.full_run_name("vit", 7)} == {"vit-seed7"}
    metrics = json.loads((tmp_path / "vit-seed7" / "metrics.json").read_text())
    assert (metrics["seed"], metrics["learning_rate"]) == (7, chosen["vit"])
    (built,) = [row for row in compare.describe_models() if row["model"] == "vit"]
    assert (metrics["parameters"], metrics["flops"]) == (built["parameters"], built["flops"])
    results = {r["model"]: r for r in compare.comparison_results(tmp_path)}
    assert results["resnet"]["other_seeds"] == []
    (other,) = results["vit"]["other_seeds"]
    assert other["seed"] == 7 and other["metrics"] == metrics
    assert results["vit"]["metrics"]["seed"] == compare.SEED
    metrics_file = tmp_path / "vit-seed7" / "metrics.json"
    metrics_file.write_text(json.dumps({**metrics, "seed": 8}))
    with pytest.raises(ValueError, match="trained with seed 8, not the seed its name says"):
        compare.comparison_results(tmp_path)
    metrics_file.write_text(json.dumps({**metrics, "learning_rate": 0.5}))
    with pytest.raises(ValueError, match="vit-seed7' was trained at peak rate 0.5, but the "
                                         f"grid now chooses {chosen['vit']:g}"):
        compare.comparison_results(tmp_path)


def test_a_record_trained_otherwise_than_the_protocol_asks_is_refused(tiny_comparison, tmp_path):
    splits, chosen = tiny_comparison
    rate = chosen["vit"]
    other = next(r for r in compare.grid_results(tmp_path, "vit") if r != rate)
    metrics_file = tmp_path / "grid" / compare.grid_run_name("vit", other) / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    metrics_file.write_text(json.dumps({**metrics, "best_val_accuracy": 2.0}))
    with pytest.raises(ValueError, match=f"trained at peak rate {rate:g}, but the grid now "
                                         f"chooses {other:g}"):
        compare.run_comparison(tmp_path, splits, only=["vit"], verbose=0)
    with pytest.raises(ValueError, match=f"trained at peak rate {rate:g}, but the grid now "
                                         f"chooses {other:g}"):
        compare.comparison_results(tmp_path)  # reading the records refuses it too
    metrics_file.write_text(json.dumps({**metrics, "seed": 7}))
    with pytest.raises(ValueError, match="not the grid's"):
        compare.grid_results(tmp_path, "vit")


def test_one_name_given_as_a_string_is_refused_not_read_letter_by_letter(tmp_path):
    message = "`only` must be a list, got the single string 'vit'; pass ['vit']."
    with pytest.raises(ValueError) as error:
        compare.run_comparison(tmp_path, None, only="vit")
    assert str(error.value) == message
    with pytest.raises(ValueError) as error:
        choices.check_names("baseline-seed42")
    assert str(error.value) == message.replace("'vit'", "'baseline-seed42'")
    assert not any(tmp_path.iterdir())
