"""The same model on Keras' three backends (the appendix on backends).

Keras chooses its backend once, when it is first imported, from the
`KERAS_BACKEND` environment variable. To put the backends side by side in one
notebook, `on_backend` calls a function of this module in a fresh Python
process with `KERAS_BACKEND` set, and returns what the function returned.
"""

import json
import os
import re
import subprocess
import sys

import keras

from .data import load_cifar10
from .rundir import load_run_model

BACKENDS = ("tensorflow", "jax", "torch")
FUNCTIONS = ("predict_run", "train_steps")  # what `on_backend` calls
# The processes compute on the CPU on every backend: on a GPU each backend
# chooses its own faster, less precise arithmetic for convolutions by default.
_CPU_ONLY = {"CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"}

_PROGRAM = """
import json, sys
try:
    import keras
    from convmixer_lib import backends
    value = getattr(backends, sys.argv[1])(*json.loads(sys.argv[2]))
    answer = {"backend": keras.backend.backend(), "value": value}
except Exception as error:
    answer = {"error": f"{type(error).__name__}: {error}"}
print()
print(json.dumps(answer))
"""


def on_backend(backend, function, *arguments):
    """Call `convmixer_lib.backends.<function>(*arguments)` in a new Python
    process whose Keras runs on `backend`, on the CPU, and return the
    function's value.

    Args:
        backend: one of `BACKENDS`.
        function: one of `FUNCTIONS`.
        arguments: the function's arguments; they and the value travel as JSON.

    Raises:
        ValueError: for another backend or function.
        RuntimeError: naming the function, the backend and the error, if the
            call failed there (for example, the backend's package is not
            installed, or a file is missing).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}.")
    if function not in FUNCTIONS:
        raise ValueError(f"function must be one of {', '.join(FUNCTIONS)}, got {function!r}.")
    result = subprocess.run(
        [sys.executable, "-c", _PROGRAM, function, json.dumps(arguments)],
        env={**os.environ, **_CPU_ONLY, "KERAS_BACKEND": backend}, capture_output=True, text=True)
    if result.returncode != 0:  # died without a Python exception
        raise RuntimeError(f"{function} on {backend}: the process ended with exit code "
                           f"{result.returncode}:\n{result.stderr[-3000:]}")
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    if "error" in answer:
        raise RuntimeError(f"{function} on {backend}: {answer['error']}")
    if answer["backend"] != backend:  # KERAS_BACKEND overrules keras.json; check all the same
        raise RuntimeError(f"Keras ran on {answer['backend']!r}, not {backend!r}.")
    return answer["value"]


def predict_run(run_dir, count):
    """The class probabilities of the first `count` CIFAR-10 test images by the
    model of `run_dir` (`rundir.load_run_model`), shape (count, 10), as lists."""
    model = load_run_model(run_dir)
    _, (images, _) = load_cifar10()
    return model.predict(images[:count], verbose=0).tolist()


def train_steps(model_file, steps, batch_size, learning_rate=1e-3, weight_decay=1e-4):
    """Train the model saved in `model_file` (a `.keras` file) for `steps` steps
    of AdamW on the first `steps * batch_size` CIFAR-10 training images, in
    their order and without augmentation, one `train_on_batch` per step.

    Returns:
        Each step's cross-entropy on its batch, computed before the step's
        update: a list of `steps` floats.
    """
    (images, labels), _ = load_cifar10()
    model = keras.saving.load_model(model_file, compile=False)
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay),
        loss="sparse_categorical_crossentropy")
    losses = []
    for step in range(steps):
        batch = slice(step * batch_size, (step + 1) * batch_size)
        logs = model.train_on_batch(images[batch], labels[batch], return_dict=True)
        losses.append(float(logs["loss"]))
    return losses


# A figure of the table: a median and its range, "10.1 (6.2–10.8)" or "0.13× (0.12×–0.22×)".
_FIGURE = re.compile(r"([\d.]+)×? \(([\d.]+)×?–([\d.]+)×?\)")


def read_throughput(path):
    """The table that `benchmarks/throughput.py` printed, read from a file of
    its output: {row: {column: {"median": m, "min": a, "max": b}}}, for example
    `table["training images/s"]["jax"]["median"]`, or with the column
    "jax/tensorflow" the ratio to the first path's figure.

    Raises:
        ValueError: in one line, if the file holds no such table.
    """
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    headers = [i for i, line in enumerate(lines) if line.startswith("median (min–max)")]
    if not headers:
        raise ValueError(f"{path!r}: expected the output of benchmarks/throughput.py, "
                         "with its table of medians.")
    columns = lines[headers[0]].split()[2:]
    table = {}
    for line in lines[headers[0] + 1:]:
        if line.startswith("pair "):  # the table ends where the pairs begin
            break
        figures = _FIGURE.findall(line)
        if len(figures) != len(columns):
            raise ValueError(f"{path!r}: expected {len(columns)} figures in the row {line!r}.")
        label = line[:_FIGURE.search(line).start()].strip()
        table[label] = {column: {"median": float(median), "min": float(low), "max": float(high)}
                        for column, (median, low, high) in zip(columns, figures)}
    return table

