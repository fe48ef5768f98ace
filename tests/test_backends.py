"""The library on Keras' JAX backend, in a fresh process (the backend is chosen
when Keras is first imported): what the TensorFlow-only pieces used to break."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("jax")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A tiny run with the flip-and-shift augmentation inside tf.data (a
# keras.Sequential there fails on JAX) and averaged weights with re-estimated
# BatchNorm statistics (an evaluation after Keras' last-epoch finalize freed
# arrays the averages shared with the model).
TINY_RUN = """
import json, sys
import keras
sys.path.insert(0, "tests")
from conftest import train_tiny
_, history, metrics = train_tiny(sys.argv[1], epochs=2, ema=0.8, bn_images=128)
print(json.dumps({"backend": keras.backend.backend(), "history": history,
                  "test_accuracy": metrics["test_accuracy"]}))
"""


def test_a_run_with_augmentation_and_averaged_weights_trains_on_jax(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", TINY_RUN, str(tmp_path / "run")], cwd=ROOT,
        env={**os.environ, "KERAS_BACKEND": "jax"}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads(result.stdout.strip().splitlines()[-1])
    assert run["backend"] == "jax"
    assert [epoch["epoch"] for epoch in run["history"]] == [1, 2]
    for epoch in run["history"]:
        assert {"val_accuracy", "raw_val_accuracy", "stale_bn_val_accuracy",
                "bn_seconds"} <= epoch.keys()
    assert 0 <= run["test_accuracy"] <= 1
    assert (tmp_path / "run" / "metrics.json").exists()
