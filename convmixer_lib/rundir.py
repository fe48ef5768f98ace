"""Training into a run directory (`records.py` lists its files and rules): the
process's hold on the directory, the record of each epoch and the best weights,
saved and loaded as plain Keras layers whatever layers trained them.
"""

import contextlib
import importlib.metadata
import math
import os
import platform
import shutil
import subprocess
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

from .architectures import build_model, model_config
from .machine import processor_name, vector_extensions
from .records import (
    BEST_WEIGHTS,
    CONFIG,
    HISTORY,
    RECORDS,
    RUN,
    check_run_files,
    check_start,
    describe,
    hold_lock,
    read_json,
    run_state,
    utc_now,
    write_json,
)


@contextlib.contextmanager
def training_run(run_dir, model, settings, details=None, overwrite=False):
    """Hold `run_dir` while one process trains `model` into it.

    Checks the start (`check_start`) before anything is written, takes the
    lock, discards old records if `overwrite`, writes config.json and the
    settings (a new run) and appends this process's segment to run.json:
    when it started, the first epoch it trains is counted by `RunLog`, the
    machine, library versions and commit (`environment()`) and `details`.

    Yields:
        The segment's number, 1 for the first process that trains the run.
    """
    check_start(run_dir, settings, overwrite)
    os.makedirs(run_dir, exist_ok=True)
    with hold_lock(run_dir):
        check_start(run_dir, settings, overwrite)  # again, now that no one else writes
        if overwrite and run_state(run_dir) != "new":
            print(f"Overwriting {run_dir}: discarding {describe(run_dir)}.")
            for name in RECORDS:
                path = os.path.join(run_dir, name)
                if os.path.isdir(path):
                    shutil.rmtree(path)
                elif os.path.exists(path):
                    os.remove(path)
        run_file = os.path.join(run_dir, RUN)
        run = read_json(run_file) if os.path.exists(run_file) else {
            "settings": settings, "segments": []}
        segment = {
            "segment": len(run["segments"]) + 1,
            "started": utc_now(),
            "environment": environment(),
            **(details or {}),
        }
        run["segments"].append(segment)
        write_json(os.path.join(run_dir, CONFIG), model_config(model))
        write_json(run_file, run)
        yield segment["segment"]


def segments(run_dir, history):
    """Every segment of run.json with the epochs it finished and their seconds.

    Returns:
        A list of dicts: a segment's record (started, environment, details)
        with `epochs` (the epoch numbers it finished, in `history`) and
        `seconds` (their sum); segments that finished no epoch are left out.
    """
    result = []
    for segment in read_json(os.path.join(run_dir, RUN))["segments"]:
        done = [h for h in history if h.get("segment") == segment["segment"]]
        if done:
            result.append({**segment, "epochs": [h["epoch"] for h in done],
                           "seconds": round(sum(h["seconds"] for h in done), 2)})
    return result


def _plain_copy(model):
    """An uncompiled model of plain Keras layers shaped like `model`."""
    return build_model(model_config(model))


def save_plain_weights(model, path):
    """Save `model`'s weights atomically, without optimizer state.

    The file always holds the model as its builder builds it, also when
    `model` went through `fast.accelerate`, so `load_run_model` and the
    notebooks can read it.
    """
    copy = _plain_copy(model)
    copy.set_weights(model.get_weights())  # same weights in the same order
    partial = os.path.join(os.path.dirname(path), "partial.weights.h5")
    copy.save_weights(partial)
    os.replace(partial, path)


def load_plain_weights(model, path):
    """Load weights saved by `save_plain_weights` into `model`, accelerated or not.

    Raises:
        ValueError: in one line, naming `path`, if the file cannot be read or
            holds the weights of another model.
    """
    copy = _plain_copy(model)
    try:
        with warnings.catch_warnings(record=True) as caught:  # replayed on success
            warnings.simplefilter("always")
            copy.load_weights(path)
    except Exception as error:  # Keras lists every mismatched array, over pages
        first_line = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise ValueError(
            f"{os.fspath(path)!r} cannot be loaded into {model.name} "
            f"({model_config(model)}): {type(error).__name__}: {first_line}"
        ) from None
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, warning.filename,
                               warning.lineno)
    model.set_weights(copy.get_weights())


class RunLog(keras.callbacks.Callback):
    """Record every finished epoch and keep the weights with the best `val_accuracy`.

    Keras' `ModelCheckpoint(save_best_only=True, initial_value_threshold=...)`
    could carry the best score over a resume, but not the rest of what a run
    directory needs: it saves the weights of the model as trained (after
    `fast.accelerate`, the fast layers', which the plain model of
    `load_run_model` cannot read), it writes the file in place (an
    interruption while writing leaves half a file), and it keeps no record
    of the epochs. This callback saves plain weights (`save_plain_weights`)
    by an atomic replace, appends each epoch to history.json with the
    `segment` (process) that trained it, and forgets the records and the
    best score of epochs that a resume from an older backup trains again.
    Place it before `BackupAndRestore`.
    """

    def __init__(self, run_dir, segment=1):
        super().__init__()
        self.run_dir = run_dir
        self.segment = segment
        self.history_path = os.path.join(run_dir, HISTORY)
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
        record["segment"] = self.segment
        if record["val_accuracy"] > self._best:
            self._best = record["val_accuracy"]
            save_plain_weights(self.model, os.path.join(self.run_dir, BEST_WEIGHTS))
        self.history.append(record)
        write_json(self.history_path, self.history)


def load_run_model(run_dir):
    """Rebuild the model of a run directory and load its best weights.

    Raises:
        FileNotFoundError: if config.json or best.weights.h5 is missing.
        ValueError: in one line, if config.json is damaged or describes no
            model of the library, or the weights do not fit its model.
    """
    check_run_files(run_dir)
    config_path = os.path.join(run_dir, CONFIG)
    try:
        model = build_model(read_json(config_path))
    except TypeError as error:  # an argument the builder does not take
        raise ValueError(f"{config_path!r} does not describe a model the library builds: "
                         f"{error}.") from None
    load_plain_weights(model, os.path.join(run_dir, BEST_WEIGHTS))
    return model


def _commit():
    """The git commit of the library's checkout, with "+changes" appended when
    the library's files differ from it; None outside a checkout."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        def git(*args):
            return subprocess.run(["git", *args], cwd=here, capture_output=True,
                                  text=True, check=True).stdout.strip()
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".")
        return git("rev-parse", "HEAD") + ("+changes" if changed else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def environment():
    """Library versions, hardware and the library's git commit, as records keep them.
    `backend` is Keras' backend ("tensorflow", "jax", "torch"; records written
    before it was kept were all trained on TensorFlow), with its package's
    version under its name."""
    backend = keras.backend.backend()
    return {
        "python": platform.python_version(),
        "backend": backend,
        "tensorflow": tf.__version__,
        **({} if backend == "tensorflow" else {backend: importlib.metadata.version(backend)}),
        "keras": keras.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "processor": processor_name(),
        "vector_extensions": vector_extensions(),
        "cpu_count": os.cpu_count(),
        "gpus": [gpu.name for gpu in tf.config.list_physical_devices("GPU")],
        "commit": _commit(),
    }
