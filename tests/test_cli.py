import json
import pathlib
import subprocess
import sys
import textwrap

import pytest

from convmixer_lib.cli import main


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert "train" in out and "evaluate" in out


def test_train_then_evaluate(small_archive, tmp_path, capsys):
    path, _ = small_archive
    run_dir = tmp_path / "run"
    main(["train", "--data", str(path), "--run-dir", str(run_dir), "--epochs", "1",
          "--train-size", "64", "--batch-size", "32", "--filters", "8", "--depth", "1",
          "--patch-size", "4", "--kernel-size", "3", "--seed", "3"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train_images"] == 64 and metrics["validation_images"] == 5000
    assert metrics["test_images"] == 1100 and metrics["batch_size"] == 32
    assert metrics["seed"] == 3 and metrics["epochs"] == 1
    assert {key: metrics["model"][key] for key in ("filters", "depth", "kernel_size",
                                                   "patch_size")} == {
        "filters": 8, "depth": 1, "kernel_size": 3, "patch_size": 4}
    assert "--train-size 64" in metrics["command"]
    capsys.readouterr()
    main(["evaluate", "--data", str(path), "--run-dir", str(run_dir)])
    out = capsys.readouterr().out
    assert "Test images: 1100" in out
    assert f"Test accuracy: {100 * metrics['test_accuracy']:.2f}%" in out


def test_errors_are_reported_without_a_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["evaluate", "--run-dir", str(tmp_path / "missing"), "--data", str(tmp_path)])
    assert exit.value.code == 2
    assert "config.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--run-dir", str(tmp_path), "--epochs", "0"])
    assert "positive integer" in capsys.readouterr().err


@pytest.mark.parametrize("option, value, expected", [
    ("--learning-rate", "-0.1", "expected a finite number > 0, got -0.1"),
    ("--learning-rate", "nan", "expected a finite number > 0, got nan"),
    ("--learning-rate", "0", "expected a finite number > 0, got 0"),
    ("--weight-decay", "-1", "expected a finite number >= 0, got -1"),
    ("--weight-decay", "inf", "expected a finite number >= 0, got inf"),
    ("--warmup", "1", "expected a finite number in [0, 1), got 1"),
    ("--label-smoothing", "1.5", "expected a finite number in [0, 1), got 1.5"),
    ("--ema", "1", "expected a finite number in [0, 1), got 1"),
    ("--bn-images", "-5", "expected an integer >= 0, got -5"),
    ("--seed", "-1", "expected an integer from 0 to 4294967295, got -1"),
    ("--seed", "4294967296", "expected an integer from 0 to 4294967295, got 4294967296"),
    ("--batch-size", "0", "expected a positive integer, got 0"),
    ("--train-size", "2.5", "expected an integer from 1 to 45000, got 2.5"),
    ("--devices", "0", "expected a positive integer, got 0"),
])
def test_train_refuses_an_option_out_of_range_before_any_work(tmp_path, capsys, option,
                                                               value, expected):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit:
        main(["train", "--run-dir", str(run_dir), "--data", str(tmp_path / "absent"),
              option, value])
    assert exit.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith(f"argument {option}: {expected}")
    assert not run_dir.exists()  # refused before the data, the model or the directory


def test_train_refuses_more_devices_than_visible_before_reading_the_data(tmp_path, capsys):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit:  # an empty folder: refused when it is read
        main(["train", "--run-dir", str(run_dir), "--data", str(tmp_path), "--devices", "64"])
    assert exit.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: asked for 64 devices, TensorFlow sees")  # not the absent data
    assert not run_dir.exists()


@pytest.mark.parametrize("argv, message", [
    (["ablate", "--budget", "long"], "argument --budget: invalid choice: 'long'"),
    (["compare", "--only", "vgg"], "argument --only: invalid choice: 'vgg'"),
])
def test_ablate_and_compare_refuse_what_they_do_not_have(capsys, argv, message):
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2 and message in capsys.readouterr().err


def test_ablate_refuses_an_unknown_configuration_before_reading_the_data(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["ablate", "--budget", "full", "--only", "kernel_size-7", "--folder",
              str(tmp_path / "sweep"), "--data", str(tmp_path / "absent")])
    err = capsys.readouterr().err.strip()
    assert exit.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: no configurations named ['kernel_size-7']; the full budget's")
    assert not (tmp_path / "sweep").exists()


