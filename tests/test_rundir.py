"""A run directory never loses or mixes a record: refusals, the lock, a killed
trainer's resume, and one-line errors for weights that do not fit."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import TINY, StopAtEpoch, train_tiny
from convmixer_lib.cli import main
from convmixer_lib.model import build_convmixer
from convmixer_lib.records import check_trainable
from convmixer_lib.rundir import (
    load_run_model,
    read_json,
    run_state,
    save_plain_weights,
    training_run,
)


def _snapshot(run_dir):
    """Every file under `run_dir` with its bytes: to show that nothing changed."""
    return {
        os.path.relpath(os.path.join(folder, name), run_dir):
            open(os.path.join(folder, name), "rb").read()
        for folder, _, names in os.walk(run_dir) for name in names
    }


@pytest.fixture
def finished(tmp_path):
    run_dir = tmp_path / "finished"
    train_tiny(run_dir, epochs=2)
    return run_dir


@pytest.fixture
def unfinished(tmp_path):
    """A run of 4 epochs interrupted after epoch 2."""
    run_dir = tmp_path / "unfinished"
    with pytest.raises(KeyboardInterrupt):
        train_tiny(run_dir, epochs=4, callbacks=[StopAtEpoch(2)])
    return run_dir


def test_states(tmp_path, finished, unfinished):
    assert run_state(tmp_path / "nothing") == "new"
    assert run_state(unfinished) == "unfinished"
    assert run_state(finished) == "finished"


def test_a_finished_run_is_never_trained_over(finished):
    before = _snapshot(finished)
    with pytest.raises(ValueError) as error:
        train_tiny(finished, epochs=2)
    message = str(error.value)
    assert "\n" not in message and str(finished) in message
    assert "finished run" in message and "--overwrite" in message
    with pytest.raises(ValueError, match="finished run"):  # another model: refused too
        train_tiny(finished, epochs=2, model={**TINY, "filters": 32})
    with pytest.raises(ValueError) as early:  # the command line's check, without TensorFlow
        check_trainable(finished)
    assert str(early.value) == message
    check_trainable(finished, overwrite=True)
    assert _snapshot(finished) == before


def test_overwrite_discards_and_says_what(finished, capsys):
    old = read_json(finished / "metrics.json")
    _, history, metrics = train_tiny(finished, epochs=1, overwrite=True,
                                     model={**TINY, "filters": 8})
    assert "discarding its finished run of 2 epochs" in capsys.readouterr().out
    assert len(history) == 1 and metrics["epochs"] == 1
    assert metrics["model"]["filters"] == 8 and old["model"]["filters"] == 16
    assert read_json(finished / "config.json")["filters"] == 8
    assert len(read_json(finished / "run.json")["segments"]) == 1


@pytest.mark.parametrize("change, line", [
    ({"model": {**TINY, "filters": 32}}, "model.filters: recorded 16, now 32"),
    ({"learning_rate": 0.1}, "learning_rate: recorded 0.003, now 0.1"),
    ({"epochs": 5}, "epochs: recorded 4, now 5"),
    ({"schedule": "cosine"}, "schedule: recorded 'constant', now 'cosine'"),
    ({"seed": 1}, "seed: recorded 0, now 1"),
    ({"label_smoothing": 0.1}, "label_smoothing: recorded 0.0, now 0.1"),
    ({"ema": 0.9}, "ema: recorded 0.0, now 0.9"),
    ({"settings": {"train_images": 256}}, "train_images: recorded 512, now 256"),
])
def test_a_resume_with_other_settings_is_refused_before_anything_is_written(
        unfinished, change, line):
    before = _snapshot(unfinished)
    options = {"epochs": 4, **change}
    with pytest.raises(ValueError) as error:
        train_tiny(unfinished, **options)
    lines = str(error.value).splitlines()
    assert str(unfinished) in lines[0] and "other settings" in lines[0]
    assert lines[1:] == [f"  {line}"]  # one line per differing setting, only those
    assert _snapshot(unfinished) == before


def test_every_differing_setting_gets_its_line(unfinished):
    with pytest.raises(ValueError) as error:
        train_tiny(unfinished, epochs=4, learning_rate=0.1, weight_decay=0.5)
    assert str(error.value).splitlines()[1:] == [
        "  learning_rate: recorded 0.003, now 0.1",
        "  weight_decay: recorded 0.0001, now 0.5",
    ]


def test_a_run_started_before_a_setting_existed_resumes_with_its_old_value(unfinished):
    # A run recorded before `bn_images` existed trained without the re-estimate.
    run = read_json(unfinished / "run.json")
    del run["settings"]["bn_images"]
    (unfinished / "run.json").write_text(json.dumps(run))
    with pytest.raises(ValueError, match="bn_images: recorded 0, now 64"):
        train_tiny(unfinished, epochs=4, ema=0.9, bn_images=64)
    _, history, _ = train_tiny(unfinished, epochs=4)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]


def test_a_resume_with_the_same_settings_finishes_the_run(unfinished):
    _, history, metrics = train_tiny(unfinished, epochs=4)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert [s["segment"] for s in metrics["segments"]] == [1, 2]
    assert not (unfinished / "train.lock").exists()


@pytest.mark.parametrize("name, text, message", [
    ("config.json", "{bad", "is not valid JSON"),
    ("config.json", "[1, 2]", "holds a JSON list, not the object this record is"),
    ("history.json", "{}", "holds a JSON dict, not the list this record is"),
    ("metrics.json", "[]", "holds a JSON list, not the object this record is"),
    ("config.json", '{"filters": 8, "bogus": 1}', "does not describe a model the library "
                                                  "builds: .*bogus"),
])
def test_a_damaged_record_is_refused_in_one_line_naming_it(tmp_path, name, text, message):
    save_plain_weights(build_convmixer(**TINY), str(tmp_path / "best.weights.h5"))
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=message) as refused:
        (read_json(tmp_path / name) if name != "config.json"
         else load_run_model(str(tmp_path)))
    assert name in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize("name", ["history.json", "run.json"])
def test_a_damaged_record_refuses_the_resume_before_anything_is_written(unfinished, name):
    (unfinished / name).write_text("{")
    before = _snapshot(unfinished)
    with pytest.raises(ValueError, match=f"{name}' is not valid JSON"):
        train_tiny(unfinished, epochs=4)
    with pytest.raises(ValueError, match=f"{name}' is not valid JSON"):
        check_trainable(unfinished)  # the command line's check, before TensorFlow
    assert _snapshot(unfinished) == before


def test_records_without_settings_are_refused(tmp_path):
    run_dir = tmp_path / "older"
    run_dir.mkdir()
    (run_dir / "history.json").write_text("[]")
    with pytest.raises(ValueError, match="no run.json"):
        train_tiny(run_dir, epochs=1)


def test_one_trainer_per_run_directory(unfinished):
    model = build_convmixer(**TINY)
    settings = read_json(unfinished / "run.json")["settings"]
    with training_run(unfinished, model, settings):
        holder = (unfinished / "train.lock").read_text()
        assert f"process {os.getpid()}" in holder
        with pytest.raises(BlockingIOError) as error:
            train_tiny(unfinished, epochs=4)
        assert "is being trained by" in str(error.value) and holder.strip() in str(error.value)
        with pytest.raises(BlockingIOError) as early:
            check_trainable(unfinished)
        assert str(early.value) == str(error.value)
    check_trainable(unfinished)  # released


# A separate Python process trains a tiny model for 4 epochs; with PAUSE set it
# stops in the middle of epoch 3 (after its 3rd batch), says so, and waits to be
# killed.
_TRAINER = textwrap.dedent("""
    import os, sys, time
    import keras
    sys.path.insert(0, {tests!r})
    from conftest import train_tiny

    class Pause(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 2 and batch == 2:
                open(os.environ["PAUSE"], "w").close()
                time.sleep(600)

    pause = [Pause()] if os.environ.get("PAUSE") else []
    train_tiny(sys.argv[1], epochs=4, callbacks=pause)
""")


def test_kill_9_in_the_middle_of_an_epoch_loses_no_finished_epoch(tmp_path):
    script = tmp_path / "trainer.py"
    script.write_text(_TRAINER.format(tests=os.path.dirname(os.path.abspath(__file__))))
    run_dir, paused = tmp_path / "run", tmp_path / "paused"
    trainer = subprocess.Popen([sys.executable, str(script), str(run_dir)],
                               env={**os.environ, "PAUSE": str(paused)})
    try:
        deadline = time.monotonic() + 300
        while not paused.exists():
            assert trainer.poll() is None, "the trainer ended before epoch 3"
            assert time.monotonic() < deadline, "the trainer never reached epoch 3"
            time.sleep(0.2)
        os.kill(trainer.pid, signal.SIGKILL)
    finally:
        trainer.kill()
        trainer.wait()
    before = read_json(run_dir / "history.json")
    assert [h["epoch"] for h in before] == [1, 2]
    assert (run_dir / "train.lock").exists()  # left behind, but no longer held
    check_trainable(run_dir)
    assert run_state(run_dir) == "unfinished"

    subprocess.run([sys.executable, str(script), str(run_dir)], check=True,
                   env={k: v for k, v in os.environ.items() if k != "PAUSE"})
    history = read_json(run_dir / "history.json")
    metrics = read_json(run_dir / "metrics.json")
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[:2] == before  # the finished epochs, untouched
    assert [s["epochs"] for s in metrics["segments"]] == [[1, 2], [3, 4]]
    assert metrics["seconds_per_epoch"] == [h["seconds"] for h in history]
    best = max(history, key=lambda h: h["val_accuracy"])
    assert metrics["best_epoch"] == best["epoch"]
    assert sorted(os.listdir(run_dir)) == [
        "best.weights.h5", "config.json", "history.json", "metrics.json", "run.json"]


def test_weights_of_another_model_give_one_line_naming_the_file(finished):
    save_plain_weights(build_convmixer(**{**TINY, "filters": 8}),
                       str(finished / "best.weights.h5"))
    with pytest.raises(ValueError) as error:
        load_run_model(finished)
    message = str(error.value)
    assert "\n" not in message and "best.weights.h5" in message and len(message) < 500


def test_unreadable_weights_give_one_line_naming_the_file(finished):
    (finished / "best.weights.h5").write_bytes(b"not an HDF5 file")
    with pytest.raises(ValueError) as error:
        load_run_model(finished)
    assert "\n" not in str(error.value) and "best.weights.h5" in str(error.value)


def test_the_command_line_refuses_a_finished_run_in_one_line(small_archive, tmp_path, capsys):
    path, _ = small_archive
    command = ["train", "--data", str(path), "--run-dir", str(tmp_path / "run"),
               "--epochs", "1", "--train-size", "64", "--batch-size", "32",
               "--filters", "8", "--depth", "1", "--patch-size", "4", "--kernel-size", "3"]
    main(command)
    before = _snapshot(tmp_path / "run")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit:
        main(command)
    assert exit.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error and "--overwrite" in error
    assert _snapshot(tmp_path / "run") == before
    main([*command, "--overwrite"])
    assert "discarding its finished run" in capsys.readouterr().out
