"""The same model on Keras' three backends (`convmixer_lib.backends`, the
appendix on backends). Each backend runs in a fresh process: Keras chooses its
backend when first imported. `make test` also runs the unit tests of the model,
data, training, explanations, run directories and architectures on JAX and
PyTorch (`BACKEND_TESTS` in the Makefile)."""

import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from convmixer_lib.backends import on_backend, read_throughput
from convmixer_lib.data import load_cifar10
from convmixer_lib.model import build_convmixer
from convmixer_lib.rundir import load_run_model
from test_record import RECORD

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# 200 test images: PyTorch's CPU convolutions in channels-last layout take
# about 30 s for them (TensorFlow: under a second).
IMAGES = 200


@pytest.fixture(scope="module")
def tensorflows_predictions(real_cifar10):
    return np.array(on_backend("tensorflow", "predict_run", str(RECORD), IMAGES))


def test_predict_run_gives_the_records_probabilities_of_the_first_test_images(
        tensorflows_predictions, real_cifar10):
    _, (test_images, _) = real_cifar10
    with tf.device("/CPU:0"):  # as in on_backend's processes
        expected = load_run_model(RECORD).predict(test_images[:IMAGES], verbose=0)
    np.testing.assert_allclose(tensorflows_predictions, expected, atol=1e-6)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_the_committed_weights_predict_alike_on_every_backend(tensorflows_predictions,
                                                              backend):
    pytest.importorskip(backend)
    reference = tensorflows_predictions
    other = np.array(on_backend(backend, "predict_run", str(RECORD), IMAGES))
    assert reference.shape == (IMAGES, 10)
    # Measured on 1,000 test images: at most 1.7e-6 apart (JAX), 1.2e-6 (PyTorch).
    np.testing.assert_allclose(other, reference, atol=1e-5)
    np.testing.assert_array_equal(other.argmax(axis=1), reference.argmax(axis=1))


def _written_out_steps(start, images, labels, steps, batch_size, learning_rate, weight_decay):
    model = keras.saving.load_model(start, compile=False)
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=learning_rate,
                                                   weight_decay=weight_decay),
                  loss="sparse_categorical_crossentropy")
    return [model.train_on_batch(images[i * batch_size:(i + 1) * batch_size],
                                 labels[i * batch_size:(i + 1) * batch_size])
            for i in range(steps)]


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_train_steps_trains_with_adamw_on_the_first_batches_in_order(
        small_archive, tmp_path, monkeypatch, backend):
    pytest.importorskip(backend)
    path, _ = small_archive
    monkeypatch.setenv("CIFAR10_PATH", str(path))
    steps, batch_size, rate, decay = 4, 8, 3e-2, 0.5
    keras.utils.set_random_seed(0)
    start = str(tmp_path / "start.keras")
    build_convmixer(filters=16, depth=1, kernel_size=3, patch_size=4).save(start)
    losses = on_backend(backend, "train_steps", start, steps, batch_size, rate, decay)
    # The same steps here, on TensorFlow, written out.
    (images, labels), _ = load_cifar10(path)
    expected = _written_out_steps(start, images, labels, steps, batch_size, rate, decay)
    np.testing.assert_allclose(losses, expected, rtol=1e-5)
    assert len(set(losses)) == steps  # each step sees new images and weights
    # The weight decay shows in the losses, so Adam without it would not pass.
    without_decay = _written_out_steps(start, images, labels, steps, batch_size, rate, 0.0)
    assert not np.allclose(without_decay, expected, rtol=1e-5)


def test_on_backend_refuses_an_unknown_backend_or_function():
    with pytest.raises(ValueError, match="backend must be one of tensorflow, jax, torch, got 'mxnet'"):
        on_backend("mxnet", "predict_run", ".", 1)
    with pytest.raises(ValueError, match="function must be one of predict_run, train_steps, "
                                         "got 'load_cifar10'"):
        on_backend("tensorflow", "load_cifar10")


def test_on_backend_reports_the_failure_of_its_process(tmp_path):
    message = f"predict_run on tensorflow: FileNotFoundError: '{tmp_path}/config.json' not found"
    with pytest.raises(RuntimeError, match="^" + re.escape(message)):
        on_backend("tensorflow", "predict_run", str(tmp_path), 1)


def test_read_throughput_reads_the_committed_table():
    table = read_throughput(os.path.join(ROOT, "results", "throughput-backends.txt"))
    assert set(table) == {"training images/s", "inference images/s", "input pipeline images/s",
                          "peak memory MiB", "machine GFLOP/s (matmul)"}
    assert table["training images/s"]["jax"] == {"median": 10.1, "min": 6.2, "max": 10.8}
    assert table["inference images/s"]["torch/tensorflow"] == {"median": 0.22, "min": 0.20,
                                                               "max": 0.35}
    assert table["peak memory MiB"]["tensorflow"]["median"] == 4123


def test_read_throughput_refuses_another_file(tmp_path):
    other = tmp_path / "notes.txt"
    other.write_text("training images/s: fast\n")
    with pytest.raises(ValueError, match="notes.txt'.*expected the output of benchmarks/throughput.py"):
        read_throughput(other)