def test_predict_refuses_top_beyond_the_classes(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["predict", "--run-dir", str(tmp_path), "--top", "11", "x.png"])
    assert exit.value.code == 2
    assert "argument --top: expected an integer from 1 to 10, got 11" in capsys.readouterr().err


def test_ctrl_c_says_how_to_resume(monkeypatch, tmp_path, capsys):
    from convmixer_lib import cli

    def interrupted(args, argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "train_command", interrupted)
    with pytest.raises(SystemExit) as exit:
        main(["train", "--run-dir", str(tmp_path / "run")])
    assert exit.value.code == 130
    assert capsys.readouterr().err.strip() == (
        "interrupted. Run the same command again to resume from the last finished epoch.")
    with pytest.raises(SystemExit):  # the same command would discard the epochs again
        main(["train", "--run-dir", str(tmp_path / "run"), "--overwrite"])
    assert capsys.readouterr().err.strip() == (
        "interrupted. Run the same command without --overwrite again to resume from the "
        "last finished epoch.")


def test_the_command_line_prints_its_own_lines_not_tensorflows_start_up_log(tmp_path):
    # evaluate starts TensorFlow, then refuses the damaged config.json.
    (tmp_path / "config.json").write_text("{")
    (tmp_path / "best.weights.h5").write_bytes(b"")
    result = subprocess.run(
        [sys.executable, "-m", "convmixer_lib", "evaluate", "--run-dir", str(tmp_path)],
        capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: '{tmp_path}/config.json' is not valid JSON")
    assert len(result.stderr.splitlines()) == 1  # no oneDNN, CUDA driver or absl lines


RECORD = str(pathlib.Path(__file__).parent.parent / "results" / "convmixer-256-8")
REFUSED_BEFORE_TENSORFLOW = {
    "help": (["--help"], 0, "{train,evaluate,predict,ablate,compare}"),
    "train help": (["train", "--help"], 0, "--learning-rate LEARNING_RATE"),
    "learning rate": (["train", "--run-dir", "r", "--learning-rate", "-1"], 2,
                      "argument --learning-rate: expected a finite number > 0, got -1"),
    "augmentation": (["train", "--run-dir", "r", "--augment", "randaugment-m31"], 2,
                     "whole magnitude from 0 to 30, got 'randaugment-m31'"),
    "configuration": (["ablate", "--only", "kernel_size-11"], 2,
                      "no configurations named ['kernel_size-11']"),
    "configuration of the budget": (["ablate", "--budget", "full", "--only", "kernel_size-5"], 2,
                                    "no configurations named ['kernel_size-5']; the full budget's"),
    "model": (["compare", "--only", "vgg"], 2, "argument --only: invalid choice: 'vgg'"),
    "top": (["predict", "--run-dir", "r", "--top", "0", "x.png"], 2,
            "argument --top: expected an integer from 1 to 10, got 0"),
    "patch size": (["train", "--run-dir", "r", "--patch-size", "3"], 2,
                   "argument --patch-size: `patch_size` must divide `image_size`=32; got "
                   "patch_size=3. Allowed values: [1, 2, 4, 8, 16, 32]."),
    "train size": (["train", "--run-dir", "r", "--train-size", "45001"], 2,
                   "argument --train-size: expected an integer from 1 to 45000, got 45001"),
    "bn images without averaged weights": (
        ["train", "--run-dir", "r", "--recipe", "fast3", "--ema", "0"], 2,
        "error: `bn_images`=5120 re-estimates the averaged weights' BatchNorm statistics "
        "and needs `ema` > 0, got ema=0; set `bn_images` to 0"),
    "bn images asked for without averaged weights": (
        ["train", "--run-dir", "r", "--bn-images", "512"], 2,
        "error: `bn_images`=512 re-estimates"),
    "warm-up with a constant schedule": (
        ["train", "--run-dir", "r", "--recipe", "fast", "--schedule", "constant"], 2,
        "error: `warmup`=0.25 needs `schedule`='cosine', got 'constant'"),
    "augmentation without its prefix": (["train", "--run-dir", "r", "--augment", "12-flip"], 2,
                                        "got '12-flip'"),
    "patch size in words": (["train", "--run-dir", "r", "--patch-size", "x"], 2,
                            "argument --patch-size: expected a divisor of 32, got x"),
    "seed of the comparison": (["compare", "--seed", "-1"], 2,
                               "argument --seed: expected an integer from 0 to 4294967295"),
    "missing run directory": (["evaluate", "--run-dir", "r"], 2,
                              "error: 'r/config.json' not found: expected a run directory"),
    "missing run directory to predict with": (["predict", "--run-dir", "r", "x.png"], 2,
                                              "error: 'r/config.json' not found"),
    "missing image": (["predict", "--run-dir", RECORD, "x.png"], 2,
                      "error: image 'x.png' not found."),
    "a directory for an image": (["predict", "--run-dir", RECORD, RECORD], 2,
                                 f"error: {RECORD!r} is a directory, expected an image file."),
    "a file that is not an image": (["predict", "--run-dir", RECORD, f"{RECORD}/config.json"], 2,
                                    f"error: '{RECORD}/config.json' cannot be read as an image: "
                                    "not an image file Pillow can read."),
    "missing data to train on": (["train", "--run-dir", "r", "--data", "absent.tar.gz"], 2,
                                 "error: CIFAR-10 not found at 'absent.tar.gz': expected"),
    "missing data to evaluate on": (["evaluate", "--run-dir", RECORD, "--data", "absent"], 2,
                                    "error: CIFAR-10 not found at 'absent'"),
    "missing data for the sweep": (["ablate", "--data", "absent"], 2,
                                   "error: CIFAR-10 not found at 'absent'"),
    "missing data for the comparison": (["compare", "--data", "absent"], 2,
                                        "error: CIFAR-10 not found at 'absent'"),
    "a finished run": (["train", "--run-dir", RECORD, "--data", RECORD], 2,
                       f"error: {RECORD!r} holds a finished run of 10 epochs"),
    "a file for a run directory": (["train", "--run-dir", f"{RECORD}/config.json"], 2,
                                   "error: `run_dir` must be a directory (new or written by "
                                   f"a run), got the file '{RECORD}/config.json'."),
    "an empty run directory": (["train", "--run-dir", ""], 2,
                               "error: `run_dir` must be a directory (new or written by a "
                               "run), got an empty path ''."),
    "a file for the sweep's folder": (["ablate", "--folder", f"{RECORD}/config.json"], 2,
                                      "error: `--folder` must be a directory"),
    "a file for the comparison's folder": (["compare", "--folder", f"{RECORD}/config.json"], 2,
                                           "error: `--folder` must be a directory"),
}


@pytest.mark.parametrize("case", REFUSED_BEFORE_TENSORFLOW)
def test_help_and_refused_options_answer_before_tensorflow_is_imported(case, tmp_path):
    argv, code, message = REFUSED_BEFORE_TENSORFLOW[case]
    program = textwrap.dedent(f"""
        import sys
        from convmixer_lib.cli import main
        try:
            main({argv!r})
        except SystemExit as exit:
            print("exit", exit.code)
        print("imported:", *sorted({{"tensorflow", "keras", "matplotlib"}} & set(sys.modules)))
    """)
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                            cwd=tmp_path)
    assert message in result.stdout + result.stderr
    assert result.stdout.splitlines()[-2:] == [f"exit {code}", "imported:"]
    assert not any(tmp_path.iterdir())  # no run directory, no folder of results


@pytest.mark.parametrize("fails", [False, True])
def test_hidden_start_up_lines_are_written_out_when_the_start_fails(fails):
    code = textwrap.dedent(f"""
        import os
        from convmixer_lib.cli import native_stderr_hidden
        with native_stderr_hidden():
            os.write(2, b"a line from C++ code\\n")
            if {fails}:
                raise RuntimeError("the start failed")
        os.write(2, b"after the start\\n")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "after the start" in result.stderr or fails
    assert ("a line from C++ code" in result.stderr) == fails
    assert ("RuntimeError: the start failed" in result.stderr) == fails
