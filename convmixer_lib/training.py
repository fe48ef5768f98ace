"""The example's `run_experiment`, writing everything into one run directory.

A run directory holds:
    config.json        the model's hyperparameters, to rebuild it (`load_run_model`)
    best.weights.h5    the weights of the epoch with the best validation accuracy
    history.json       one record per finished epoch: losses, accuracies, seconds
    metrics.json       test results of the best weights and how they were obtained
    backup/            Keras' BackupAndRestore state while a run is unfinished
"""

import json
import math
import os
import platform
import time

import keras
import numpy as np
import tensorflow as tf

from .model import build_convmixer, convmixer_config

BEST_WEIGHTS = "best.weights.h5"


def _write_json(path, obj):
    """Write JSON atomically: a reader never sees a half-written file."""
    partial = f"{path}.partial"
    with open(partial, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(partial, path)


def read_json(path):
    """Read one JSON file of a run directory."""
    with open(path) as f:
        return json.load(f)


def _plain_copy(model):
    """An uncompiled ConvMixer of plain Keras layers shaped like `model`."""
    return build_convmixer(**convmixer_config(model))


def _save_model_weights(model, path):
    """Save the model's weights atomically, without optimizer state.

    The file always holds the plain-layer model (`fused=False`), whichever
    version `model` is, so `load_run_model` and the notebooks can read it.
    """
    copy = _plain_copy(model)
    copy.set_weights(model.get_weights())  # same weights in the same order
    partial = os.path.join(os.path.dirname(path), "partial.weights.h5")
    copy.save_weights(partial)
    os.replace(partial, path)


def _load_model_weights(model, path):
    """Load weights saved by `_save_model_weights` into `model`, fused or not."""
    copy = _plain_copy(model)
    copy.load_weights(path)
    model.set_weights(copy.get_weights())


class RunLog(keras.callbacks.Callback):
    """Record every finished epoch and keep the weights with the best `val_accuracy`.

    Unlike `keras.callbacks.ModelCheckpoint`, it remembers the best score across
    an interrupted and resumed run (it rereads `history.json`), and it replaces
    `best.weights.h5` atomically. Place it before `BackupAndRestore`.
    """

    def __init__(self, run_dir):
        super().__init__()
        self.run_dir = run_dir
        self.history_path = os.path.join(run_dir, "history.json")
        self.history = (
            read_json(self.history_path) if os.path.exists(self.history_path) else []
        )
        self._resumed_at = None

    def best_val_accuracy(self):
        return max((h["val_accuracy"] for h in self.history), default=-math.inf)

    def on_epoch_begin(self, epoch, logs=None):
        if self._resumed_at is None:
            # `epoch` is where BackupAndRestore resumes: forget later records.
            self._resumed_at = epoch
            kept, dropped = self.history[:epoch], self.history[epoch:]
            self.history = kept
            if dropped and max(h["val_accuracy"] for h in dropped) > self.best_val_accuracy():
                self._best = -math.inf  # best.weights.h5 came from a dropped epoch
            else:
                self._best = self.best_val_accuracy()
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._start
        record = {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()}}
        record["seconds"] = round(seconds, 2)
        if record["val_accuracy"] > self._best:
            self._best = record["val_accuracy"]
            _save_model_weights(self.model, os.path.join(self.run_dir, BEST_WEIGHTS))
        self.history.append(record)
        _write_json(self.history_path, self.history)


def evaluate(model, images, labels, batch_size=128):
    """Evaluate `model` on uint8 `images` (n, 32, 32, 3) and `labels` (n,) or (n, 1).

    Returns:
        A dict: `loss` (mean sparse categorical cross-entropy, nats), `accuracy`
        (fraction correct), `per_class_accuracy` (list, one fraction per class),
        `confusion_matrix` (list of lists, rows true class, columns predicted
        class, counts), `predictions` (uint8 array (n,) of predicted classes)
        and `confidences` (float32 array (n,), the probability of each
        predicted class).
    """
    probabilities = model.predict(images, batch_size=batch_size, verbose=0)
    labels = np.asarray(labels).reshape(-1)
    num_classes = probabilities.shape[1]
    loss = keras.losses.sparse_categorical_crossentropy(labels, probabilities)
    predicted = probabilities.argmax(axis=1)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    return {
        "loss": float(np.mean(keras.ops.convert_to_numpy(loss))),
        "accuracy": float(np.mean(predicted == labels)),
        "per_class_accuracy": [float(a) for a in per_class],
        "confusion_matrix": confusion.tolist(),
        "predictions": predicted.astype(np.uint8),
        "confidences": probabilities.max(axis=1).astype(np.float32),
    }


def most_confident_mistakes(labels, predictions, confidences, count=16):
    """Indices of the `count` wrong predictions made with the highest confidence.

    Args:
        labels, predictions: class indices, arrays `(n,)` (labels may be `(n, 1)`).
        confidences: probability of each predicted class, array `(n,)`.

    Returns:
        An int array of at most `count` indices into the `n` images, most
        confident first.
    """
    labels = np.asarray(labels).reshape(-1)
    predictions, confidences = np.asarray(predictions), np.asarray(confidences)
    if not labels.shape == predictions.shape == confidences.shape:
        raise ValueError(
            "`labels`, `predictions` and `confidences` must have one entry per image, "
            f"got shapes {labels.shape}, {predictions.shape}, {confidences.shape}."
        )
    wrong = np.flatnonzero(predictions != labels)
    return wrong[np.argsort(-confidences[wrong], kind="stable")][:count]


