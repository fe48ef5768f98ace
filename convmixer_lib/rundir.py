"""A run directory: everything one training run writes, and the rules that keep it whole.

    config.json       the model's settings, for `architectures.build_model(config)`
    run.json          the settings that shape the result, recorded when the run
                      starts, and one segment per process that trained it
    history.json      one record per finished epoch: losses, accuracies, seconds
    best.weights.h5   the weights of the epoch with the best validation accuracy
    metrics.json      test results and how they were obtained; written last, it
                      marks the run finished
    backup/           Keras' BackupAndRestore state while the run is unfinished
    train.lock        held by the one process that trains the run

A finished run is never overwritten unless asked; an unfinished one resumes
only with the settings it started with; one process trains a directory at a time.
"""

import contextlib
import datetime
import fcntl
import json
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

CONFIG = "config.json"
RUN = "run.json"
HISTORY = "history.json"
BEST_WEIGHTS = "best.weights.h5"
METRICS = "metrics.json"
BACKUP = "backup"
LOCK = "train.lock"
_RECORDS = (CONFIG, RUN, HISTORY, BEST_WEIGHTS, METRICS, BACKUP)


def write_json(path, obj):
    """Write JSON atomically: a reader never sees a half-written file."""
    partial = f"{path}.partial"
    with open(partial, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(partial, path)


def read_json(path):
    """Read one JSON record of a run directory: history.json's list of epochs,
    or any other record's object (a dict).

    Raises:
        ValueError: in one line naming the file, if it is not JSON or not of
            its record's kind.
    """
    with open(path) as f:
        try:
            record = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{os.fspath(path)!r} is not valid JSON ({error}): the record "
                             "is damaged; restore it or train the run again.") from None
    kind = list if os.path.basename(path) == HISTORY else dict
    if not isinstance(record, kind):
        raise ValueError(f"{os.fspath(path)!r} holds a JSON {type(record).__name__}, not the "
                         f"{'list' if kind is list else 'object'} this record is; restore "
                         "it or train the run again.")
    return record


def run_state(run_dir):
    """"new" (nothing recorded yet), "unfinished" or "finished" (metrics.json written)."""
    if os.path.exists(os.path.join(run_dir, METRICS)):
        return "finished"
    if any(os.path.exists(os.path.join(run_dir, name)) for name in _RECORDS):
        return "unfinished"
    return "new"


def _now():
    """The current UTC time, to the second, as ISO 8601 text."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _finished_run(metrics):
    """"finished run of N epochs (test accuracy X%)", from metrics.json."""
    return (f"finished run of {metrics.get('epochs')} epochs (test accuracy "
            f"{100 * metrics.get('test_accuracy', math.nan):.2f}%)")


def _flatten(settings, prefix=""):
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# Settings added to the library after some runs started, with the value those
# runs trained with: no BatchNorm re-estimate for the averaged weights.
ADDED_SETTINGS = {"bn_images": 0}


def check_start(run_dir, settings, overwrite=False):
    """Refuse to train `run_dir` with `settings` unless that keeps its records whole.

    A new directory may start; a finished one only with `overwrite`; an
    unfinished one resumes only if every setting equals what it recorded when
    it started. Reads, never writes.

    Args:
        run_dir: the run directory.
        settings: a JSON-serializable dict of everything that shapes the result
            (model, data, recipe), as `run_experiment` records it in run.json.
        overwrite: allow discarding whatever the directory holds.

    Raises:
        ValueError: naming the directory and what to do instead, with one line
            per setting that differs from the recorded one.
    """
    state = run_state(run_dir)
    if state == "new" or overwrite:
        return
    if state == "finished":
        raise ValueError(
            f"{run_dir!r} holds a {_finished_run(read_json(os.path.join(run_dir, METRICS)))}: "
            "train into a new run directory, or overwrite (--overwrite, overwrite=True) "
            "to discard its weights and records."
        )
    run_file = os.path.join(run_dir, RUN)
    if not os.path.exists(run_file):
        raise ValueError(
            f"{run_dir!r} holds records of a run but no {RUN}, so its settings cannot "
            "be checked: train into a new run directory, or overwrite "
            "(--overwrite, overwrite=True) to discard them."
        )
    # A setting added to the library since the run started reads as the value
    # the run trained with.
    recorded = {**ADDED_SETTINGS, **_flatten(read_json(run_file)["settings"])}
    requested = _flatten(json.loads(json.dumps(settings)))
    differences = [
        f"  {key}: recorded {recorded.get(key, '(not set)')!r}, "
        f"now {requested.get(key, '(not set)')!r}"
        for key in sorted(set(recorded) | set(requested))
        if recorded.get(key, "(not set)") != requested.get(key, "(not set)")
    ]
    if differences:
        raise ValueError(
            f"{run_dir!r} holds an unfinished run started with other settings; resume "
            "it with the recorded ones, train into a new run directory, or overwrite "
            "(--overwrite, overwrite=True) to discard it:\n" + "\n".join(differences)
        )


@contextlib.contextmanager
def _lock(run_dir):
    """Hold `train.lock`. The operating system releases it when its process
    ends, however it ends, so a killed trainer leaves no stuck lock."""
    path = os.path.join(run_dir, LOCK)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise BlockingIOError(
                f"{run_dir!r} is being trained by {holder}: wait for it to end or "
                "stop it; one process trains a run directory at a time."
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()} on {platform.node()} since {_now()}\n")
        f.flush()
        try:
            yield
        finally:
            os.remove(path)


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
    with _lock(run_dir):
        check_start(run_dir, settings, overwrite)  # again, now that no one else writes
        if overwrite and run_state(run_dir) != "new":
            print(f"Overwriting {run_dir}: discarding {_describe(run_dir)}.")
            for name in _RECORDS:
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
            "started": _now(),
            "environment": environment(),
            **(details or {}),
        }
        run["segments"].append(segment)
        write_json(os.path.join(run_dir, CONFIG), model_config(model))
        write_json(run_file, run)
        yield segment["segment"]


def _describe(run_dir):
    if run_state(run_dir) == "finished":
        return f"its {_finished_run(read_json(os.path.join(run_dir, METRICS)))}"
    history_file = os.path.join(run_dir, HISTORY)
    epochs = len(read_json(history_file)) if os.path.exists(history_file) else 0
    return f"its unfinished run ({epochs} finished epochs)"


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
    weights = os.path.join(run_dir, BEST_WEIGHTS)
    for path in (os.path.join(run_dir, CONFIG), weights):
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path!r} not found: expected a run directory written by "
                "`run_experiment` or `python -m convmixer_lib train`."
            )
    config_path = os.path.join(run_dir, CONFIG)
    try:
        model = build_model(read_json(config_path))
    except TypeError as error:  # an argument the builder does not take
        raise ValueError(f"{config_path!r} does not describe a model the library builds: "
                         f"{error}.") from None
    load_plain_weights(model, weights)
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
    """Library versions, hardware and the library's git commit, as records keep them."""
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "processor": processor_name(),
        "vector_extensions": vector_extensions(),
        "cpu_count": os.cpu_count(),
        "gpus": [gpu.name for gpu in tf.config.list_physical_devices("GPU")],
        "commit": _commit(),
    }
