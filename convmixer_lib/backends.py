"""The same model on Keras' three backends (the appendix on backends).

Keras chooses its backend once, when it is first imported, from the
`KERAS_BACKEND` environment variable. To put the backends side by side in one
notebook, `on_backend` calls a function of this module in a fresh Python
process with `KERAS_BACKEND` set, and returns what the function returned.
"""

import json
import os
import subprocess
import sys
import time

import keras

from .data import load_cifar10
from .rundir import load_run_model

BACKENDS = ("tensorflow", "jax", "torch")

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
    process whose Keras runs on `backend`, and return the function's value.

    Args:
        backend: "tensorflow", "jax" or "torch".
        function: "predict_run" or "train_steps".
        arguments: the function's arguments; they and the value travel as JSON.

    Raises:
        ValueError: for another backend or function.
        RuntimeError: naming the function, the backend and the error, if the
            call failed there (for example, the backend's package is not
            installed, or a file is missing).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}.")
    if function not in ("predict_run", "train_steps"):
        raise ValueError(f"function must be 'predict_run' or 'train_steps', got {function!r}.")
    result = subprocess.run(
        [sys.executable, "-c", _PROGRAM, function, json.dumps(arguments)],
        env={**os.environ, "KERAS_BACKEND": backend}, capture_output=True, text=True)
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
        {"losses": each step's cross-entropy on its batch, before the step's
        update, "seconds": each step's wall-clock seconds (the first includes
        building the step's graph or compiled function)}.
    """
    (images, labels), _ = load_cifar10()
    model = keras.saving.load_model(model_file, compile=False)
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay),
        loss="sparse_categorical_crossentropy")
    losses, seconds = [], []
    for step in range(steps):
        batch = slice(step * batch_size, (step + 1) * batch_size)
        start = time.perf_counter()
        logs = model.train_on_batch(images[batch], labels[batch], return_dict=True)
        seconds.append(time.perf_counter() - start)
        losses.append(float(logs["loss"]))
    return {"losses": losses, "seconds": seconds}


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
    label_width, column_width = 26, 24  # as throughput.py prints them
    starts = [i for i, line in enumerate(lines) if line.startswith("median (min–max)")]
    if not starts:
        raise ValueError(f"{path!r}: expected the output of benchmarks/throughput.py, "
                         "with its table of medians.")
    columns = lines[starts[0]][label_width:].split()
    table = {}
    for line in lines[starts[0] + 1:]:
        if line.startswith("pair "):
            break
        cells = [line[start:start + column_width] for start in
                 range(label_width, label_width + column_width * len(columns), column_width)]
        table[line[:label_width].strip()] = {
            column: _median_range(cell) for column, cell in zip(columns, cells)}
    return table


def _median_range(cell):
    """'10.1 (6.2–10.8)' or '0.13× (0.12×–0.22×)' -> {"median": 10.1, "min": 6.2, "max": 10.8}"""
    median, low_high = cell.replace("×", "").split(maxsplit=1)
    low, high = low_high.strip("()").split("–")
    return {"median": float(median), "min": float(low), "max": float(high)}
