"""The committed full run, results/convmixer-256-8/: its files agree, and its
weights still reach the recorded test accuracy on the real CIFAR-10 test set."""

import json
import pathlib

import h5py
import numpy as np
import pytest

from convmixer_lib.model import build_convmixer
from convmixer_lib.training import evaluate, load_run_model

RECORD = pathlib.Path(__file__).resolve().parent.parent / "results" / "convmixer-256-8"
EXAMPLE_TEST_ACCURACY = 0.8369  # the Keras example's result


def _read(name):
    return json.loads((RECORD / name).read_text())


def test_the_record_is_complete_and_holds_no_training_state():
    names = sorted(p.name for p in RECORD.iterdir())
    assert names == ["best.weights.h5", "config.json", "history.json", "metrics.json"]
    with h5py.File(RECORD / "best.weights.h5") as weights:
        assert "optimizer" not in weights


def test_history_metrics_and_weights_agree():
    history, metrics, config = _read("history.json"), _read("metrics.json"), _read("config.json")
    assert metrics["epochs"] == len(history) == 10
    assert [h["epoch"] for h in history] == list(range(1, 11))
    best = max(history, key=lambda h: h["val_accuracy"])
    assert metrics["best_epoch"] == best["epoch"]
    assert metrics["best_val_accuracy"] == best["val_accuracy"]
    assert metrics["seconds_per_epoch"] == [h["seconds"] for h in history]
    assert metrics["model"] == config
    assert (metrics["train_images"], metrics["validation_images"], metrics["test_images"]) == (
        45_000, 5_000, 10_000)
    assert metrics["batch_size"] == 128
    assert (metrics["learning_rate"], metrics["weight_decay"]) == (1e-3, 1e-4)
    assert metrics["schedule"] == "cosine"
    assert metrics["command"].startswith("python -m convmixer_lib train")
    assert len(metrics["commit"]) == 40
    confusion = np.array(metrics["confusion_matrix"])
    assert confusion.sum() == 10_000
    assert np.trace(confusion) / 10_000 == pytest.approx(metrics["test_accuracy"])

    model = build_convmixer(**config)
    model.load_weights(RECORD / "best.weights.h5")  # refuses a mismatched file
    assert model.count_params() == 602_890


def test_recorded_weights_reach_the_recorded_test_accuracy(real_cifar10):
    metrics = _read("metrics.json")
    _, (x_test, y_test) = real_cifar10
    assert len(x_test) == 10_000
    accuracy = evaluate(load_run_model(RECORD, fused=True), x_test, y_test)["accuracy"]
    assert abs(accuracy - metrics["test_accuracy"]) <= 0.002


def test_the_record_reaches_the_examples_test_accuracy():
    assert _read("metrics.json")["test_accuracy"] >= EXAMPLE_TEST_ACCURACY
