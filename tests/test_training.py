import json

import keras
import numpy as np
import pytest

from conftest import TINY, StopAtEpoch, easy_data, train_tiny
from convmixer_lib.fast import accelerate
from convmixer_lib.model import build_convmixer
from convmixer_lib.rundir import load_run_model, run_state
from convmixer_lib.training import (
    TrainingDiverged,
    batchnorm_layers,
    distribution,
    evaluate,
    most_confident_mistakes,
    run_experiment,
)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    return (run_dir, *train_tiny(run_dir, epochs=4))


def test_training_lowers_the_loss(finished_run):
    _, _, history, _ = finished_run
    losses = [h["loss"] for h in history]
    assert losses[-1] < 0.8 * losses[0]


def test_run_directory_records_agree(finished_run):
    run_dir, _, history, metrics = finished_run
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert json.loads((run_dir / "history.json").read_text()) == history
    recorded = json.loads((run_dir / "metrics.json").read_text())
    assert recorded == json.loads(json.dumps(metrics))
    best = max(history, key=lambda h: h["val_accuracy"])
    assert metrics["best_epoch"] == best["epoch"]
    assert metrics["epochs"] == 4 and len(metrics["seconds_per_epoch"]) == 4
    assert metrics["train_images"] == 512 and metrics["seed"] == 0
    assert metrics["environment"]["keras"] == keras.__version__
    backend = keras.backend.backend()  # the backend that trained it, and its version
    assert metrics["environment"]["backend"] == backend
    if backend != "tensorflow":
        assert metrics["environment"][backend] == __import__(backend).__version__
    assert np.sum(metrics["confusion_matrix"]) == 128
    assert not (run_dir / "backup").exists()  # removed once the run finished


def test_reloaded_checkpoint_gives_the_same_predictions(finished_run):
    run_dir, model, _, metrics = finished_run
    x, y = easy_data(128, 2)
    reloaded = load_run_model(run_dir)
    np.testing.assert_allclose(
        reloaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )
    assert evaluate(reloaded, x, y)["accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert (evaluate(reloaded, x, y, flips=True)["accuracy"]
            == pytest.approx(metrics["test_accuracy_flips"]))
    fused = accelerate(load_run_model(run_dir))
    np.testing.assert_allclose(
        fused.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5
    )


class _BreakTheLastEpoch(keras.callbacks.Callback):
    """Before the last epoch: random weights and a learning rate of 0, so the
    last epoch's validation accuracy falls to chance."""

    def __init__(self, last):
        super().__init__()
        self.last = last

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.last:
            rng = np.random.default_rng(9)
            self.model.set_weights([rng.normal(0, 1, w.shape) for w in self.model.weights])
            self.model.optimizer.learning_rate.assign(0.0)


def test_the_kept_weights_are_the_best_epochs_not_the_last(tmp_path):
    # Averaged weights with re-estimated BatchNorm statistics: in 8 steps an
    # epoch the raw weights' moving statistics hardly leave their start, and
    # on PyTorch the first two epochs validate at chance, as the broken one does.
    _, history, metrics = train_tiny(tmp_path, epochs=3, callbacks=[_BreakTheLastEpoch(2)],
                                     ema=0.5, bn_images=512)
    best = max(h["val_accuracy"] for h in history)
    assert history[-1]["val_accuracy"] < best  # the run's best epoch is not its last
    assert metrics["best_epoch"] < 3
    x_val, y_val = easy_data(128, 1)
    assert evaluate(load_run_model(tmp_path), x_val, y_val)["accuracy"] == pytest.approx(best)


def test_reloaded_checkpoint_is_the_best_epoch(finished_run):
    run_dir, _, history, metrics = finished_run
    x_val, y_val = easy_data(128, 1)
    best = max(h["val_accuracy"] for h in history)
    assert evaluate(load_run_model(run_dir), x_val, y_val)["accuracy"] == pytest.approx(best)


