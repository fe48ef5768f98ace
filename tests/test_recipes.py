"""The recipes' pieces: warm-up, smoothed targets, averaged weights, flips at test time."""

import json
import os
import pathlib
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

from conftest import TINY, StopAtEpoch, easy_data, train_tiny
from convmixer_lib.choices import CLASS_NAMES, RECIPES, recipe_settings
from convmixer_lib.cli import _parser, main
from convmixer_lib.fast import acceleration_unavailable
from convmixer_lib.model import build_convmixer
from convmixer_lib.recipes import (
    FAST3_CHANGES,
    FAST3_RETRIED,
    FAST3_RETRIED_SEEDS,
    FAST3_SEEDS,
    LEAVE_ONE_OUT,
    LONG_CHANGE_SEEDS,
    LONG_CHANGES,
    leave_one_out,
    plot_smoothed_target,
    recipe_runs,
)
from convmixer_lib.rundir import load_run_model
from convmixer_lib.training import (
    evaluate,
    evaluate_plain_and_flips,
    learning_rate_schedule,
    reestimate_batchnorm,
)


def test_warmup_rises_linearly_then_decays_along_a_cosine():
    rate = learning_rate_schedule(0.01, "cosine", total_steps=100, warmup_steps=20)
    at = {step: float(rate(step)) for step in (0, 10, 20, 60, 100)}
    assert at[0] == pytest.approx(0.0, abs=1e-9)
    assert at[10] == pytest.approx(0.005)  # halfway up
    assert at[20] == pytest.approx(0.01)  # the peak, where the warm-up ends
    assert at[60] == pytest.approx(0.005)  # halfway down the 80 decay steps
    assert at[100] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("schedule, steps, warmup, message", [
    ("constant", 100, 10, "warm-up needs `schedule='cosine'`"),
    ("cosine", 100, 100, "warmup_steps` must be between 0 and 99"),
])
def test_impossible_warmups_are_refused(schedule, steps, warmup, message):
    with pytest.raises(ValueError, match=message):
        learning_rate_schedule(0.01, schedule, steps, warmup)


@pytest.mark.parametrize("option, value", [
    ("warmup", 1.0), ("label_smoothing", -0.1), ("ema", 1.0)])
def test_out_of_range_recipe_settings_are_refused(tmp_path, option, value):
    with pytest.raises(ValueError, match=f"`{option}` must be"):
        train_tiny(tmp_path, epochs=1, **{option: value})
    assert not any(tmp_path.iterdir())


def test_a_warmup_that_the_schedule_would_ignore_is_refused(tmp_path):
    with pytest.raises(ValueError, match="`warmup`=0.25 needs `schedule`='cosine', got "
                                         "'constant'"):
        train_tiny(tmp_path, epochs=1, warmup=0.25, schedule="constant")
    assert not any(tmp_path.iterdir())


def test_smoothed_targets_are_what_the_loss_measures(tmp_path):
    model, history, _ = train_tiny(tmp_path, epochs=1, label_smoothing=0.3)
    x_val, y_val = easy_data(128, 1)
    p = model.predict(x_val, verbose=0)
    target = np.full_like(p, 0.3 / 10)
    target[np.arange(len(p)), y_val[:, 0]] += 0.7
    by_hand = -np.mean(np.sum(target * np.log(p), axis=1))
    assert history[0]["val_loss"] == pytest.approx(by_hand, rel=1e-4)
    plain = -np.mean(np.log(p[np.arange(len(p)), y_val[:, 0]]))
    assert history[0]["val_loss"] != pytest.approx(plain, rel=1e-3)  # smoothing shows


@pytest.fixture(scope="module")
def averaged_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ema")
    return (run_dir, *train_tiny(run_dir, epochs=3, ema=0.8))


