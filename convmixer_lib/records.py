"""A run directory: the files one training run writes, and the rules that keep it whole.

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
This module reads and checks them without TensorFlow, so that the command
line refuses a run directory before TensorFlow starts; `rundir.py` trains
into one and reads its weights.
"""

import contextlib
import datetime
import fcntl
import json
import math
import os
import platform
import time

from .checks import check_directory

CONFIG = "config.json"
RUN = "run.json"
HISTORY = "history.json"
BEST_WEIGHTS = "best.weights.h5"
METRICS = "metrics.json"
BACKUP = "backup"
LOCK = "train.lock"
RECORDS = (CONFIG, RUN, HISTORY, BEST_WEIGHTS, METRICS, BACKUP)


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
    if any(os.path.exists(os.path.join(run_dir, name)) for name in RECORDS):
        return "unfinished"
    return "new"


def utc_now():
    """The current UTC time, to the second, as ISO 8601 text."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def finished_run_words(metrics):
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
    if overwrite or run_state(run_dir) == "new":
        return
    _check_not_finished(run_dir)
    run_file = os.path.join(run_dir, RUN)
    if not os.path.exists(run_file):
        raise ValueError(
            f"{run_dir!r} holds records of a run but no {RUN}, so its settings cannot "
            "be checked: train into a new run directory, or overwrite "
            "(--overwrite, overwrite=True) to discard them."
        )
    # A setting added to the library since the run started reads as the value
    # the run trained with.
    recorded = {**ADDED_SETTINGS, **_flatten(_recorded_settings(run_dir))}
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
def hold_lock(run_dir):
    """Hold `train.lock`. The operating system releases it when its process
    ends, however it ends, so a killed trainer leaves no stuck lock."""
    path = os.path.join(run_dir, LOCK)
    with open(path, "a+") as f:
        for attempt in range(2):  # again after a moment: `check_trainable` may be looking
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt:
                    f.seek(0)
                    raise _held(run_dir, f.read()) from None
                time.sleep(0.2)
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()} on {platform.node()} since {utc_now()}\n")
        f.flush()
        try:
            yield
        finally:
            os.remove(path)


def _recorded_settings(run_dir):
    """run.json's settings, after checking that run.json and history.json
    (when there) can be read: a damaged record is refused before a resume
    writes anything."""
    history = os.path.join(run_dir, HISTORY)
    if os.path.exists(history):
        read_json(history)
    run_file = os.path.join(run_dir, RUN)
    settings = read_json(run_file).get("settings")
    if not isinstance(settings, dict):
        raise ValueError(f"{run_file!r} holds no settings object: the record is damaged; "
                         "restore it or train the run again.")
    return settings


def _check_not_finished(run_dir):
    if run_state(run_dir) == "finished":
        raise ValueError(
            f"{run_dir!r} holds a {finished_run_words(read_json(os.path.join(run_dir, METRICS)))}: "
            "train into a new run directory, or overwrite (--overwrite, overwrite=True) "
            "to discard its weights and records."
        )


def _held(run_dir, holder):
    """The error for a run directory whose lock another process holds."""
    return BlockingIOError(
        f"{run_dir!r} is being trained by {holder.strip() or 'another process'}: wait for "
        "it to end or stop it; one process trains a run directory at a time.")


def check_trainable(run_dir, overwrite=False):
    """Refuse, before any work, what no settings could train into `run_dir`:
    a path that is not a directory, a finished run without `overwrite`, a
    run another process is training, or an unfinished one whose records are
    damaged. Reads, never writes (`check_start` compares the settings when
    training starts).

    Raises:
        ValueError: if `run_dir` is empty or a file, the run is finished and
            `overwrite` is False, or its run.json or history.json is damaged.
        BlockingIOError: if another process holds its lock.
    """
    check_directory("run_dir", run_dir)
    lock = os.path.join(run_dir, LOCK)
    if os.path.isfile(lock):
        with open(lock) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)  # released on closing
            except BlockingIOError:
                raise _held(run_dir, f.read()) from None
    if not overwrite:
        _check_not_finished(run_dir)
        if run_state(run_dir) == "unfinished" and os.path.exists(os.path.join(run_dir, RUN)):
            _recorded_settings(run_dir)


def check_run_files(run_dir):
    """Return `run_dir` if it holds a kept model (config.json, readable, and
    best.weights.h5), else raise FileNotFoundError naming the missing file, or
    ValueError naming a damaged config.json."""
    for name in (CONFIG, BEST_WEIGHTS):
        path = os.path.join(run_dir, name)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path!r} not found: expected a run directory written by "
                "`run_experiment` or `python -m convmixer_lib train`."
            )
    read_json(os.path.join(run_dir, CONFIG))
    return run_dir


def describe(run_dir):
    """What `run_dir` holds, in words: "its finished run of N epochs (test
    accuracy X%)" or "its unfinished run (N finished epochs)"."""
    if run_state(run_dir) == "finished":
        return f"its {finished_run_words(read_json(os.path.join(run_dir, METRICS)))}"
    history_file = os.path.join(run_dir, HISTORY)
    epochs = len(read_json(history_file)) if os.path.exists(history_file) else 0
    return f"its unfinished run ({epochs} finished epochs)"