def test_interrupted_run_resumes_after_its_last_finished_epoch(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train_tiny(tmp_path, epochs=4, callbacks=[StopAtEpoch(2)])
    partial = json.loads((tmp_path / "history.json").read_text())
    assert [h["epoch"] for h in partial] == [1, 2]
    assert (tmp_path / "backup").is_dir()
    _, history, metrics = train_tiny(tmp_path, epochs=4)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[:2] == partial
    assert metrics["epochs"] == 4
    assert [s["epochs"] for s in metrics["segments"]] == [[1, 2], [3, 4]]


def test_evaluate_on_a_constant_predictor_with_unbalanced_labels():
    """A model that always answers "cat" on 6 cats, 3 automobiles and 1 airplane."""
    inputs = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    bias = np.full(10, -5.0)
    bias[3] = 5.0
    outputs = keras.layers.Dense(10, activation="softmax", kernel_initializer="zeros",
                                 bias_initializer=keras.initializers.Constant(bias))(pooled)
    always_cat = keras.Model(inputs, outputs)
    labels = np.array([3] * 6 + [1] * 3 + [0])
    results = evaluate(always_cat, np.zeros((10, 32, 32, 3), np.uint8), labels)
    assert results["accuracy"] == pytest.approx(0.6)
    expected = [0.0] * 10
    expected[3] = 1.0  # every cat right; automobiles and the airplane wrong
    assert results["per_class_accuracy"] == expected
    confusion = np.array(results["confusion_matrix"])
    assert confusion[3, 3] == 6 and confusion[1, 3] == 3 and confusion[0, 3] == 1
    assert confusion.sum() == 10
    assert set(results["predictions"]) == {3}


def test_evaluate_counts_every_image():
    model = build_convmixer(**TINY)
    x, y = easy_data(50, 3)
    results = evaluate(model, x, y, batch_size=16)
    assert np.array(results["confusion_matrix"]).sum() == 50
    assert len(results["per_class_accuracy"]) == 10
    assert results["predictions"].shape == (50,)
    probabilities = model.predict(x, verbose=0)
    np.testing.assert_allclose(results["confidences"], probabilities.max(axis=1), rtol=1e-6)
    expected = keras.losses.SparseCategoricalCrossentropy()(y, probabilities)
    assert results["loss"] == pytest.approx(float(expected), rel=1e-5)


def test_missing_run_directory_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_run_model(tmp_path)


def test_cosine_schedule_decays_the_learning_rate_to_zero(tmp_path):
    model, _, metrics = train_tiny(tmp_path, epochs=2, schedule="cosine")
    assert metrics["schedule"] == "cosine"
    assert int(model.optimizer.iterations) == 2 * 8  # 512 images in batches of 64
    assert float(model.optimizer.learning_rate) == pytest.approx(0.0, abs=1e-9)


class _RateAtEpochEnd(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.rates = []

    def on_epoch_end(self, epoch, logs=None):
        self.rates.append(float(self.model.optimizer.learning_rate))


def test_cosine_schedule_is_at_half_the_rate_halfway_through_the_run(tmp_path):
    rates = _RateAtEpochEnd()
    train_tiny(tmp_path, epochs=2, schedule="cosine", callbacks=[rates])
    assert rates.rates[0] == pytest.approx(3e-3 / 2, rel=1e-4)  # after 8 of 16 steps
    assert rates.rates[1] == pytest.approx(0.0, abs=1e-9)


def test_constant_schedule_keeps_the_learning_rate(finished_run):
    _, model, _, metrics = finished_run
    assert metrics["schedule"] == "constant"
    assert float(model.optimizer.learning_rate) == pytest.approx(3e-3)


def test_bad_schedule_is_refused(tmp_path):
    with pytest.raises(ValueError, match="schedule.*'linear'"):
        run_experiment(build_convmixer(**TINY), None, None, None, tmp_path, schedule="linear")


def test_bad_epochs_is_refused(tmp_path):
    with pytest.raises(ValueError, match="epochs"):
        run_experiment(build_convmixer(**TINY), None, None, None, tmp_path, epochs=0)


def test_best_weights_hold_no_optimizer_state(finished_run):
    import h5py

    run_dir, model, _, _ = finished_run
    with h5py.File(run_dir / "best.weights.h5") as weights:
        assert "optimizer" not in weights
    model.save_weights(run_dir / "with_optimizer.weights.h5")
    with h5py.File(run_dir / "with_optimizer.weights.h5") as weights:
        assert "optimizer" in weights  # the check above can fail


def test_most_confident_mistakes_are_wrong_and_sorted():
    labels = np.array([[0], [1], [2], [3], [4]])
    predictions = np.array([0, 2, 2, 9, 5])
    confidences = np.array([0.99, 0.6, 0.9, 0.8, 0.95])
    assert most_confident_mistakes(labels, predictions, confidences).tolist() == [4, 3, 1]
    assert most_confident_mistakes(labels, predictions, confidences, count=1).tolist() == [4]


def test_most_confident_mistakes_refuses_mismatched_lengths():
    with pytest.raises(ValueError, match="one entry per image"):
        most_confident_mistakes([0, 1], [0, 1, 2], [0.5, 0.5, 0.5])


class PoisonWeights(keras.callbacks.Callback):
    """Set the classifier's kernel to NaN in epoch `epoch` (0-based): as it
    begins (`at="begin"`: the epoch's first loss is NaN) or after its last step
    (`at="end"`: every loss of the epoch was finite)."""

    def __init__(self, epoch, at):
        super().__init__()
        self.epoch, self.at, self.now = epoch, at, None

    def _poison(self):
        kernel = self.model.layers[-1].kernel
        kernel.assign(np.full(kernel.shape, np.nan, "float32"))

    def on_epoch_begin(self, epoch, logs=None):
        self.now = epoch
        if self.at == "begin" and epoch == self.epoch:
            self._poison()

    def on_train_batch_end(self, batch, logs=None):
        if self.at == "end" and self.now == self.epoch and batch + 1 == self.params["steps"]:
            self._poison()


def test_a_diverging_run_stops_at_its_first_nan_and_keeps_its_finished_epochs(tmp_path):
    with pytest.raises(TrainingDiverged) as error:
        train_tiny(tmp_path, epochs=3, callbacks=[PoisonWeights(1, at="begin")])
    message = str(error.value)
    assert "the loss became nan at epoch 2, step 1" in message
    assert "keeps its 1 finished epoch and resumes" in message and "\n" not in message
    assert run_state(tmp_path) == "unfinished"  # never recorded as finished
    partial = json.loads((tmp_path / "history.json").read_text())
    assert [h["epoch"] for h in partial] == [1]
    _, history, metrics = train_tiny(tmp_path, epochs=3)  # resumes from epoch 1
    assert [h["epoch"] for h in history] == [1, 2, 3] and history[:1] == partial
    assert np.isfinite(metrics["test_accuracy"])


def test_weights_made_non_finite_by_an_epochs_last_step_stop_the_run(tmp_path):
    with pytest.raises(TrainingDiverged, match="non-finite in the last step of epoch 2"):
        train_tiny(tmp_path, epochs=3, callbacks=[PoisonWeights(1, at="end")])
    history = json.loads((tmp_path / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1]  # epoch 2 neither recorded nor kept
    assert run_state(tmp_path) == "unfinished"


class PoisonAtEpochEnd(keras.callbacks.Callback):
    """In the last step of epoch `epoch` (0-based), set the first BatchNorm
    layer's moving variance to NaN (`what="statistics"`); or at the end of
    that epoch, set its validation loss to NaN (`what="val_loss"`)."""

    def __init__(self, epoch, what):
        super().__init__()
        self.epoch, self.what, self.now = epoch, what, None

    def on_epoch_begin(self, epoch, logs=None):
        self.now = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.what == "statistics" and self.now == self.epoch
                and batch + 1 == self.params["steps"]):
            norm = batchnorm_layers(self.model)[0]
            norm.moving_variance.assign(np.full(norm.moving_variance.shape, np.nan, "float32"))

    def on_epoch_end(self, epoch, logs=None):
        if self.what == "val_loss" and epoch == self.epoch:
            logs["val_loss"] = float("nan")


@pytest.mark.parametrize("what, message", [
    ("statistics", "the BatchNorm statistics became non-finite in the last step of epoch 2"),
    ("val_loss", "val_loss became nan at the end of epoch 2"),
])
def test_a_non_finite_statistic_or_validation_result_stops_the_run_unrecorded(
        tmp_path, what, message):
    with pytest.raises(TrainingDiverged, match=message):
        train_tiny(tmp_path, epochs=3, callbacks=[PoisonAtEpochEnd(1, what)])
    text = (tmp_path / "history.json").read_text()
    assert [h["epoch"] for h in json.loads(text)] == [1] and "NaN" not in text
    assert run_state(tmp_path) == "unfinished"


@pytest.mark.parametrize("option, value, message", [
    ("learning_rate", -0.1, "`learning_rate` must be a finite number > 0, got -0.1."),
    ("learning_rate", float("nan"), "`learning_rate` must be a finite number > 0, got nan."),
    ("weight_decay", -1, "`weight_decay` must be a finite number >= 0, got -1."),
    ("warmup", 1.0, "`warmup` must be a finite number in [0, 1), got 1.0."),
    ("label_smoothing", -0.1, "`label_smoothing` must be a finite number in [0, 1), got -0.1."),
    ("ema", 1.0, "`ema` must be a finite number in [0, 1), got 1.0."),
    ("bn_images", 1.5, "`bn_images` must be an integer >= 0, got 1.5."),
    ("seed", -3, "`seed` must be an integer from 0 to 4294967295, got -3."),
])
def test_run_experiment_refuses_a_setting_out_of_range_before_writing(tmp_path, option,
                                                                      value, message):
    with pytest.raises(ValueError) as error:
        run_experiment(build_convmixer(**TINY), None, None, None, tmp_path / "run",
                       **{option: value})
    assert str(error.value) == message
    assert not (tmp_path / "run").exists()


def test_several_devices_on_another_backend_than_tensorflow_are_refused():
    if keras.backend.backend() == "tensorflow":
        pytest.skip("tf.distribute is this backend's own (tests/test_devices.py)")
    assert distribution().num_replicas_in_sync == distribution(1).num_replicas_in_sync == 1
    with pytest.raises(ValueError, match=r"`devices`=2: .* needs the TensorFlow backend"):
        distribution(2)
