"""The committed weights on Keras' three backends. Each backend runs in a fresh
process (Keras chooses its backend when first imported); `make test` also runs
the unit tests of the model, data, training, explanations, run directories and
architectures on JAX and PyTorch (`BACKEND_TESTS` in the Makefile)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from test_record import RECORD

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# 200 test images: PyTorch's CPU convolutions in channels-last layout take
# about 30 s for them (TensorFlow: under a second).
IMAGES = 200

PREDICT = """
import json, sys
import keras, numpy as np
from convmixer_lib.data import load_cifar10
from convmixer_lib.rundir import load_run_model
_, (images, _) = load_cifar10()
probabilities = load_run_model(sys.argv[1]).predict(images[:int(sys.argv[2])], verbose=0)
print(json.dumps({"backend": keras.backend.backend(), "probabilities": probabilities.tolist()}))
"""


def _predict(backend):
    result = subprocess.run(
        [sys.executable, "-c", PREDICT, str(RECORD), str(IMAGES)], cwd=ROOT,
        env={**os.environ, "KERAS_BACKEND": backend}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["backend"] == backend
    return np.array(answer["probabilities"])


@pytest.fixture(scope="module")
def tensorflows_predictions(real_cifar10):
    return _predict("tensorflow")


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_the_committed_weights_predict_alike_on_every_backend(tensorflows_predictions,
                                                              backend):
    pytest.importorskip(backend)
    reference, other = tensorflows_predictions, _predict(backend)
    assert reference.shape == (IMAGES, 10)
    # Measured on 1,000 test images: at most 1.7e-6 apart (JAX), 1.2e-6 (PyTorch).
    np.testing.assert_allclose(other, reference, atol=1e-5)
    np.testing.assert_array_equal(other.argmax(axis=1), reference.argmax(axis=1))