def test_averaged_weights_are_validated_and_kept(averaged_run):
    run_dir, _, history, metrics = averaged_run
    assert all("raw_val_accuracy" in h and "raw_val_loss" in h for h in history)
    best = max(history, key=lambda h: h["val_accuracy"])
    x_val, y_val = easy_data(128, 1)
    kept = evaluate(load_run_model(run_dir), x_val, y_val)
    assert kept["loss"] == pytest.approx(best["val_loss"], rel=1e-4)
    assert abs(best["val_loss"] - best["raw_val_loss"]) > 1e-3  # two sets of weights
    assert metrics["ema"] == 0.8


class _WeightsAtEpochStart(keras.callbacks.Callback):
    """The model's weights, BatchNorm statistics included, and the optimizer's
    variables (moments, averages, step count) as the first batch of epoch
    `epoch` (0-based) trains."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch, self.weights, self._current = epoch, None, None

    def on_epoch_begin(self, epoch, logs=None):
        self._current = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self._current == self.epoch and batch == 0:
            self.weights = [w.numpy().copy() for w in self.model.weights]
            self.weights += [np.array(v.numpy()) for v in self.model.optimizer.variables]


@pytest.mark.parametrize("bn_images", [0, 128])
def test_a_resumed_run_trains_on_from_the_raw_weights_not_the_average(tmp_path, bn_images):
    # With a re-estimate the BatchNorm statistics differ too: the raw weights'
    # own go on training, not those re-estimated for the average.
    options = {"epochs": 3, "ema": 0.8, "augment": "none", "bn_images": bn_images}
    straight = _WeightsAtEpochStart(2)
    train_tiny(tmp_path / "straight", callbacks=[straight], **options)
    with pytest.raises(KeyboardInterrupt):  # the backup holds epoch 2
        train_tiny(tmp_path / "resumed", callbacks=[StopAtEpoch(2)], **options)
    resumed = _WeightsAtEpochStart(2)
    train_tiny(tmp_path / "resumed", callbacks=[resumed], **options)
    for a, b in zip(straight.weights, resumed.weights, strict=True):
        np.testing.assert_allclose(b, a, atol=1e-6)


def test_flips_at_test_time_average_each_image_with_its_mirror():
    # A model that sees only the left half of an image: flips change its answers.
    inputs = keras.Input((32, 32, 3))
    left = keras.layers.Cropping2D(((0, 0), (0, 16)))(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(left))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(pooled))
    x, y = easy_data(64, 3)
    x[:, :, :16] = 0  # the left halves hold nothing; the mirrored ones hold the images
    p = (model.predict(x, verbose=0) + model.predict(x[:, :, ::-1], verbose=0)) / 2
    with_flips = evaluate(model, x, y, flips=True)
    assert with_flips["accuracy"] == pytest.approx(np.mean(p.argmax(1) == y[:, 0]))
    assert not np.array_equal(with_flips["predictions"], evaluate(model, x, y)["predictions"])
    # Both at once, from one prediction of the images and one of their mirror images.
    predicted = []
    predict = model.predict
    model.predict = lambda images, **options: predicted.append(images) or predict(images, **options)
    plain, flips = evaluate_plain_and_flips(model, x, y)
    assert [np.array_equal(images, x) for images in predicted] == [True, False]
    del model.predict
    for got, expected in ((plain, evaluate(model, x, y)), (flips, with_flips)):
        assert got["accuracy"] == expected["accuracy"]
        np.testing.assert_array_equal(got["predictions"], expected["predictions"])


def test_recipe_settings_apply_changes_and_name_mistakes():
    fast = recipe_settings("fast", epochs=3, ema=None)
    assert fast == {**RECIPES["fast"], "epochs": 3}
    with pytest.raises(ValueError, match="'slow'"):
        recipe_settings("slow")
    with pytest.raises(ValueError, match="'momentum'.*are not recipe settings"):
        recipe_settings("fast", momentum=0.9)


def test_train_records_the_recipe_and_the_changes_to_it(small_archive, tmp_path, capsys):
    path, _ = small_archive
    run_dir = tmp_path / "run"
    main(["train", "--recipe", "fast", "--data", str(path), "--run-dir", str(run_dir),
          "--epochs", "1", "--train-size", "64", "--batch-size", "32", "--filters", "8",
          "--depth", "1", "--ema", "0", "--augment", "none"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    settings = json.loads((run_dir / "run.json").read_text())["settings"]
    expected = {**RECIPES["fast"], "epochs": 1, "batch_size": 32, "ema": 0.0,
                "augment": "none", "recipe": "fast"}
    for key, value in expected.items():
        assert metrics[key] == value and settings[key] == value, key
    assert "with flips" in capsys.readouterr().out
    for key in ("test_accuracy_flips", "best_val_accuracy_flips"):
        assert 0 <= metrics[key] <= 1



def test_the_long_recipe_trains_with_randaugment(small_archive, tmp_path):
    path, _ = small_archive
    run_dir = tmp_path / "run"
    main(["train", "--recipe", "long", "--data", str(path), "--run-dir", str(run_dir),
          "--epochs", "2", "--train-size", "96", "--batch-size", "32", "--filters", "8",
          "--depth", "1"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["augment"] == "randaugment-m12" and metrics["warmup"] == 0.4
    assert metrics["bn_images"] == 5120
    assert metrics["epochs"] == 2 and metrics["learning_rate"] == 0.05


def test_each_leave_one_out_run_removes_one_ingredient_of_the_fast_recipe():
    for name, change in LEAVE_ONE_OUT.items():
        assert len(change) == 1, name
        (key, value), = change.items()
        assert value != RECIPES["fast"][key], name
        assert value in (RECIPES["example"][key], "none"), name  # the example's, or nothing


def test_the_recipe_runs_are_every_run_the_library_names():
    runs = recipe_runs()
    assert len(runs) == (3 + len(LEAVE_ONE_OUT) + len(FAST3_CHANGES) + len(FAST3_SEEDS)
                         + len(FAST3_RETRIED) * len(FAST3_RETRIED_SEEDS)
                         + len(LONG_CHANGES) * (1 + len(LONG_CHANGE_SEEDS)))  # no name twice
    recipes = [options["recipe"] for options in runs.values()]
    assert recipes == sorted(recipes, key=["fast", "fast3", "long"].index)  # short runs first


def test_the_recipe_runs_listing_gives_train_the_options_the_library_names():
    listing = subprocess.run([sys.executable, "-m", "convmixer_lib.recipes"],  # what make reads
                             capture_output=True, text=True, check=True)
    lines = [line.split() for line in listing.stdout.splitlines()]
    runs = recipe_runs()
    assert [name for name, *options in lines] == list(runs)
    for name, *options in lines:
        args = _parser().parse_args(["train", "--run-dir", "r", *options])
        changes = {key: value for key in RECIPES[args.recipe]
                   if (value := getattr(args, key)) is not None}
        assert {"recipe": args.recipe, "seed": args.seed, **changes} == runs[name], name


@pytest.mark.parametrize("failing", [False, True])
def test_make_recipe_runs_trains_each_unfinished_run_of_the_listing(tmp_path, failing):
    """The rule, run with a stand-in for Python that lists three runs and logs
    each training command: a finished run is skipped, the training commands read
    nothing of the listing, and a failed run stops make."""
    (tmp_path / "requirements.txt").touch()
    (tmp_path / "pyproject.toml").touch()
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    (tmp_path / ".venv" / ".installed").touch()
    python.write_text(f"""#!/bin/bash