def _processor_name():
    """The CPU's model name (Linux: from /proc/cpuinfo), else the architecture."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment():
    """Library versions and hardware, as recorded in `metrics.json`."""
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "processor": _processor_name(),
        "cpu_count": os.cpu_count(),
        "gpus": [gpu.name for gpu in tf.config.list_physical_devices("GPU")],
    }


def run_experiment(
    model,
    train_dataset,
    val_dataset,
    test_data,
    run_dir,
    epochs=10,
    learning_rate=1e-3,
    weight_decay=1e-4,
    schedule="constant",
    seed=None,
    details=None,
    callbacks=(),
    verbose="auto",
):
    """Train as the example does, keep the best epoch, test it once.

    Compiles `model` with AdamW and sparse categorical cross-entropy, fits it
    for `epochs` epochs on `train_dataset`, validating on `val_dataset` after
    each, restores the weights of the epoch with the best validation accuracy
    and evaluates them on `test_data`. If `run_dir` holds an unfinished run of
    the same model, training resumes after its last finished epoch.

    Args:
        model: an uncompiled model, e.g. from `build_convmixer`.
        train_dataset, val_dataset: batched datasets of (images, labels).
        test_data: `(images, labels)` arrays, used once, at the end.
        run_dir: directory for everything the run writes; created if missing.
        epochs: total epochs, counting those of an interrupted run.
        learning_rate, weight_decay: AdamW's settings (the example: 1e-3, 1e-4).
        schedule: "constant" keeps `learning_rate` throughout, as the example
            does; "cosine" decays it to 0 along a half cosine over all
            `epochs × len(train_dataset)` steps, so the last epochs settle.
        seed: recorded in `metrics.json`; seed before building the model with
            `keras.utils.set_random_seed(seed)`.
        details: more facts for `metrics.json` (e.g. the number of training
            images, the batch size, the command).
        callbacks: more Keras callbacks for `fit`.
        verbose: Keras' progress output for `fit` (bars by default).

    Returns:
        `(history, metrics)`: the list of per-epoch records (`history.json`) and
        the dict written to `metrics.json`.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"`epochs` must be a positive integer, got {epochs!r}.")
    if schedule == "constant":
        rate = learning_rate
    elif schedule == "cosine":
        steps = int(train_dataset.cardinality())
        if steps < 1:
            raise ValueError(
                "`schedule='cosine'` needs a training dataset of known, finite "
                f"length, got cardinality {steps}."
            )
        rate = keras.optimizers.schedules.CosineDecay(learning_rate, epochs * steps)
    else:
        raise ValueError(f"`schedule` must be 'constant' or 'cosine', got {schedule!r}.")
    os.makedirs(run_dir, exist_ok=True)
    _write_json(os.path.join(run_dir, "config.json"), convmixer_config(model))
    model.compile(
        optimizer=keras.optimizers.AdamW(
            learning_rate=rate, weight_decay=weight_decay
        ),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    log = RunLog(run_dir)
    backup = keras.callbacks.BackupAndRestore(
        os.path.join(run_dir, "backup"), double_checkpoint=True
    )
    model.fit(
        train_dataset,
        validation_data=val_dataset,
        epochs=epochs,
        callbacks=[*callbacks, log, backup],
        shuffle=False,  # the training dataset shuffles itself
        verbose=verbose,
    )
    history = log.history
    _load_model_weights(model, os.path.join(run_dir, BEST_WEIGHTS))
    test_images, test_labels = test_data
    results = evaluate(model, test_images, test_labels)
    best = max(history, key=lambda h: h["val_accuracy"])
    metrics = {
        "test_loss": results["loss"],
        "test_accuracy": results["accuracy"],
        "per_class_accuracy": results["per_class_accuracy"],
        "confusion_matrix": results["confusion_matrix"],
        "epochs": len(history),
        "best_epoch": best["epoch"],
        "best_val_accuracy": best["val_accuracy"],
        "seconds_per_epoch": [h["seconds"] for h in history],
        "model": convmixer_config(model),
        "learning_rate": learning_rate,
        "schedule": schedule,
        "weight_decay": weight_decay,
        "seed": seed,
        "environment": environment(),
        **(details or {}),
    }
    _write_json(os.path.join(run_dir, "metrics.json"), metrics)
    return history, metrics


def load_run_model(run_dir, fused=False):
    """Rebuild the model of a run directory and load its best weights.

    With `fused=True` the model computes GELU + BatchNorm in one layer (see
    `build_convmixer`): the same predictions, faster on a CPU.
    """
    weights = os.path.join(run_dir, BEST_WEIGHTS)
    for path in (os.path.join(run_dir, "config.json"), weights):
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path!r} not found: expected a run directory written by "
                "`run_experiment` or `python -m convmixer_lib train`."
            )
    model = build_convmixer(**read_json(os.path.join(run_dir, "config.json")), fused=fused)
    _load_model_weights(model, weights)
    return model