if [ "$*" = "-m convmixer_lib.recipes" ]; then
  printf 'fast --recipe=fast --seed=42\\nfast3 --recipe=fast3 --seed=1 --ema=0.0\\nlong --recipe=long\\n'
  exit
fi
echo "$* | read: $(cat)" >> calls.log
[[ "$*" != *fast3* ]] || exit {int(failing)}
""")
    python.chmod(0o755)
    (tmp_path / "results" / "recipes" / "fast").mkdir(parents=True)
    (tmp_path / "results" / "recipes" / "fast" / "metrics.json").touch()  # finished
    makefile = pathlib.Path(__file__).parents[1] / "Makefile"
    # Not the settings of a make this test may run under (make test's jobs).
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    made = subprocess.run(["make", "--silent", "-f", str(makefile), "recipe-runs"], cwd=tmp_path,
                          env=environment, capture_output=True, text=True)
    assert made.returncode == (2 if failing else 0), made.stderr
    calls = [
        "-m convmixer_lib train --run-dir results/recipes/fast3 --recipe=fast3 --seed=1 --ema=0.0 | read: ",
        "-m convmixer_lib train --run-dir results/recipes/long --recipe=long | read: ",
    ]
    assert (tmp_path / "calls.log").read_text().splitlines() == calls[:1 if failing else 2]


def test_the_recipe_runs_are_named_by_their_recipe_change_and_seed():
    for name, options in recipe_runs().items():
        options = dict(options)
        recipe, seed = options.pop("recipe"), options.pop("seed")
        base, suffix = re.fullmatch(r"(.+?)(-seed\d+)?", name).groups()
        assert suffix == (f"-seed{seed}" if seed != 42 else None), name  # first runs: 42
        assert base == recipe or base.startswith(recipe + "-"), name
        change = base.removeprefix(recipe).removeprefix("-")
        if not change:
            assert options == {}, name
        elif change.startswith("without-") and recipe == "fast":
            assert options == LEAVE_ONE_OUT[change.removeprefix("without-")], name
        else:
            assert options == {"fast3": FAST3_CHANGES, "long": LONG_CHANGES}[recipe][change], name
    # Chapter 4 compares each retried change with the recipe's run of the same seed.
    assert set(FAST3_RETRIED) <= FAST3_CHANGES.keys()
    assert set(FAST3_RETRIED_SEEDS) <= set(FAST3_SEEDS)


def test_each_tried_change_of_the_3_epoch_and_long_recipes_changes_what_it_names():
    for recipe, changes in (("fast3", FAST3_CHANGES), ("long", LONG_CHANGES)):
        for name, change in changes.items():
            assert change, name
            for key, value in change.items():
                assert value != RECIPES[recipe][key], (name, key)


def test_leave_one_out_rows_measure_changes_against_the_full_recipe():
    def metrics(val, val_flips):
        return {"best_val_accuracy": val, "best_val_accuracy_flips": val_flips,
                "test_accuracy": val - 0.01, "test_accuracy_flips": val_flips - 0.01}
    rows = leave_one_out(metrics(0.86, 0.87), {"without smoothing": metrics(0.84, 0.85)})
    assert [row["run"] for row in rows] == ["full recipe", "without smoothing"]
    assert rows[0]["change"] == 0
    assert rows[1]["change"] == pytest.approx(-2.0)
    assert (rows[1]["val"], rows[1]["test_flips"]) == (pytest.approx(84.0), pytest.approx(84.0))


def _gelu_batchnorm_model(fused):
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(5, 1, name="conv")(inputs)
    if fused:
        from convmixer_lib.fast.layers import GeluBatchNorm
        outputs = GeluBatchNorm(name="bn")(x)
    else:
        outputs = keras.layers.BatchNormalization(name="bn")(
            keras.layers.Activation("gelu", name="gelu")(x))
    return keras.Model(inputs, outputs), keras.Model(inputs, keras.activations.gelu(
        x, approximate=False))


@pytest.mark.parametrize("fused", [False, True])
def test_reestimated_batchnorm_statistics_average_those_of_the_batches(fused):
    if fused and acceleration_unavailable():  # the fused layer: TensorFlow's CPU only
        pytest.skip(acceleration_unavailable())
    keras.utils.set_random_seed(0)
    model, before_bn = _gelu_batchnorm_model(fused)
    rng = np.random.default_rng(0)
    # Three batches of different means and spreads, and one that must stay unused.
    batches = [(rng.normal(shift, scale, (8, 4, 4, 3)).astype("float32"), None)
               for shift, scale in ((0, 1), (2, 0.5), (-1, 3), (50, 50))]
    weights = [w.copy() for w in model.get_weights()]
    bn = model.get_layer("bn")
    used = reestimate_batchnorm(model, batches, images=20)  # 20 images: 3 batches of 8
    assert used == 24
    z = [keras.ops.convert_to_numpy(before_bn(x)).reshape(-1, 5) for x, _ in batches[:3]]
    np.testing.assert_allclose(bn.moving_mean.numpy(), np.mean([b.mean(0) for b in z], 0),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), np.mean([b.var(0) for b in z], 0),
                               rtol=1e-4, atol=1e-5)
    assert bn.momentum == 0.99  # the layer's own momentum again
    for before, variable in zip(weights, model.weights):
        if variable.trainable:  # no weight is trained
            np.testing.assert_array_equal(variable.numpy(), before)
    with pytest.raises(ValueError, match="no batch"):
        reestimate_batchnorm(model, [])


def test_the_kept_averaged_weights_carry_statistics_of_their_own(tmp_path):
    # Every training image in each re-estimate, without augmentation: the stem's
    # BatchNorm mean is then the mean of its input over the training images,
    # computed with the averaged (kept) weights, not the raw ones.
    _, history, _ = train_tiny(tmp_path, epochs=2, ema=0.8, bn_images=512, augment="none")
    for epoch in history:
        assert {"stale_bn_val_accuracy", "raw_val_accuracy", "bn_seconds"} <= epoch.keys()
        assert epoch["bn_seconds"] > 0
    kept = load_run_model(tmp_path)
    stem_input = keras.Model(kept.input, kept.get_layer("stem_bn").input)
    x, _ = easy_data(512, 0)
    expected = keras.ops.convert_to_numpy(stem_input(x)).mean(axis=(0, 1, 2))
    np.testing.assert_allclose(kept.get_layer("stem_bn").moving_mean.numpy(), expected,
                               rtol=1e-3, atol=1e-4)


def test_a_batchnorm_reestimate_needs_averaged_weights(tmp_path):
    with pytest.raises(ValueError, match="needs `ema` > 0"):
        train_tiny(tmp_path, epochs=1, bn_images=64)
    with pytest.raises(ValueError, match="`bn_images` must be an integer >= 0"):
        train_tiny(tmp_path, epochs=1, ema=0.9, bn_images=-1)


class _Recorder(keras.callbacks.Callback):
    """The learning rate before every step and the stem's raw kernel after it."""

    def __init__(self):
        super().__init__()
        self.rates, self.kernels = [], []

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

    def on_train_batch_end(self, batch, logs=None):
        self.kernels.append(self.model.get_layer("stem_conv").kernel.numpy().copy())


def test_a_run_trains_with_the_warmup_and_cosine_it_was_given(tmp_path):
    # 2 epochs of 8 batches: 16 steps, a quarter of them (4) warming up.
    recorder = _Recorder()
    train_tiny(tmp_path, epochs=2, callbacks=[recorder], learning_rate=0.01,
               schedule="cosine", warmup=0.25, augment="none")
    rates = recorder.rates
    assert len(rates) == 16
    assert rates[0] == pytest.approx(0.0, abs=1e-9)
    assert rates[2] == pytest.approx(0.005)  # halfway up the warm-up
    assert rates[4] == pytest.approx(0.01)  # the peak, as the warm-up ends
    assert rates[10] == pytest.approx(0.005)  # halfway down the 12 decaying steps
    assert rates[15] == pytest.approx(0.01 * (1 + np.cos(np.pi * 11 / 12)) / 2, rel=1e-5)


def test_the_kept_weights_are_the_average_for_the_momentum_given(tmp_path):
    # One epoch: the kept weights are the average after its 8 steps, which
    # Keras starts from the weights after the first step.
    recorder, momentum = _Recorder(), 0.8
    train_tiny(tmp_path, epochs=1, callbacks=[recorder], ema=momentum, augment="none")
    average = recorder.kernels[0]
    for kernel in recorder.kernels[1:]:
        average = momentum * average + (1 - momentum) * kernel
    kept = load_run_model(tmp_path).get_layer("stem_conv").kernel.numpy()
    np.testing.assert_allclose(kept, average, rtol=1e-5, atol=1e-6)
    assert not np.allclose(kept, recorder.kernels[-1], atol=1e-4)  # not the raw weights


def test_the_raw_weights_get_their_own_statistics_back_after_validation(tmp_path):
    # After each validation of the averaged weights with re-estimated statistics,
    # the raw weights train on with the statistics their own training gathered.
    class Statistics(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.before, self.after, self.weights, self.kept = [], [], [], []

        def on_test_begin(self, logs=None):
            self.before.append(self.model.get_layer("stem_bn").moving_mean.numpy().copy())
            self.weights.append([w.copy() for w in self.model.get_weights()])

        def on_test_end(self, logs=None):  # before AveragedWeights swaps back
            self.kept.append([w.numpy().copy() for w in self.model.weights])

        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0 and self.before:  # the first step after a validation
                self.after.append(self.model.get_layer("stem_bn").moving_mean.numpy().copy())

    statistics = Statistics()
    # Placed first: its on_test_begin runs before AveragedWeights swaps and
    # re-estimates, its on_train_batch_begin after everything at an epoch's start.
    _, history, _ = train_tiny(tmp_path, epochs=2, callbacks=[statistics], ema=0.8,
                               bn_images=128, augment="none")
    np.testing.assert_array_equal(statistics.after[0], statistics.before[0])
    # Each epoch's raw_val_accuracy is that of the raw weights with their own
    # statistics, as they stood when validation began.
    model = build_convmixer(**TINY)
    x_val, y_val = easy_data(128, 1)
    for weights, epoch in zip(statistics.weights, history):
        model.set_weights(weights)
        assert evaluate(model, x_val, y_val)["accuracy"] == pytest.approx(
            epoch["raw_val_accuracy"]), epoch["epoch"]
    # val_accuracy is the averaged weights' with their re-estimated statistics,
    # stale_bn_val_accuracy the averaged weights' with the raw weights' statistics.
    for raw, kept, epoch in zip(statistics.weights, statistics.kept, history):
        for variable, value in zip(model.weights, kept):
            variable.assign(value)
        assert evaluate(model, x_val, y_val)["loss"] == pytest.approx(
            epoch["val_loss"], rel=1e-5), epoch["epoch"]
        model.set_weights(raw)
        for variable, value in zip(model.weights, kept):
            if variable.trainable:
                variable.assign(value)
        assert evaluate(model, x_val, y_val)["loss"] == pytest.approx(
            epoch["stale_bn_val_loss"], rel=1e-5), epoch["epoch"]
        assert epoch["stale_bn_val_loss"] != pytest.approx(epoch["val_loss"], rel=1e-3)


def test_smoothed_target_puts_the_smoothing_on_every_class():
    figure = plot_smoothed_target(3, 0.1)
    ax = figure.axes[0]
    one_hot, smoothed = ax.containers
    np.testing.assert_allclose([bar.get_height() for bar in one_hot], np.eye(10)[3])
    np.testing.assert_allclose([bar.get_height() for bar in smoothed],
                               np.eye(10)[3] * 0.9 + 0.01)
    assert [t.get_text() for t in ax.get_xticklabels()] == list(CLASS_NAMES)
    assert "cat" in ax.get_title()
